"""JSON that matches a JSON Schema, drawn from a seeded generator: the offline structured answer.

Modelled: ``const``, ``enum``, ``type`` (one or a list), objects (``properties``, ``required``,
``additionalProperties``, ``minProperties``, ``maxProperties``), arrays (``items``,
``prefixItems``, ``contains``, ``minItems``, ``maxItems``, ``uniqueItems``), strings
(``minLength``, ``maxLength``, the common ``format`` values), integers and numbers (inclusive and
exclusive bounds, ``multipleOf``), booleans, null, local ``$ref``, ``allOf`` (merged) and
``anyOf``/``oneOf`` (the first option). What is not modelled (``pattern``, ``not``,
``if``/``then``, dependencies) falls back to a plain value of the schema's type, which may not
match: the run's validation then says so, as it would of a real model.
"""

from __future__ import annotations

import json
import math
import random
import string
from typing import Any

#: Past this depth objects keep only their required properties and arrays their fewest items,
#: and past twice it a schema that requires itself ends in null: a recursive schema must end.
_DEEP = 8
_WORDS = ("offline", "stand-in", "placeholder", "sample", "deterministic", "answer", "draft")


def fake_json(schema: Any, rng: random.Random, *, booleans: bool = False) -> Any:
    """A value that matches ``schema`` (a JSON Schema), the same for the same ``rng`` state;
    every boolean in it is ``booleans`` (the offline provider says when they are true)."""
    root = schema if isinstance(schema, dict) else {}
    return _Faker(root, rng, booleans).value(schema, 0, "")


class _Faker:
    def __init__(self, root: dict[str, Any], rng: random.Random, booleans: bool) -> None:
        self.root = root
        self.rng = rng
        self.booleans = booleans

    def value(self, schema: Any, depth: int, name: str) -> Any:
        if not isinstance(schema, dict) or depth > 2 * _DEEP:
            return None if depth > 2 * _DEEP else self.text({}, name)
        schema = self.flatten(schema, depth)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self.rng.choice(enum)
        kind = _kind(schema, self.rng)
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth, name)
        if kind == "integer":
            return self.integer(schema)
        if kind == "number":
            return self.number(schema)
        if kind == "boolean":
            return self.booleans
        if kind == "null":
            return None
        return self.text(schema, name)

    def flatten(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """The schema with its local ``$ref``, ``allOf`` and first ``anyOf``/``oneOf`` merged in."""
        for _ in range(_DEEP):
            parts: list[Any] = []
            ref = schema.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                parts.append(_pointer(self.root, ref))
            parts += schema.get("allOf") or []
            for key in ("anyOf", "oneOf"):
                options = schema.get(key)
                if isinstance(options, list) and options:
                    parts.append(options[0])
            if not parts:
                return schema
            rest = {k: v for k, v in schema.items() if k not in ("$ref", "allOf", "anyOf", "oneOf")}
            schema = _merge(rest, *[p for p in parts if isinstance(p, dict)])
        return schema

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        extra = schema.get("additionalProperties", True)
        keys = list(dict.fromkeys([*required, *(properties if depth < _DEEP else ())]))
        most = schema.get("maxProperties")
        if isinstance(most, int):
            keys = list(dict.fromkeys([*required, *keys]))[: max(most, len(required))]
        out = {k: self.value(properties.get(k, extra), depth + 1, k) for k in keys}
        fewest = schema.get("minProperties")
        for key in properties:
            if isinstance(fewest, int) and len(out) < fewest:
                out.setdefault(key, self.value(properties[key], depth + 1, key))
        while isinstance(fewest, int) and len(out) < fewest and extra is not False:
            key = f"extra_{len(out)}"
            out[key] = self.value(extra, depth + 1, key)
        return out

    def array(self, schema: dict[str, Any], depth: int, name: str) -> list[Any]:
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", True)
        fewest = max(_int(schema.get("minItems"), 0), 0)
        most = _int(schema.get("maxItems"), max(fewest, len(prefix)) + 3)
        count = fewest if depth >= _DEEP else self.rng.randint(fewest, max(fewest, min(most, 4)))
        count = max(count, min(len(prefix), most))
        if items is False:
            count = min(count, len(prefix))
        out = [self.value(prefix[i], depth + 1, name) for i in range(min(count, len(prefix)))]
        if isinstance(schema.get("contains"), dict) and len(out) < max(count, 1):
            out.append(self.value(schema["contains"], depth + 1, name))
        seen = {json.dumps(v, sort_keys=True) for v in out}
        for _ in range(4 * count + 4):
            if len(out) >= count:
                break
            item = self.value(items, depth + 1, name)
            key = json.dumps(item, sort_keys=True)
            if schema.get("uniqueItems") and key in seen:
                continue
            seen.add(key)
            out.append(item)
        return out

    def integer(self, schema: dict[str, Any]) -> int:
        low, high = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            return self.rng.randint(first, max(first, last)) * step
        return self.rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))

    def number(self, schema: dict[str, Any]) -> float | int:
        low, high = _bounds(schema, integer=False)
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
            multiples = range(math.ceil(low / step), math.floor(high / step) + 1)
            for k in self.rng.sample(multiples, min(5, len(multiples))):
                if (k * step) / step == int((k * step) / step):  # as jsonschema checks it
                    return k * step
            return math.ceil(low / step) * step
        value = round(self.rng.uniform(low, high), 2)
        return value if low <= value <= high else (low + high) / 2

    def text(self, schema: dict[str, Any], name: str) -> str:
        kind = schema.get("format")
        day = self.rng.randint(1, 28)
        formats = {
            "date-time": f"2024-01-{day:02d}T12:00:00Z",
            "date": f"2024-01-{day:02d}",
            "time": "12:00:00Z",
            "email": f"offline{day}@example.com",
            "uri": f"https://example.com/offline/{day}",
            "uuid": f"{self.rng.getrandbits(128):032x}",
        }
        if kind == "uuid":
            raw = formats["uuid"]
            text = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
        else:
            words = self.rng.sample(_WORDS, 2)
            text = formats.get(str(kind)) or " ".join([*(name.split() or [words[0]]), *words])
        fewest = max(_int(schema.get("minLength"), 0), 0)
        most = max(_int(schema.get("maxLength"), max(len(text), fewest)), fewest)
        if len(text) > most:  # too long for words: letters, which still differ from draw to draw
            return "".join(self.rng.choice(string.ascii_lowercase) for _ in range(most))
        return text + "." * (fewest - len(text))


