"""JSON in text a model wrote: one surrounding ``` fence tolerated, bounded, errors with a place.

Used for a structured answer (:mod:`flowengine.run.structured`) and by the templates'
``fromjson`` filter. Strict JSON: ``NaN`` and ``Infinity`` are refused (no other parser reads
them), and so are values nested deeper than :data:`~.inputs.MAX_DEPTH`, which templates and
the result's JSON would have to recurse through.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jinja2 import TemplateRuntimeError

from flowengine.language.inputs import MAX_DEPTH, nested_too_deep
from flowengine.results import CallResult

#: The longest text parsed, in characters (a reply far past any model's output limit).
MAX_JSON_CHARS = 1_000_000

# ```json ... ``` around the whole text: the language tag is optional, and so is a newline.
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(?P<body>.*?)\n?[ \t]*```$", re.DOTALL)


class JsonTextError(ValueError):
    """Text that is not the JSON it should be; the message says where (line and column)."""


def unfenced(text: str) -> str:
    """``text`` without surrounding whitespace and one surrounding ``` fence, if it has one."""
    stripped = text.strip()
    found = _FENCE.match(stripped)
    return found.group("body").strip() if found else stripped


def parse_json_text(text: str) -> Any:
    """The JSON value ``text`` holds (inside one ``` fence at most); JsonTextError if none."""
    if len(text) > MAX_JSON_CHARS:
        raise JsonTextError(f"the text is longer than {MAX_JSON_CHARS:,} characters")
    body = unfenced(text)
    if not body:
        raise JsonTextError("the text is empty, not JSON")
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise JsonTextError(
            f"{exc.msg} at line {exc.lineno}, column {exc.colno} (character {exc.pos + 1})"
        ) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:  # NaN or Infinity, or an integer of more than 4300 digits
        raise JsonTextError(str(exc)) from None
    if nested_too_deep(value):
        raise _too_deep()
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value: write a number, or null")


def _too_deep() -> JsonTextError:
    return JsonTextError(f"arrays and objects nest deeper than {MAX_DEPTH} levels")


def fromjson(value: Any) -> Any:
    """The templates' ``fromjson`` filter: the data in a JSON string, or in a call's answer.

    ``{{ (primary | fromjson).score }}``; text that is not JSON fails the render with the reason.
    """
    if isinstance(value, CallResult):
        value = value.content or ""
    if not isinstance(value, str):
        raise TemplateRuntimeError(f"fromjson reads a string, not {type(value).__name__}")
    try:
        return parse_json_text(value)
    except JsonTextError as exc:
        raise TemplateRuntimeError(f"fromjson: not JSON: {exc}") from None
