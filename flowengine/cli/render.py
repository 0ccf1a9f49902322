"""Text for people: progress lines from events, and a run's responses as readable cards."""

from __future__ import annotations

import shutil
import textwrap
from typing import Any

from flowengine.events import Event
from flowengine.results import RunResult


def format_event(event: Event) -> str | None:
    """One progress line for stderr, or None for events not worth a line."""
    node = event.node or ""
    if event.kind == "node_started":
        return f"  ▸ {node}"
    if event.kind == "node_finished":
        return f"  ✓ {node} ({event.duration_s:.2f}s)"
    if event.kind == "node_failed":
        message = event.error.message if event.error else "failed"
        return f"  ✗ {node}: {message}"
    if event.kind == "node_skipped":
        return f"  – {node} skipped: {event.reason}"
    if event.kind == "selector_fallback":
        return f"  ↪ {node}: fell back to {event.model}: {event.reason}"
    if event.kind == "call_retried":
        error = event.error
        why = (
            f"{error.type}{f' {error.status}' if error and error.status is not None else ''}"
            if error
            else "error"
        )
        return (
            f"  ↻ {node}/{event.model}: attempt {event.attempt} failed ({why}), "
            f"retrying in {event.delay_s:.1f}s"
        )
    if event.kind == "call_finished" and event.status == "failed" and event.error:
        return f"  ✗ {node}/{event.model}: {event.error.message}"
    return None


def _is_call(value: Any) -> bool:
    return (
        isinstance(value, dict) and "content" in value and "model" in value and "success" in value
    )


def _card(title: str, call: dict[str, Any], width: int) -> list[str]:
    facts = [f"{call['model']} ({call.get('model_id', '?')})"]
    if call.get("confidence") is not None:
        facts.append(f"confidence {call['confidence']:.3f}")
    if call.get("quality") is not None:
        facts.append(f"quality {call['quality']:.2f}")
    facts.append(f"{call.get('latency_s', 0):.2f}s")
    tokens = (call.get("usage") or {}).get("total_tokens")
    if tokens:
        facts.append(f"{tokens} tokens")
    if call.get("cached"):
        facts.append("cached")
    head = f"── {title} · " + " · ".join(facts) + " "
    lines = [head + "─" * max(0, width - len(head))]
    if call.get("success"):
        body = call.get("content") or ""
        for paragraph in body.splitlines() or [""]:
            lines.extend(textwrap.wrap(paragraph, width) or [""])
    else:
        error = call.get("error") or {}
        lines.append(f"FAILED: {error.get('type', 'error')}: {error.get('message', '')}")
    lines.append("")
    return lines


def _value_lines(title: str, value: Any, width: int) -> list[str]:
    """A value of the output as cards: a call, a list of calls, a loop's rounds, or text."""
    lines: list[str] = []
    if _is_call(value):
        lines.extend(_card(title, value, width))
    elif isinstance(value, list) and value and all(_is_call(v) for v in value):
        for i, item in enumerate(value, 1):
            lines.extend(_card(f"{title} {i}/{len(value)}", item, width))
    elif _is_judge(value):
        lines.extend(_judge_card(title, value, width))
    elif _is_loop(value):
        lines.extend(_loop_lines(title, value, width))
    elif value is not None:
        lines.append(f"── {title} " + "─" * max(0, width - len(title) - 4))
        lines.append(str(value))
        lines.append("")
    return lines


def _is_loop(value: Any) -> bool:
    return isinstance(value, dict) and {"rounds", "last", "stopped", "capped"} <= value.keys()


def _loop_lines(title: str, loop: dict[str, Any], width: int) -> list[str]:
    """Each round's outputs, titled ``refine[2].critique``, then how the loop ended."""
    lines: list[str] = []
    rounds = loop["rounds"] or []
    for number, outputs in enumerate(rounds, 1):
        for node_id, value in (outputs or {}).items():
            lines.extend(_value_lines(f"{title}[{number}].{node_id}", value, width))
    count = f"{len(rounds)} round{'s' if len(rounds) != 1 else ''}"
    ended = {
        "condition": f"{count}: stopped when `until` held",
        "cap": f"{count}: reached max_rounds, capped",
        "failure": f"{count}: stopped by a failure in round {len(rounds)}",
    }.get(str(loop["stopped"]), f"{count} finished")
    lines.append(f"── {title}: {ended}")
    lines.append("")
    return lines


