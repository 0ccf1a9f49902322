"""Self-contained HTML reports: one recorded run, or one batch output file.

A report is one file with its styles inline and no script: it opens from disk, with no
network and with JavaScript off, and shows the same sections as the web UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from flowengine.errors import FlowEngineError
from flowengine.store.records import RunRecord, graph_of
from flowengine.web.batch_view import MAX_ROWS, read_batch
from flowengine.web.run_view import RunView, run_view
from flowengine.web.views import render


def run_report(record: RunRecord) -> str:
    """The report page of a stored run."""
    return render("run.html.j2", view=record_view(record), generated=_now())


def record_view(record: RunRecord) -> RunView:
    """The view of a stored run, its graph drawn from the record, or for a record from before
    runs kept their graph, from its workflow file if that is unchanged."""
    graph = record.graph
    needs = {n: s["needs"] for n, s in graph.items()} if graph else workflow_needs(record)
    return run_view(
        record.result,
        record.timeline,
        needs,
        kinds={n: s["type"] for n, s in graph.items()} if graph else None,
        file=record.file,
        content_hash=record.content_hash,
    )


def batch_report(path: Path) -> str:
    """The report page of a batch output file (JSON lines), reading a bounded part of it."""
    return render("batch.html.j2", view=read_batch(path), max_rows=MAX_ROWS, generated=_now())


def workflow_needs(record: RunRecord) -> dict[str, Sequence[str]] | None:
    """Each node's needs, from the run's workflow file if it is still the one that ran (same
    SHA-256); None when it has changed, moved or no longer loads. A loop's nodes are named by
    their path (``refine.critique``), see :func:`flowengine.web.dag.run_needs`."""
    from flowengine.language.workflow import Workflow

    if not record.file or not record.content_hash:
        return None
    try:
        workflow = Workflow.load(record.file)
    except (OSError, FlowEngineError):
        return None
    if workflow.content_hash != record.content_hash:
        return None
    return {n: s["needs"] for n, s in graph_of(workflow.spec.nodes).items()}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
