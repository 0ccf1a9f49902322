"""The embedded SQLite database under ``.flowengine/``: response cache, run records, price lists.

One file, opened in WAL mode so that many runs and several processes can share it. A database
that is corrupt, locked or unwritable never fails a run: the store switches itself off and logs
one warning, and the run goes on without cache or records.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("flowengine")
T = TypeVar("T")

DEFAULT_PATH = Path(".flowengine") / "flowengine.db"
ENV_PATH = "FLOWENGINE_DB"
# Short, so that a database held by another process stalls the event loop for at most this long.
BUSY_TIMEOUT_MS = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model_id TEXT NOT NULL,
    created REAL NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    file TEXT,
    content_hash TEXT,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    total_time REAL,
    calls INTEGER,
    cost REAL,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS calls (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    node TEXT NOT NULL,
    model TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL NOT NULL,
    attempts INTEGER NOT NULL,
    status TEXT NOT NULL,
    cached INTEGER NOT NULL,
    messages TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS prices (
    base_url TEXT PRIMARY KEY,
    fetched REAL NOT NULL,
    value TEXT NOT NULL
);
"""


def resolve_path(path: str | Path | None = None) -> Path:
    """The database: the argument, else ``$FLOWENGINE_DB``, else ``.flowengine/flowengine.db``."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_PATH)
    return Path(env) if env else DEFAULT_PATH


class Store:
    """A lazily opened SQLite connection that turns itself off instead of failing a run.

    ``warn=False`` leaves the warnings out, for a caller that reports ``error`` itself.
    """

    def __init__(self, path: str | Path | None = None, *, warn: bool = True) -> None:
        self.path = resolve_path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.disabled_reason: str | None = None
        self.error: str | None = None  # why the last skipped read or write was skipped
        self.warn = warn
        self._warned_busy = False

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None

    def disable(self, reason: str) -> None:
        if self.disabled_reason is None:
            self.disabled_reason = self.error = reason
            if self.warn:
                log.warning("%s: %s; going on without cache and run records", self.path, reason)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def use(self, work: Callable[[sqlite3.Connection], T]) -> T | None:
        """``work(connection)``; None when the store is off or a database error switched it off."""
        if not self.enabled:
            return None
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._open()
                return work(self._conn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    self.disable(_describe(exc))
                    return None
                # Another process holds the lock: skip this read or write, keep the store.
                self.error = _describe(exc)
                if self.warn and not self._warned_busy:
                    self._warned_busy = True
                    log.warning(
                        "%s: %s; skipping some cache reads and writes", self.path, self.error
                    )
            except sqlite3.DatabaseError as exc:
                self.disable(_describe(exc))
            except OSError as exc:
                self.disable(f"cannot open: {exc.strerror or exc}")
        return None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _is_busy(exc: sqlite3.DatabaseError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _describe(exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if _is_busy(exc):
        return "the database is locked by another process"
    if "not a database" in text or "malformed" in text:
        return "the file is corrupt (not a SQLite database)"
    if "readonly" in text:
        return "the database is read-only"
    return f"database error: {text}"
