"""A workflow file's text and parsed tree, and how to point at any value in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from flowengine.errors import Location
from flowengine.language.bounded_yaml import Place, YamlList, YamlMap

PathPart = str | int
YamlPath = tuple[PathPart, ...]


@dataclass
class Source:
    """A workflow file's text and parsed tree, able to point at any value in it."""

    file: str
    text: str
    root: Any = None
    overrides: dict[YamlPath, str] = field(default_factory=dict)

    @cached_property
    def lines(self) -> list[str]:
        # Cached: every problem and every checked template asks for a line of the file.
        return self.text.splitlines()

    def at(self, line: int | None, column: int | None = None) -> Location:
        """A location from 1-based line and column, with the source line for display."""
        if line is None:
            return Location(self.file)
        lines = self.lines
        text = lines[line - 1] if 0 < line <= len(lines) else None
        return Location(self.file, line, column or 1, text)

    def locate(self, path: YamlPath, *, key: bool = False) -> Location:
        """Where the value at ``path`` is (or its key, with ``key=True``).

        A path that leads off the tree points at the deepest part that exists; a path set by an
        override points at the ``--set`` that set it: the most specific one, since an earlier
        ``--set`` may have made up the mapping a later one sets a value in.
        """
        found = [prefix for prefix in self.overrides if path[: len(prefix)] == prefix]
        if found:
            return Location(f"--set {self.overrides[max(found, key=len)]}")
        line, col = 1, 1
        node = self.root
        for i, part in enumerate(path):
            pos = _position(node, part, key=key and i == len(path) - 1)
            if pos is None:
                break
            line, col = pos
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
        return self.at(line, col)

    def is_block_scalar(self, path: YamlPath) -> bool:
        """Whether the value at ``path`` is written as a block scalar (``|`` or ``>``)."""
        place = _place(_value_at(self.root, path[:-1]), path[-1]) if path else None
        return place is not None and place[4]


def _position(node: Any, part: PathPart, *, key: bool) -> tuple[int, int] | None:
    place = _place(node, part)
    if place is None:
        return None
    key_line, key_col, line, col, _ = place
    # An empty value (`defaults:`) has no place of its own: the parser gives the place of the
    # next token, often on a later line, so point at its key instead.
    if key or node[part] is None:
        line, col = key_line, key_col
    return line + 1, col + 1


def _place(node: Any, part: PathPart) -> Place | None:
    if isinstance(node, YamlMap):
        return node.at.get(part)
    if isinstance(node, YamlList) and isinstance(part, int) and 0 <= part < len(node.at):
        return node.at[part]
    return None


def _value_at(root: Any, path: YamlPath) -> Any:
    node = root
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node
