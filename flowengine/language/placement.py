"""Where each node of a workflow is: at the top level, or in the group of a loop.

A node id names one node in the whole file, nested ones included (the checks report a nested id
that repeats another), so the nodes can be looked up by id alone, each with the YAML path that
error messages point at.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flowengine.language.source import YamlPath
from flowengine.spec import LoopNode, NodeSpec, WorkflowSpec


@dataclass(frozen=True)
class Placed:
    """A node, where it is written, and the loop whose group holds it (None at the top level)."""

    node: NodeSpec
    path: YamlPath
    loop: str | None = None


def placed_nodes(spec: WorkflowSpec) -> dict[str, Placed]:
    """Every node by id: the top level in file order, then each loop's group in file order.

    A nested id that repeats one already placed is left out (the checks report it).
    """
    placed = {node_id: Placed(node, ("nodes", node_id)) for node_id, node in spec.nodes.items()}
    for loop_id, loop in spec.nodes.items():
        if isinstance(loop, LoopNode):
            for node_id, node in loop.nodes.items():
                path = ("nodes", loop_id, "nodes", node_id)
                placed.setdefault(node_id, Placed(node, path, loop_id))
    return placed


def loops(spec: WorkflowSpec) -> dict[str, LoopNode]:
    """The workflow's loop nodes by id, in file order."""
    return {n: node for n, node in spec.nodes.items() if isinstance(node, LoopNode)}


def with_members(spec: WorkflowSpec, node_ids: Iterable[str]) -> list[str]:
    """``node_ids`` (top-level nodes), each loop among them followed by the nodes of its group."""
    found: list[str] = []
    for node_id in node_ids:
        found.append(node_id)
        node = spec.nodes[node_id]
        if isinstance(node, LoopNode):
            found += node.nodes
    return found
