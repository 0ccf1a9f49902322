"""One module per node kind. Each exposes ``async def run(ctx: NodeContext) -> output``; the
registry finds them by kind, built-in or plugin alike."""

from __future__ import annotations

from flowengine.run.nodes.registry import NodeRunner, node_kinds, node_runner, register_node

__all__ = ["NodeRunner", "node_kinds", "node_runner", "register_node"]
