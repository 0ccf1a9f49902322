"""The llm node: one model call, then its fallbacks in order if it fails (an answer that stays
invalid against the node's schema after its repair request fails too). A streamed answer that
failed once it had begun is not followed by a fallback's."""

from __future__ import annotations

from flowengine.language.templates import evaluate_value
from flowengine.results import CallResult, ErrorInfo
from flowengine.run.context import NodeContext, NodeFailure
from flowengine.run.nodes.common import alias_of, answer, messages
from flowengine.spec import LlmNode


async def run(ctx: NodeContext) -> CallResult:
    node = ctx.node
    spec = node.spec
    assert isinstance(spec, LlmNode)
    first = alias_of(ctx, evaluate_value(node.model, ctx.scope), f"nodes.{node.id}.model")
    chain = [first, *(a for a in spec.fallbacks if a != first)]
    chain = [a for a in chain if a in ctx.allowed] or [first]
    sent = messages(node, ctx.scope)
    for alias in chain:
        result = await answer(ctx, alias, sent)
        # A streamed answer that broke off was shown in part: another model's would follow it.
        if result.success or result.ttft_s is not None:
            break
    if result.success:
        return result
    error = result.error or ErrorInfo(type="unknown", message="the call failed")
    raise NodeFailure(
        ErrorInfo(
            type=error.type,
            status=error.status,
            message=f"{error.message} (tried: {', '.join(chain)})",
        ),
        output=result,
    )
