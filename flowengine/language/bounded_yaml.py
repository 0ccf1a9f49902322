"""YAML read within bounds into plain values that know where each of their items is written.

libyaml's scanner and parser, in C (ruamel.yaml.clib), turn the text into events; where that
extension is missing the pure-Python parser of ruamel.yaml does, about fifteen times slower.
One composer builds the document from the events of either, and enforces the bounds itself:

- A 500-byte file whose aliases refer to aliases nine levels deep ("billion laughs") stands for
  about 400 million values: turned into plain data it grows past gigabytes. What aliases stand
  for is counted as they are read, and refused past :data:`MAX_ALIAS_VALUES`.
- Values nested thousands deep exhaust Python's recursion, and C's; they are refused past
  :data:`MAX_DEPTH`, at the place they start. Both parsers produce events on demand, and read at
  most a line (and never more than about 1,024 characters of it) ahead of the last event, so
  refusing there also stops them before deep nesting on one line costs time quadratic in it.

Mappings and lists come out as :class:`YamlMap` and :class:`YamlList`, dict and list with the
place of each item; scalars are typed by YAML 1.2's rules, as ruamel.yaml types them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import GeneratorType
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import ComposerError
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    StreamEndEvent,
)
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import Resolver

try:
    from _ruamel_yaml import CParser  # ruamel.yaml.clib
except ImportError:  # no wheel for this platform or Python: the pure-Python parser only
    CParser = None

#: Values nested deeper than this are refused, a key or an item one level below its collection
#: (a workflow needs about six levels).
MAX_DEPTH = 100
#: Aliases (``*name``) may stand for this many values in all, counted as if written out.
MAX_ALIAS_VALUES = 100_000

#: Where an item is written, 0-based: its key's line and column, its value's line and column,
#: and whether the value is a block scalar (``|`` or ``>``, its text from the next line on).
#: An item of a list has no key: its value's place stands for both.
Place = tuple[int, int, int, int, bool]


class YamlMap(dict[Any, Any]):
    """A mapping read from YAML; ``at[key]`` is the :data:`Place` of that item."""

    __slots__ = ("at",)
    at: dict[Any, Place]


class YamlList(list[Any]):
    """A list read from YAML; ``at[i]`` is the :data:`Place` of item ``i``."""

    __slots__ = ("at",)
    at: list[Place]


class YamlRefused(Exception):
    """Text that is valid YAML but not read; ``mark`` is where (0-based line and column)."""

    def __init__(self, message: str, fix: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.mark = mark


class YamlLimit(YamlRefused):
    """Text past one of the bounds: nested too deep, or aliases that expand too far."""

    def __init__(self, message: str, fix: str, mark: Any, *, deep: bool = False) -> None:
        super().__init__(message, fix, mark)
        self.deep = deep  # nested too deep, rather than aliases that expand too far


def too_deep(mark: Any) -> YamlLimit:
    return YamlLimit(
        f"values nest deeper than {MAX_DEPTH} levels",
        "flatten this value: a workflow needs only a few levels of nesting",
        mark,
        deep=True,
    )


def read_yaml(text: str) -> Any:
    """The value of the one YAML document in ``text`` (None if there is none).

    Raises YamlRefused (YamlLimit past a bound), or ruamel's YAMLError for text that is not
    YAML, in the words and at the place of ruamel's pure-Python parser.
    """
    if CParser is None:
        return _Composer(_pure_events(text)).document()
    try:
        return _Composer(CParser(text).get_event).document()
    except (YAMLError, ValueError):
        # libyaml words its errors otherwise (and refuses a few things YAML 1.2 allows): the
        # pure parser says what is wrong, where, as the messages of tests/data/invalid expect.
        return _Composer(_pure_events(text)).document()


def _pure_events(text: str) -> Callable[[], Any]:
    events: Iterator[Any] = YAML(typ="safe", pure=True).parse(text)
    return events.__next__


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_INT = "tag:yaml.org,2002:int"
_BLOCK_STYLES = frozenset("|>")
_RESOLVER = Resolver()  # YAML 1.2's implicit types, from a scalar's text
_IMPLICIT = _RESOLVER.yaml_implicit_resolvers  # by first character (null's is "")
_CONSTRUCTOR = YAML(typ="safe", pure=True).constructor  # the typed value, from the text


class _Composer:
    """The document's value from parser events, counting depth and what aliases stand for."""

    def __init__(self, next_event: Callable[[], Any]) -> None:
        self.next_event = next_event
        self.depth = 0
        self.values = 0  # values composed so far, an alias counted as the values it stands for
        self.via_aliases = 0
        self.anchors: dict[str, Any] = {}  # None while the value is being composed
        self.sizes: dict[str, int] = {}  # values each finished anchor stands for

    def document(self) -> Any:
        self.next_event()  # the start of the stream
        if isinstance(self.next_event(), StreamEndEvent):
            return None  # no document: an empty file, or only comments
        value = self.value(first := self.next_event())
        self.next_event()  # the end of the document
        if not isinstance(event := self.next_event(), StreamEndEvent):
            raise ComposerError(
                "expected a single document in the stream",
                first.start_mark,
                "but found another document",
                event.start_mark,
            )
        return value

    def value(self, event: Any) -> Any:
        kind = type(event)
        if kind is AliasEvent:
            return self.alias(event)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise too_deep(event.start_mark)
        anchor = event.anchor
        if anchor is not None:
            self.anchors[anchor] = None  # not finished: an alias to it inside would never end
            self.sizes.pop(anchor, None)
        before = self.values
        if kind is ScalarEvent:
            value = _scalar(event)
        elif kind is MappingStartEvent:
            value = self.mapping()
        else:
            value = self.sequence()
        self.values += 1
        if anchor is not None:
            self.anchors[anchor] = value
            self.sizes[anchor] = self.values - before
        self.depth -= 1
        return value

    def alias(self, event: Any) -> Any:
        anchor = event.anchor
        if anchor not in self.anchors:
            raise ComposerError(None, None, f"found undefined alias {anchor!r}", event.start_mark)
        size = self.sizes.get(anchor)
        if size is None:
            raise YamlLimit(
                f"alias *{anchor} is used inside the value it names, which would never end",
                f"use *{anchor} only after the value of &{anchor} ends",
                event.start_mark,
            )
        self.values += size
        self.via_aliases += size
        if self.via_aliases > MAX_ALIAS_VALUES:
            raise YamlLimit(
                f"aliases expand to more than {MAX_ALIAS_VALUES:,} values",
                "use fewer aliases (*name), or write the values out",
                event.start_mark,
            )
        return self.anchors[anchor]

    def mapping(self) -> YamlMap:
        mapping = YamlMap()
        at = mapping.at = {}
        merges: list[tuple[Any, Any]] = []
        while type(key_event := self.next_event()) is not MappingEndEvent:
            key = self.value(key_event)
            value = self.value(value_event := self.next_event())
            if isinstance(key, dict | list):
                raise YamlRefused(
                    "a key must be a single value, not a list or a mapping",
                    "write the key as plain text",
                    key_event.start_mark,
                )
            if key == "<<" and type(key_event) is ScalarEvent and key_event.implicit[0]:
                merges.append((value, value_event))
                continue
            if key in at:
                raise YamlRefused(
                    f"duplicate key '{key}' (first defined on line {at[key][0] + 1})",
                    "remove or rename one of the keys",
                    key_event.start_mark,
                )
            mapping[key] = value
            at[key] = _place(key_event, value_event)
        for value, value_event in merges:
            _merge(mapping, value, value_event)
        return mapping

    def sequence(self) -> YamlList:
        sequence = YamlList()
        at = sequence.at = []
        while type(event := self.next_event()) is not SequenceEndEvent:
            sequence.append(self.value(event))
            at.append(_place(event, event))
        return sequence


