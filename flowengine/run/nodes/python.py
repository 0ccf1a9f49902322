"""The python node: call a function by its import path; the JSON data it returns is the output.

The function gets keyword arguments as JSON data: its ``args:`` with their templates evaluated,
or else the output of each of its needs, by node id. A sync function runs in a thread, so that
it never blocks the event loop (a node timeout stops waiting for it, not the thread itself).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

from flowengine.language.functions import FunctionError, load_function
from flowengine.language.templates import evaluate_value
from flowengine.results import ErrorInfo, to_jsonable
from flowengine.run.context import NodeContext, NodeFailure
from flowengine.spec import PythonNode

#: A message quotes at most this much of an exception's text.
_QUOTE = 500


async def run(ctx: NodeContext) -> Any:
    spec = ctx.spec
    assert isinstance(spec, PythonNode)
    try:
        function = load_function(spec.function)  # imported when the run started
    except FunctionError as exc:
        raise NodeFailure(ErrorInfo(type="python", message=exc.message)) from None
    node = ctx.node
    if node.args is not None:
        kwargs = evaluate_value(node.args, ctx.scope)
    else:
        kwargs = {need: ctx.scope.get(need) for need in node.needs}
    kwargs = to_jsonable(kwargs)
    try:
        if inspect.iscoroutinefunction(function):
            value = await function(**kwargs)
        else:
            value = await asyncio.to_thread(function, **kwargs)
        while inspect.isawaitable(value):  # a sync function may return a coroutine
            value = await value
    except (Exception, SystemExit) as exc:
        raise NodeFailure(
            ErrorInfo(type="python", message=f"{spec.function} raised {_describe(exc)}")
        ) from None
    return json_data(spec.function, value)


def json_data(function: str, value: Any) -> Any:
    """``value`` as the JSON data it stands for (a tuple becomes a list); NodeFailure if it
    is not JSON data."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        message = (
            f"{function} returned a {type(value).__name__}, which is not JSON data "
            f"({_describe(exc)}): return dicts, lists, strings, numbers, booleans or None"
        )
        raise NodeFailure(ErrorInfo(type="python", message=message)) from None


def _describe(exc: BaseException) -> str:
    text = _quote(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _quote(text: str) -> str:
    return text if len(text) <= _QUOTE else text[: _QUOTE - 1] + "…"
