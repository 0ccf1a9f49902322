"""The fanout node: the same prompt to several models at once, under the node's concurrency cap."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any

from flowengine.language.plan import CompiledNode
from flowengine.language.templates import Scope, evaluate_value
from flowengine.results import CallResult, ErrorInfo
from flowengine.run.calls import NodeFailure, Run
from flowengine.run.nodes.common import alias_of, messages, params
from flowengine.spec import FanoutNode


def chosen_models(run: Run, node: CompiledNode, context: Scope) -> list[str]:
    """include (default: every model) less exclude, by weight, the top N."""
    spec = node.spec
    assert isinstance(spec, FanoutNode)
    where = f"nodes.{node.id}.models"
    include = None
    if node.include is not None:
        include = [alias_of(run, v, where) for v in _flat(evaluate_value(node.include, context))]
    exclude = {alias_of(run, v, where) for v in _flat(evaluate_value(node.exclude, context))}
    if include is None:
        chosen = [a for a in run.allowed if a not in exclude]  # already by weight
    else:
        chosen = run.by_weight(a for a in include if a not in exclude and a in run.allowed)
    return chosen[: spec.models.top] if spec.models.top is not None else chosen


def _flat(values: list[Any]) -> list[Any]:
    # A template may yield a list of models ("{{ models | list }}"): spread it.
    out: list[Any] = []
    for value in values:
        out.extend(value if isinstance(value, list | tuple) else [value])
    return out


async def together(calls: list[Coroutine[Any, Any, CallResult]]) -> list[CallResult]:
    """The calls' results, in order, the calls running at once.

    What ``asyncio.gather`` does here, for about half its CPU: the first call runs in this
    coroutine and the others as tasks, awaited in turn. Cancelled, it cancels every call
    and waits for them to end, so that nothing is left running. A call does not raise (a
    failure is a result), except for a bug: that exception is raised once the calls before
    it have ended, and the calls after it are cancelled.
    """
    if not calls:
        return []
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(call) for call in calls[1:]]
    try:
        first = await calls[0]
        return [first, *[await task for task in tasks]]
    except BaseException:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved, so that asyncio does not log it as lost
        raise


async def _capped(gate: asyncio.Semaphore, call: Awaitable[CallResult]) -> CallResult:
    async with gate:
        return await call


async def run(run: Run, node: CompiledNode, context: Scope) -> list[CallResult]:
    spec = node.spec
    assert isinstance(spec, FanoutNode)
    aliases = chosen_models(run, node, context)
    gate = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None
    done = run.partial.setdefault(node.id, [])
    shared = None if node.per_model else messages(node, context)

    # Every prompt is rendered before any call starts: a template error then fails the node
    # before anything is paid for, and leaves no call half-made.
    prompts = [shared or messages(node, context.child(model=run.models[a])) for a in aliases]
    calls = [
        run.call(node.id, spec, a, sent, params(run, spec, a), into=done)
        for a, sent in zip(aliases, prompts, strict=True)
    ]
    if gate is not None:
        calls = [_capped(gate, call) for call in calls]
    results = await together(calls)
    succeeded = sum(r.success for r in results)
    if succeeded < spec.min_success:
        errors = "; ".join(f"{r.model}: {r.error.message}" for r in results if r.error)
        message = (
            f"{succeeded} of {len(results)} calls succeeded, min_success is {spec.min_success}"
        )
        raise NodeFailure(
            ErrorInfo(
                type="min_success", message=f"{message}" + (f" ({errors})" if errors else "")
            ),
            output=results,
        )
    return results
