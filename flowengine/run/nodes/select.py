"""The select node: ask the selector service which model should answer, or take the top weight."""

from __future__ import annotations

from flowengine.errors import CallError
from flowengine.language.plan import CompiledNode
from flowengine.language.templates import Scope
from flowengine.providers import call_selector
from flowengine.results import ErrorInfo, SelectResult
from flowengine.run.calls import NodeFailure, Run
from flowengine.run.nodes.router import route
from flowengine.spec import LlmSelector, SelectNode


async def run(run: Run, node: CompiledNode, context: Scope) -> SelectResult:
    spec = node.spec
    assert isinstance(spec, SelectNode)
    if not spec.candidates:
        candidates = list(run.allowed)  # already by weight
    else:
        candidates = run.by_weight(a for a in spec.candidates if a in run.allowed)
    if not candidates:
        raise NodeFailure(ErrorInfo(type="select", message="no candidate models to choose from"))
    if spec.selector is None:
        return _record(run, SelectResult(model=candidates[0], source="weight"))
    if run.engine.offline:
        return _fallback(run, spec, candidates, "offline run: the selector is not asked")
    selector = run.spec.selectors[spec.selector]
    try:
        if isinstance(selector, LlmSelector):
            name, raw_scores = await route(run, node, spec.selector, selector, candidates, context)
        else:
            name, raw_scores = await call_selector(selector, run.engine.session, _query(run))
    except CallError as error:
        return _fallback(
            run, spec, candidates, f"selector '{spec.selector}' failed: {error.message}"
        )
    scores = {}
    for key, value in raw_scores.items():
        alias = run.resolve_alias(key)
        if alias is not None:
            scores[alias] = value
    alias = run.resolve_alias(name)
    if alias is None or alias not in candidates:
        why = "an unknown model" if alias is None else "a model that is not a candidate"
        return _fallback(run, spec, candidates, f"selector named {why}: '{name}'", scores)
    result = SelectResult(
        model=alias, confidence=scores.get(alias), scores=scores, source="selector"
    )
    return _record(run, result)


def _query(run: Run) -> str:
    """The text the selector judges: the `prompt` input, else the first string input."""
    if isinstance(run.inputs.get("prompt"), str):
        return str(run.inputs["prompt"])
    return next((v for v in run.inputs.values() if isinstance(v, str)), "")


def _fallback(
    run: Run,
    spec: SelectNode,
    candidates: list[str],
    reason: str,
    scores: dict[str, float] | None = None,
) -> SelectResult:
    if spec.fallback == "fail":
        raise NodeFailure(ErrorInfo(type="select", message=reason))
    best = candidates[0]
    result = SelectResult(
        model=best, confidence=None, scores=scores or {}, source="fallback", reason=reason
    )
    return _record(run, result)


def _record(run: Run, result: SelectResult) -> SelectResult:
    if result.scores and not run.scores:
        run.scores.update(result.scores)
    if result.source == "selector" and run.selector_confidence is None:
        run.selector_confidence = result.confidence
    return result
