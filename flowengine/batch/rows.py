"""Rows in: a ``.jsonl`` or ``.csv`` file read as a stream, each row with its problem, if any.

A row that cannot be run carries its problem instead of raising, so that one bad row is one
``invalid`` line in the output and never stops a batch. What one row may hold is bounded: a
line longer than ``MAX_ROW_BYTES`` is never read whole, and values nested deeper than
``MAX_DEPTH`` never reach code that recurses over them (JSON, validation, templates).
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from flowengine.errors import UsageError
from flowengine.language.inputs import MAX_DEPTH, find_lone_surrogate, nested_too_deep
from flowengine.language.workflow import Workflow
from flowengine.text import LONE_SURROGATE

MAX_ROW_BYTES = 10 * 2**20  # a longer line is an invalid row, skipped without being kept
SKIP_BLOCK = 2**16  # bytes read at a time while skipping the rest of a line too long


@dataclass(frozen=True)
class Row:
    number: int  # 1-based position among the file's rows
    line: int  # line in the file, for messages
    values: dict[str, Any] | None
    problem: str | None = None
    text: bool = False  # every value is a string (CSV), to be read as the input's type


def read_rows(path: Path) -> Iterator[Row]:
    """Rows of a ``.jsonl`` or ``.csv`` file; a row that cannot be read carries its problem."""
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path)
    else:
        yield from _jsonl_rows(path)


def count_rows(path: Path) -> int:
    """How many rows a file has, read as a stream (for progress and ETA)."""
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            with _csv_errors(path, reader):
                next(reader, None)  # the header
                return sum(1 for fields in reader if fields)
    with path.open("rb") as handle:
        return sum(1 for line in _lines(handle) if line is None or line.strip())


# -- JSONL ----------------------------------------------------------------------------------------


def _jsonl_rows(path: Path) -> Iterator[Row]:
    number = 0
    # Bytes, decoded line by line: one badly encoded line is one bad row, not a dead batch.
    with path.open("rb") as handle:
        for line_no, raw in enumerate(_lines(handle), 1):
            if raw is not None and not raw.strip():
                continue
            number += 1
            yield _jsonl_row(number, line_no, raw)


def _lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines, or None for a line longer than ``MAX_ROW_BYTES``: memory stays bounded
    however long a line is, and the lines after it keep their numbers."""
    while line := handle.readline(MAX_ROW_BYTES + 1):
        if len(line) <= MAX_ROW_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = handle.readline(SKIP_BLOCK)
        yield None


def _jsonl_row(number: int, line_no: int, raw: bytes | None) -> Row:
    if raw is None:
        return Row(number, line_no, None, f"longer than {MAX_ROW_BYTES // 2**20} MB")
    try:
        # utf-8-sig: editors on Windows start the file with a byte order mark.
        text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
    except UnicodeDecodeError:
        return Row(number, line_no, None, "not UTF-8 text")
    value, problem = _parse(text)
    if problem is None and nested_too_deep(value):
        problem = f"nested deeper than {MAX_DEPTH} levels"
    if problem is not None:
        return Row(number, line_no, None, problem)
    if not isinstance(value, dict):
        return Row(number, line_no, None, f"a row is a JSON object, got {type(value).__name__}")
    return Row(number, line_no, value)


def _parse(text: str) -> tuple[Any, str | None]:
    """A JSON value, or why there is none."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg})"
    except ValueError:  # Python refuses to convert longer integers: it takes quadratic time
        return None, f"not JSON (a number longer than {sys.get_int_max_str_digits()} digits)"
    except RecursionError:  # the parser nests as deep as the value: far past MAX_DEPTH
        return None, f"nested deeper than {MAX_DEPTH} levels"


# -- CSV ------------------------------------------------------------------------------------------


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        with _csv_errors(path, reader):
            header = next(reader, [])
            number = 0
            while True:
                line_no = reader.line_num + 1  # where the record starts; it may span lines
                fields = next(reader, None)
                if fields is None:
                    return
                if fields:  # a blank line is not a row
                    number += 1
                    yield _csv_row(number, line_no, header, fields)


def _csv_row(number: int, line_no: int, header: list[str], fields: list[str]) -> Row:
    if len(fields) > len(header):
        return Row(number, line_no, None, "more fields than the header has")
    if len(fields) < len(header):
        return Row(number, line_no, None, "fewer fields than the header has")
    return Row(number, line_no, dict(zip(header, fields, strict=True)), text=True)


class _Lines(Protocol):
    """A csv reader, as far as error messages need it."""

    @property
    def line_num(self) -> int: ...


@contextlib.contextmanager
def _csv_errors(path: Path, reader: _Lines) -> Iterator[None]:
    """A file that is not CSV text at all is a usage error, not a traceback."""
    try:
        yield
    except csv.Error as exc:
        raise UsageError(f"{path}:{reader.line_num}: cannot read the CSV file ({exc})") from exc
    except UnicodeDecodeError as exc:  # decoded a block at a time: no line to point at
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


# -- a row's values as a run's inputs -------------------------------------------------------------


def inputs_for(workflow: Workflow, row: Row, mapping: Mapping[str, str]) -> dict[str, Any]:
    """The row's values for the workflow's inputs (``mapping``: input -> column).

    Raises UsageError for a value no run can take: a missing column, a lone surrogate. A CSV
    row cannot leave a cell out: an empty cell of an input that is not required is not given.
    """
    assert row.values is not None
    values: dict[str, Any] = {}
    for name, spec in workflow.spec.inputs.items():
        column = mapping.get(name, name)
        if row.text and not spec.is_required and row.values.get(column) == "":
            continue
        if column in row.values:
            value = row.values[column]
            values[name] = _checked(name, _typed(name, value, spec.type) if row.text else value)
        elif spec.is_required:
            raise UsageError(f"missing column '{column}' (input '{name}')")
    return values


def _typed(name: str, text: str, kind: str) -> Any:
    """A CSV cell as the input's type: ``3``, ``0.5``, ``true``, ``[1, 2]`` are JSON literals.
    A cell that does not parse stays text, and the input's type check reports it."""
    if kind == "string":
        return text
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise UsageError(f"input '{name}' is nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError:
        return text


def _checked(name: str, value: Any) -> Any:
    """``value`` if a run can take it. A lone surrogate would break the run (its records are
    UTF-8), and only a JSON escape or a CSV cell read as JSON can make one."""
    if nested_too_deep(value):  # a JSONL row is checked whole; a CSV cell only once it is read
        raise UsageError(f"input '{name}' is nested deeper than {MAX_DEPTH} levels")
    found = find_lone_surrogate(value)
    if found is not None:
        text, place = found
        index = next(LONE_SURROGATE.finditer(text)).start()
        where = f"character {index}" + (f" of {place}" if place else "")
        raise UsageError(f"input '{name}' is not valid Unicode text (a lone surrogate at {where})")
    return value
