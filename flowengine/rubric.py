"""A judge node's rubric: the criteria and the scale it scores on, as a workflow writes them, and
the JSON Schema of the reply a judge model must give.

``criteria: [accuracy, {clarity: easy to follow}]`` -- names, each with an optional description.
``scale: [1, 10]`` -- the lowest and the highest score; whole-number bounds ask for whole-number
scores.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

#: A criterion's name, as a node id's: templates read scores by it (``c.scores.accuracy``).
NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Criterion(BaseModel):
    """One thing a judge scores: a short name, and what it means if the name is not enough."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str | None = None


def _criteria(value: Any) -> list[Criterion]:
    """``[accuracy, {clarity: easy to follow}]`` -> Criterion items, or one clear error."""
    if not isinstance(value, list) or not value:
        raise ValueError(
            "list at least one criterion to score, such as `criteria: [accuracy, clarity]`"
        )
    found: list[Criterion] = []
    for item in value:
        if isinstance(item, dict) and len(item) > 1:
            raise ValueError(
                f"a criterion is one `name: description` pair, and this item has {len(item)}: "
                "start each pair on a line of its own with `- `"
            )
        pair = next(iter(item.items())) if isinstance(item, dict) and item else None
        name, description = (item, None) if isinstance(item, str) else pair or (None, None)
        if not isinstance(name, str) or not isinstance(description, str | None):
            raise ValueError(
                f"a criterion is a name or one `name: description` pair, got {item!r}: "
                "write `- accuracy` or `- accuracy: every claim is correct`"
            )
        if not re.match(NAME, name):
            raise ValueError(
                f"criterion name {name!r} is not valid: use letters, digits and '_', "
                "starting with a letter (templates read scores by it)"
            )
        if any(c.name == name for c in found):
            raise ValueError(f"criterion '{name}' is listed twice")
        found.append(Criterion(name=name, description=description))
    return found


def _scale(value: Any) -> tuple[int | float, int | float]:
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
        and value[0] < value[1]
    ):
        return value[0], value[1]
    raise ValueError(f"expected two numbers, lowest first, such as [1, 10]; got {value!r}")


_NAME_SCHEMA = {"type": "string", "pattern": NAME}

Criteria = Annotated[
    list[Criterion],
    BeforeValidator(_criteria),
    WithJsonSchema(
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    _NAME_SCHEMA,
                    {
                        "type": "object",
                        "propertyNames": _NAME_SCHEMA,
                        "additionalProperties": {"type": "string"},
                        "minProperties": 1,
                        "maxProperties": 1,
                    },
                ]
            },
            "description": "What to score: names, or `name: description` pairs.",
        }
    ),
]

Scale = Annotated[
    tuple[int | float, int | float],
    BeforeValidator(_scale),
    WithJsonSchema(
        {
            "type": "array",
            "prefixItems": [{"type": "number"}, {"type": "number"}],
            "minItems": 2,
            "maxItems": 2,
            "description": "The lowest and highest score, such as [1, 10]; whole-number bounds "
            "ask for whole-number scores.",
        }
    ),
]


def reply_schema(
    criteria: list[Criterion], scale: tuple[int | float, int | float], letters: list[str]
) -> dict[str, Any]:
    """What a judge must reply: for each answer's letter, a reason, then a score per criterion.

    The reason comes first, so that a judge explains before it scores. Every object lists all its
    properties as required and allows no others, as OpenAI's strict mode wants.
    """
    low, high = scale
    kind = "integer" if isinstance(low, int) and isinstance(high, int) else "number"
    scores: dict[str, Any] = {}
    for criterion in criteria:
        score: dict[str, Any] = {"type": kind, "minimum": low, "maximum": high}
        if criterion.description:
            score["description"] = criterion.description
        scores[criterion.name] = score
    verdict = _closed({"reason": {"type": "string"}, "scores": _closed(scores)})
    return _closed(dict.fromkeys(letters, verdict))


def _closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
