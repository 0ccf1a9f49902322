"""Run records: every run's full result, its workflow's hash, rendered prompts and call timeline."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flowengine.errors import UsageError, did_you_mean
from flowengine.results import RunResult
from flowengine.store.db import Store


@dataclass(slots=True)
class CallRecord:
    """One call on a run's timeline; times are seconds since the epoch."""

    node: str
    model: str
    started: float
    ended: float
    attempts: int
    status: str
    cached: bool
    #: The messages sent, as JSON (encoded once per call, see ``store.cache.encode_messages``).
    messages_json: str

    @property
    def messages(self) -> list[dict[str, str]]:
        found: list[dict[str, str]] = json.loads(self.messages_json)
        return found

    def as_dict(self) -> dict[str, Any]:
        """The call as JSON data, with its messages decoded."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del data["messages_json"]
        return {**data, "messages": self.messages}


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    workflow: str
    status: str
    started_at: str
    total_time: float | None
    calls: int | None
    cost: float | None


def save_run(
    store: Store, result: RunResult, file: str, content_hash: str, timeline: list[CallRecord]
) -> None:
    """Store a run (succeeded, partial or failed) with everything needed to inspect it later.

    The result is encoded as JSON by the store's writer thread, off the event loop: nothing
    changes a result once its run has returned it.
    """
    # Nodes are listed in the order they finished: the run began when its first node started.
    first = min((n.started_at for n in result.nodes.values() if n.started_at), default=None)
    if first is None:
        first = datetime.now(UTC) - timedelta(seconds=result.metadata.total_time)
    started = first.isoformat()

    def write(db: sqlite3.Connection) -> None:
        row = (
            result.run_id,
            result.workflow,
            file,
            content_hash,
            result.status,
            started,
            result.metadata.total_time,
            result.metadata.calls,
            result.metadata.cost,
            result.model_dump_json(),
        )
        calls = [
            (
                result.run_id,
                seq,
                c.node,
                c.model,
                c.started,
                c.ended,
                c.attempts,
                c.status,
                int(c.cached),
                c.messages_json,
            )
            for seq, c in enumerate(timeline)
        ]
        db.execute("SAVEPOINT run")  # the run and its calls, whole or not at all
        try:
            db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            db.executemany(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", calls
            )
        except BaseException:
            db.execute("ROLLBACK TO run")
            raise
        finally:
            db.execute("RELEASE run")

    store.write(write)


def list_runs(store: Store, limit: int = 20, workflow: str | None = None) -> list[RunSummary]:
    """The most recent runs first."""
    if not store.path.exists():
        return []
    sql = "SELECT run_id, workflow, status, started_at, total_time, calls, cost FROM runs"
    args: tuple[Any, ...] = ()
    if workflow:
        sql += " WHERE workflow = ?"
        args = (workflow,)
    sql += " ORDER BY started_at DESC LIMIT ?"
    rows = store.use(lambda db: db.execute(sql, (*args, limit)).fetchall()) or []
    return [RunSummary(*row) for row in rows]


@dataclass(frozen=True)
class RunRecord:
    result: RunResult
    file: str | None
    content_hash: str | None
    timeline: list[CallRecord]


def load_run(store: Store, run_id: str) -> RunRecord:
    """A stored run by id or unique id prefix; UsageError when there is none."""

    def read(db: sqlite3.Connection) -> tuple[Any, list[Any]] | None:
        rows = db.execute(
            "SELECT run_id, file, content_hash, result FROM runs "
            "WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2",
            (_like_prefix(run_id),),
        ).fetchall()
        if len(rows) != 1:
            return (len(rows), []) if rows else None
        calls = db.execute(
            "SELECT node, model, started, ended, attempts, status, cached, messages "
            "FROM calls WHERE run_id = ? ORDER BY seq",
            (rows[0][0],),
        ).fetchall()
        return rows[0], calls

    found = store.use(read) if store.path.exists() else None
    if found is None:
        recent = [r.run_id for r in list_runs(store, limit=50)]
        fix = did_you_mean(run_id, recent) or "list stored runs with `flowengine runs list`"
        raise UsageError(f"no stored run '{run_id}' in {store.path}", fix)
    head, calls = found
    if isinstance(head, int):
        raise UsageError(f"run id prefix '{run_id}' matches several runs", "give more characters")
    _, file, content_hash, result = head
    timeline = [
        CallRecord(n, m, s, e, a, st, bool(c), msgs) for n, m, s, e, a, st, c, msgs in calls
    ]
    return RunRecord(RunResult.model_validate_json(result), file, content_hash, timeline)


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching ``text`` literally, as a prefix."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
