"""One module per node kind. Each exposes ``async def run(ctx: NodeContext) -> output``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flowengine.run.context import NodeContext
from flowengine.run.nodes import fanout, judge, llm, select

NodeRunner = Callable[[NodeContext], Awaitable[Any]]

RUNNERS: dict[str, NodeRunner] = {
    "select": select.run,
    "llm": llm.run,
    "fanout": fanout.run,
    "judge": judge.run,
}