def _kind(schema: dict[str, Any], rng: random.Random) -> str:
    written = schema.get("type")
    if isinstance(written, str):
        return written
    if isinstance(written, list) and written:
        kinds = [k for k in written if k != "null"] or written
        return str(rng.choice(kinds))
    if any(k in schema for k in ("properties", "required", "additionalProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float, float]:
    """The inclusive range a number is drawn from; 0 to 10 where the schema sets no bound."""
    nudge = 1 if integer else 0.01
    low, high = _number(schema.get("minimum")), _number(schema.get("maximum"))
    above, below = _number(schema.get("exclusiveMinimum")), _number(schema.get("exclusiveMaximum"))
    if above is not None:
        low = max(low, above + nudge) if low is not None else above + nudge
    if below is not None:
        high = min(high, below - nudge) if high is not None else below - nudge
    if low is None:
        low = 0 if high is None or high >= 0 else high - 10
    if high is None:
        high = low + 10
    if low > high:  # an exclusive range narrower than the nudge: its middle
        low = high = (low + high) / 2
    return low, high


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _pointer(root: dict[str, Any], ref: str) -> Any:
    """What a local reference (``#``, ``#/$defs/item``) points at; None if nothing."""
    node: Any = root
    if ref in ("#", "#/"):
        return root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _merge(*schemas: dict[str, Any]) -> dict[str, Any]:
    """Schemas that must all hold, as one: later keywords win, except the ones that add up."""
    merged: dict[str, Any] = {}
    for schema in schemas:
        for key, value in schema.items():
            if key == "required" and isinstance(value, list):
                merged[key] = [*merged.get(key, []), *value]
            elif key == "properties" and isinstance(value, dict):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return merged
