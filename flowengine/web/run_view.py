"""What a page shows of one recorded run, worked out once for every view of it.

The figures come from the run's result and its call timeline; the comparison is
:func:`flowengine.compare.compare`'s, so that the report, the web UI and ``flowengine compare``
recommend the same answer for the same reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowengine.compare import compare
from flowengine.results import NodeResult, RunResult, to_jsonable
from flowengine.store.records import CallRecord
from flowengine.web.dag import Layout, layout, node_path, run_needs

#: The most characters of the raw result a page holds: the cards and prompts show the rest.
RAW_LIMIT = 1_000_000

#: The shortest bar drawn on a timeline, in percent of its width, so that a cache hit shows.
THINNEST_BAR = 0.6


@dataclass(frozen=True)
class Bar:
    """One call on the timeline; ``left`` and ``width`` are percentages of the run's span."""

    index: int
    node: str
    model: str
    status: str
    cached: bool
    attempts: int
    start_s: float
    duration_s: float
    left: float
    width: float
    messages: list[dict[str, Any]]


@dataclass(frozen=True)
class NodeView:
    node: str
    #: The node's type (``llm``, ``fanout``...); None when the run's graph is not known.
    kind: str | None
    status: str
    duration_s: float | None
    detail: str | None
    calls: int


@dataclass
class RunView:
    result: RunResult
    file: str | None
    content_hash: str | None
    #: False when the run's graph is not known: the DAG then shows no edges.
    has_graph: bool
    nodes: list[NodeView]
    dag: Layout
    bars: list[Bar]
    span_s: float
    comparison: dict[str, Any]
    #: The timeline index of the call behind each response card, where one matches.
    card_calls: list[int | None] = field(default_factory=list)

    @property
    def raw_json(self) -> str:
        """The result as JSON, cut at :data:`RAW_LIMIT` characters (saying where it is whole)."""
        text = json.dumps(self.result.model_dump(mode="json"), indent=2, ensure_ascii=False)
        if len(text) <= RAW_LIMIT:
            return text
        return (
            f"{text[:RAW_LIMIT]}\n… cut here: {len(text) - RAW_LIMIT:,} more characters; "
            f"`flowengine runs show {self.result.run_id}` prints it whole"
        )

    @property
    def started_at(self) -> str | None:
        found = [n.started_at for n in self.result.nodes.values() if n.started_at]
        return min(found).isoformat(timespec="seconds") if found else None

    @property
    def ticks(self) -> list[tuple[float, float]]:
        """Marks on the time axis: (percent, seconds)."""
        return [(p, self.span_s * p / 100) for p in (0, 25, 50, 75, 100)]


def run_view(
    result: RunResult,
    timeline: Sequence[CallRecord],
    needs: Mapping[str, Sequence[str]] | None = None,
    *,
    kinds: Mapping[str, str] | None = None,
    file: str | None = None,
    content_hash: str | None = None,
) -> RunView:
    """The view of one run: ``needs`` and ``kinds`` are its workflow's, by node (a loop's nodes
    by their path, ``refine.revise``), where known."""
    order = _in_file_order(list(result.nodes), needs)
    bars, span = _bars(timeline)
    comparison = compare(result)
    return RunView(
        result=result,
        file=file,
        content_hash=content_hash,
        has_graph=needs is not None,
        nodes=[
            _node_view(node_id, node, bars, (kinds or {}).get(node_path(node_id)))
            for node_id, node in result.nodes.items()
        ],
        dag=layout(order, run_needs(order, needs or {})),
        bars=bars,
        span_s=span,
        comparison=comparison,
        card_calls=_match_calls(comparison["responses"], bars),
    )


def _in_file_order(nodes: list[str], needs: Mapping[str, Sequence[str]] | None) -> list[str]:
    """The result lists nodes as they finished; the file's order reads better where known."""
    if needs is None:
        return nodes
    return [n for n in needs if n in nodes] + [n for n in nodes if n not in needs]


def _node_view(node_id: str, node: NodeResult, bars: list[Bar], kind: str | None) -> NodeView:
    detail = node.reason if node.status == "skipped" else None
    if node.error is not None:
        detail = node.error.message
    calls = sum(1 for bar in bars if bar.node == node_id)
    return NodeView(node_id, kind, node.status, node.duration_s, detail, calls)


def _bars(timeline: Sequence[CallRecord]) -> tuple[list[Bar], float]:
    if not timeline:
        return [], 0.0
    start = min(call.started for call in timeline)
    span = max(max(call.ended for call in timeline) - start, 1e-6)
    bars = []
    for index, call in enumerate(sorted(timeline, key=lambda c: c.started)):
        duration = max(call.ended - call.started, 0.0)
        left = 100 * (call.started - start) / span
        bars.append(
            Bar(
                index=index,
                node=call.node,
                model=call.model,
                status=call.status,
                cached=call.cached,
                attempts=call.attempts,
                start_s=call.started - start,
                duration_s=duration,
                left=round(left, 3),
                width=round(min(max(100 * duration / span, THINNEST_BAR), 100 - left), 3),
                messages=_messages(call),
            )
        )
    return bars, span


def _messages(call: CallRecord) -> list[dict[str, Any]]:
    try:
        found = call.messages
    except ValueError:  # a record written by hand, or cut short: show nothing rather than fail
        return []
    return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []


def _match_calls(cards: list[dict[str, Any]], bars: list[Bar]) -> list[int | None]:
    """Each card's call: the first call of its node and model not yet matched, in time order."""
    free = list(bars)
    matched: list[int | None] = []
    for card in cards:
        bar = next((b for b in free if (b.node, b.model) == (card["node"], card["model"])), None)
        if bar is not None:
            free.remove(bar)
        matched.append(bar.index if bar else None)
    return matched


def plain(value: Any) -> str:
    """A value of a result as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable(value), indent=2, ensure_ascii=False, default=str)
