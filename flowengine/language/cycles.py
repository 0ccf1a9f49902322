"""Every cycle of a directed graph, for the checks' error messages.

A file may hold several cycles, and the checks name each one. Johnson's algorithm finds every
elementary cycle once, in time proportional to their number, working inside the strongly
connected parts of the graph, which Tarjan's algorithm finds (D. B. Johnson, "Finding all the
elementary circuits of a directed graph", SIAM J. Comput. 4, 1975). Both keep a stack of their
own instead of recursing: a long chain of needs would go past Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

#: The nodes each node leads to.
Successors = Mapping[str, Sequence[str]]


def every_cycle(nodes: Sequence[str], successors: Successors) -> list[list[str]]:
    """Every cycle once, from its first node in ``nodes``; the cycles sorted in that order too.

    >>> every_cycle(["a", "b", "c"], {"a": ["b"], "b": ["a", "c"], "c": ["b"]})
    [['a', 'b'], ['b', 'c']]
    """
    position = {node_id: i for i, node_id in enumerate(nodes)}
    found: list[list[str]] = []
    pending = _components(nodes, successors)
    while pending:
        component = pending.pop()
        start = min(component, key=position.__getitem__)
        found += _cycles_through(start, component, successors)
        # The cycles through `start` are all found: look for the others without it.
        rest = sorted(component - {start}, key=position.__getitem__)
        pending += _components(rest, successors)
    return sorted(found, key=lambda cycle: [position[n] for n in cycle])


def _components(nodes: Sequence[str], successors: Successors) -> list[set[str]]:
    """The strongly connected parts of the graph on ``nodes`` that have more than one node."""
    inside = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node_id: str) -> Iterator[str]:
        index[node_id] = low[node_id] = len(index)
        stack.append(node_id)
        on_stack.add(node_id)
        return (n for n in successors[node_id] if n in inside)

    for root in nodes:
        if root in index:
            continue
        path = [(root, visit(root))]
        while path:
            node_id, children = path[-1]
            for child in children:
                if child not in index:
                    path.append((child, visit(child)))
                    break
                if child in on_stack:
                    low[node_id] = min(low[node_id], index[child])
            else:
                path.pop()
                if path:
                    parent = path[-1][0]
                    low[parent] = min(low[parent], low[node_id])
                if low[node_id] == index[node_id]:
                    component = {stack.pop()}
                    while node_id not in component:
                        component.add(stack.pop())
                    on_stack.difference_update(component)
                    if len(component) > 1:
                        found.append(component)
    return found


def _cycles_through(start: str, component: set[str], successors: Successors) -> list[list[str]]:
    """Every cycle through ``start`` inside ``component`` (Johnson's search).

    A node that led to no cycle stays blocked until a node it leads to is unblocked, so the
    search does not walk the same dead ends again.
    """
    found: list[list[str]] = []
    path = [start]
    blocked = {start}
    blocked_by: dict[str, set[str]] = {}
    closed = [False]  # whether each node on the path has led to a cycle yet
    stack = [iter([n for n in successors[start] if n in component])]
    while stack:
        for node_id in stack[-1]:
            if node_id == start:
                found.append(path[:])
                closed[-1] = True
            elif node_id not in blocked:
                path.append(node_id)
                closed.append(False)
                stack.append(iter([n for n in successors[node_id] if n in component]))
                blocked.add(node_id)
                break
        else:
            stack.pop()
            done = path.pop()
            if closed.pop():
                if closed:
                    closed[-1] = True
                _unblock(done, blocked, blocked_by)
            else:
                for node_id in successors[done]:
                    if node_id in component:
                        blocked_by.setdefault(node_id, set()).add(done)
    return found


def _unblock(node_id: str, blocked: set[str], blocked_by: dict[str, set[str]]) -> None:
    """Unblock ``node_id``, and every node blocked until it was."""
    waiting = {node_id}
    while waiting:
        node_id = waiting.pop()
        if node_id in blocked:
            blocked.remove(node_id)
            waiting |= blocked_by.pop(node_id, set())
