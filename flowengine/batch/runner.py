"""Batch runs: one run per row of a JSONL or CSV file, through one Engine, losing nothing.

Rows are read lazily and at most ``concurrency`` runs are in flight, so memory stays flat however
many rows there are. Each finished row is appended to the output at once, as one complete JSON
line written by a single ``write``: after Ctrl-C or ``kill -9`` the file is valid JSONL, and
``resume`` skips the rows it already holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flowengine.errors import RunError, UsageError, did_you_mean
from flowengine.events import Event
from flowengine.language.workflow import Workflow
from flowengine.results import ModelMetrics, RunResult, percentile, to_jsonable
from flowengine.run.engine import Engine

NOT_OK = frozenset({"failed", "invalid"})  # row statuses that make a batch not all ok
SAMPLE = 10_000  # latencies kept per model for percentiles: bounded, whatever the row count


@contextlib.contextmanager
def batch_gc() -> Iterator[None]:
    """Garbage-collector settings for a long batch, restored afterwards.

    A batch keeps many runs in flight for minutes. With the default thresholds the collector
    runs every 700 allocations and often walks every object the imports left behind (tens of
    thousands, none of them garbage): a quarter of the CPU. Freezing those objects and
    collecting young ones less often (a few MB more memory at most) gives that time back.
    The settings are the process's, so only the `batch` command, which owns its process,
    uses them.
    """
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(20_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


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


def _jsonl_rows(path: Path) -> Iterator[Row]:
    number = 0
    # Bytes, decoded line by line: one badly encoded line is one bad row, not a dead batch.
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            number += 1
            yield _jsonl_row(number, line_no, raw)


def _jsonl_row(number: int, line_no: int, raw: bytes) -> Row:
    try:
        # utf-8-sig: editors on Windows start the file with a byte order mark.
        value = json.loads(raw.decode("utf-8-sig" if line_no == 1 else "utf-8"))
    except UnicodeDecodeError:
        return Row(number, line_no, None, "not UTF-8 text")
    except json.JSONDecodeError as exc:
        return Row(number, line_no, None, f"not JSON ({exc.msg})")
    if not isinstance(value, dict):
        return Row(number, line_no, None, f"a row is a JSON object, got {type(value).__name__}")
    return Row(number, line_no, value)


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


def count_rows(path: Path) -> int:
    """How many rows a file has, read as a stream (for progress and ETA)."""
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            with _csv_errors(path, reader):
                next(reader, None)  # the header
                return sum(1 for fields in reader if fields)
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def inputs_for(workflow: Workflow, row: Row, mapping: Mapping[str, str]) -> dict[str, Any]:
    """The row's values for the workflow's inputs (``mapping``: input -> column)."""
    assert row.values is not None
    values: dict[str, Any] = {}
    for name, spec in workflow.spec.inputs.items():
        column = mapping.get(name, name)
        if column in row.values:
            value = row.values[column]
            values[name] = _typed(value, spec.type) if row.text else value
        elif spec.is_required:
            raise UsageError(f"missing column '{column}' (input '{name}')")
    return values


def _typed(text: str, kind: str) -> Any:
    """A CSV cell as the input's type: ``3``, ``0.5``, ``true``, ``[1, 2]`` are JSON literals.
    A cell that does not parse stays text, and the input's type check reports it."""
    if kind == "string":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class ModelTotals:
    calls: int = 0
    succeeded: int = 0
    retries: int = 0
    cached: int = 0
    tokens: int = 0
    cost: float | None = None
    latencies: list[float] = field(default_factory=list)
    seen: int = 0  # latencies offered to the reservoir

    def add(self, metrics: ModelMetrics) -> None:
        self.calls += metrics.calls
        self.succeeded += round((metrics.success_rate or 0.0) * metrics.calls)
        self.retries += metrics.retries
        self.cached += metrics.cached
        self.tokens += metrics.tokens
        if metrics.cost is not None:
            self.cost = (self.cost or 0.0) + metrics.cost

    def sample(self, latency: float) -> None:
        self.seen += 1
        if len(self.latencies) < SAMPLE:
            self.latencies.append(latency)
            return
        # Reservoir sampling keeps a uniform sample in bounded memory.
        slot = random.randrange(self.seen)
        if slot < SAMPLE:
            self.latencies[slot] = latency


@dataclass
class Totals:
    """What the summary and the progress bar show; bounded in size."""

    rows: int = 0
    succeeded: int = 0
    partial: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0  # rows already in the output when resuming
    skipped_not_ok: int = 0  # ... of which failed or were invalid
    calls: int = 0
    retries: int = 0
    tokens: int = 0
    cost: float | None = None
    models: dict[str, ModelTotals] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.succeeded + self.partial + self.failed + self.invalid

    @property
    def all_ok(self) -> bool:
        """No row of the output, this time or before, failed or was invalid."""
        return not (self.failed or self.invalid or self.skipped_not_ok)

    def add(self, result: RunResult) -> None:
        """Count a finished run; per-model counts come from every call it made, fallbacks too."""
        setattr(self, result.status, getattr(self, result.status) + 1)
        self.calls += result.metadata.calls
        self.tokens += result.metadata.tokens
        if result.metadata.cost is not None:
            self.cost = (self.cost or 0.0) + result.metadata.cost
        for alias, metrics in result.metrics.models.items():
            self.models.setdefault(alias, ModelTotals()).add(metrics)
            self.retries += metrics.retries

    def on_event(self, event: Event) -> None:
        """Collect call latencies: a run's result keeps only their percentiles."""
        if event.kind == "call_finished" and not event.cached and event.model is not None:
            self.models.setdefault(event.model, ModelTotals()).sample(event.duration_s or 0.0)

    def model_rows(self) -> dict[str, dict[str, Any]]:
        return {
            alias: {
                "calls": t.calls,
                "success_rate": t.succeeded / t.calls if t.calls else None,
                "retries": t.retries,
                "cached": t.cached,
                "latency_p50_s": percentile(t.latencies, 50),
                "latency_p95_s": percentile(t.latencies, 95),
                "tokens": t.tokens,
                "cost": t.cost,
            }
            for alias, t in self.models.items()
            if t.calls  # calls of runs cut short by an interrupt leave only a latency
        }


