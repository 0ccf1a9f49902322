"""The select node: ask the selector service which model should answer, or take the top weight."""

from __future__ import annotations

from flowengine.errors import CallError
from flowengine.results import ErrorInfo, SelectResult
from flowengine.run.context import NodeContext, NodeFailure
from flowengine.run.nodes.router import route
from flowengine.spec import LlmSelector, SelectNode


async def run(ctx: NodeContext) -> SelectResult:
    spec = ctx.spec
    assert isinstance(spec, SelectNode)
    if not spec.candidates:
        candidates = list(ctx.allowed)  # already by weight
    else:
        candidates = ctx.by_weight(a for a in spec.candidates if a in ctx.allowed)
    if not candidates:
        raise NodeFailure(ErrorInfo(type="select", message="no candidate models to choose from"))
    if spec.selector is None:
        return _chosen(ctx, SelectResult(model=candidates[0], source="weight"))
    if ctx.offline:
        return _fallback(ctx, candidates, "offline run: the selector is not asked")
    selector = ctx.workflow.selectors[spec.selector]
    try:
        if isinstance(selector, LlmSelector):
            name, raw_scores = await route(ctx, spec.selector, selector, candidates)
        else:
            name, raw_scores = await ctx.ask_selector(selector, _query(ctx))
    except CallError as error:
        return _fallback(ctx, candidates, f"selector '{spec.selector}' failed: {error.message}")
    scores = {}
    for key, value in raw_scores.items():
        alias = ctx.resolve_alias(key)
        if alias is not None:
            scores[alias] = value
    alias = ctx.resolve_alias(name)
    if alias is None or alias not in candidates:
        why = "an unknown model" if alias is None else "a model that is not a candidate"
        return _fallback(ctx, candidates, f"selector named {why}: '{name}'", scores)
    result = SelectResult(
        model=alias, confidence=scores.get(alias), scores=scores, source="selector"
    )
    return _chosen(ctx, result)


def _query(ctx: NodeContext) -> str:
    """The text the selector judges: the `prompt` input, else the first string input."""
    if isinstance(ctx.inputs.get("prompt"), str):
        return str(ctx.inputs["prompt"])
    return next((v for v in ctx.inputs.values() if isinstance(v, str)), "")


def _fallback(
    ctx: NodeContext,
    candidates: list[str],
    reason: str,
    scores: dict[str, float] | None = None,
) -> SelectResult:
    assert isinstance(ctx.spec, SelectNode)
    if ctx.spec.fallback == "fail":
        raise NodeFailure(ErrorInfo(type="select", message=reason))
    result = SelectResult(
        model=candidates[0], confidence=None, scores=scores or {}, source="fallback", reason=reason
    )
    return _chosen(ctx, result)


def _chosen(ctx: NodeContext, result: SelectResult) -> SelectResult:
    ctx.chose(result)
    return result
