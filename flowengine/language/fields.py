"""The fields of the values templates read, and a check of every ``a.b`` a template writes.

A node's output has a type known from its kind: an ``llm`` node's is a CallResult, a fanout's a
list of them, a select's a SelectResult, a loop's a LoopResult whose rounds hold its nodes'
outputs. ``models.X`` and a fanout's ``model`` are ModelInfo, and the output mapping's
``metadata`` is the run's metadata. A misspelt field (``{{ first.contnt }}``)
would fail only when its template renders, after calls were paid for; walking the template's
syntax tree finds it before.

Checked: chains of attributes and indexes on those names (``critiques[0].usage.cost``), a loop
variable over a list (``{% for c in critiques %}``, also through ``selectattr`` and the like), and
the attribute names given to ``map``, ``selectattr``, ``sum``... Not checked: values a template
builds itself (``{% set x = first %}``, ``[primary] + critiques``) and a node's ``vars``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from jinja2 import nodes

from flowengine.errors import did_you_mean
from flowengine.language.guards import NO_GUARDS, Reads
from flowengine.language.response_schemas import resolve_ref
from flowengine.language.templates import ModelInfo
from flowengine.results import CallResult, JudgeResult, LoopResult, RunMetadata, SelectResult


@dataclass(frozen=True)
class Record:
    """A value with named fields; ``fields`` holds each field's own shape where it is known."""

    what: str
    fields: Mapping[str, Shape | None]
    methods: frozenset[str] = frozenset()  # other names it answers to (a dict's `items`)


@dataclass(frozen=True)
class ListOf:
    what: str
    item: Shape


@dataclass(frozen=True)
class Table:
    """A mapping of the names a section declares (``models``, ``inputs``) to their values."""

    section: str
    entry: str
    keys: tuple[str, ...] | None  # None: part of the section could not be read
    value: Shape | None = None
    optional: frozenset[str] = frozenset()  # entries a run may leave undefined


Shape: TypeAlias = Record | ListOf | Table


@dataclass(frozen=True)
class FieldIssue:
    """A field that cannot exist, at the template's line, pointing at ``word``."""

    message: str
    fix: str | None
    code: str
    line: int
    word: str


def record_of(cls: type[Any], what: str) -> Record:
    """The shape of a dataclass, with the shapes of the dataclasses among its fields."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    return Record(what, {f.name: _nested(f.name, hints[f.name]) for f in fields})


def _nested(name: str, hint: Any) -> Shape | None:
    """The shape of a field whose type is a dataclass, maybe optional (``ErrorInfo | None``)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    found = [t for t in members if isinstance(t, type) and dataclasses.is_dataclass(t)]
    return record_of(found[0], name) if len(found) == 1 else None


_DICT_METHODS = frozenset(n for n in dir(dict) if not n.startswith("_"))
_LIST_METHODS = frozenset(n for n in dir(list) if not n.startswith("_"))

CALL = record_of(CallResult, "a call result")
CALLS = ListOf("a list of call results", CALL)
SELECT = record_of(SelectResult, "a select result")
MODEL = record_of(ModelInfo, "a model")
# The output mapping reads the metadata as a dict: its methods answer too.
METADATA = Record("metadata", dict.fromkeys(RunMetadata.model_fields), _DICT_METHODS)
# A judge's output in general; checks.py gives each judge node the shape of its own criteria.
JUDGE = Record("a judge result", {**record_of(JudgeResult, "").fields, "best": CALL})
NODE_OUTPUTS: Mapping[str, Shape] = {"llm": CALL, "fanout": CALLS, "select": SELECT, "judge": JUDGE}
LOOP = record_of(LoopResult, "a loop's output")
_NODE_OUTPUT_KINDS = frozenset({CALL.what, CALLS.what, SELECT.what, JUDGE.what, LOOP.what})


def mapping(what: str, keys: Iterable[str]) -> Record:
    """A dict whose keys are known; its methods (``items``...) answer too."""
    return Record(what, dict.fromkeys(keys), _DICT_METHODS)


#: Keywords that let an object hold more than its listed properties, or one of several shapes.
_OPEN_OBJECT = ("patternProperties", "allOf", "anyOf", "oneOf", "if", "$ref", "$dynamicRef")


