"""Checks of loops: the nodes of each loop's group, their ids and needs, and ``until:``.

A node inside a loop reads what a node in the loop's place would (the inputs, ``models``, the
nodes the loop needs, directly or not), the nodes of the group it needs, and ``round`` and
``previous``. ``until:`` reads all of the group's nodes as well. Nodes outside a loop read its
nodes through it (``refine.last.critique``). Loops do not nest: a loop inside a loop's group is
an error, as is a nested id that repeats another node's, so that an id names one node.
"""

from __future__ import annotations

import functools
from collections import ChainMap
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from flowengine.errors import Problem, did_you_mean
from flowengine.language.ancestry import ancestry
from flowengine.language.conditions import check_condition, condition_names
from flowengine.language.fields import MODEL, Record, Shape
from flowengine.language.graph import Graph, describe_cycle
from flowengine.language.placement import Placed, loops
from flowengine.language.source import Source, YamlPath
from flowengine.language.template_checks import Names, TemplateChecks
from flowengine.spec import FanoutNode, LoopNode, NodeSpec, WorkflowSpec

#: The names a loop gives the nodes of its group, besides what they read anyway.
ROUND_NAMES = ("round", "previous")
_MEANING = {
    "round": "the round's number",
    "previous": "the outputs of the round before",
}

#: What is wrong with a name or a need: the message, the fix and the code.
Found = tuple[str, str, str]


@dataclass(frozen=True)
class Group:
    """The DAG of one loop's group, from the needs among its nodes."""

    graph: Graph
    cycles: list[list[str]]
    ancestors: Callable[[str], Collection[str]]


