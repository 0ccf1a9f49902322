"""ruamel.yaml set up to read any text within bounds: nesting depth, and what aliases expand to.

A 500-byte file whose aliases refer to aliases nine levels deep ("billion laughs") stands for
about 400 million values: turned into plain data it grows past gigabytes. Values nested
thousands deep exhaust Python's recursion, and on one line they make ruamel's scanner take time
quadratic in the depth. Both are refused while the text is read, at the place they start.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.scanner import Scanner

#: Collections nested deeper than this are refused (a workflow needs about six levels).
MAX_DEPTH = 100
#: Aliases (``*name``) may stand for this many values in all, counted as if written out.
MAX_ALIAS_VALUES = 100_000


class YamlLimit(Exception):
    """Text past one of the bounds; ``mark`` is where (a ruamel mark, 0-based line and column)."""

    def __init__(self, message: str, fix: str, mark: Any, *, deep: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.mark = mark
        self.deep = deep  # nested too deep, rather than aliases that expand too far


def too_deep(mark: Any) -> YamlLimit:
    return YamlLimit(
        f"values nest deeper than {MAX_DEPTH} levels",
        "flatten this value: a workflow needs only a few levels of nesting",
        mark,
        deep=True,
    )


class _BoundedScanner(Scanner):
    """ruamel's plain scanner, which refuses flow collections (``[``, ``{``) nested too deep.

    The plain scanner, not the round-trip one: flowengine never writes the file back, so it
    needs no comments, and the round-trip scanner joins a run of comment lines one string
    concatenation at a time (10 MB of comments: minutes).
    """

    def fetch_flow_sequence_start(self) -> None:
        self._check_flow_depth()
        super().fetch_flow_sequence_start()

    def fetch_flow_mapping_start(self) -> None:
        self._check_flow_depth()
        super().fetch_flow_mapping_start()

    def _check_flow_depth(self) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise too_deep(self.reader.get_mark())


class _BoundedComposer(Composer):
    """ruamel's composer, which counts nesting and what aliases stand for as it goes."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._depth = 0
        self._values = 0  # values composed so far, an alias counted as the values it stands for
        self._via_aliases = 0
        self._sizes: dict[Any, int] = {}  # values each finished anchor stands for

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise too_deep(event.start_mark)
        anchor = event.anchor
        self._sizes.pop(anchor, None)  # not finished: an alias to it inside would never end
        before = self._values
        node = super().compose_node(parent, index)
        self._values += 1
        if anchor is not None:
            self._sizes[anchor] = self._values - before
        self._depth -= 1
        return node

    def _count_alias(self, event: Any) -> None:
        anchor = event.anchor
        if anchor not in self.anchors:
            return  # ruamel reports an undefined alias itself
        size = self._sizes.get(anchor)
        if size is None:
            raise YamlLimit(
                f"alias *{anchor} is used inside the value it names, which would never end",
                f"use *{anchor} only after the value of &{anchor} ends",
                event.start_mark,
            )
        self._values += size
        self._via_aliases += size
        if self._via_aliases > MAX_ALIAS_VALUES:
            raise YamlLimit(
                f"aliases expand to more than {MAX_ALIAS_VALUES:,} values",
                "use fewer aliases (*name), or write the values out",
                event.start_mark,
            )


def bounded_yaml(typ: str = "rt") -> YAML:
    """A ruamel YAML loader (``"rt"`` keeps lines and columns; ``"safe"``) within the bounds."""
    yaml = YAML(typ=typ, pure=True)
    yaml.Scanner = _BoundedScanner
    yaml.Composer = _BoundedComposer
    yaml.allow_duplicate_keys = False
    return yaml


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the duration (it is on again after).

    Parsing allocates millions of objects and frees almost none, so each automatic collection
    scans a heap that keeps growing: parse time grows with the square of the file's size (a
    5000-node workflow: 9.6 s with the collector, 3.6 s without).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