def node_output(kind: str, data: Shape | None) -> Shape:
    """The output of an ``llm`` or ``fanout`` node whose ``data`` has a known shape."""
    call = Record(CALL.what, {**CALL.fields, "data": data})
    return call if kind == "llm" else ListOf(CALLS.what, call)


def loop_output(loop_id: str, members: Mapping[str, Shape | None]) -> Record:
    """The output of loop ``loop_id``, whose nodes' outputs have the shapes ``members``: each
    round (and the last, and ``previous`` inside the loop) is a record of them by node id."""
    one_round = Record(f"a round of loop '{loop_id}'", dict(members), _DICT_METHODS)
    rounds = ListOf(f"a list of rounds of loop '{loop_id}'", one_round)
    return Record(LOOP.what, {**LOOP.fields, "rounds": rounds, "last": one_round})


def data_shape(schema: Any, root: Mapping[str, Any], depth: int = 0) -> Shape | None:
    """What a template may read of data that ``schema`` describes: the properties of an object
    (nested objects and arrays too); None where anything may be there.

    An object with ``additionalProperties`` other than false, or one shaped by ``anyOf``,
    ``$ref``..., or no ``properties`` at all, may have any field.
    """
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if isinstance(ref, str) and ref.startswith("#") and len(schema) == 1 and depth < 16:
        return data_shape(resolve_ref(dict(root), ref), root, depth + 1)
    if not isinstance(schema, dict) or depth > 32 or any(k in schema for k in _OPEN_OBJECT):
        return None
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        if schema.get("additionalProperties", False) is not False:
            return None
        fields = {name: data_shape(sub, root, depth + 1) for name, sub in properties.items()}
        return Record("the data (properties of its schema)", fields, _DICT_METHODS)
    items = schema.get("items")
    if schema.get("type") == "array" and "prefixItems" not in schema:
        item = data_shape(items, root, depth + 1)
        return ListOf("a list", item) if item is not None else None
    return None


# Filters that return their list, or one item of it; filters that read an attribute of each item,
# by keyword (`map(attribute='content')`) or as their first argument (`selectattr('success')`).
_SAME_LIST = frozenset({"selectattr", "rejectattr", "sort", "reverse", "list"})
_ONE_ITEM = frozenset({"first", "last", "random"})
_ATTRIBUTE_KEYWORD = frozenset({"map", "sum", "sort", "groupby", "min", "max", "unique"})
_ATTRIBUTE_FIRST = frozenset({"selectattr", "rejectattr", "groupby"})

Value = Shape | None  # None: nothing is known of it, so nothing read from it is checked
Chain = nodes.Getattr | nodes.Getitem | nodes.Filter


def field_issues(
    ast: nodes.Template, roots: Callable[[str], Shape | None], reads: Reads = NO_GUARDS
) -> list[FieldIssue]:
    """Every field the template reads that cannot exist, or may not; ``roots`` gives the shapes
    of names, ``reads`` the reads that `is defined` or `default` guard (:mod:`.guards`)."""
    return _Walk(ast, roots, reads).run()


def optional_read(name: str, expr: str) -> tuple[str, str, str]:
    """Message, fix and code for ``expr`` reading optional input ``name`` outside a guard."""
    return (
        f"optional input '{name}' (no default) is read where it may be undefined",
        f"test it first (`{{% if {expr} is defined %}}`), write `{{{{ {expr} | default('') }}}}`,"
        " or give the input a `default:`",
        "optional-input",
    )


