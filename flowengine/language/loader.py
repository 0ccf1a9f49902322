"""YAML -> the plain data of a WorkflowSpec, keeping the line and column of every value.

The loader reads the file (a regular file of at most 10 MB, :mod:`.files`) into values that
know where each item is written, within bounds on nesting and aliases (:mod:`.bounded_yaml`);
it applies ``--set`` overrides and adds the built-in providers.
Validating that data, and mapping pydantic's errors back to lines of the file, is
:mod:`.schema_errors`'s part; :mod:`.workflow` joins the steps.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from flowengine.errors import Location, Problem, UsageError, WorkflowError
from flowengine.language.bounded_yaml import (
    MAX_DEPTH,
    YamlLimit,
    YamlMap,
    YamlRefused,
    collector_paused,
    read_yaml,
)
from flowengine.language.files import (
    MAX_WORKFLOW_BYTES,
    TOO_LARGE_FIX,
    FileRefused,
    read_bytes,
    size_text,
)
from flowengine.language.source import Source
from flowengine.spec import BUILTIN_PROVIDERS


def read_source(path: str | Path) -> Source:
    """Read and parse a workflow file; raise WorkflowError for I/O and YAML syntax problems.

    Only a regular file of at most :data:`MAX_WORKFLOW_BYTES` is read (see :mod:`.files`).
    """
    name = str(path)
    try:
        data = read_bytes(path, MAX_WORKFLOW_BYTES, "a workflow file")
        # As Path.read_text would: universal newlines, so that hashes and lines do not
        # depend on the platform the file was saved on.
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise WorkflowError(
            [
                Problem(
                    Location(name), "no such file", "check the path; workflows live in workflows/"
                )
            ]
        ) from None
    except IsADirectoryError:
        raise WorkflowError(
            [Problem(Location(name), "is a directory, not a workflow file", "name a .yaml file")]
        ) from None
    except FileRefused as exc:
        raise WorkflowError([Problem(Location(name), exc.message, exc.fix)]) from None
    except UnicodeDecodeError as exc:
        raise WorkflowError(
            [Problem(Location(name), f"not UTF-8 text ({exc.reason})", "save the file as UTF-8")]
        ) from None
    except OSError as exc:
        raise WorkflowError([Problem(Location(name), f"cannot read: {exc.strerror}")]) from None
    except ValueError:  # os.stat refuses a path with a NUL character in it
        raise WorkflowError(
            [Problem(Location(repr(name)), "the path contains a NUL character", "remove it")]
        ) from None
    return parse_source(name, text)


def parse_source(name: str, text: str) -> Source:
    """Parse YAML text; the document must be a mapping."""
    if len(text) > MAX_WORKFLOW_BYTES:  # text given directly (Workflow.from_string), not read
        limit = size_text(MAX_WORKFLOW_BYTES)
        message = f"is larger than {limit}, the most flowengine reads of a workflow"
        raise WorkflowError([Problem(Location(name), message, TOO_LARGE_FIX)])
    source = Source(name, text)
    root = load_yaml(source)
    if root is None:
        raise WorkflowError(
            [Problem(source.at(1, 1), "the file is empty", "start the file with `version: 1`")]
        )
    if not isinstance(root, YamlMap):
        kind = "a list" if isinstance(root, list) else f"a {type(root).__name__}"
        raise WorkflowError(
            [
                Problem(
                    source.at(1, 1),
                    f"a workflow is a mapping of keys (version, name, nodes, ...), but this "
                    f"document is {kind}",
                    "start the file with `version: 1`, `name:` and `nodes:`",
                )
            ]
        )
    source.root = root
    return source


def load_yaml(source: Source) -> Any:
    """The YAML tree of ``source.text``, with positions; WorkflowError at the problem if none."""
    try:
        with collector_paused():
            return read_yaml(source.text)
    except YamlRefused as exc:
        raise WorkflowError([Problem(_mark(source, exc.mark), exc.message, exc.fix)]) from None
    except MarkedYAMLError as exc:
        raise WorkflowError([_yaml_problem(source, exc)]) from None
    except ReaderError as exc:
        raise WorkflowError([_unreadable(source, exc)]) from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise WorkflowError([Problem(Location(source.file), f"YAML syntax: {exc}")]) from None


def _unreadable(source: Source, exc: ReaderError) -> Problem:
    """A character YAML refuses (a NUL, a control character), where it is."""
    position = exc.position if isinstance(exc.position, int) else 0
    before = source.text[:position]
    line = before.count("\n") + 1
    column = position - (before.rfind("\n") + 1) + 1
    code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
    return Problem(
        source.at(line, column),
        f"YAML syntax: the character U+{code:04X} is not allowed in YAML",
        "remove it: YAML allows no control character but tab and line breaks",
    )


_BRACKETS = {"flow sequence": ("list", "[", "]"), "flow mapping": ("mapping", "{", "}")}


def _yaml_problem(source: Source, exc: MarkedYAMLError) -> Problem:
    """A YAML error in words a user acts on, at the place the fix goes."""
    problem, context = str(exc.problem or ""), str(exc.context or "")
    mark = exc.problem_mark or exc.context_mark
    where = _mark(source, mark)
    start = _mark(source, exc.context_mark)
    if "'\\t'" in problem:
        return Problem(
            where,
            "YAML syntax: a tab character where YAML expects spaces",
            "indent with spaces, not tabs",
        )
    if "quoted scalar" in context and "end of stream" in problem:
        return Problem(
            start, "YAML syntax: this quoted string is never closed", "add the closing quote"
        )
    for collection, (what, opening, closing) in _BRACKETS.items():
        if collection in context and start.line is not None:
            return Problem(
                where,
                f"YAML syntax: {problem} in the {what} opened with '{opening}' on line "
                f"{start.line}, column {start.column}",
                f"close the {what} with '{closing}', and separate its items with ','",
            )
    if problem.startswith("expected <block end>"):
        return Problem(
            where,
            "YAML syntax: this line's indentation does not match the lines above it",
            "indent it exactly like the keys it belongs with",
        )
    if "mapping values are not allowed" in problem:
        return Problem(
            where,
            "YAML syntax: ': ' is not allowed here (is this line indented too far?)",
            "align this key with the keys above it, or quote a value that contains ': '",
        )
    message = " ".join(m for m in (context, problem) if m) or "invalid YAML"
    return Problem(
        where, f"YAML syntax: {message}", "check the indentation and quoting around this line"
    )


def _mark(source: Source, mark: Any) -> Location:
    """The location of a ruamel mark, kept inside the file (end of stream is past its last line)."""
    if mark is None:
        return Location(source.file)
    lines = source.lines
    line, column = mark.line + 1, mark.column + 1
    if line > len(lines):
        line = max(len(lines), 1)
        column = len(lines[-1]) + 1 if lines else 1
    return source.at(line, column)


def parse_override(text: str) -> tuple[str, Any]:
    """``"models.llama.weight=4"`` -> ``("models.llama.weight", 4)``, typing the value as YAML."""
    dotted, sep, raw = text.partition("=")
    if not sep or not dotted.strip():
        raise UsageError(
            f"--set {text}: expected PATH=VALUE", "for example --set models.llama.weight=4"
        )
    try:
        return dotted.strip(), parse_value(raw)
    except YamlLimit as exc:
        raise UsageError(f"--set {dotted.strip()}=...: {exc.message}", exc.fix) from None


def parse_value(raw: str) -> Any:
    """Command-line text typed as YAML (``4`` -> 4, ``[a, b]`` -> a list); not YAML: the text.

    Raises YamlLimit for a value nested too deep or whose aliases expand too far.
    """
    try:
        return plain(read_yaml(raw)) if raw.strip() else ""
    except YamlLimit:
        raise
    except (YAMLError, YamlRefused, ValueError):
        return raw


def apply_overrides(source: Source, overrides: Mapping[str, Any]) -> None:
    """Set each dotted path in the parsed tree, creating mappings along the way."""
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if any(not p for p in parts):
            raise UsageError(f"--set {dotted}: empty part in path", "use dots between names only")
        if len(parts) > MAX_DEPTH:
            raise UsageError(
                f"--set {dotted[:40]}...: the path has more than {MAX_DEPTH} parts",
                "name a value of the workflow, such as models.llama.weight",
            )
        flag = f"{dotted}={_yaml_text(value)}"
        node = source.root
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = {}
                node[part] = child
                # A mapping the override made up: errors about it point at the --set too.
                source.overrides.setdefault(tuple(parts[: depth + 1]), flag)
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise UsageError(f"--set {dotted}: {where} is not a mapping")
            node = child
        node[parts[-1]] = value
        source.overrides[tuple(parts)] = flag


def _yaml_text(value: Any) -> str:
    """A parsed override value as the user would write it (``true``, not ``True``)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _with_builtins(root: Mapping[str, Any]) -> dict[str, Any]:
    """Plain data for pydantic, with built-in providers merged under the file's own."""
    data: dict[str, Any] = plain(root)
    providers = data.get("providers")
    if providers is None or isinstance(providers, dict):
        merged = copy.deepcopy(BUILTIN_PROVIDERS)
        for name, spec in (providers or {}).items():
            base = merged.get(name)
            if (
                isinstance(base, dict)
                and isinstance(spec, dict)
                and spec.get("type", "openai") == "openai"
            ):
                merged[name] = {**base, **spec}
            else:
                merged[name] = spec
        data["providers"] = merged
    return data


def plain(value: Any) -> Any:
    """A copy as plain dicts and lists, which validation may change without changing the tree."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def check_version(source: Source) -> None:
    version = source.root.get("version")
    if version is None or version == 1 or isinstance(version, bool):
        return
    raise WorkflowError(
        [
            Problem(
                source.locate(("version",)),
                f"this file is format version {version}; this flowengine reads version 1",
                "set `version: 1`, or upgrade flowengine to read newer files",
            )
        ]
    )


def spec_data(source: Source, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The file's tree as the plain data a WorkflowSpec is validated from.

    Applies the overrides to the tree (so errors can point at them), checks the format version
    and adds the built-in providers.
    """
    if overrides:
        apply_overrides(source, overrides)
    check_version(source)
    return _with_builtins(source.root)
