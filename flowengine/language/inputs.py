"""What a run can take as an input value (text with a UTF-8 form, nesting within a bound), and
how templates see inputs: an optional input with no default that a run was not given is undefined.

Python decodes command-line bytes that are not UTF-8 with ``surrogateescape``: the byte 0xE9
becomes the lone surrogate U+DCE9. Such a string has no UTF-8 form, so it would fail only when
the run is recorded, after every call was paid for; it is refused before the first call instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined

from flowengine.errors import UsageError
from flowengine.spec import InputSpec
from flowengine.text import LONE_SURROGATE

#: Arrays and objects nested deeper are refused: JSON, pydantic and templates recurse over them.
MAX_DEPTH = 100

_NOT_UTF8_FIX = "pass UTF-8 text"


def may_be_missing(spec: InputSpec) -> bool:
    """Whether a run may leave the input out with no default: it is then undefined in templates."""
    return not spec.is_required and spec.default is None


class NotGiven(StrictUndefined):
    """An optional input with no default that the run was not given, as templates see it.

    Undefined as Jinja means it: ``is defined`` is false and ``default(...)`` applies. It is false
    in a test too (``{% if tone %}``, ``tone or 'calm'``), where an undefined name would fail;
    printing it or any other use fails as every undefined name does (the checks report such reads).
    """

    __slots__ = ()

    # StrictUndefined's __bool__ is typed as never returning: this one does.
    def __bool__(self) -> bool:  # type: ignore[override]
        return False


class TemplateInputs(dict[str, Any]):
    """``inputs`` as templates see it: the values given. An input that was not given is not
    among its keys, but reads as :class:`NotGiven` (``inputs.tone``), as it does by name."""

    __slots__ = ("_missing",)  # private: templates read `inputs.missing` as an input

    def __init__(self, values: Mapping[str, Any], missing: Mapping[str, NotGiven]) -> None:
        super().__init__(values)
        self._missing = missing

    def __missing__(self, key: str) -> NotGiven:
        try:
            return self._missing[key]
        except KeyError:
            raise KeyError(key) from None


def template_inputs(declared: Mapping[str, InputSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """The bound ``values`` of the ``declared`` inputs as templates read them: by name, and as
    ``inputs``; those not given are :class:`NotGiven`."""
    missing = {
        name: NotGiven(name=name, hint=f"input '{name}' was not given")
        for name in declared
        if name not in values
    }
    return {**values, **missing, "inputs": TemplateInputs(values, missing)}


def text_problem(text: str) -> str | None:
    """Why ``text`` has no UTF-8 form (``byte 0xe9 at character 4``), or None if it has one."""
    found = LONE_SURROGATE.search(text)
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
    """Raise UsageError if input ``name`` nests arrays and objects deeper than
    :data:`MAX_DEPTH` or holds text with no UTF-8 form (in a string or a key, at any depth)."""
    if nested_too_deep(value):
        raise too_deep(name)
    found = find_lone_surrogate(value)
    if found is not None:
        text, place = found
        problem = text_problem(text)
        where = f"{problem} of {place}" if place else problem
        raise UsageError(f"input '{name}' is not valid UTF-8 text ({where})", _NOT_UTF8_FIX)


def nested_too_deep(value: Any) -> bool:
    """Whether arrays and objects nest more than :data:`MAX_DEPTH` levels in ``value``.

    Level by level, not by recursion, so that the check itself cannot run out of stack.
    """
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(MAX_DEPTH):
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def find_lone_surrogate(value: Any) -> tuple[str, str] | None:
    """The first string or key in ``value`` that holds a lone surrogate, and where it is
    (``['tags'][1]``, ``the key ['x']``, or "" for ``value`` itself); None if there is none."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, place = stack.pop()
        if isinstance(item, str):
            if LONE_SURROGATE.search(item):
                return item, place
        elif isinstance(item, dict | list):
            pairs = list(item.items() if isinstance(item, dict) else enumerate(item))
            for key, child in reversed(pairs):  # the stack pops them in order
                inner = f"{place}[{key!r}]"  # repr escapes a surrogate in a key
                stack.append((child, inner))
                if isinstance(key, str):
                    stack.append((key, f"the key {inner}"))
    return None


def too_deep(name: str) -> UsageError:
    return UsageError(
        f"input '{name}' is nested deeper than {MAX_DEPTH} levels",
        f"pass at most {MAX_DEPTH} levels of arrays and objects",
    )
