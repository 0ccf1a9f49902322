"""One module per node kind. Each exposes ``async def run(run, node, context) -> output``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flowengine.nodes import fanout, llm, select
from flowengine.plan import CompiledNode
from flowengine.runstate import Run
from flowengine.templates import Scope

NodeRunner = Callable[[Run, CompiledNode, Scope], Awaitable[Any]]

RUNNERS: dict[str, NodeRunner] = {"select": select.run, "llm": llm.run, "fanout": fanout.run}
