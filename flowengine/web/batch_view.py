"""What a page shows of a batch output file, read within fixed bounds.

An output file may hold millions of rows. The page keeps at most :data:`MAX_ROWS` rows that
did not succeed and as many that did, each cut to a short summary, and counts every row; a
line longer than :data:`MAX_LINE` bytes is counted as unreadable, never held whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from flowengine.errors import UsageError

MAX_ROWS = 1000
MAX_LINE = 4 * 1024 * 1024
MAX_NODES = 40
#: Characters of a row's inputs, answer or error that the table shows.
SHOWN = 160


@dataclass(frozen=True)
class RowView:
    row: int | None
    line: int | None
    status: str
    run_id: str | None
    #: Each node's state: from the row's ``nodes`` where it has them, else its ``skipped``.
    nodes: dict[str, str]
    inputs: str
    answer: str
    error: str


@dataclass
class BatchView:
    path: str
    #: Rows that did not succeed, then rows that did, each by row number.
    rows: list[RowView] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    unreadable: int = 0
    left_out: int = 0


def read_batch(path: Path) -> BatchView:
    """The batch output at ``path``; UsageError when it cannot be read."""
    view = BatchView(str(path))
    failed: list[RowView] = []
    succeeded: list[RowView] = []
    try:
        with path.open("rb") as handle:
            for raw in _lines(handle):
                row = _row(raw)
                if row is None:
                    view.unreadable += 1
                    continue
                view.total += 1
                view.counts[row.status] = view.counts.get(row.status, 0) + 1
                kept = succeeded if row.status == "succeeded" else failed
                if len(kept) < MAX_ROWS:
                    kept.append(row)
                else:
                    view.left_out += 1
    except OSError as exc:
        raise UsageError(
            f"{path}: cannot read the batch output ({exc.strerror or exc})",
            "name the file `flowengine batch --output` wrote",
        ) from exc
    view.rows = sorted(failed, key=_by_row) + sorted(succeeded, key=_by_row)
    seen = dict.fromkeys(node for row in view.rows for node in row.nodes)
    view.nodes = list(seen)[:MAX_NODES]
    return view


def _by_row(row: RowView) -> tuple[bool, int]:
    return row.row is None, row.row or 0


def _lines(handle: BinaryIO) -> Iterator[bytes]:
    """Each line of at most MAX_LINE bytes; a longer one is skipped to its end and yields b""."""
    while True:
        raw = handle.readline(MAX_LINE + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield b""
            continue
        if raw.strip():
            yield raw


def _row(raw: bytes) -> RowView | None:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("status"), str):
        return None
    error = record.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return RowView(
        row=_int(record.get("row")),
        line=_int(record.get("line")),
        status=record["status"][:20],
        run_id=record["run_id"] if isinstance(record.get("run_id"), str) else None,
        nodes=_node_states(record),
        inputs=_short(record.get("inputs")),
        answer=_short(_answer(record.get("output"))),
        error=_short(message) if message else "",
    )


def _node_states(record: dict[str, Any]) -> dict[str, str]:
    nodes = record.get("nodes")
    if isinstance(nodes, dict):
        return {str(n): str(s)[:20] for n, s in list(nodes.items())[:MAX_NODES]}
    skipped = record.get("skipped")
    if isinstance(skipped, dict):  # written before rows had their nodes' states
        return {str(n): "skipped" for n in list(skipped)[:MAX_NODES]}
    return {}


def _answer(output: Any) -> Any:
    """What a row answered: its output's first answer's text where it has one (the shipped
    workflows' ``{"primary_response": {..., "content"}}``), else the output itself."""
    if isinstance(output, dict) and output:
        first = next(iter(output.values()))
        if isinstance(first, dict) and isinstance(first.get("content"), str):
            return first["content"]
    return output


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"
