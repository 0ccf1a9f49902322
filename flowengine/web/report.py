"""Self-contained HTML reports: one recorded run, or one batch output file.

A report is one file with its styles inline and no script: it opens from disk, with no
network and with JavaScript off, and shows the same sections as the web UI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from flowengine.errors import FlowEngineError
from flowengine.spec import LoopNode, NodeSpec
from flowengine.store.records import RunRecord
from flowengine.web.batch_view import MAX_ROWS, read_batch
from flowengine.web.run_view import run_view
from flowengine.web.views import render


def run_report(record: RunRecord, needs: dict[str, Sequence[str]] | None = None) -> str:
    """The report page of a stored run; ``needs`` default to its workflow file's, if unchanged."""
    if needs is None:
        needs = workflow_needs(record)
    view = run_view(
        record.result,
        record.timeline,
        needs,
        file=record.file,
        content_hash=record.content_hash,
    )
    return render("run.html.j2", view=view, generated=_now())


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
    return _needs_of(workflow.spec.nodes, "")


def _needs_of(nodes: Mapping[str, NodeSpec], prefix: str) -> dict[str, Sequence[str]]:
    found: dict[str, Sequence[str]] = {}
    for node_id, node in nodes.items():
        found[prefix + node_id] = tuple(node.needs)
        if isinstance(node, LoopNode):
            found.update(_needs_of(node.nodes, f"{prefix}{node_id}."))
    return found


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
