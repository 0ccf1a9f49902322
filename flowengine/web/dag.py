"""A run's DAG laid out for a picture: nodes in columns by depth, edges from needs.

A node's column is the length of the longest chain of needs that leads to it, so every edge
runs from left to right; within a column nodes keep the order they are given in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NODE_W, NODE_H = 168, 46
GAP_X, GAP_Y = 56, 18
MARGIN = 8


@dataclass(frozen=True)
class Box:
    node: str
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    need: str
    node: str
    #: The SVG path from the need's right side to the node's left side.
    path: str


@dataclass(frozen=True)
class Layout:
    boxes: list[Box]
    edges: list[Edge]
    width: int
    height: int


def depths(nodes: Sequence[str], needs: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each node's column: 0 for a node that needs nothing, else one more than its deepest need.

    Needs of nodes not in ``nodes`` are left out; a cycle (never in a checked workflow) is cut.
    """
    known = set(nodes)
    found: dict[str, int] = {}

    def depth(node: str, seen: frozenset[str]) -> int:
        if node not in found:
            upstream = [n for n in needs.get(node, ()) if n in known and n not in seen]
            found[node] = 1 + max((depth(n, seen | {n}) for n in upstream), default=-1)
        return found[node]

    for node in nodes:
        depth(node, frozenset({node}))
    return found


def layout(nodes: Sequence[str], needs: Mapping[str, Sequence[str]]) -> Layout:
    """Where each node's box goes, and the edges between them, in SVG user units."""
    columns: dict[int, list[str]] = {}
    for node, column in depths(nodes, needs).items():
        columns.setdefault(column, []).append(node)
    place: dict[str, Box] = {}
    for column, members in columns.items():
        for row, node in enumerate(members):
            x = MARGIN + column * (NODE_W + GAP_X)
            place[node] = Box(node, x, MARGIN + row * (NODE_H + GAP_Y))
    edges = [
        Edge(need, node, _curve(place[need], place[node]))
        for node in nodes
        for need in dict.fromkeys(needs.get(node, ()))
        if need in place and need != node
    ]
    tallest = max((len(m) for m in columns.values()), default=0)
    return Layout(
        boxes=[place[node] for node in nodes],
        edges=edges,
        width=2 * MARGIN + len(columns) * (NODE_W + GAP_X) - GAP_X if columns else 0,
        height=2 * MARGIN + tallest * (NODE_H + GAP_Y) - GAP_Y if columns else 0,
    )


def _curve(start: Box, end: Box) -> str:
    x1, y1 = start.x + NODE_W, start.y + NODE_H // 2
    x2, y2 = end.x, end.y + NODE_H // 2
    bend = max((x2 - x1) // 2, 16)
    return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
