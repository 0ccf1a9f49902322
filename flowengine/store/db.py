"""The embedded SQLite database under ``.flowengine/``: response cache, run records, price lists.

One file, opened in WAL mode so that many runs and several processes can share it. A database
that is corrupt, locked or unwritable never fails a run: the store switches itself off and logs
one warning, and the run goes on without cache or records.
"""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("flowengine.store")
T = TypeVar("T")

DEFAULT_PATH = Path(".flowengine") / "flowengine.db"
ENV_PATH = "FLOWENGINE_DB"
# How long a command's read waits for another process's lock. An engine's reads, on its event
# loop, never wait.
BUSY_TIMEOUT_MS = 200
# An engine's read waits this long at most, for a lock held a moment (a WAL checkpoint); a
# read that still finds the database locked is a miss, and reads pause for BUSY_BACKOFF_S.
READ_WAIT_MS = 20
# Writes are made off the event loop (by the writer thread of an Engine's store, or by a command
# that has no loop), so they can afford to wait longer for a busy database; after one still
# finds it busy, writes are skipped for BUSY_BACKOFF_S, so that a
# database locked for long delays neither the runs nor the engine's close by more than that.
WRITE_TIMEOUT_MS = 2_000
BUSY_BACKOFF_S = 5.0
# The writer thread makes the writes waiting in its queue in one transaction, up to this many:
# a commit costs more than the statements of many calls.
WRITE_BATCH = 500
# How long the writer lets writes gather before making them, at most: the delay before a cache
# entry or a run record reaches the file (a run's own cache hits are served from memory).
GATHER_S = 0.05
# The most writes that may wait for the writer. A process that makes runs faster than it can
# record them (the writer shares one interpreter lock with the runs) then waits, at most
# ROOM_WAIT_S at a time, until half have been made: it slows down a little rather than holding
# every unwritten result and answer in memory.
MAX_WAITING = 500
ROOM_WAIT_S = 1.0
# Each connection's page cache, in KiB (as a negative number, SQLite's way). Reads are lookups
# by primary key and writes are appends: SQLite's default of 2 MiB per connection buys nothing.
CACHE_KIB = -256

