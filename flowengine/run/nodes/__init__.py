"""One module per node kind. Each exposes ``async def run(run, node, context) -> output``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flowengine.language.plan import CompiledNode
from flowengine.language.templates import Scope
from flowengine.run.calls import Run
from flowengine.run.nodes import fanout, llm, select

NodeRunner = Callable[[Run, CompiledNode, Scope], Awaitable[Any]]

RUNNERS: dict[str, NodeRunner] = {"select": select.run, "llm": llm.run, "fanout": fanout.run}
