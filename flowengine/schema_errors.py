"""Translate pydantic validation errors into Problems that point at the YAML and say the fix."""

from __future__ import annotations

import re
import types
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from flowengine.errors import Problem, did_you_mean
from flowengine.spec import NODE_TYPES, WorkflowSpec

if TYPE_CHECKING:
    from flowengine.loader import PathPart, Source, YamlPath

_KIND = {"nodes": "node", "providers": "provider", "selectors": "selector"}
_TAGS = {"nodes": NODE_TYPES, "providers": ("openai", "offline"), "selectors": ("http",)}


def translate(source: Source, error: ErrorDetails) -> Problem:
    """One pydantic error -> one Problem at the right line, with a fix where one is known."""
    path, _ = _walk(source.root, tuple(error["loc"]))
    kind = error["type"]
    where = ".".join(str(p) for p in path) or "the file"
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "extra_forbidden":
        key = str(path[-1])
        allowed = _fields(_walk(source.root, tuple(error["loc"])[:-1])[1])
        fix = did_you_mean(key, allowed) or (f"allowed keys: {', '.join(allowed)}" if allowed else None)
        parent = ".".join(str(p) for p in path[:-1]) or "the top level"
        return Problem(source.locate(path, key=True), f"unknown key '{key}' in {parent}", fix)
    if kind == "missing":
        key = str(path[-1])
        parent = path[:-1]
        owner = ".".join(str(p) for p in parent) or "the file"
        return Problem(
            source.locate(parent, key=True), f"{owner} is missing required key '{key}'", f"add `{key}:`"
        )
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _tag_problem(source, path, kind, ctx)
    if path and path[-1] == "[key]":
        return _key_problem(source, path[:-1], error["msg"])
    message = error["msg"].removeprefix("Value error, ")
    fix = None
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        fix = did_you_mean(str(error.get("input")), expected) or f"use one of: {', '.join(expected)}"
    return Problem(source.locate(path), f"{where}: {message}", fix)


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
        )
    tag = str(ctx.get("tag"))
    fix = did_you_mean(tag, expected)
    fix = f"{fix} ({what} types: {', '.join(expected)})" if fix else f"use one of: {', '.join(expected)}"
    return Problem(source.locate((*path, "type")), f"{name}: unknown {what} type '{tag}'", fix)


def _key_problem(source: Source, path: YamlPath, msg: str) -> Problem:
    section = str(path[0]) if path else ""
    name = str(path[-1]) if path else ""
    if section in ("nodes", "inputs"):
        fix = "use letters, digits and '_', starting with a letter: templates refer to it by this name"
    else:
        fix = "use letters, digits, '_', '-', '.' and ':'"
    what = {"nodes": "node id", "inputs": "input name", "models": "model alias"}.get(section, "name")
    return Problem(source.locate(path, key=True), f"{what} '{name}' is not valid ({msg})", fix)


def _walk(root: Any, loc: tuple[Any, ...]) -> tuple[YamlPath, Any]:
    """Drop discriminator tags from a pydantic loc; return the YAML path and the model type."""
    path: list[PathPart] = []
    node: Any = root
    tp: Any = WorkflowSpec
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
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            field = member.model_fields.get("type")
            if field is not None and get_origin(field.annotation) is Literal:
                if tag in get_args(field.annotation):
                    return member
    return None


def _child_type(tp: Any, part: Any) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(part))
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
        return list(tp.model_fields)
    return []