class LoopChecks(TemplateChecks):
    """The loop part of the workflow checker (mixed into ``checks.Checker``)."""

    spec: WorkflowSpec
    source: Source
    problems: list[Problem]
    placed: dict[str, Placed]
    upstream: Callable[[str], Collection[str]]
    shapes: dict[str, Shape]
    unreadable: dict[str, set[str]]
    optional: frozenset[str]

    readable: Callable[[str, str], bool]
    needs_read: Callable[[str], bool]

    @functools.cached_property
    def groups(self) -> dict[str, Group]:
        found = {}
        for loop_id, loop in loops(self.spec).items():
            graph = Graph({node_id: node.needs for node_id, node in loop.nodes.items()})
            cycles = graph.cycles()
            found[loop_id] = Group(graph, cycles, ancestry(graph, cycles))
        return found

    @functools.cached_property
    def loop_upstream(self) -> dict[str, frozenset[str]]:
        return {loop_id: frozenset(self.upstream(loop_id)) for loop_id in self.groups}

    def before(self, loop_id: str) -> frozenset[str]:
        """The nodes that run before the loop: those it needs, directly or not."""
        return self.loop_upstream[loop_id]

    def peers(self, node_id: str) -> tuple[Mapping[str, NodeSpec], Collection[str]]:
        """The nodes beside ``node_id`` (the top level's, or its loop's group) and those of
        them it runs after."""
        loop_id = self.placed[node_id].loop
        if loop_id is None:
            return self.spec.nodes, self.upstream(node_id)
        loop = self.spec.nodes[loop_id]
        assert isinstance(loop, LoopNode)
        return loop.nodes, self.groups[loop_id].ancestors(node_id)

    def group_read(self, loop_id: str) -> bool:
        """Whether every node written in the loop's group could be read."""
        written = self.source.root
        for part in ("nodes", loop_id, "nodes"):
            written = written.get(part) if isinstance(written, dict) else None
        loop = self.spec.nodes[loop_id]
        assert isinstance(loop, LoopNode)
        return not isinstance(written, dict) or all(n in loop.nodes for n in written)

    def check_loops(self) -> None:
        for loop_id, loop in loops(self.spec).items():
            for node_id in loop.nodes:
                self.check_member(loop_id, node_id)
            self.check_group_needs(loop_id, loop)
            self.check_until(loop_id, loop)
        if self.groups:
            self.check_hidden_names()

    def check_member(self, loop_id: str, node_id: str) -> None:
        loop = self.spec.nodes[loop_id]
        assert isinstance(loop, LoopNode)
        path: YamlPath = ("nodes", loop_id, "nodes", node_id)
        if isinstance(loop.nodes[node_id], LoopNode):
            message = f"loop '{node_id}' is inside loop '{loop_id}': loops do not nest"
            fix = f"make it a top-level loop (it may need '{loop_id}'), or move its nodes here"
            self.add((*path, "type"), message, fix, code="nested-loop")
        found = self.member_id_problem(loop_id, node_id)
        if found is not None:
            self.add(path, found[0], found[1], code=found[2], key=True)

    def member_id_problem(self, loop_id: str, node_id: str) -> Found | None:
        if node_id in ROUND_NAMES:
            message = f"node id '{node_id}' is reserved inside a loop"
            why = f"the nodes of a loop read `{node_id}` as {_MEANING[node_id]}"
            return message, f"rename the node: {why}", "reserved-name"
        first = self.placed[node_id].loop
        if first != loop_id:
            where = f"in loop '{first}'" if first else "at the top level"
            message = f"node id '{node_id}' is used twice: {where} and in loop '{loop_id}'"
            fix = "rename one of them: a node id names one node in the file"
            return message, fix, "duplicate-id"
        return None

    def check_group_needs(self, loop_id: str, loop: LoopNode) -> None:
        for node_id, node in loop.nodes.items():
            for i, need in enumerate(node.needs):
                found = self.need_problem(loop_id, node_id, need)
                if found is not None:
                    path = ("nodes", loop_id, "nodes", node_id, "needs", i)
                    self.add(path, found[0], found[1], code=found[2])
        for cycle in self.groups[loop_id].cycles:
            self.add(
                ("nodes", loop_id, "nodes", cycle[0], "needs"),
                f"cycle in needs in loop '{loop_id}': {describe_cycle(cycle)}",
                "remove one of these needs so the nodes of a round can run in order",
                code="cycle",
                key=True,
            )

    def need_problem(self, loop_id: str, node_id: str, need: str) -> Found | None:
        """What is wrong with the need ``need`` of node ``node_id`` in loop ``loop_id``."""
        loop = self.spec.nodes[loop_id]
        assert isinstance(loop, LoopNode)
        if need == node_id:
            return f"node '{node_id}' needs itself", "remove it from its own needs", "self-need"
        if need in loop.nodes or need in self.before(loop_id) or not self.readable("nodes", need):
            return None
        name = f"node '{node_id}' in loop '{loop_id}'"
        if need == loop_id:
            fix = "remove it: the nodes of a loop read the round before as `previous`"
            return f"{name} needs its own loop", fix, "own-loop"
        if need in self.spec.nodes:
            return self.outside_problem(loop_id, f"{name} needs", need)
        if need in self.placed:
            return self.nested_problem(need, f"{name} needs", loop_id)
        known = [n for n in dict.fromkeys([*loop.nodes, *self.before(loop_id)]) if n != node_id]
        fix = did_you_mean(need, known) or f"it may need: {', '.join(known)}"
        return f"{name} needs unknown node '{need}'", fix, "unknown-need"

    def outside_problem(self, loop_id: str, what: str, node: str) -> Found:
        """``what`` (a message's start: a need, or a template's use) names top-level node
        ``node`` from inside loop ``loop_id``, which ``node`` does not run before."""
        if loop_id in self.upstream(node):
            message = f"{what} node '{node}', which runs after loop '{loop_id}'"
            fix = "a loop's nodes read one another and the nodes the loop needs, not later ones"
            return message, fix, "after-loop"
        needs = ", ".join([*self.spec.nodes[loop_id].needs, node])
        message = f"{what} node '{node}', which loop '{loop_id}' does not need"
        fix = f"add '{node}' to the needs of '{loop_id}': `needs: [{needs}]`"
        return message, fix, "not-a-need"

    def nested_problem(self, node: str, what: str, reader: str | None) -> Found:
        """``what`` (a message's start) reads ``node``, a node inside another loop than the
        reader's; ``reader`` is the node reading it (None for the output mapping)."""
        loop_id = str(self.placed[node].loop)
        through = f"`{loop_id}.last.{node}`"
        if reader == loop_id:  # the loop's own `when:`, before its first round
            fix = "test what the loop needs: its `when:` is evaluated before its first round"
        elif reader is None or loop_id in self.upstream(reader):
            fix = f"read it through the loop: {through}, or each round's in `{loop_id}.rounds`"
        else:
            fix = f"add '{loop_id}' to the needs of '{reader}' and read {through}"
        return f"{what} '{node}', a node inside loop '{loop_id}'", fix, "inside-loop"

    def check_until(self, loop_id: str, loop: LoopNode) -> None:
        if loop.until is not None:
            names = condition_names(self.until_names(loop_id, loop))
            check_condition(self, ("nodes", loop_id, "until"), loop.until, names)
        elif loop.on_cap == "fail":
            self.add(
                ("nodes", loop_id, "on_cap"),
                "`on_cap: fail` without `until:`: the loop would fail every time",
                "add `until:`, the condition that ends the loop early, or remove `on_cap`",
                code="cap-without-until",
            )

    def check_hidden_names(self) -> None:
        """Inputs and top-level nodes named as the names a loop gives its nodes."""
        for name in ROUND_NAMES:
            fix = f"rename it: the nodes inside a loop read `{name}` as {_MEANING[name]}"
            for section, what in (("inputs", "input"), ("nodes", "node")):
                if name in getattr(self.spec, section):
                    message = f"{what} '{name}' would be hidden inside loops"
                    self.add((section, name), message, fix, code="name-clash", key=True)

    # -- the names templates read ------------------------------------------------------------

    def group_names(self, node_id: str) -> Names:
        """What the templates of ``node_id``, a node inside a loop, may read."""
        loop_id = str(self.placed[node_id].loop)
        loop = self.spec.nodes[loop_id]
        assert isinstance(loop, LoopNode)
        node = loop.nodes[node_id]
        allowed = self.loop_allowed()
        if isinstance(node, FanoutNode):
            allowed.add("model")
        if self.needs_read(node_id):
            upstream = self.before(loop_id) | set(self.groups[loop_id].ancestors(node_id))
        else:  # its needs could not be read: it may read any node before the loop, or in it
            upstream = self.before(loop_id) | set(loop.nodes)
        own = self.round_shapes(loop_id)
        if isinstance(node, FanoutNode):
            own["model"] = MODEL
        return Names(
            frozenset(allowed),
            frozenset(loop.nodes),
            node_id,
            tuple(n for n in node.needs if n in loop.nodes),
            not self.readable("inputs", "*"),
            upstream,
            shapes=ChainMap(own, self.shapes),
            explain=functools.partial(self.explain_inside, loop_id, "uses"),
            optional=self.optional,
        )

    def until_names(self, loop_id: str, loop: LoopNode) -> Names:
        """What ``until:`` reads: all of the round's nodes, and what they may read."""
        return Names(
            frozenset(self.loop_allowed() | set(loop.nodes)),
            frozenset(),
            None,
            unknown_ok=not self.readable("inputs", "*"),
            upstream=self.before(loop_id),
            shapes=ChainMap(self.round_shapes(loop_id), self.shapes),
            explain=functools.partial(self.explain_until, loop_id),
            optional=self.optional,
        )

    def loop_allowed(self) -> set[str]:
        allowed = set(self.spec.inputs) | {"inputs", "models", *ROUND_NAMES}
        return allowed | self.unreadable.get("nodes", set()) | self.unreadable.get("inputs", set())

    def round_shapes(self, loop_id: str) -> dict[str, Shape]:
        """``previous``: a round of the loop (a record of its nodes' outputs), when known."""
        output = self.shapes.get(loop_id)
        last = output.fields.get("last") if isinstance(output, Record) else None
        return {"previous": last} if last is not None else {}

    def explain_inside(self, loop_id: str, verb: str, name: str) -> Found | None:
        """Why a template inside loop ``loop_id`` may not read ``name``, if for a loop's reason."""
        if name == loop_id:
            fix = "read the round before as `previous` (none in round 1): `previous.<node>`"
            return f"{verb} '{name}', the loop it is in", fix, "own-loop"
        if name in self.spec.nodes:
            return self.outside_problem(loop_id, verb, name)
        placed = self.placed.get(name)
        if placed is not None and placed.loop not in (None, loop_id):
            return self.nested_problem(name, verb, loop_id)
        return None

    def explain_until(self, loop_id: str, name: str) -> Found | None:
        if name == loop_id:
            fix = "read the round's nodes by id, such as `critique.data.ok`"
            return f"uses '{name}', the loop's own output", fix, "own-loop"
        return self.explain_inside(loop_id, "uses", name)

    def explain_outside(self, reader: str | None, name: str) -> Found | None:
        """Why a template outside any loop may not read ``name``, if for a loop's reason."""
        placed = self.placed.get(name)
        if placed is not None and placed.loop is not None:
            return self.nested_problem(name, "uses", reader)
        if name in ROUND_NAMES and self.groups and name not in self.spec.nodes:
            fix = "read a loop's rounds through it: `<loop>.last`, `<loop>.rounds`"
            return f"uses '{name}', which only the nodes inside a loop read", fix, "loop-only-name"
        return None
