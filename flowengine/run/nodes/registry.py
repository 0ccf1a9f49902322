"""Node kinds by name. Built-ins are found exactly as a plugin is (:mod:`flowengine.plugins`).

A node kind is an async function ``run(ctx: NodeContext) -> output`` (or an object, such as a
module, whose ``run`` is one); an optional pydantic ``config`` model checks the node's own
keys, which the function reads as ``ctx.config``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from flowengine import plugins
from flowengine.errors import PluginError
from flowengine.run.context import NodeContext

if TYPE_CHECKING:
    from pydantic import BaseModel

NodeRunner = Callable[[NodeContext], Awaitable[Any]]


def register_node(kind: str, run: Any, *, config: type[BaseModel] | None = None) -> None:
    """Make ``type: <kind>`` under a workflow's ``nodes:`` run with ``run``.

    ``run`` is an async function given the node's :class:`NodeContext`; what it returns is the
    node's output, and it raises :class:`NodeFailure` to fail the node. ``config``, a pydantic
    model, checks the node's own keys (those other than ``type``, ``needs``, ``on_error``...)
    when the workflow is validated; ``ctx.config`` is then an instance of it, else a dict.

    Example::

        async def shout(ctx: NodeContext) -> str:
            return str(ctx.evaluate(ctx.config["text"])).upper()

        register_node("shout", shout)
        # nodes: {loud: {type: shout, needs: [answer], text: "{{ answer }}"}}
    """
    runner_of(kind, run, "registered from code")  # refused now, rather than when a run needs it
    plugins.register(plugins.NODES, kind, run, config)


def node_kinds() -> list[str]:
    """The known node kinds, sorted: built in, registered from code, or installed."""
    return plugins.names(plugins.NODES)


#: Each node kind's run function, checked, with the plugin it came from: every run asks for
#: its kinds again, and a kind registered anew is checked anew.
_CHECKED: dict[str, tuple[plugins.Plugin, NodeRunner]] = {}


def node_runner(kind: str) -> NodeRunner:
    """The run function of node kind ``kind``; PluginError if there is none to be had."""
    plugin = plugins.find(plugins.NODES, kind)
    if plugin is None:
        raise PluginError(f"unknown node kind {kind!r}", f"known: {', '.join(node_kinds())}")
    checked = _CHECKED.get(kind)
    if checked is None or checked[0] is not plugin:
        checked = _CHECKED[kind] = (plugin, runner_of(kind, plugin.obj, plugin.origin))
    return checked[1]


def runner_of(kind: str, obj: Any, origin: str) -> NodeRunner:
    run = obj if inspect.iscoroutinefunction(obj) else getattr(obj, "run", None)
    if not inspect.iscoroutinefunction(run):
        raise PluginError(
            f"node kind {kind!r} ({origin}) is not an async function, nor has one as `run`",
            "give `async def run(ctx: NodeContext)`",
        )
    runner: NodeRunner = run
    return runner