class _Walk:
    """One template's walk. Iterative, not recursive: a template may nest deeper than Python."""

    def __init__(
        self, ast: nodes.Template, roots: Callable[[str], Shape | None], reads: Reads
    ) -> None:
        self.ast = ast
        self.roots = roots
        self.reads = reads
        self.assigned = _assigned(ast)
        self.memo: dict[int, Value] = {}  # each link of a chain is looked at once
        self.issues: list[FieldIssue] = []

    def run(self) -> list[FieldIssue]:
        stack: list[tuple[nodes.Node, Mapping[str, Value]]] = [(self.ast, {})]
        while stack:
            node, local = stack.pop()
            if isinstance(node, nodes.For):
                # The loop variable holds an item of what the loop walks, in the body only.
                inner = {**local, **self.targets(node.target, self.shape(node.iter, local))}
                stack += [(child, inner) for child in [*node.body, node.test] if child]
                stack += [(child, local) for child in node.else_]
                stack += [(node.iter, local)]
                continue
            if isinstance(node, Chain):
                self.shape(node, local)
            stack += [(child, local) for child in node.iter_child_nodes()]
        return self.issues

    def targets(self, target: nodes.Node, walked: Value) -> dict[str, Value]:
        item = walked.item if isinstance(walked, ListOf) else None
        if isinstance(target, nodes.Name):
            return {target.name: item}
        return {name.name: None for name in _descendants(target, nodes.Name)}

    def shape(self, node: nodes.Node, local: Mapping[str, Value]) -> Value:
        chain: list[Chain] = []
        while isinstance(node, Chain) and id(node) not in self.memo and node.node is not None:
            chain.append(node)
            node = node.node
        named = isinstance(node, nodes.Name) and node.name not in local
        if id(node) in self.memo:
            value = self.memo[id(node)]
        elif not isinstance(node, nodes.Name) or node.name in self.assigned:
            value = None
        else:
            value = self.roots(node.name) if named else local[node.name]
        # Messages name a node's output as the node; anything else as the template writes it.
        is_node = named and isinstance(value, Record | ListOf) and value.what in _NODE_OUTPUT_KINDS
        label = f"node '{node.name}'" if is_node and isinstance(node, nodes.Name) else None
        for link in reversed(chain):
            base = value
            if base is not None:
                value = self.step(link, base, Subject(link.node, label))
            self.memo[id(link)] = value
            label = _entry_label(base, link)
        return value

    def step(self, link: Chain, base: Shape, subject: Subject) -> Value:
        if isinstance(link, nodes.Filter):
            return self.filtered(link, base, subject)
        if isinstance(link, nodes.Getattr):
            return self.field(link, base, link.attr, subject)
        arg = link.arg
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
            # Jinja reads `x['name']` as `x.name` where x has no such item, and the reverse.
            return self.field(link, base, arg.value, subject)
        if isinstance(base, ListOf):
            return base if isinstance(arg, nodes.Slice) else base.item
        return base.value if isinstance(base, Table) else None

    def field(self, link: Chain, base: Shape, name: str, subject: Subject) -> Value:
        """``base.name``: a field that may be missing is no error where a guard tests it."""
        found = attribute(base, name, subject)
        if self.reads.is_guarded(link):
            return None if isinstance(found, FieldIssue) else found
        if isinstance(base, Table) and name in base.optional and not self.reads.is_tested(link):
            found = _issue(*optional_read(name, f"{subject.text}.{name}"))
        return self.found(found, link.lineno, name)

    def filtered(self, link: nodes.Filter, base: Shape, subject: Subject) -> Value:
        if not isinstance(base, ListOf):
            return None
        for path in _attribute_args(link):
            shape: Value = base.item
            parts = path.split(".")
            for i, part in enumerate(parts):
                if shape is None or part.isdigit():
                    break
                of = f"'{'.'.join(parts[:i])}' of " if i else ""
                each = Subject(None, f"{of}each item of {subject.label}")
                shape = self.found(attribute(shape, part, each), link.lineno, part)
        if link.name in _SAME_LIST:
            return base
        return base.item if link.name in _ONE_ITEM else None

    def found(self, result: Value | FieldIssue, line: int, word: str) -> Value:
        if isinstance(result, FieldIssue):
            self.issues.append(dataclasses.replace(result, line=line, word=word))
            return None
        return result


@dataclass(frozen=True)
class Subject:
    """What a field is read from; written out only for a message, which few reads need."""

    expr: nodes.Node | None
    name: str | None = None  # how a message names it, if not as the expression: node 'first'

    @property
    def text(self) -> str:
        return _text(self.expr)

    @property
    def label(self) -> str:
        return self.name or f"'{self.text}'"


def attribute(shape: Shape, name: str, subject: Subject) -> Value | FieldIssue:
    """What ``subject.name`` is, or why it cannot be read (its line and word are set later)."""
    if name.startswith("_"):
        return None  # the template checks report names starting with '_' as unsafe
    if isinstance(shape, Record):
        if name in shape.fields:
            return shape.fields[name]
        if name in shape.methods:
            return None
        fields = ", ".join(shape.fields)
        fix = did_you_mean(name, shape.fields) or f"fields of {shape.what}: {fields}"
        return _issue(f"{subject.label} has no field '{name}'", fix, "unknown-field")
    if isinstance(shape, Table):
        if shape.keys is None or name in shape.keys:
            return shape.value
        if name in _DICT_METHODS:
            return None
        known = f" (known: {', '.join(shape.keys)})" if shape.keys else ""
        fix = did_you_mean(name, shape.keys) or f"declare it under `{shape.section}:`{known}"
        return _issue(f"unknown {shape.entry} '{name}'", fix, f"unknown-{shape.entry}")
    if name in _LIST_METHODS:
        return None
    fix = _list_fix(shape, name, subject.text)
    return _issue(f"{subject.label} has no field '{name}'", fix, "unknown-field")