def _scalar(event: Any) -> Any:
    tag, text = event.tag, event.value
    if tag is None or tag == "!":
        if not event.implicit[0] or text[:1] not in _IMPLICIT:
            return text  # quoted, or plain with a first character no other type starts with
        tag = _RESOLVER.resolve(ScalarNode, text, event.implicit).suffix
    if tag in (_STR, _MERGE):
        return text
    if tag == _INT and text.isdigit():
        # Decimal digits only, as most numbers are: ruamel's constructor asks for the YAML
        # version on the way, which made reading 100,000 models 1.0 s (35%) slower.
        return int(text)
    node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
    construct = _CONSTRUCTOR.yaml_constructors.get(tag)
    if construct is None:  # a tag of the application's own (`!name`): none is known
        return _CONSTRUCTOR.construct_undefined(node)
    made = construct(_CONSTRUCTOR, node)
    if isinstance(made, GeneratorType):  # a collection's tag on a scalar (`!!map text`)
        for _ in made:  # ruamel fills a collection in a second step, which refuses the scalar
            pass
    return made


def _place(key_event: Any, value_event: Any) -> Place:
    key, value = key_event.start_mark, value_event.start_mark
    block = type(value_event) is ScalarEvent and value_event.style in _BLOCK_STYLES
    return key.line, key.column, value.line, value.column, block


def _merge(mapping: YamlMap, value: Any, event: Any) -> None:
    """``<<: *base`` (or ``<<: [*a, *b]``): the items of those mappings that are not set here."""
    for source in value if isinstance(value, list) else [value]:
        if not isinstance(source, YamlMap):
            raise YamlRefused(
                "`<<` merges mappings, and this is not one",
                "merge a mapping (`<<: *name`) or a list of them",
                event.start_mark,
            )
        for key, item in source.items():
            if key not in mapping:
                mapping[key] = item
                mapping.at[key] = source.at[key]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the duration (it is on again after).

    Parsing allocates millions of objects and frees almost none, so each automatic collection
    scans a heap that keeps growing: parse time grows with the square of the file's size (a
    5000-node workflow read by the pure-Python parser: 9.6 s with the collector, 3.6 s without).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