def done_rows(path: Path) -> dict[int, str]:
    """The rows already in an output file, with their status.

    A torn last line (no newline: the machine lost power mid-write) is cut off, so that its row
    runs again. Any other line that is not a batch result is an error: cutting there would lose
    results, or another file's lines.
    """
    if not path.exists():
        return {}
    done: dict[int, str] = {}
    keep = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                break  # only the last line can lack its newline
            found = _record_row(raw)
            if found is None:
                raise UsageError(
                    f"{path}:{line_no}: not a batch result line",
                    "choose another --output, or remove that line",
                )
            done[found[0]] = found[1]
            keep += len(raw)
    if keep != path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(keep)
    return done


def _record_row(raw: bytes) -> tuple[int, str] | None:
    """(row, status) of one output line; None for a line that is not a batch result."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    row, status = record.get("row"), record.get("status")
    if not isinstance(row, int) or isinstance(row, bool) or not isinstance(status, str):
        return None
    return row, status


class Output:
    """An append-only JSONL file written one whole line per ``write`` call."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UsageError(f"{path}: cannot write the results ({exc.strerror})") from exc

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        data = memoryview(line.encode("utf-8"))
        while data:  # os.write may take less than asked (a signal, a nearly full disk)
            data = data[os.write(self.fd, data) :]

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Batch:
    """One batch: its workflow, files, options, and running totals."""

    workflow: Workflow
    input: Path
    output: Path
    concurrency: int = 8
    resume: bool = False
    mapping: Mapping[str, str] = field(default_factory=dict)
    on_row: Callable[[Row, str, str | None], None] | None = None  # (row, status, error)
    totals: Totals = field(default_factory=Totals)
    started: float = field(default_factory=time.perf_counter)

    def check(self) -> None:
        """Raise UsageError for files and options that cannot work, before anything runs."""
        if not self.input.is_file():
            raise UsageError(f"{self.input}: no such file", "give a .jsonl or .csv file of rows")
        if self.output.exists() and not self.resume and self.output.stat().st_size:
            raise UsageError(
                f"{self.output} already has results",
                "pass --resume to continue it, or choose another --output",
            )
        inputs = self.workflow.spec.inputs
        for name in self.mapping:
            if name not in inputs:
                fix = did_you_mean(name, inputs) or f"inputs of {self.workflow.name}: " + (
                    ", ".join(inputs) or "none"
                )
                raise UsageError(f"--map {name}=...: unknown input '{name}'", fix)

    async def run(self, engine: Engine) -> Totals:
        """Run every row not already done; return the totals."""
        self.check()
        # A missing API key fails every row alike: say it once, before the first row.
        engine.check_credentials(self.workflow, self.workflow.plan.by_weight)
        skip = done_rows(self.output) if self.resume else {}
        self.totals.skipped = len(skip)
        self.totals.skipped_not_ok = sum(s in NOT_OK for s in skip.values())
        self.started = time.perf_counter()
        out = Output(self.output)
        rows = (r for r in read_rows(self.input) if r.number not in skip)
        try:
            async with asyncio.TaskGroup() as group:  # a failing worker stops the others
                for _ in range(max(1, self.concurrency)):
                    group.create_task(self._worker(engine, rows, out))
        except BaseExceptionGroup as group_error:
            raise _first(group_error) from None
        finally:
            rows.close()
            out.close()
        return self.totals

    async def _worker(self, engine: Engine, rows: Iterator[Row], out: Output) -> None:
        # Workers share one iterator, so rows are read only as fast as runs finish.
        for row in rows:
            self.totals.rows += 1
            record = await self._one(engine, row)
            out.write(record)
            if self.on_row is not None:
                error = record["error"]
                self.on_row(row, record["status"], error["message"] if error else None)

    async def _one(self, engine: Engine, row: Row) -> dict[str, Any]:
        try:
            if row.problem is not None:
                raise UsageError(row.problem)
            inputs = inputs_for(self.workflow, row, self.mapping)
            result = await engine.run(self.workflow, inputs, listeners=[self.totals.on_event])
        except UsageError as exc:
            self.totals.invalid += 1
            return _unrun(row, "invalid", "invalid_row", f"line {row.line}: {exc}")
        except RunError as exc:  # the run itself broke: this row failed, the batch goes on
            self.totals.failed += 1
            return _unrun(row, "failed", type(exc).__name__, str(exc))
        self.totals.add(result)
        return {
            "row": row.number,
            "line": row.line,
            "inputs": result.inputs,
            "status": result.status,
            "run_id": result.run_id,
            "output": result.output,
            "error": to_jsonable(result.error),
            "metadata": to_jsonable(result.metadata),
        }


def _unrun(row: Row, status: str, kind: str, message: str) -> dict[str, Any]:
    """The record of a row that produced no run result."""
    return {
        "row": row.number,
        "line": row.line,
        "inputs": row.values,
        "status": status,
        "output": None,
        "error": {"type": kind, "message": message},
    }


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that stopped the workers, as it was raised (not wrapped in a group)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