Work = Callable[[sqlite3.Connection], object]
#: A write, and what to call once it is committed (or given up).
Queued = tuple[Work, Callable[[], None] | None]

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
CREATE TABLE IF NOT EXISTS graphs (
    run_id TEXT PRIMARY KEY,
    nodes TEXT NOT NULL
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
    """A lazily opened SQLite database that turns itself off instead of failing a run.

    Reads run on the caller's thread and wait at most ``BUSY_TIMEOUT_MS`` for another process's
    lock (they run on the event loop). Writes go through :meth:`write`: with
    ``background=True`` (as an Engine uses it) a writer thread makes them, waiting up to
    ``WRITE_TIMEOUT_MS`` for a lock, so a busy database neither stalls runs nor loses records.
    :meth:`flush` waits for queued writes; :meth:`close` flushes first.
    ``warn=False`` leaves the warnings out, for a caller that reports ``error`` itself.
    """

    def __init__(
        self, path: str | Path | None = None, *, warn: bool = True, background: bool = False
    ) -> None:
        self.path = resolve_path(path)
        self.warn = warn
        self.background = background
        self.disabled_reason: str | None = None
        self.error: str | None = None  # why the last skipped read or write was skipped
        self._warned_busy = False
        self._busy_until = 0.0  # writes are skipped until then
        self._reads_off_until = 0.0  # an engine's reads are skipped until then
        self._conn: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        # The writes waiting for the writer thread. A deque, not a queue.Queue: appending is
        # one C call, where a Queue takes Python-level locks for every write and every take.
        self._waiting: collections.deque[Queued] = collections.deque()
        self._wake = threading.Event()  # set when writes wait and the writer may be asleep
        self._idle = threading.Condition()  # notified each time the writer has made a batch
        self._writing = False  # the writer holds writes it took and has not made yet
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None

    def disable(self, reason: str) -> None:
        if self.disabled_reason is None:
            self.disabled_reason = self.error = reason
            if self.warn:
                log.warning("%s: %s; going on without cache and run records", self.path, reason)

    def _open(self, busy_ms: int) -> sqlite3.Connection:
        """A connection with the tables made; waits at most about ``busy_ms`` in all."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False
        )
        deadline = time.monotonic() + busy_ms / 1000
        try:
            conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            conn.execute(f"PRAGMA cache_size = {CACHE_KIB}")
            # Switching to WAL can report "locked" at once, without waiting, while another
            # process opens the same new file: try again for a moment, within the same bound.
            while True:
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = NORMAL")
                    conn.executescript(SCHEMA)
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
        except BaseException:
            conn.close()
            raise
        return conn

    def use(self, work: Callable[[sqlite3.Connection], T]) -> T | None:
        """``work(connection)``; None when the store is off or a database error switched it off."""
        if not self.enabled or time.monotonic() < self._reads_off_until:
            return None
        with self._lock:
            if self._conn is None:
                conn = self._guard(self._open_reader)
                if conn is None:
                    return None
                self._conn = conn
            found = self._conn
            return self._guard(lambda: work(found))

    def _open_reader(self) -> sqlite3.Connection | None:
        if not self.background:
            return self._open(BUSY_TIMEOUT_MS)
        # An engine's reads run on its event loop: they never wait for a lock (a locked
        # database is a cache miss, warned about once) and never create the file or its
        # tables, which the writer thread does, off the loop.
        if not self.path.exists():
            return None
        conn = sqlite3.connect(
            self.path, timeout=READ_WAIT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {READ_WAIT_MS}")
        conn.execute(f"PRAGMA cache_size = {CACHE_KIB}")
        return conn

    def write(self, work: Work, after: Callable[[], None] | None = None) -> None:
        """Make a write that must not be lost: queued when ``background``, else made now.

        ``work(connection)`` runs inside a transaction the store opens and commits, together
        with other queued writes; ``after()`` is called once that transaction has ended.
        """
        if not self.enabled:
            if after is not None:
                after()
            return
        if not self.background:
            self._write_now([(work, after)])
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_loop, name="flowengine-store", daemon=True
            )
            self._thread.start()
        if len(self._waiting) >= MAX_WAITING:
            self._wait_for_room()
        self._waiting.append((work, after))
        if not self._wake.is_set():
            self._wake.set()

    def _wait_for_room(self) -> None:
        deadline = time.monotonic() + ROOM_WAIT_S
        with self._idle:
            while len(self._waiting) > MAX_WAITING // 2 and time.monotonic() < deadline:
                self._wake.set()
                self._idle.wait(GATHER_S)

    def flush(self) -> None:
        """Wait until every queued write is made."""
        if self._thread is None:
            return
        with self._idle:
            while self._waiting or self._writing:
                self._wake.set()
                self._idle.wait(GATHER_S)

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            if not self._closing:
                # Let writes gather for a moment: one transaction then makes many, and the
                # event loop is not held up by a thread that wakes for every single write.
                time.sleep(GATHER_S)
            self._wake.clear()
            # Set before any write is taken: flush() sees each write waiting or being made.
            self._writing = True
            try:
                while self._waiting:
                    count = min(len(self._waiting), WRITE_BATCH)
                    batch = [self._waiting.popleft() for _ in range(count)]
                    try:
                        if self.enabled:
                            self._write_now(batch)
                        else:
                            _run_afters(batch)
                    except Exception:  # a fault here must not stop the writes after it
                        log.exception("%s: a batch of writes failed", self.path)
                    with self._idle:
                        self._idle.notify_all()  # room for a write() waiting for some
            finally:
                with self._idle:
                    self._writing = False
                    self._idle.notify_all()
            if self._closing and not self._waiting:
                return

    def _write_now(self, batch: list[Queued]) -> None:
        """Make ``batch`` in one transaction; a write that fails alone is skipped and logged,
        so one bad value never stops the writer or loses the other writes."""
        try:
            if time.monotonic() < self._busy_until:
                return
            with self._write_lock:
                if self._writer is None:
                    self._writer = self._guard(lambda: self._open(WRITE_TIMEOUT_MS), write=True)
                writer = self._writer
                if writer is not None:
                    work = [w for w, _ in batch]
                    self._guard(lambda: self._transaction(writer, work), write=True)
        finally:
            _run_afters(batch)

    def _transaction(self, db: sqlite3.Connection, batch: list[Work]) -> None:
        db.execute("BEGIN")
        try:
            for work in batch:
                # A write of several statements makes itself whole or nothing (records.py).
                try:
                    work(db)
                except (ValueError, TypeError, OverflowError, sqlite3.InterfaceError) as exc:
                    log.warning("%s: a write was skipped: %s", self.path, exc)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _guard(self, work: Callable[[], T], *, write: bool = False) -> T | None:
        """``work()``, with database errors turned into a warning and a skipped operation."""
        try:
            return work()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # read before the writer made the tables: a miss
                return None
            if not _is_busy(exc):
                self.disable(_describe(exc))
                return None
            # Another process holds the lock: skip this read or write, keep the store.
            self.error = _describe(exc)
            if write:
                self._busy_until = time.monotonic() + BUSY_BACKOFF_S
            elif self.background:
                self._reads_off_until = time.monotonic() + BUSY_BACKOFF_S
            if self.warn and not self._warned_busy:
                self._warned_busy = True
                log.warning("%s: %s; skipping some cache reads and writes", self.path, self.error)
        except sqlite3.DatabaseError as exc:
            self.disable(_describe(exc))
        except OSError as exc:
            self.disable(f"cannot open: {exc.strerror or exc}")
        return None

    def close(self) -> None:
        """Make the queued writes, stop the writer, close the connections."""
        if self._thread is not None:
            self._closing = True
            self._wake.set()
            self._thread.join()
            self._thread = None
            self._closing = False
        with self._lock, self._write_lock:
            for conn in (self._conn, self._writer):
                if conn is not None:
                    conn.close()
            self._conn = self._writer = None


def _run_afters(batch: list[Queued]) -> None:
    for _, after in batch:
        if after is not None:
            after()


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
