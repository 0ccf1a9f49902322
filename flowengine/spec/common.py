"""What every part of the format shares: names, durations, params, retries and rates, and
how a `type:` picks a built-in kind or a plugin's."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, NewType

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

NodeId = NewType("NodeId", str)
ModelAlias = NewType("ModelAlias", str)

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
ALIAS = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> Any:
    """``"500ms"``, ``"5s"``, ``"2m"``, ``"1h"`` or a plain number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number with a unit, such as 500ms, 5s or 2m")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration must be a finite number, such as 500ms, 5s or 2m")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(
        f"invalid duration {value!r}: use a number with a unit, such as 500ms, 5s or 2m"
    )


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _DURATION.pattern},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 500ms, 5s, 2m, 1h, or a number of seconds.",
        }
    ),
]


#: A duration that must be more than zero: a timeout of 0 would mean "never time out" to aiohttp,
#: and a rate window of 0 would mean no limit at all.
PositiveDuration = Annotated[Duration, Field(gt=0)]


def _no_stream(params: dict[str, Any]) -> dict[str, Any]:
    if params.get("stream"):
        raise ValueError(
            "`stream` is not a param: flowengine streams an answer where it is shown as it "
            "is written (`flowengine run --stream`, Engine.stream); remove `stream`"
        )
    return params


#: Parameters sent to the model with every call (temperature, max_tokens, ...).
Params = Annotated[dict[str, Any], AfterValidator(_no_stream)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(Strict):
    """At most ``requests`` requests started in any window of length ``per``."""

    requests: int = Field(gt=0)
    per: PositiveDuration = 1.0
    burst: int | None = Field(
        default=None,
        gt=0,
        description="Requests allowed to start at once, at most `requests`. Default 1. The "
        "promise (at most `requests` starts in any window of `per`) still holds with a burst "
        "b, so the sustained rate drops to (requests - b + 1) / per.",
    )

    @model_validator(mode="after")
    def _burst_within_requests(self) -> Rate:
        if self.burst is not None and self.burst > self.requests:
            raise ValueError(
                f"burst ({self.burst}) must be at most requests ({self.requests}): no more "
                "than `requests` may start in one window"
            )
        return self


class Retry(Strict):
    """Exponential backoff with jitter between ``initial`` and ``max``."""

    attempts: int = Field(default=5, ge=1, le=100)
    initial: Duration = 1.0
    max: Duration = 30.0

    @model_validator(mode="after")
    def _initial_within_max(self) -> Retry:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial:g}s) must be at most max ({self.max:g}s)")
        return self


def _type_or(default: str) -> Callable[[Any], str | None]:
    def tag(value: Any) -> str | None:
        if isinstance(value, dict):
            found = value.get("type", default)
            return found if isinstance(found, str) else None
        return getattr(value, "type", None)

    return tag


#: The union tag of a provider type or node kind that is not built in: a plugin's. Its own keys
#: are checked against the plugin's config model by :mod:`flowengine.language.plugin_checks`.
PLUGIN = "plugin"
PROVIDER_TYPES = ("openai", "offline")
NODE_TYPES = ("select", "llm", "fanout", "judge", "python", "loop")


def _builtin_or_plugin(builtins: tuple[str, ...], default: str | None) -> Callable[[Any], Any]:
    def tag(value: Any) -> str | None:
        found = (
            value.get("type", default) if isinstance(value, dict) else getattr(value, "type", None)
        )
        if not isinstance(found, str):
            return None
        return found if found in builtins else PLUGIN

    return tag


def _plugin_type(builtins: tuple[str, ...], what: str) -> dict[str, Any]:
    """The schema of a plugin's ``type:``: any name but a built-in one, whose keys are known."""
    return {
        "type": "string",
        "not": {"enum": list(builtins)},
        "description": f"A {what} registered by a plugin (an entry point, or from code).",
    }
