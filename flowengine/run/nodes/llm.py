"""The llm node: one model call, then its fallbacks in order if it fails."""

from __future__ import annotations

from flowengine.language.plan import CompiledNode
from flowengine.language.templates import Scope, evaluate_value
from flowengine.results import CallResult, ErrorInfo
from flowengine.run.calls import NodeFailure, Run
from flowengine.run.nodes.common import alias_of, messages, params
from flowengine.spec import LlmNode


async def run(run: Run, node: CompiledNode, context: Scope) -> CallResult:
    spec = node.spec
    assert isinstance(spec, LlmNode)
    first = alias_of(run, evaluate_value(node.model, context), f"nodes.{node.id}.model")
    chain = [first, *(a for a in spec.fallbacks if a != first)]
    chain = [a for a in chain if a in run.allowed] or [first]
    sent = messages(node, context)
    result: CallResult | None = None
    for alias in chain:
        result = await run.call(node.id, spec, alias, sent, params(run, spec, alias))
        if result.success:
            return result
    assert result is not None
    error = result.error or ErrorInfo(type="unknown", message="the call failed")
    tried = ", ".join(chain)
    raise NodeFailure(
        ErrorInfo(
            type=error.type, status=error.status, message=f"{error.message} (tried: {tried})"
        ),
        output=result,
    )
