"""Which reads of a template Jinja's own idioms protect from a missing name.

A name, or a field of one (``inputs.tone``), is *guarded* where it is the subject of
``is defined`` / ``is not defined`` or of ``| default(...)`` / ``| d(...)``, and where such a
test has shown it defined: in the branch it leads to (``{% if tone is defined %}{{ tone }}``,
``{% elif %}``, ``{% else %}`` after ``is not defined``, ``tone if tone is defined else 'calm'``,
the right of ``and`` / ``or``), and after an ``{% if %}`` whose every branch shows or sets it
(``{% if tone is not defined %}{% set tone = 'calm' %}{% endif %}{{ tone }}``).

A read is a *truth test* where only its truth is used: ``{% if tone %}``, ``not tone``, the
left of ``tone or 'calm'``. An undefined name fails there, but an optional input that was not
given does not (:class:`flowengine.language.inputs.NotGiven` is false).

The walk recurses: flowengine's environment refuses syntax trees deeper than 100 levels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from jinja2 import nodes

Path = tuple[str, ...]  # ("inputs", "tone") for inputs.tone and inputs['tone']
Known = frozenset[Path]  # what is known to be defined at a point of the template

_NONE: Known = frozenset()
_DEFAULTS = frozenset({"default", "d"})
_DEFINED_TESTS = frozenset({"defined", "undefined"})


@dataclass(frozen=True)
class Reads:
    """The ids of the Name, Getattr and Getitem nodes that are guarded, or truth tests."""

    guarded: frozenset[int] = frozenset()
    tests: frozenset[int] = frozenset()

    def is_guarded(self, node: nodes.Node) -> bool:
        return id(node) in self.guarded

    def is_tested(self, node: nodes.Node) -> bool:
        """Guarded, or read only for its truth."""
        return id(node) in self.guarded or id(node) in self.tests


NO_GUARDS = Reads()


def guarded_reads(ast: nodes.Template) -> Reads:
    """The reads of ``ast`` that are guarded, and those that are truth tests."""
    walk = _Walk()
    walk.block(ast.body, _NONE)
    return Reads(frozenset(walk.guarded), frozenset(walk.tests))


@dataclass(frozen=True)
class NameUse:
    """A variable a template reads, and the template lines where it first does so: at all,
    unguarded, and not even as a truth test (None where every read is guarded, or tested)."""

    name: str
    line: int
    unguarded: int | None = None
    untested: int | None = None
    guarded: bool = False  # some read is guarded: the template expects it may be missing


def name_uses(ast: nodes.Template, names: Iterable[str]) -> list[NameUse]:
    """How the template reads each of ``names`` (the variables it takes from its context)."""
    found: dict[str, list[nodes.Name]] = {name: [] for name in names}
    reads = guarded_reads(ast) if found else NO_GUARDS
    for node in ast.find_all(nodes.Name):
        if node.name in found and node.ctx == "load":
            found[node.name].append(node)

    def first(some: list[nodes.Name]) -> int | None:
        return min((n.lineno for n in some), default=None)

    # A name read with no Name node to point at (`{% set ns.x = 1 %}`) counts as unguarded.
    return [
        NameUse(
            name,
            first(read) or 1,
            first([n for n in read if not reads.is_guarded(n)]) if read else 1,
            first([n for n in read if not reads.is_tested(n)]) if read else 1,
            any(reads.is_guarded(n) for n in read),
        )
        for name, read in found.items()
    ]


class _Walk:
    def __init__(self) -> None:
        self.guarded: set[int] = set()
        self.tests: set[int] = set()

    # -- statements: each returns what is known after it ---------------------------------------

    def block(self, body: Iterable[nodes.Node], known: Known) -> Known:
        for node in body:
            known = self.statement(node, known)
        return known

    def statement(self, node: nodes.Node, known: Known) -> Known:
        if isinstance(node, nodes.If):
            return self.branches(node, known)
        if isinstance(node, nodes.Assign):
            self.expression(node.node, known)
            return known | _bound(node.target)
        if isinstance(node, nodes.AssignBlock):
            self.block(node.body, known)
            return known | _bound(node.target)
        if isinstance(node, nodes.For):
            self.expression(node.iter, known)
            inner = known | _bound(node.target)
            if node.test is not None:
                self.condition(node.test, inner, boolean=True)
            self.block(node.body, inner)
            self.block(node.else_, known)
            return known
        if isinstance(node, nodes.Macro | nodes.CallBlock):
            self.expressions(node.defaults, known)
            if isinstance(node, nodes.CallBlock):
                self.expression(node.call, known)
            self.block(node.body, known | _bound(*node.args))
            return known | {(node.name,)} if isinstance(node, nodes.Macro) else known
        if isinstance(node, nodes.With):
            self.expressions(node.values, known)
            self.block(node.body, known | _bound(*node.targets))
            return known
        if isinstance(node, nodes.Import):
            return known | {(node.target,)}
        if isinstance(node, nodes.FromImport):
            return known | {(n if isinstance(n, str) else n[1],) for n in node.names}
        # Output, include, blocks, filter blocks...: what is set inside does not leak out.
        inner = known
        for child in node.iter_child_nodes():
            if isinstance(child, nodes.Stmt):
                inner = self.statement(child, inner)
            else:
                self.expression(child, inner)
        return known

    def branches(self, node: nodes.If, known: Known) -> Known:
        """An if / elif / else: each branch knows what the tests before it showed."""
        ends = []
        for test, body in [(node.test, node.body), *((e.test, e.body) for e in node.elif_)]:
            yes, no = self.condition(test, known, boolean=True)
            ends.append(self.block(body, known | yes))
            known |= no
        ends.append(self.block(node.else_, known))
        return frozenset.intersection(*ends)

    # -- expressions ---------------------------------------------------------------------------

    def expressions(self, exprs: Iterable[nodes.Node], known: Known) -> None:
        for expr in exprs:
            self.expression(expr, known)

    def expression(self, node: nodes.Node, known: Known) -> None:
        if isinstance(node, nodes.Not | nodes.And | nodes.Or) or _defined_test(node):
            self.condition(node, known, boolean=False)
        elif isinstance(node, nodes.CondExpr):
            yes, no = self.condition(node.test, known, boolean=True)
            self.expression(node.expr1, known | yes)
            if node.expr2 is not None:
                self.expression(node.expr2, known | no)
        elif isinstance(node, nodes.Filter) and node.name in _DEFAULTS and node.node is not None:
            # (A `{% filter %}` block's Filter has no node: it filters the block's output.)
            self.subject(node.node, known)
            self.expressions([*node.args, *node.kwargs], known)
        else:
            if known and _path(node) in known:
                self.guarded.add(id(node))
            self.expressions(node.iter_child_nodes(), known)

    def condition(self, node: nodes.Node, known: Known, *, boolean: bool) -> tuple[Known, Known]:
        """Visit ``node``; what is known defined where it is true, and where it is false.

        ``boolean``: only the truth of ``node`` is used (an if's test, the left of ``or``).
        """
        if isinstance(node, nodes.Not):
            yes, no = self.condition(node.node, known, boolean=True)
            return no, yes
        if isinstance(node, nodes.And | nodes.Or):
            # `a or b` is `a` only where a is true; `a and b` is `a` where a is false, so there
            # a is only tested where the whole is.
            is_or = isinstance(node, nodes.Or)
            left_yes, left_no = self.condition(node.left, known, boolean=boolean or is_or)
            # The right side runs only where the left is true (and) or false (or).
            after = known | (left_no if is_or else left_yes)
            right_yes, right_no = self.condition(node.right, after, boolean=boolean)
            if is_or:
                return left_yes & right_yes, left_no | right_no
            return left_yes | right_yes, left_no & right_no
        if _defined_test(node):
            assert isinstance(node, nodes.Test)
            path = _path(node.node)
            self.subject(node.node, known)
            shown = _NONE if path is None else _prefixes(path)
            return (shown, _NONE) if node.name == "defined" else (_NONE, shown)
        self.expression(node, known)
        path = _path(node)
        if boolean and path is not None:
            self.tests.add(id(node))
            return _prefixes(path), _NONE
        return _NONE, _NONE

    def subject(self, node: nodes.Node, known: Known) -> None:
        """What a `defined` test or a `default` filter reads: guarded, though its base is not."""
        if _path(node) is not None:
            self.guarded.add(id(node))
            self.expressions(node.iter_child_nodes(), known)
        else:
            self.expression(node, known)


def _defined_test(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Test) and node.name in _DEFINED_TESTS


def _default_filter(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Filter) and node.name in _DEFAULTS and node.node is not None


def _path(node: nodes.Node) -> Path | None:
    """``("inputs", "tone")`` for ``inputs.tone`` or ``inputs['tone']``; None for other exprs."""
    if isinstance(node, nodes.Name):
        return (node.name,) if node.ctx == "load" else None
    if isinstance(node, nodes.Getattr):
        base = _path(node.node)
        return None if base is None else (*base, node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _path(node.node)
        return None if base is None else (*base, str(node.arg.value))
    return None


def _prefixes(path: Path) -> Known:
    """A field that is defined is read from values that are defined too."""
    return frozenset(path[:i] for i in range(1, len(path) + 1))


def _bound(*targets: nodes.Node) -> Known:
    """The names an assignment, loop or macro binds: defined from there on."""
    found = [n for t in targets for n in [t, *t.find_all(nodes.Name)] if isinstance(n, nodes.Name)]
    return frozenset((n.name,) for n in found if n.ctx in ("store", "param"))
