"""A run's DAG laid out for a picture: nodes in columns by depth, edges from needs.

A node's column is the length of the longest chain of needs that leads to it, so every edge
runs from left to right; within a column nodes keep the order they are given in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NODE_W, NODE_H = 184, 46
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
    node_width: int = NODE_W
    node_height: int = NODE_H


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


#: A node of a loop's round, as a result names it: ``refine[2].critique``.
ROUND = re.compile(r"^(?P<loop>.+)\[(?P<round>\d+)\]\.(?P<node>[^.\[\]]+)$")


def run_needs(nodes: Sequence[str], needs: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The needs of each node of a run, rounds of loops included.

    ``needs`` are the workflow's: top-level nodes by id, and each loop's nodes by their path
    with no round (``refine.critique``) naming their siblings. In a round, a node needs its
    siblings of that round; one that needs no sibling follows the round before (round 1: what
    the loop needs); and a loop follows its last round.
    """
    present = set(nodes)
    found: dict[str, list[str]] = {}
    for node in nodes:
        upstream = _own_needs(node, needs) + _last_round(node, nodes, needs)
        found[node] = [n for n in dict.fromkeys(upstream) if n in present and n != node]
    return found


def node_path(node: str) -> str:
    """A node's path in the workflow: its id without rounds."""
    return re.sub(r"\[\d+\]", "", node)


def _own_needs(node: str, needs: Mapping[str, Sequence[str]]) -> list[str]:
    """What ``node`` waits for before it starts."""
    match = ROUND.match(node)
    if match is None:
        return list(needs.get(node, ()))
    loop, number = match["loop"], int(match["round"])
    siblings = _children(node_path(loop), needs)
    inner = needs.get(f"{node_path(loop)}.{match['node']}", ())
    upstream = [f"{loop}[{number}].{n}" if n in siblings else n for n in inner]
    if any(n in siblings for n in inner):
        return upstream
    if number == 1:
        return upstream + _own_needs(loop, needs)
    return upstream + [f"{loop}[{number - 1}].{n}" for n in _ends(node_path(loop), needs)]


def _last_round(node: str, nodes: Sequence[str], needs: Mapping[str, Sequence[str]]) -> list[str]:
    """A loop's last round's final nodes; nothing for a node that is not a loop."""
    ends = _ends(node_path(node), needs)
    rounds = [int(m["round"]) for n in nodes if (m := ROUND.match(n)) and m["loop"] == node]
    return [f"{node}[{max(rounds)}].{n}" for n in ends] if rounds else []


def _children(path: str, needs: Mapping[str, Sequence[str]]) -> list[str]:
    prefix = f"{path}."
    return [k[len(prefix) :] for k in needs if k.startswith(prefix) and "." not in k[len(prefix) :]]


def _ends(path: str, needs: Mapping[str, Sequence[str]]) -> list[str]:
    """A loop's nodes that no other node of its round needs."""
    children = _children(path, needs)
    needed = {n for c in children for n in needs.get(f"{path}.{c}", ())}
    return [c for c in children if c not in needed]
