"""What a run can take as an input value: text with a UTF-8 form, nesting within a bound.

Python decodes command-line bytes that are not UTF-8 with ``surrogateescape``: the byte 0xE9
becomes the lone surrogate U+DCE9. Such a string has no UTF-8 form, so it would fail only when
the run is recorded, after every call was paid for; it is refused before the first call instead.
"""

from __future__ import annotations

import re
from typing import Any

from flowengine.errors import UsageError

#: Arrays and objects nested deeper are refused: JSON, pydantic and templates recurse over them.
MAX_DEPTH = 100

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_UTF8_FIX = "pass UTF-8 text"
_QUOTED = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'", re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def text_problem(text: str) -> str | None:
    """Why ``text`` has no UTF-8 form (``byte 0xe9 at character 4``), or None if it has one."""
    found = _LONE_SURROGATE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    # surrogateescape maps an undecodable byte b (0x80-0xff) to U+DC00 + b.
    what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "a lone surrogate"
    return f"{what} at character {found.start() + 1}"


def check_text(what: str, text: str) -> None:
    """Raise UsageError naming ``what`` if ``text`` has no UTF-8 form."""
    problem = text_problem(text)
    if problem is not None:
        raise UsageError(f"{what} is not valid UTF-8 text ({problem})", _NOT_UTF8_FIX)


def check_value(name: str, value: Any) -> None:
    """Raise UsageError if input ``name`` holds text with no UTF-8 form (in a string or a key,
    at any depth) or nests arrays and objects deeper than :data:`MAX_DEPTH`.

    Walks with its own stack, so that a value nested thousands deep is refused, not a
    RecursionError.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, place, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                where = f"{problem} of {place}" if place else problem
                raise UsageError(f"input '{name}' is not valid UTF-8 text ({where})", _NOT_UTF8_FIX)
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise too_deep(name)
            pairs = list(item.items() if isinstance(item, dict) else enumerate(item))
            for key, child in reversed(pairs):  # the stack pops them in order
                inner = f"{place}[{key!r}]"  # repr escapes a surrogate in a key
                stack.append((child, inner, depth + 1))
                if isinstance(key, str):
                    stack.append((key, f"the key {inner}", depth))


def too_deep(name: str) -> UsageError:
    return UsageError(
        f"input '{name}' is nested deeper than {MAX_DEPTH} levels",
        f"pass at most {MAX_DEPTH} levels of arrays and objects",
    )


def flow_depth(text: str) -> int:
    """How deep YAML flow collections (``[...]``, ``{...}``) nest in ``text``, quoted strings
    left out: never less than the depth of the value it parses to in flow style.

    Checked before parsing because ruamel's scanner takes time quadratic in this depth
    (3000 levels: seconds) before its parser fails with a RecursionError.
    """
    depth = deepest = 0
    for found in _BRACKET.finditer(_QUOTED.sub("", text)):
        if found.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest
