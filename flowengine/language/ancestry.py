"""Each node's ancestors, also where the needs form cycles.

The checks report a cycle and still check every template against the nodes it may read. A node's
ancestors are the nodes it reaches through its needs, which is defined in any graph: the nodes of
overlapping cycles are merged into one group, the groups form an acyclic graph, and a node's
ancestors are the members of the groups its group needs and the other members of its own group.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

from flowengine.language.graph import Graph


def ancestry(graph: Graph, cycles: Sequence[Sequence[str]]) -> Callable[[str], Collection[str]]:
    """A function from a node to its ancestors; ``cycles`` are the graph's (maybe none)."""
    if not cycles:
        return graph.ancestors
    leader = _groups(graph.nodes, cycles)
    members: dict[str, list[str]] = {}
    for node_id in graph.nodes:
        members.setdefault(leader[node_id], []).append(node_id)
    member_sets = {group: frozenset(group_members) for group, group_members in members.items()}
    merged = Graph(
        {
            group: [leader[n] for m in group_members for n in graph.needs[m] if leader[n] != group]
            for group, group_members in members.items()
        }
    )

    def ancestors(node_id: str) -> Collection[str]:
        group = leader[node_id]
        return _Ancestors(node_id, merged.ancestors(group), leader, member_sets[group], graph.nodes)

    return ancestors


def _groups(nodes: Sequence[str], cycles: Sequence[Sequence[str]]) -> dict[str, str]:
    """Each node's group, named by one of its members: cycles that share a node are one group."""
    parent = {node_id: node_id for node_id in nodes}

    def find(node_id: str) -> str:
        while parent[node_id] != node_id:
            parent[node_id] = parent[parent[node_id]]
            node_id = parent[node_id]
        return node_id

    for cycle in cycles:
        for node_id in cycle[1:]:
            parent[find(node_id)] = find(cycle[0])
    return {node_id: find(node_id) for node_id in nodes}


class _Ancestors(Collection[str]):
    """The ancestors of one node, read from its group's; the nodes listed in file order."""

    def __init__(
        self,
        owner: str,
        groups: Collection[str],
        leader: Mapping[str, str],
        own_group: Collection[str],
        nodes: Sequence[str],
    ) -> None:
        self._owner = owner
        self._groups = groups
        self._leader = leader
        self._own_group = own_group
        self._nodes = nodes

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or name == self._owner or name not in self._leader:
            return False
        return self._leader[name] in self._groups or name in self._own_group

    def __iter__(self) -> Iterator[str]:
        return (node_id for node_id in self._nodes if node_id in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)