def _is_judge(value: Any) -> bool:
    return isinstance(value, dict) and {"best", "ranking", "candidates", "judges"} <= value.keys()


def _judge_card(title: str, judge: dict[str, Any], width: int) -> list[str]:
    """A judge's ranking: each answer's quality and scores, then each judge's reason."""
    low, high = judge["scale"]
    head = f"── {title} · by {', '.join(judge['judges'])} · scale {low:g}-{high:g} "
    lines = [head + "─" * max(0, width - len(head))]
    for answer in judge["candidates"]:
        scores = " · ".join(f"{name} {score:.3g}" for name, score in answer["scores"].items())
        lines.append(
            f"{answer['rank']}. {answer['model']} ({answer['letter']}) · quality "
            f"{answer['quality']:.2f} · mean {answer['score']:.3g} · {scores}"
        )
        for verdict in answer["verdicts"]:
            text = f"{verdict['judge']}: {verdict['reason']}"
            lines.extend(textwrap.wrap(text, width, initial_indent="   ", subsequent_indent="   "))
    for model, error in judge["failed_judges"].items():
        lines.append(f"left out: {model} failed: {error['type']}: {error['message']}")
    lines.append("")
    return lines


def render_text(result: RunResult) -> str:
    """The run's responses as cards (model, confidence, latency, content), then a summary."""
    width = min(100, shutil.get_terminal_size((100, 20)).columns)
    lines: list[str] = []
    output = result.output if isinstance(result.output, dict) else {"output": result.output}
    for key, value in output.items():
        if key != "metadata":
            lines.extend(_value_lines(key, value, width))
    for node_id, node in result.nodes.items():
        if node.status == "skipped":  # records from before reasons were kept have none
            lines.append(f"– {node_id} skipped" + (f": {node.reason}" if node.reason else ""))
    meta = result.metadata
    cost = f"${meta.cost:.6f}" if meta.cost is not None else "cost unknown"
    confidence = (
        f" · selector confidence {meta.model_selector_confidence:.3f}"
        if meta.model_selector_confidence is not None
        else ""
    )
    lines.append(
        f"{result.workflow} {result.status} in {meta.total_time:.2f}s · {meta.calls} calls "
        f"({meta.concurrent_calls} at once) · {meta.tokens} tokens · {cost}{confidence}"
    )
    if result.error:
        lines.append(f"error: {result.error.type}: {result.error.message}")
    return "\n".join(lines) + "\n"


def render_comparison(data: dict[str, Any]) -> str:
    """The comparison as a plain-text table and the recommendation."""
    head = ("node", "model", "ok", "words", "latency", "tokens", "cost", "confidence", "quality")
    rows = [head]
    for c in data["responses"]:
        rows.append(
            (
                c["node"],
                c["model"],
                "yes" if c["success"] else "NO",
                str(c["words"]),
                f"{c['latency_s']:.2f}s",
                "-" if c["tokens"] is None else str(c["tokens"]),
                "-" if c["cost"] is None else f"${c['cost']:.6f}",
                "-" if c["confidence"] is None else f"{c['confidence']:.3f}",
                "-" if c["quality"] is None else f"{c['quality']:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    rec = data["recommended"]
    lines.append("")
    for node_id, reason in data["skipped"].items():
        lines.append(f"skipped: {node_id}" + (f" ({reason})" if reason else ""))
    if rec:
        lines.append(f"recommended: {rec['model']} ({rec['node']}): {rec['reason']}")
    else:
        lines.append("recommended: none: no response succeeded")
    return "\n".join(lines) + "\n"
