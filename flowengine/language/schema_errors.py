"""Pydantic validation errors as Problems that point at the YAML and say the fix."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import re
import types
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError
from pydantic_core import ErrorDetails

from flowengine.errors import Problem, did_you_mean
from flowengine.language.source import PathPart, Source, YamlPath
from flowengine.spec import NODE_TYPES, PLUGIN, PROVIDER_TYPES, WorkflowSpec

_ENTITY = {
    "nodes": "node",
    "models": "model",
    "providers": "provider",
    "selectors": "selector",
    "inputs": "input",
}
_KIND = {"nodes": "node", "providers": "provider", "selectors": "selector"}
_TAGS = {"nodes": NODE_TYPES, "providers": PROVIDER_TYPES, "selectors": ("http", "llm")}


def problem_from_error(
    source: Source, error: ErrorDetails, prefix: YamlPath = (), model: Any = WorkflowSpec
) -> Problem:
    """One pydantic error -> one Problem at the right line, with a fix where one is known.

    ``model`` is what was validated (the whole file, or a plugin's config model); ``prefix``
    is where its data is in the file.
    """
    path, tp = _walk(source.root, tuple(error["loc"]), prefix, model)
    kind = error["type"]
    where = ".".join(str(p) for p in path) or "the file"
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "extra_forbidden":
        key = str(path[-1])
        allowed = _fields(_walk(source.root, tuple(error["loc"])[:-1], prefix, model)[1])
        fix = _unknown_key_fix(key, allowed)
        parent = ".".join(str(p) for p in path[:-1]) or "the top level"
        return Problem(
            source.locate(path, key=True), f"unknown key '{key}' in {parent}", fix, "unknown-key"
        )
    if kind == "missing":
        return _missing_problem(source, path)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _tag_problem(source, path, kind, ctx)
    if path and path[-1] == "[key]":
        return _key_problem(source, path[:-1], error["msg"])
    message = _plain_message(kind, error, ctx) or error["msg"].removeprefix("Value error, ")
    # A validator of the spec may say the fix itself, and that the problem is its key's rather
    # than its value's (a PydanticCustomError with ctx["fix"] and ctx["at"] == "key").
    at = source.locate(path, key=ctx.get("at") == "key")
    secret = ctx.get("secret")
    if isinstance(secret, str) and secret and at.source_line is not None:
        # A password written in the file is still not shown.
        at = dataclasses.replace(at, source_line=at.source_line.replace(secret, "***"))
    return Problem(
        at, f"{where}: {message}", _value_fix(kind, error, ctx, path, tp), "invalid-value"
    )


def _value_fix(
    kind: str, error: ErrorDetails, ctx: dict[str, Any], path: YamlPath, tp: Any
) -> str | None:
    if isinstance(ctx.get("fix"), str):
        return str(ctx["fix"])
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return did_you_mean(str(error.get("input")), expected) or (
            f"use one of: {', '.join(expected)}"
        )
    if kind == "list_type" and path:
        return f"write a list: `{path[-1]}: [a, b]`"
    if kind in ("model_type", "model_attributes_type") and _fields(tp):
        return f"write a mapping with the keys {', '.join(_fields(tp))}"
    return None


# Pydantic's wording, said as a YAML author would: "expected a number, got 'heavy'".
_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
}
_BOUNDS = {
    "greater_than": "greater than {gt}",
    "greater_than_equal": "at least {ge}",
    "less_than": "less than {lt}",
    "less_than_equal": "at most {le}",
}
# Keys that belong under `params:` (sent to the model), often written one level too high.
_MODEL_PARAMS = (
    "temperature",
    "max_tokens",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "response_format",
    "reasoning",
)


def _plain_message(kind: str, error: ErrorDetails, ctx: dict[str, Any]) -> str | None:
    given = _shown(error.get("input"))
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {given}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {given}"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind].format(**ctx)}, got {given}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length', 1)} entry, got none"
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value, default=str)


def _unknown_key_fix(key: str, allowed: list[str]) -> str | None:
    def closest(choices: Iterable[str]) -> tuple[float, str]:
        scores = [(difflib.SequenceMatcher(None, key, c).ratio(), c) for c in choices]
        return max(scores, default=(0.0, ""))

    near_key, near_param = closest(allowed), closest(_MODEL_PARAMS)
    if "params" in allowed and near_param[0] >= 0.6 and near_param[0] > near_key[0]:
        return f"model parameters go under `params:`, such as `params: {{{near_param[1]}: ...}}`"
    return did_you_mean(key, allowed) or (
        f"allowed keys: {', '.join(allowed)}" if allowed else None
    )


def _missing_problem(source: Source, path: YamlPath) -> Problem:
    key = str(path[-1])
    parent = path[:-1]
    owner = ".".join(str(p) for p in parent) or "the file"
    created = source.overrides.get(parent)
    if created is not None and len(parent) == 2 and isinstance(source.root.get(parent[0]), dict):
        # `--set models.lama.weight=4` made up a model: most likely the alias is misspelt.
        names = [str(n) for n in source.root[parent[0]] if (parent[0], n) not in source.overrides]
        fix = did_you_mean(str(parent[1]), names) or f"to declare a new one, also set {owner}.{key}"
        what = _ENTITY.get(str(parent[0]), "entry")
        message = f"there is no {what} '{parent[1]}' to override"
        return Problem(source.locate(parent), message, fix, "no-such-entry")
    message = f"{owner} is missing required key '{key}'"
    fix = _REQUIRED.get(key, f"add `{key}:`") if path[0] == "nodes" else f"add `{key}:`"
    return Problem(source.locate(parent, key=True), message, fix, "missing-key")


#: What to say of a node's required keys whose need is not obvious.
_REQUIRED = {
    "max_rounds": "add `max_rounds: N` (1 to 100): every loop has a cap on its rounds, so "
    "that it ends even if `until` never holds",
}


def _tag_problem(source: Source, path: YamlPath, kind: str, ctx: dict[str, Any]) -> Problem:
    what = _KIND.get(str(path[0]) if path else "", "item")
    expected = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ""))) or list(
        _TAGS.get(str(path[0]) if path else "", ())
    )
    name = ".".join(str(p) for p in path)
    if kind == "union_tag_not_found":
        return Problem(
            source.locate(path, key=True),
            f"{name} has no `type`",
            f"add `type:`, one of: {', '.join(expected)}",
            "missing-type",
        )
    tag = str(ctx.get("tag"))
    fix = did_you_mean(tag, expected)
    fix = (
        f"{fix} ({what} types: {', '.join(expected)})"
        if fix
        else f"use one of: {', '.join(expected)}"
    )
    message = f"{name}: unknown {what} type '{tag}'"
    return Problem(source.locate((*path, "type")), message, fix, "unknown-type")


def _key_problem(source: Source, path: YamlPath, msg: str) -> Problem:
    section = str(path[0]) if path else ""
    name = str(path[-1]) if path else ""
    if section in ("nodes", "inputs"):
        fix = "use letters, digits and '_', starting with a letter: templates read it by name"
    else:
        fix = "use letters, digits, '_', '-', '.' and ':'"
    what = {"nodes": "node id", "inputs": "input name", "models": "model alias"}.get(
        section, "name"
    )
    message = f"{what} '{name}' is not valid ({msg})"
    return Problem(source.locate(path, key=True), message, fix, "invalid-name")


def _walk(
    root: Any, loc: tuple[Any, ...], prefix: YamlPath = (), tp: Any = WorkflowSpec
) -> tuple[YamlPath, Any]:
    """Drop discriminator tags from a pydantic loc; return the YAML path and the model type.

    ``loc`` is relative to ``prefix``, where data of the type ``tp`` is in the file.
    """
    path: list[PathPart] = list(prefix)
    node: Any = root
    for part in prefix:
        node = node.get(part) if isinstance(node, dict) else None
    for part in loc:
        member = _union_member(tp, part)
        if member is not None and not (isinstance(node, dict) and part in node):
            tp = member
            continue
        path.append(part)
        tp = _child_type(tp, part)
        node = node.get(part) if isinstance(node, dict) else _index(node, part)
    return tuple(path), tp


def _index(node: Any, part: Any) -> Any:
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        members = [m for m in get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return tp


def _union_member(tp: Any, tag: Any) -> Any:
    tp = _unwrap(tp)
    if get_origin(tp) not in (Union, types.UnionType):
        return None
    for member in get_args(tp):
        tags = [m.tag for m in get_args(member)[1:] if isinstance(m, Tag)]
        member = _unwrap(member)
        if tag == PLUGIN and PLUGIN in tags:
            return member
        if isinstance(member, type) and issubclass(member, BaseModel):
            field = member.model_fields.get("type")
            literal = field is not None and get_origin(field.annotation) is Literal
            if literal and field is not None and tag in get_args(field.annotation):
                return member
    return None


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key a file writes: the alias where there is one (`schema`)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _child_type(tp: Any, part: Any) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = _keys(tp).get(str(part))
        return field.annotation if field else None
    origin = get_origin(tp)
    if origin is dict:
        return get_args(tp)[1]
    if origin is list:
        return get_args(tp)[0]
    return None


def _fields(tp: Any) -> list[str]:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(_keys(tp))
    return []


_SECTIONS = ("nodes", "models", "providers", "selectors", "inputs")
Unreadable = dict[str, set[str]]


def salvage(data: dict[str, Any], exc: ValidationError) -> tuple[WorkflowSpec, Unreadable] | None:
    """The part of an invalid file that is valid, to run the cross-checks on it too.

    Leaves out each value pydantic rejected (its default applies) or, when that is not enough,
    the whole node, model, provider, selector or input; returns the spec and the names left out.
    None when too little is left to check.
    """
    data = copy.deepcopy(data)
    unreadable: Unreadable = {section: set() for section in _SECTIONS}
    for _ in range(4):
        for error in exc.errors(include_url=False):
            path, _ = _walk(data, tuple(error["loc"]))
            if not _prune(data, path, error["type"], unreadable):
                return None
        try:
            return WorkflowSpec.model_validate(data), unreadable
        except ValidationError as again:
            exc = again
    return None


def _prune(data: dict[str, Any], path: YamlPath, kind: str, unreadable: Unreadable) -> bool:
    head = str(path[0]) if path else ""
    section = data.get(head)
    if head in _SECTIONS and len(path) >= 2 and isinstance(section, dict):
        entry = section.get(path[1])
        field = path[2] if len(path) >= 3 else None
        if head == "nodes" and isinstance(entry, dict):
            if field == "nodes" and len(path) >= 4 and isinstance(entry.get("nodes"), dict):
                return _prune(entry, path[2:], kind, unreadable)  # inside a loop's group
            if kind == "missing" and field == "max_rounds":
                entry[field] = 1  # reported; the rest of the loop is still checked
                return True
        if kind != "missing" and isinstance(entry, dict) and field not in (None, "type", "[key]"):
            entry.pop(field, None)
        else:
            section.pop(path[1], None)
            unreadable[head].add(str(path[1]))
        return True
    if head == "nodes" or not path:
        return False
    if head in ("version", "name"):
        data[head] = {"version": 1, "name": "workflow"}[head]
        return True
    data.pop(head, None)
    if kind == "extra_forbidden":
        # A misspelt section ("modles"): its names exist, under the wrong key.
        head = next(iter(difflib.get_close_matches(head, _SECTIONS, n=1, cutoff=0.6)), head)
    if head in _SECTIONS:
        unreadable[head].add("*")
    return True
