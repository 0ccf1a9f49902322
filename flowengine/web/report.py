"""Self-contained HTML reports: one recorded run, or one batch output file.

A report is one file with its styles inline and no script: it opens from disk, with no
network and with JavaScript off, and shows the same sections as the web UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from flowengine.errors import FlowEngineError
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
    SHA-256); None when it has changed, moved or no longer loads."""
    from flowengine.language.workflow import Workflow

    if not record.file or not record.content_hash:
        return None
    try:
        workflow = Workflow.load(record.file)
    except (OSError, FlowEngineError):
        return None
    if workflow.content_hash != record.content_hash:
        return None
    dag = workflow.dag
    return {node: dag.needs[node] for node in dag.nodes}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
