"""A workflow file's text and parsed tree, and how to point at any value in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from flowengine.errors import Location

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


def _position(node: Any, part: PathPart, *, key: bool) -> tuple[int, int] | None:
    try:
        if isinstance(node, CommentedMap) and part in node:
            # An empty value (`defaults:`) has no place of its own: ruamel gives the place of
            # the next token, often on a later line, so point at its key instead.
            empty = node[part] is None
            line, col = node.lc.key(part) if key or empty else node.lc.value(part)
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line, col = node.lc.item(part)
        else:
            return None
    except (KeyError, AttributeError, TypeError, IndexError):
        return None
    if line is None:
        return None
    return int(line) + 1, int(col) + 1
