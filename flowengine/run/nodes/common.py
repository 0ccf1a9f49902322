"""What llm and fanout nodes share: messages from templates, model names to aliases, and the
call itself (a structured one when the node has a schema)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowengine.errors import did_you_mean
from flowengine.language.plan import CompiledNode
from flowengine.language.templates import evaluate_value
from flowengine.results import CallResult, ErrorInfo
from flowengine.run.context import NodeContext, NodeFailure
from flowengine.run.structured import structured_call


def messages(node: CompiledNode, scope: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages, each content rendered in the node's scope, in order.

    Every turn is sent, even one that renders empty: what the provider receives lines up with
    the turns the file declares.
    """
    if node.vars:
        scope = {**scope, **evaluate_value(node.vars, scope)}
    return [{"role": turn.role, "content": turn.content.render(scope)} for turn in node.messages]


def alias_of(ctx: NodeContext, value: Any, where: str) -> str:
    """The alias a rendered ``model:`` value names; a clear error if it names none."""
    name = str(value).strip()
    alias = ctx.resolve_alias(name)
    if alias is None:
        known = ctx.workflow.models
        hint = did_you_mean(name, known) or f"models: {', '.join(known)}"
        raise NodeFailure(
            ErrorInfo(type="model", message=f"{where} named unknown model '{name}'; {hint}")
        )
    return alias


async def answer(ctx: NodeContext, alias: str, sent: list[dict[str, str]]) -> CallResult:
    """The node's call of model ``alias``: with ``data`` when the node has a ``schema:``."""
    response = ctx.node.response
    if response is None:
        return await ctx.call(alias, sent)
    return await structured_call(ctx, alias, sent, response)
