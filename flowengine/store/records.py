"""Run records: every run's full result, its workflow's hash and graph, rendered prompts and
call timeline.

A run's graph (each node's kind and needs) is kept beside its result, in a table of its own,
so that a page can draw the run without its workflow file. Records from before it have none.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flowengine.errors import UsageError, did_you_mean
from flowengine.results import RunResult
from flowengine.spec import LoopNode, NodeSpec
from flowengine.store.db import Store

#: Each node's ``{"type": kind, "needs": [...]}``, loops' nodes by their path (``refine.revise``).
Graph = dict[str, dict[str, Any]]


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
    #: The messages sent, as JSON (encoded once per call, see ``ChatRequest.encoded_messages``).
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


def graph_of(nodes: Mapping[str, NodeSpec], prefix: str = "") -> Graph:
    """The graph of a workflow's ``nodes``, in file order; a loop's nodes follow the loop."""
    found: Graph = {}
    for node_id, node in nodes.items():
        found[prefix + node_id] = {"type": node.type, "needs": list(node.needs)}
        if isinstance(node, LoopNode):
            found.update(graph_of(node.nodes, f"{prefix}{node_id}."))
    return found


def save_run(
    store: Store,
    result: RunResult,
    file: str,
    content_hash: str,
    timeline: list[CallRecord],
    graph: Graph | None = None,
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
        nodes = json.dumps(graph, separators=(",", ":")) if graph is not None else None
        db.execute("SAVEPOINT run")  # the run and its calls, whole or not at all
        try:
            db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            db.executemany(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", calls
            )
            if nodes is not None:
                db.execute("INSERT OR REPLACE INTO graphs VALUES (?, ?)", (result.run_id, nodes))
        except BaseException:
            db.execute("ROLLBACK TO run")
            raise
        finally:
            db.execute("RELEASE run")

    store.write(write)


def list_runs(store: Store, limit: int = 20, workflow: str | None = None) -> list[RunSummary]:
    """The most recent runs first."""
    columns = "run_id, workflow, status, started_at, total_time, calls, cost"
    return [RunSummary(*row) for row in _newest(store, columns, limit, workflow)]


def recent_results(store: Store, limit: int = 100, workflow: str | None = None) -> list[RunResult]:
    """The results of the most recent runs, newest first (for statistics across runs)."""
    rows = _newest(store, "result", limit, workflow)
    return [RunResult.model_validate_json(row[0]) for row in rows]


def _newest(store: Store, columns: str, limit: int, workflow: str | None) -> list[Any]:
    """``columns`` of the newest ``limit`` runs (of ``workflow``, if given), newest first."""
    if not store.path.exists():
        return []
    where, args = ("WHERE workflow = ?", (workflow,)) if workflow else ("", ())
    sql = f"SELECT {columns} FROM runs {where} ORDER BY started_at DESC LIMIT ?"
    return store.use(lambda db: db.execute(sql, (*args, limit)).fetchall()) or []


@dataclass(frozen=True)
class RunRecord:
    result: RunResult
    file: str | None
    content_hash: str | None
    timeline: list[CallRecord]
    #: The workflow's graph as it ran; None for a record from before runs kept it.
    graph: Graph | None = None


def load_run(store: Store, run_id: str) -> RunRecord:
    """A stored run by id or unique id prefix; UsageError when there is none."""

    def read(db: sqlite3.Connection) -> tuple[Any, list[Any], Any] | None:
        rows = db.execute(
            "SELECT run_id, file, content_hash, result FROM runs "
            "WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2",
            (_like_prefix(run_id),),
        ).fetchall()
        if len(rows) != 1:
            return (len(rows), [], None) if rows else None
        calls = db.execute(
            "SELECT node, model, started, ended, attempts, status, cached, messages "
            "FROM calls WHERE run_id = ? ORDER BY seq",
            (rows[0][0],),
        ).fetchall()
        graph = db.execute("SELECT nodes FROM graphs WHERE run_id = ?", (rows[0][0],)).fetchone()
        return rows[0], calls, graph

    found = store.use(read) if store.path.exists() else None
    if found is None:
        recent = [r.run_id for r in list_runs(store, limit=50)]
        fix = did_you_mean(run_id, recent) or "list stored runs with `flowengine runs list`"
        raise UsageError(f"no stored run '{run_id}' in {store.path}", fix)
    head, calls, graph = found
    if isinstance(head, int):
        raise UsageError(f"run id prefix '{run_id}' matches several runs", "give more characters")
    _, file, content_hash, result = head
    timeline = [
        CallRecord(n, m, s, e, a, st, bool(c), msgs) for n, m, s, e, a, st, c, msgs in calls
    ]
    nodes: Graph | None = json.loads(graph[0]) if graph else None
    return RunRecord(RunResult.model_validate_json(result), file, content_hash, timeline, nodes)


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching ``text`` literally, as a prefix."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
