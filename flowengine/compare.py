"""Side-by-side comparison of a run's responses, with a recommendation and the reason for it."""

from __future__ import annotations

from typing import Any

from flowengine.results import CallResult, RunResult, call_from, to_jsonable


def calls_in(output: Any) -> list[CallResult]:
    """The call results in a node's output: a call, a fanout's list, or their JSON form."""
    if isinstance(output, CallResult):
        return [output]
    if isinstance(output, dict) and {"model", "content", "success"} <= output.keys():
        return [call_from(output)]
    if isinstance(output, list):
        return [c for item in output for c in calls_in(item)]
    return []


def response_calls(result: RunResult) -> list[CallResult]:
    """The model calls whose results a run's nodes hold, in node order: the responses
    :func:`compare` shows (a judge's and a router's own calls are not among them)."""
    return [call for node in result.nodes.values() for call in calls_in(node.output)]


def _card(stage: int, node: str, call: CallResult) -> dict[str, Any]:
    content = call.content or ""
    return {
        "stage": stage,
        "node": node,
        "model": call.model,
        "model_id": call.model_id,
        "success": call.success,
        "length": len(content),
        "words": len(content.split()),
        "latency_s": call.latency_s,
        "tokens": call.usage.total_tokens,
        "cost": call.usage.cost,
        "confidence": call.confidence,
        "quality": call.quality,
        "cached": call.cached,
        "content": content,
        "error": to_jsonable(call.error),
    }


def compare(result: RunResult) -> dict[str, Any]:
    """Every response of a run as a card, and the one recommended, saying why.

    The dict is ready for a UI: ``{"run_id", "workflow", "status", "responses": [card...],
    "recommended": {"node", "model", "reason"} | None, "skipped": {node: reason}}``; each card
    has node, model, length, words, latency_s, tokens, cost, confidence, quality, success,
    cached, content and error. A skipped node made no calls, so it has no card.
    """
    cards: list[dict[str, Any]] = []
    for stage, (node_id, node) in enumerate(result.nodes.items()):
        cards.extend(_card(stage, node_id, call) for call in calls_in(node.output))
    return {
        "run_id": result.run_id,
        "workflow": result.workflow,
        "status": result.status,
        "responses": cards,
        "recommended": recommend(cards),
        "skipped": {n: r.reason for n, r in result.nodes.items() if r.status == "skipped"},
    }


def recommend(cards: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The highest quality a judge gave wins; else the highest selector confidence; else the
    most complete answer of the last stage. Ties go to the earlier response."""
    ok = [c for c in cards if c["success"] and c["content"]]
    if not ok:
        return None
    judged = [c for c in ok if c["quality"] is not None]
    scored = [c for c in ok if c["confidence"] is not None]
    if judged:
        best = max(judged, key=lambda c: c["quality"])
        reason = (
            f"highest quality a judge gave ({best['quality']:.2f} of 1) of the "
            f"{len(judged)} judged responses"
        )
    elif scored:
        best = max(scored, key=lambda c: (c["confidence"], -c["latency_s"]))
        reason = (
            f"highest selector confidence ({best['confidence']:.3f}) of the {len(scored)} "
            "responses that have a score"
        )
    else:
        last = max(c["stage"] for c in ok)
        stage = [c for c in ok if c["stage"] == last]
        best = max(stage, key=lambda c: (c["words"], -c["latency_s"]))
        reason = (
            f"no response has a confidence score; '{best['node']}' is the last stage of the "
            "run, which builds on the earlier responses"
        )
        if len(stage) > 1:
            reason += f", and this is the most complete of its {len(stage)} responses"
    return {"node": best["node"], "model": best["model"], "reason": reason}
