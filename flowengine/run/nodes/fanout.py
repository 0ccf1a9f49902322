"""The fanout node: the same prompt to several models at once, under the node's concurrency cap."""

from __future__ import annotations

import asyncio
from typing import Any

from flowengine.language.templates import evaluate_value
from flowengine.results import CallResult, ErrorInfo
from flowengine.run.context import NodeContext, NodeFailure
from flowengine.run.nodes.common import alias_of, answer, messages
from flowengine.spec import FanoutNode


def chosen_models(ctx: NodeContext, top: int | None) -> list[str]:
    """include (default: every model) less exclude, by weight, the ``top`` N."""
    node = ctx.node
    where = f"nodes.{node.id}.models"
    include = None
    if node.include is not None:
        values = _flat(evaluate_value(node.include, ctx.scope))
        include = [alias_of(ctx, v, where) for v in values]
    exclude = {alias_of(ctx, v, where) for v in _flat(evaluate_value(node.exclude, ctx.scope))}
    if include is None:
        chosen = [a for a in ctx.allowed if a not in exclude]  # already by weight
    else:
        chosen = ctx.by_weight(a for a in include if a not in exclude and a in ctx.allowed)
    return chosen[:top] if top is not None else chosen


def _flat(values: list[Any]) -> list[Any]:
    # A template may yield a list of models ("{{ models | list }}"): spread it.
    out: list[Any] = []
    for value in values:
        out.extend(value if isinstance(value, list | tuple) else [value])
    return out


async def run(ctx: NodeContext) -> list[CallResult]:
    node, spec = ctx.node, ctx.spec
    assert isinstance(spec, FanoutNode)
    aliases = chosen_models(ctx, spec.models.top)
    # Every prompt is rendered before any call starts: a template error then fails the node
    # before anything is paid for, and leaves no call half-made.
    if node.per_model:
        prompts = [messages(node, {**ctx.scope, "model": ctx.models[a]}) for a in aliases]
    else:
        prompts = [messages(node, ctx.scope)] * len(aliases)
    cap = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None

    async def one(alias: str, sent: list[dict[str, str]]) -> CallResult:
        if cap is None:
            return await answer(ctx, alias, sent)
        async with cap:
            return await answer(ctx, alias, sent)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(a, p)) for a, p in zip(aliases, prompts, strict=True)]
    results = [task.result() for task in tasks]
    succeeded = sum(r.success for r in results)
    if succeeded < spec.min_success:
        errors = "; ".join(f"{r.model}: {r.error.message}" for r in results if r.error)
        message = (
            f"{succeeded} of {len(results)} calls succeeded, min_success is {spec.min_success}"
        )
        raise NodeFailure(
            ErrorInfo(type="min_success", message=message + (f" ({errors})" if errors else "")),
            output=results,
        )
    return results