def _entry_label(table: Value, link: Chain) -> str | None:
    """``model 'gpt'`` for ``models.gpt`` or ``models['gpt']``: an entry named by the file."""
    if not isinstance(table, Table):
        return None
    if isinstance(link, nodes.Getattr):
        return f"{table.entry} '{link.attr}'"
    key = link.arg if isinstance(link, nodes.Getitem) else None
    if isinstance(key, nodes.Const) and isinstance(key.value, str):
        return f"{table.entry} '{key.value}'"
    return None


def _issue(message: str, fix: str | None, code: str) -> FieldIssue:
    return FieldIssue(message, fix, code, line=1, word="")


def _list_fix(shape: ListOf, name: str, text: str) -> str:
    """Say that a list's items have fields, and how to read one."""
    fields = list(shape.item.fields) if isinstance(shape.item, Record) else []
    near = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    if not near:
        return f"{text} is {shape.what}; each has the fields: {', '.join(fields)}"
    return (
        f"{text} is {shape.what}: loop over it "
        f"(`{{% for r in {text} %}}{{{{ r.{near[0]} }}}}{{% endfor %}}`) "
        f"or take one (`{text}[0].{near[0]}`)"
    )


def _attribute_args(link: nodes.Filter) -> Iterator[str]:
    """The attribute names a filter reads from each item: ``map(attribute='content')``..."""
    given = [kw.value for kw in link.kwargs if kw.key == "attribute"]
    if link.name in _ATTRIBUTE_KEYWORD:
        yield from _strings(given)
    if link.name in _ATTRIBUTE_FIRST:
        yield from _strings(link.args[:1])


def _strings(args: list[nodes.Expr]) -> Iterator[str]:
    for arg in args:
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
            yield arg.value


def _text(node: nodes.Node | None) -> str:
    """An expression as a template writes it, for messages: ``critiques[0].usage``.

    At most a few links, from the end: a long chain of slices keeps its shape, and writing it
    whole at each link would take time in the square of its length.
    """
    parts: list[str] = []
    while isinstance(node, Chain) and node.node is not None and len(parts) < 6:
        if isinstance(node, nodes.Getattr):
            parts.append(f".{node.attr}")
        elif isinstance(node, nodes.Filter):
            parts.append(f"|{node.name}")
        elif isinstance(node.arg, nodes.Const):
            parts.append(f"[{node.arg.value!r}]")
        else:
            parts.append("[...]")
        node = node.node
    head = node.name if isinstance(node, nodes.Name) else "(...)"
    return head + "".join(reversed(parts))


def _assigned(ast: nodes.Template) -> frozenset[str]:
    """Names the template binds itself, other than loop variables: their shapes are unknown."""
    names: set[str] = set()
    loop_targets: set[int] = set()
    for node in _descendants(ast, nodes.Node):
        if isinstance(node, nodes.For):
            loop_targets |= {id(node.target), *map(id, _descendants(node.target, nodes.Name))}
        elif isinstance(node, nodes.Name) and node.ctx in ("store", "param"):
            if id(node) not in loop_targets:  # the walk meets a loop before its target
                names.add(node.name)
        elif isinstance(node, nodes.Macro):
            names.add(node.name)
        elif isinstance(node, nodes.Import):
            names.add(node.target)
        elif isinstance(node, nodes.FromImport):
            names |= {n if isinstance(n, str) else n[1] for n in node.names}
    return frozenset(names)


_N = typing.TypeVar("_N", bound=nodes.Node)


def _descendants(node: nodes.Node, kind: type[_N]) -> Iterator[_N]:
    """Like ``node.find_all(kind)``, without recursion."""
    stack = list(node.iter_child_nodes())
    while stack:
        child = stack.pop()
        if isinstance(child, kind):
            yield child
        stack.extend(child.iter_child_nodes())
