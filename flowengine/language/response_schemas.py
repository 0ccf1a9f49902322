"""Response schemas: the JSON Schema a node's answer must match (``schema:`` on llm and fanout).

Each schema is checked before any call: it is JSON data, a valid JSON Schema of draft 2020-12
(``Draft202012Validator.check_schema``), its root describes an object (what both ways of asking
a server for JSON return), and each ``$ref`` points inside it (a reference is never fetched).
jsonschema is imported only for workflows that have a schema.

``strict``: OpenAI's strict mode accepts only schemas in which every object lists all of its
properties under ``required`` and sets ``additionalProperties: false``. A schema written that
way is sent with ``strict: true``; any other is sent as written with ``strict: false`` (never
rewritten), and flowengine's own validation of the answer holds it to the schema either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowengine.errors import Location, Problem, did_you_mean
from flowengine.language.placement import placed_nodes
from flowengine.language.schema_files import SchemaFileError, SchemaFolders, read_schema_file
from flowengine.language.source import PathPart, Source, YamlPath
from flowengine.spec import FanoutNode, LlmNode, WorkflowSpec

DRAFT = "https://json-schema.org/draft/2020-12/schema"
JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
#: Keywords whose values are data, not schemas: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})

#: The schema of each node that has one, by node id.
Schemas = dict[str, dict[str, Any]]


def load_schemas(
    spec: WorkflowSpec, source: Source, folder: Path | None, prompts_dir: Path | None
) -> tuple[Schemas, list[Problem]]:
    """Every node's schema, read and checked; the problems of those that are not valid."""
    folders = SchemaFolders.of(folder, prompts_dir) if folder is not None else None
    schemas: Schemas = {}
    problems: list[Problem] = []
    for node_id, placed in placed_nodes(spec).items():
        node = placed.node
        if not isinstance(node, LlmNode | FanoutNode) or node.output_schema is None:
            continue
        base: YamlPath = (*placed.path, "schema")
        if "response_format" in node.params:
            problems.append(
                Problem(
                    source.locate((*placed.path, "params", "response_format"), key=True),
                    "params.response_format and `schema:` both say how to answer",
                    "remove params.response_format: `schema:` sends it, as the provider expects",
                    "schema-and-response-format",
                )
            )
        found = _schema(node_id, node.output_schema, source, base, folders)
        if isinstance(found, list):
            problems += found
        else:
            schemas[node_id] = found
    return schemas, problems


def _schema(
    node_id: str,
    written: dict[str, Any] | str,
    source: Source,
    base: YamlPath,
    folders: SchemaFolders | None,
) -> dict[str, Any] | list[Problem]:
    """The schema a node's ``schema:`` gives, or its problems."""
    if isinstance(written, dict):
        schema, where_source, prefix, label = written, source, base, "schema"
    else:
        try:
            read = read_schema_file(folders, written, source.locate(base))
        except SchemaFileError as exc:
            found = exc.problem
            if found.location.file != source.file:  # in the schema file: say whose it is
                message = f"schema of node '{node_id}': {found.message}"
                found = Problem(found.location, message, found.fix, found.code)
            return [found]
        schema, where_source, prefix = read.data, read.source, ()
        label = f"schema of node '{node_id}'"

    def where(path: tuple[PathPart, ...]) -> Location:
        return where_source.locate((*prefix, *path))

    problems = check_schema(schema, where, label)
    return problems or schema


Where = Callable[[tuple[PathPart, ...]], Location]


def check_schema(schema: dict[str, Any], where: Where, label: str = "schema") -> list[Problem]:
    """The problems of a schema; ``where(path)`` locates a path inside it, ``label`` names it."""
    not_json = _not_json(schema)
    if not_json is not None:
        path, what = not_json
        fix = "quote it, to make it a string" if what != "a non-finite number" else None
        return [Problem(where(path), f"{label}: {what} is not JSON data", fix, "schema-invalid")]
    stated = schema.get("$schema")
    if stated is not None and str(stated).rstrip("#") != DRAFT:
        return [
            Problem(
                where(("$schema",)),
                f"{label}: flowengine validates with JSON Schema draft 2020-12, not {stated}",
                f"remove `$schema`, or set it to {DRAFT}",
                "schema-draft",
            )
        ]
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = tuple(exc.absolute_path)
        message = f"{label} is not a valid JSON Schema: {_short(exc.message)}"
        return [Problem(where(path), message, _schema_fix(exc, path), "schema-invalid")]
    return [*_root_problems(schema, where, label), *_ref_problems(schema, where, label)]


