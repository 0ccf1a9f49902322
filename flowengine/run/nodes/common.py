"""What llm and fanout nodes share: messages from templates, and model names to aliases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowengine.errors import did_you_mean
from flowengine.language.plan import CompiledNode
from flowengine.language.templates import evaluate_value
from flowengine.results import ErrorInfo
from flowengine.run.context import NodeContext, NodeFailure


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
