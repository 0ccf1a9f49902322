"""Batch runs: one run per row of a JSONL or CSV file, through one Engine, losing nothing.

Rows are read lazily and at most ``concurrency`` runs are in flight, so memory stays flat however
many rows there are. Each finished row is appended to the output at once, as one complete JSON
line written by a single ``write``: after Ctrl-C or ``kill -9`` the file is valid JSONL, and
``resume`` skips the rows it already holds.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowengine.engine import Engine
from flowengine.errors import UsageError
from flowengine.results import RunResult, percentile, to_jsonable
from flowengine.workflow import Workflow

SAMPLE = 10_000  # latencies kept per model for percentiles: bounded, whatever the row count


@dataclass(frozen=True)
class Row:
    number: int  # 1-based position among the file's rows
    line: int  # line in the file, for messages
    values: dict[str, Any] | None
    problem: str | None = None


def read_rows(path: Path) -> Iterator[Row]:
    """Rows of a ``.jsonl`` or ``.csv`` file; a row that cannot be read carries its problem."""
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path)
    else:
        yield from _jsonl_rows(path)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    number = 0
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            number += 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Row(number, line_no, None, f"not JSON ({exc.msg})")
                continue
            if not isinstance(value, dict):
                kind = type(value).__name__
                yield Row(number, line_no, None, f"a row is a JSON object, got {kind}")
                continue
            yield Row(number, line_no, value)


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for number, record in enumerate(reader, 1):
            if None in record:
                yield Row(number, reader.line_num, None, "more fields than the header has")
                continue
            yield Row(number, reader.line_num, dict(record))


def count_rows(path: Path) -> int:
    """How many rows a file has, read as a stream (for progress and ETA)."""
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return sum(1 for _ in csv.DictReader(handle))
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def inputs_for(workflow: Workflow, row: Row, mapping: Mapping[str, str]) -> dict[str, Any]:
    """The row's values for the workflow's inputs (``mapping``: input -> column)."""
    assert row.values is not None
    values: dict[str, Any] = {}
    for name, spec in workflow.spec.inputs.items():
        column = mapping.get(name, name)
        if column in row.values:
            values[name] = row.values[column]
        elif spec.is_required:
            raise UsageError(f"missing column '{column}' (input '{name}')")
    return values


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


@dataclass
class Totals:
    """What the summary and the progress bar show; bounded in size."""

    rows: int = 0
    succeeded: int = 0
    partial: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0
    calls: int = 0
    retries: int = 0
    tokens: int = 0
    cost: float | None = None
    models: dict[str, ModelTotals] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.succeeded + self.partial + self.failed + self.invalid

    def add(self, result: RunResult) -> None:
        setattr(self, result.status, getattr(self, result.status) + 1)
        self.calls += result.metadata.calls
        self.tokens += result.metadata.tokens
        if result.metadata.cost is not None:
            self.cost = (self.cost or 0.0) + result.metadata.cost
        for node in result.nodes.values():
            for call in _calls(node.output):
                self._add_call(call)

    def _add_call(self, call: Any) -> None:
        totals = self.models.setdefault(call.model, ModelTotals())
        totals.calls += 1
        totals.succeeded += call.success
        totals.retries += max(0, call.attempts - 1)
        self.retries += max(0, call.attempts - 1)
        if call.cached:
            totals.cached += 1
            return
        totals.tokens += call.usage.total_tokens or 0
        if call.usage.cost is not None:
            totals.cost = (totals.cost or 0.0) + call.usage.cost
        totals.seen += 1
        if len(totals.latencies) < SAMPLE:
            totals.latencies.append(call.latency_s)
        else:  # reservoir sampling keeps a uniform sample in bounded memory
            slot = random.randrange(totals.seen)
            if slot < SAMPLE:
                totals.latencies[slot] = call.latency_s

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
        }


def _calls(output: Any) -> list[Any]:
    if isinstance(output, list):
        return [c for c in output if hasattr(c, "attempts")]
    return [output] if hasattr(output, "attempts") else []


def done_rows(path: Path) -> set[int]:
    """Row numbers already in an output file; a torn last line (power loss) is cut off."""
    if not path.exists():
        return set()
    done: set[int] = set()
    keep = 0
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except ValueError:
                break
            if not raw.endswith(b"\n"):
                break
            done.add(int(record["row"]))
            keep += len(raw)
    if keep != path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(keep)
    return done


class Output:
    """An append-only JSONL file written one whole line per ``write`` call."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        os.write(self.fd, line.encode("utf-8"))

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
        """Raise UsageError for files that cannot work, before anything runs."""
        if not self.input.is_file():
            raise UsageError(f"{self.input}: no such file", "give a .jsonl or .csv file of rows")
        if self.output.exists() and not self.resume and self.output.stat().st_size:
            raise UsageError(
                f"{self.output} already has results",
                "pass --resume to continue it, or choose another --output",
            )

    async def run(self, engine: Engine) -> Totals:
        """Run every row not already done; return the totals."""
        self.check()
        skip = done_rows(self.output) if self.resume else set()
        self.totals.skipped = len(skip)
        out = Output(self.output)
        try:
            rows = (r for r in read_rows(self.input) if r.number not in skip)
            workers = [self._worker(engine, rows, out) for _ in range(max(1, self.concurrency))]
            await asyncio.gather(*workers)
        finally:
            out.close()
        return self.totals

    async def _worker(self, engine: Engine, rows: Iterator[Row], out: Output) -> None:
        # Workers share one iterator, so rows are read only as fast as runs finish.
        for row in rows:
            self.totals.rows += 1
            record = await self._one(engine, row)
            out.write(record)
            if self.on_row is not None:
                error = record.get("error")
                self.on_row(row, record["status"], error["message"] if error else None)

    async def _one(self, engine: Engine, row: Row) -> dict[str, Any]:
        base: dict[str, Any] = {"row": row.number, "line": row.line}
        try:
            if row.problem is not None:
                raise UsageError(row.problem)
            inputs = inputs_for(self.workflow, row, self.mapping)
            result = await engine.run(self.workflow, inputs)
        except UsageError as exc:
            self.totals.invalid += 1
            error = {"type": "invalid_row", "message": f"line {row.line}: {exc}"}
            return {**base, "inputs": row.values, "status": "invalid", "error": error}
        self.totals.add(result)
        return {
            **base,
            "inputs": result.inputs,
            "status": result.status,
            "run_id": result.run_id,
            "output": result.output,
            "error": to_jsonable(result.error),
            "metadata": to_jsonable(result.metadata),
        }