def _schema_fix(error: Any, path: tuple[PathPart, ...]) -> str:
    if path and path[-1] == "type":
        written = error.instance
        near = did_you_mean(written, JSON_TYPES) if isinstance(written, str) else None
        return near or f"a type is one of: {', '.join(JSON_TYPES)}"
    if error.validator == "type":
        expected = error.validator_value
        kinds = " or ".join(expected) if isinstance(expected, list) else str(expected)
        return f"write a value of type {kinds} here"
    return f"see what the keyword takes in JSON Schema 2020-12: {_REFERENCE}"


_REFERENCE = "https://json-schema.org/understanding-json-schema/reference"


def _root_problems(schema: dict[str, Any], where: Where, label: str) -> Iterator[Problem]:
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if kind is not None and "object" not in kinds:
        yield Problem(
            where(("type",)),
            f"{label}: the answer is asked for as a JSON object, but this schema's root is "
            f"of type {kind}",
            "describe an object and put the value in a property: "
            "`{type: object, properties: {items: ...}, required: [items]}`",
            "schema-root",
        )


def _ref_problems(schema: dict[str, Any], where: Where, label: str) -> Iterator[Problem]:
    for path, ref in _refs(schema):
        if not ref.startswith("#"):
            yield Problem(
                where(path),
                f"{label}: $ref '{ref}' points outside the schema; references are never fetched",
                "copy what it refers to under `$defs:` and write `$ref: '#/$defs/name'`",
                "schema-ref",
            )
        elif resolve_ref(schema, ref) is None:
            defs = schema.get("$defs")
            names = [f"#/$defs/{n}" for n in defs] if isinstance(defs, dict) else []
            fix = did_you_mean(ref, names) or "define it under `$defs:`"
            message = f"{label}: $ref '{ref}' points at nothing in the schema"
            yield Problem(where(path), message, fix, "schema-ref")


def _refs(schema: Any) -> Iterator[tuple[tuple[PathPart, ...], str]]:
    """Every ``$ref`` of a schema and its path, leaving out data (``const``, ``enum``...)."""
    stack: list[tuple[tuple[PathPart, ...], Any]] = [((), schema)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str):
                yield (*path, "$ref"), ref
            stack += [((*path, k), v) for k, v in value.items() if k not in _DATA_KEYWORDS]
        elif isinstance(value, list):
            stack += [((*path, i), v) for i, v in enumerate(value)]


def resolve_ref(root: dict[str, Any], ref: str) -> Any:
    """What the local reference ``#/a/b`` points at inside ``root``; None if nothing."""
    node: Any = root
    pointer = ref[1:]
    if not pointer:
        return root
    if not pointer.startswith("/"):
        return None  # an anchor name: not followed here
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _not_json(value: Any) -> tuple[tuple[PathPart, ...], str] | None:
    """The path of the first value JSON cannot hold (a YAML date, .nan), and what it is."""
    stack: list[tuple[tuple[PathPart, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return (*path, key), f"the key {key!r}"
                stack.append(((*path, key), child))
        elif isinstance(item, list):
            stack += [((*path, i), child) for i, child in enumerate(item)]
        elif isinstance(item, float) and not math.isfinite(item):
            return path, "a non-finite number"
        elif item is not None and not isinstance(item, str | int | float | bool):
            return path, f"a {type(item).__name__} value"
    return None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def strict_ready(schema: dict[str, Any]) -> bool:
    """Whether OpenAI's strict mode takes the schema as written (see the module's note)."""
    stack: list[Any] = [schema]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            properties = value.get("properties")
            if isinstance(properties, dict) or value.get("type") == "object":
                required = value.get("required", [])
                listed = set(required) if isinstance(required, list) else set()
                if value.get("additionalProperties") is not False:
                    return False
                if isinstance(properties, dict) and not set(properties) <= listed:
                    return False
            stack += [v for k, v in value.items() if k not in _DATA_KEYWORDS]
        elif isinstance(value, list):
            stack += value
    return True


@dataclass(frozen=True)
class ResponseSchema:
    """A node's schema, ready to send and to validate answers against."""

    name: str
    schema: dict[str, Any]
    strict: bool
    validator: Any  # a jsonschema Draft202012Validator

    @classmethod
    def of(cls, node_id: str, schema: dict[str, Any]) -> ResponseSchema:
        from jsonschema import Draft202012Validator
        from referencing import Registry

        # An empty registry: a reference is never fetched (jsonschema would, by default).
        validator = Draft202012Validator(schema, registry=Registry())
        return cls(node_id[:64], schema, strict_ready(schema), validator)

    def response_format(self) -> dict[str, Any]:
        """OpenAI's ``response_format`` asking for JSON that matches the schema."""
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.schema, "strict": self.strict},
        }

    def errors(self, data: Any, most: int = 3) -> list[str]:
        """Where ``data`` does not match the schema: ``at $.score: 11 is greater than ...``."""
        found = sorted(self.validator.iter_errors(data), key=lambda e: list(map(str, e.path)))
        return [f"at {e.json_path}: {_short(e.message, 200)}" for e in found[:most]]
