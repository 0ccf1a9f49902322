"""The offline provider's structured answers: JSON that matches the schema (jsonschema says)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from flowengine.providers import ChatRequest, Offline
from flowengine.providers.offline_json import fake_json
from flowengine.spec import OfflineProvider

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object"},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "none": {"type": "null"}}},
    {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "label": {"type": "string", "enum": ["good", "bad", "ugly"]},
        },
        "required": ["score", "ratio", "label"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string", "minLength": 3, "maxLength": 5},
                "minItems": 2,
                "maxItems": 4,
                "uniqueItems": True,
            },
            "nested": {
                "type": "object",
                "properties": {"deep": {"type": "array", "items": {"type": "integer"}}},
                "required": ["deep"],
            },
        },
        "required": ["tags", "nested"],
    },
    {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
            "step": {"type": "number", "multipleOf": 0.1, "minimum": 0.5, "maximum": 2},
            "even": {"type": "integer", "multipleOf": 2, "minimum": 3, "maximum": 9},
            "fixed": {"const": {"a": [1, 2]}},
            "maybe": {"type": ["null", "integer"]},
        },
        "required": ["when", "id", "step", "even", "fixed", "maybe"],
    },
    {
        "type": "object",
        "$defs": {"item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1},
            "pair": {"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
            "either": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "integer"}]},
            "both": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "integer"}}},
                    {"required": ["a", "b"], "properties": {"b": {"type": "boolean"}}},
                ]
            },
        },
        "required": ["items", "pair", "either", "both"],
    },
    {
        "type": "object",
        "properties": {"child": {"$ref": "#"}},  # recursive: must end
    },
    {"type": "object", "minProperties": 2, "additionalProperties": {"type": "integer"}},
]


def valid(schema: dict[str, Any], value: Any) -> bool:
    return Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_the_value_matches_the_schema(schema: dict[str, Any]) -> None:
    for seed in range(20):
        value = fake_json(schema, random.Random(seed))
        assert valid(schema, value), (seed, value)


def test_the_same_state_gives_the_same_value() -> None:
    schema = SCHEMAS[2]
    assert fake_json(schema, random.Random(b"x")) == fake_json(schema, random.Random(b"x"))


async def test_the_provider_answers_json_that_varies_with_the_model() -> None:
    schema = SCHEMAS[2]
    provider = Offline("offline", OfflineProvider(type="offline"))
    asked = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    scores = set()
    for model in ("a/one", "b/two", "c/three", "d/four", "e/five"):
        request = ChatRequest(model, [{"role": "user", "content": "q"}], {"response_format": asked})
        value = json.loads((await provider.complete(request)).content)
        assert valid(schema, value)
        scores.add(value["score"])
    assert len(scores) > 1


async def test_json_object_mode_answers_an_object() -> None:
    provider = Offline("offline", OfflineProvider(type="offline"))
    params = {"response_format": {"type": "json_object"}}
    request = ChatRequest("m/x", [{"role": "user", "content": "q"}], params)
    value = json.loads((await provider.complete(request)).content)
    assert list(value) == ["answer"] and "offline answer from m/x" in value["answer"]


# Schemas built from the constructs the generator models, nested a few levels.
_scalars = st.one_of(
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.tuples(st.integers(-50, 50), st.integers(0, 30)).map(
        lambda t: {"type": "integer", "minimum": t[0], "maximum": t[0] + t[1]}
    ),
    st.tuples(st.floats(-5, 5), st.floats(0.5, 10)).map(
        lambda t: {"type": "number", "exclusiveMinimum": t[0], "maximum": t[0] + t[1]}
    ),
    st.tuples(st.integers(0, 5), st.integers(0, 10)).map(
        lambda t: {"type": "string", "minLength": t[0], "maxLength": t[0] + t[1]}
    ),
    st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True).map(
        lambda values: {"type": "string", "enum": values}
    ),
)


def _containers(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.text("abcdefgh", min_size=1, max_size=6)
    objects = st.dictionaries(names, inner, max_size=4).flatmap(
        lambda props: st.builds(
            lambda required, closed: {
                "type": "object",
                "properties": props,
                "required": required,
                **({"additionalProperties": False} if closed else {}),
            },
            st.lists(st.sampled_from(sorted(props)), unique=True) if props else st.just([]),
            st.booleans(),
        )
    )
    arrays = st.tuples(inner, st.integers(0, 3), st.integers(0, 3)).map(
        lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + t[2]}
    )
    return st.one_of(objects, arrays)


schemas = st.recursive(_scalars, _containers, max_leaves=12)


@given(schema=schemas, seed=st.integers(0, 2**32))
def test_any_modelled_schema_gets_a_matching_value(schema: dict[str, Any], seed: int) -> None:
    root = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    Draft202012Validator.check_schema(root)
    value = fake_json(root, random.Random(seed))
    assert valid(root, value), value
