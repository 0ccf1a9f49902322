"""Schema files: a node's ``schema: judge.json``, read within the same bounds as prompt files.

The name is relative to the workflow's folder and must resolve inside the project (the folder
that holds prompts/, else the workflow's own folder) after following links; the file is a
regular file of at most :data:`MAX_SCHEMA_BYTES`, UTF-8, ``.json`` or ``.yaml``. A problem is
located in the workflow (at its ``schema:``) or in the schema file itself (a syntax error).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from flowengine.errors import Location, Problem, WorkflowError, did_you_mean
from flowengine.language.files import FileRefused, read_bytes
from flowengine.language.loader import load_yaml, plain
from flowengine.language.source import Source

#: The largest schema file read, in bytes.
MAX_SCHEMA_BYTES = 1024 * 1024
SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class SchemaFolders:
    """Where schema files are found: names are relative to ``folder``, and stay in ``root``."""

    folder: Path
    root: Path

    @classmethod
    def of(cls, folder: Path, prompts_dir: Path | None) -> SchemaFolders:
        folder = folder.resolve()
        project = prompts_dir.resolve().parent if prompts_dir is not None else folder
        return cls(folder, project if folder.is_relative_to(project) else folder)


class SchemaFileError(Exception):
    """A schema file that cannot be read; ``problem`` says why, where the fix goes."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass(frozen=True)
class SchemaFile:
    """A schema file's data, and its text and tree to locate problems in it."""

    data: dict[str, Any]
    source: Source


def read_schema_file(folders: SchemaFolders | None, name: str, at: Location) -> SchemaFile:
    """The schema in file ``name``; SchemaFileError at ``at`` (or in the file) if there is none."""
    if folders is None:
        raise _error(
            at,
            f"schema file '{name}': a workflow given as text has no folder to read it from",
            "write the schema inline, as a mapping under `schema:`",
            "schema-path",
        )
    file = _schema_path(folders, name, at)
    text = _read_text(file, name, at)
    source = Source(_display(file), text)
    if file.suffix == ".json":
        return _json_schema_file(source)
    try:
        root = load_yaml(source)
    except WorkflowError as exc:
        raise SchemaFileError(exc.problems[0]) from None
    source.root = root
    data = plain(root)
    if not isinstance(data, dict):
        raise _not_a_mapping(source, data)
    return SchemaFile(data, source)


def _schema_path(folders: SchemaFolders, name: str, at: Location) -> Path:
    def refuse(message: str, fix: str = "name a .json or .yaml file in the project") -> NoReturn:
        raise _error(at, f"schema file {name!r} {message}", fix, "schema-path")

    if "\0" in name:
        refuse("contains a NUL character")
    if Path(name).is_absolute() or "\\" in name:
        refuse("must be relative to the workflow's folder")
    if Path(name).suffix not in SUFFIXES:
        refuse("is not a .json or .yaml file", "write the schema inline, or in a .json file")
    root = folders.root
    if not Path(os.path.normpath(folders.folder / name)).is_relative_to(root):
        refuse(f"leads outside the project ({_display(root)}/)")
    target = (folders.folder / name).resolve()
    if not target.is_relative_to(root):
        refuse("leads outside the project through a link", "copy the file into the project")
    return target


def _read_text(file: Path, name: str, at: Location) -> str:
    try:
        data = read_bytes(file, MAX_SCHEMA_BYTES, "a schema file")
    except (FileNotFoundError, NotADirectoryError):
        fix = _nearby(file, name)
        raise _error(at, f"schema file '{name}' not found", fix, "schema-not-found") from None
    except IsADirectoryError:
        fix = "name a .json or .yaml file"
        raise _error(at, f"schema file '{name}' is a directory", fix, "schema-unreadable") from None
    except FileRefused as exc:
        message = f"schema file '{name}' {exc.message}"
        raise _error(at, message, exc.fix, "schema-unreadable") from None
    except OSError as exc:
        message = f"cannot read schema file '{name}': {exc.strerror}"
        raise _error(at, message, None, "schema-unreadable") from None
    try:
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        message = f"schema file '{name}' is not UTF-8 text ({exc.reason})"
        raise _error(at, message, "save the file as UTF-8", "schema-unreadable") from None


def _json_schema_file(source: Source) -> SchemaFile:
    try:
        data = json.loads(source.text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        where = source.at(exc.lineno, exc.colno)
        message = f"JSON syntax: {exc.msg}"
        raise _error(
            where,
            message,
            "write valid JSON here: check the commas, quotes and brackets",
            "schema-syntax",
        ) from None
    except (ValueError, RecursionError) as exc:
        message = f"not JSON: {exc}" if isinstance(exc, ValueError) else "nested too deeply"
        raise _error(source.at(1, 1), message, None, "schema-syntax") from None
    if not isinstance(data, dict):
        raise _not_a_mapping(source, data)
    # JSON is YAML too: its tree gives the place of each value, for later problems. If it
    # cannot be read so (duplicate keys, say), problems point at the file's first line.
    with contextlib.suppress(WorkflowError):
        source.root = load_yaml(source)
    return SchemaFile(data, source)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _not_a_mapping(source: Source, data: Any) -> SchemaFileError:
    kind = "empty" if data is None else f"a {type(data).__name__}"
    return _error(
        source.at(1, 1),
        f"a JSON Schema is a mapping of keywords, but this file is {kind}",
        "start it with `type: object` and `properties:`",
        "schema-invalid",
    )


def _nearby(file: Path, name: str) -> str:
    """A close match among the schema files in the folder ``name`` names, as it would write it."""
    folder = Path(name).parent
    try:
        names = sorted(str(folder / p.name) for p in file.parent.iterdir() if p.suffix in SUFFIXES)
    except OSError:
        names = []
    return did_you_mean(file.name, names) or (
        f"schema files in {_display(file.parent)}/: {', '.join(names[:20])}"
        if names
        else "check the path: it is relative to the workflow's folder"
    )


def _error(at: Location, message: str, fix: str | None, code: str) -> SchemaFileError:
    return SchemaFileError(Problem(at, message, fix, code))


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
