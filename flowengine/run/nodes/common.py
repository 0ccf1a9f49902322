"""What llm and fanout nodes share: messages from templates, merged params."""

from __future__ import annotations

from typing import Any

from flowengine.language.plan import CompiledNode
from flowengine.language.templates import Scope, evaluate_value
from flowengine.run.calls import Run
from flowengine.spec import FanoutNode, LlmNode


def messages(node: CompiledNode, context: Scope) -> list[dict[str, str]]:
    """The chat messages: the optional system template, then the prompt as the user turn."""
    if node.vars:
        context = context.child(**evaluate_value(node.vars, context))
    assert node.prompt is not None
    out = []
    if node.system is not None:
        out.append({"role": "system", "content": node.system.render(context)})
    out.append({"role": "user", "content": node.prompt.render(context)})
    return out


def params(run: Run, node: LlmNode | FanoutNode, alias: str) -> dict[str, Any]:
    """Defaults, then the model's params, then the node's: the most specific wins.

    The merge is the same for every run of a workflow, so it is made once; callers only read it.
    """
    table = run.workflow.plan.params
    key = (id(node), alias)
    merged = table.get(key)
    if merged is None:
        spec = run.spec
        merged = table[key] = {**spec.defaults.params, **spec.models[alias].params, **node.params}
    return merged


def alias_of(run: Run, value: Any, where: str) -> str:
    """The alias a rendered ``model:`` value names; a clear error if it names none."""
    name = str(value).strip()
    alias = run.resolve_alias(name)
    if alias is None:
        from flowengine.errors import did_you_mean
        from flowengine.results import ErrorInfo
        from flowengine.run.calls import NodeFailure

        hint = did_you_mean(name, run.spec.models) or f"models: {', '.join(run.spec.models)}"
        raise NodeFailure(
            ErrorInfo(type="model", message=f"{where} named unknown model '{name}'; {hint}")
        )
    return alias
