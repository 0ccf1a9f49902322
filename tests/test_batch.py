"""Batches through the library: rows in, one complete JSON line per row out, nothing lost."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import shutil
import tracemalloc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, Workflow
from flowengine.batch import rows as rows_module
from flowengine.batch.output import Output, done_rows
from flowengine.batch.rows import count_rows, read_rows
from flowengine.batch.runner import Batch, Totals
from flowengine.errors import RunError, UsageError
from flowengine.results import RunResult
from tests.fakeserver import FakeServer, Reply

DATA = Path(__file__).resolve().parent / "data" / "batch"

ROWS_WF = """
version: 1
name: rows
inputs:
  prompt: {type: string}
  n: {type: integer, default: 1}
providers:
  local: {type: offline, latency: LATENCY}
models:
  m: {id: m/model, provider: local}
nodes:
  answer: {type: llm, model: m, template: "{{ prompt }} x{{ n }}"}
output:
  answer: "{{ answer }}"
  n: "{{ n }}"
"""

SERVER_WF = """
version: 1
name: served
inputs:
  prompt: {type: string}
providers:
  local:
    base_url: URL
    retry: {attempts: 3, initial: 1ms, max: 5ms}
models:
  m: {id: m/model, provider: local}
nodes:
  answer: {type: llm, model: m, template: "{{ prompt }}"}
output:
  answer: "{{ answer }}"
"""


def offline_workflow(tmp_path: Path, latency: str = "0ms") -> Workflow:
    path = tmp_path / "rows.yaml"
    path.write_text(ROWS_WF.replace("LATENCY", latency))
    return Workflow.load(path)


def served_workflow(tmp_path: Path, srv: FakeServer, **overrides: Any) -> Workflow:
    path = tmp_path / "served.yaml"
    path.write_text(SERVER_WF.replace("URL", srv.base_url))
    return Workflow.load(path, overrides=overrides)


def object_input_workflow(tmp_path: Path) -> Workflow:
    """The offline workflow with an input ``data`` of type object, which no node reads."""
    path = tmp_path / "rows.yaml"
    path.write_text(ROWS_WF.replace("LATENCY", "0ms"))
    return Workflow.load(path, overrides={"inputs.data": {"type": "object", "default": {}}})


def jsonl(tmp_path: Path, rows: list[Any], name: str = "rows.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prompts(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"question {i}"} for i in range(1, n + 1)]


def records(path: Path) -> list[dict[str, Any]]:
    """Every line of an output file; each must be a complete JSON object on its own line."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the last line is torn"
    return [json.loads(line) for line in data.decode().splitlines()]


def by_row(path: Path) -> dict[int, dict[str, Any]]:
    found = records(path)
    counts = Counter(r["row"] for r in found)
    assert all(c == 1 for c in counts.values()), f"rows written twice: {counts}"
    return {r["row"]: r for r in found}


async def run_batch(batch: Batch, **engine: Any) -> Totals:
    async with Engine(**engine) as eng:
        return await batch.run(eng)


# -- rows in, lines out -------------------------------------------------------------------------


async def test_every_jsonl_row_becomes_one_complete_line(tmp_path: Path) -> None:
    wf = offline_workflow(tmp_path, "5ms")
    rows = jsonl(tmp_path, [*prompts(6), {"prompt": "seven", "n": 7}])
    out = tmp_path / "out" / "results.jsonl"
    totals = await run_batch(Batch(wf, rows, out, concurrency=3))
    found = by_row(out)
    assert sorted(found) == list(range(1, 8))
    assert all(r["status"] == "succeeded" and r["error"] is None for r in found.values())
    assert found[2]["inputs"] == {"prompt": "question 2", "n": 1}
    assert found[2]["line"] == 2 and found[2]["run_id"]
    assert 'You asked: "question 2 x1"' in found[2]["output"]["answer"]["content"]
    assert found[7]["output"]["n"] == 7
    assert found[7]["metadata"]["calls"] == 1
    assert (totals.succeeded, totals.done, totals.calls, totals.skipped) == (7, 7, 7, 0)
    assert totals.tokens > 0
    metrics = totals.model_rows()["m"]
    assert metrics["calls"] == 7 and metrics["success_rate"] == 1.0
    assert metrics["latency_p50_s"] is not None and metrics["latency_p50_s"] >= 0.004


async def test_csv_rows_with_a_mapped_column_and_typed_cells(tmp_path: Path) -> None:
    wf = offline_workflow(tmp_path)
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "\ufeffquestion,n,ignored\n"  # a byte order mark, as spreadsheets write it
        'What is 2+2?,3,x\n"A question, with a comma\nand a newline",5,y\n'
    )
    out = tmp_path / "out.jsonl"
    totals = await run_batch(Batch(wf, rows, out, mapping={"prompt": "question"}))
    found = by_row(out)
    assert found[1]["inputs"] == {"prompt": "What is 2+2?", "n": 3}  # the cell read as a number
    assert found[2]["inputs"] == {"prompt": "A question, with a comma\nand a newline", "n": 5}
    assert found[2]["line"] == 3  # the line where the record ends
    assert totals.succeeded == 2 and count_rows(rows) == 2


async def test_bad_rows_are_recorded_invalid_with_their_line_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    wf = offline_workflow(tmp_path)
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(
        b'{"prompt": "fine"}\n'
        b"\n"  # blank lines are not rows
        b"{not json\n"
        b"[1, 2]\n"
        b'{"question": "no prompt column"}\n'
        b'{"prompt": "wrong type", "n": "three"}\n'
        b'{"prompt": "\xff\xfe"}\n'
        b'{"prompt": "also fine"}\n'
    )
    out = tmp_path / "out.jsonl"
    totals = await run_batch(Batch(wf, rows, out, concurrency=2))
    found = by_row(out)
    assert sorted(found) == list(range(1, 8)) and count_rows(rows) == 7
    assert [found[n]["status"] for n in range(1, 8)] == ["succeeded", *["invalid"] * 5, "succeeded"]
    messages = {n: found[n]["error"]["message"] for n in range(2, 7)}
    assert messages == {
        2: "line 3: not JSON (Expecting property name enclosed in double quotes)",
        3: "line 4: a row is a JSON object, got list",
        4: "line 5: missing column 'prompt' (input 'prompt')",
        5: "line 6: input 'n' should be integer, got str",
        6: "line 7: not UTF-8 text",
    }
    assert found[4] == {
        "row": 4,
        "line": 5,
        "inputs": {"question": "no prompt column"},
        "status": "invalid",
        "output": None,
        "error": {"type": "invalid_row", "message": messages[4]},
    }
    assert (totals.succeeded, totals.invalid, totals.done) == (2, 5, 7)


async def test_bad_csv_rows_are_invalid(tmp_path: Path) -> None:
    wf = offline_workflow(tmp_path)
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,n\nok,2\ntoo,many,fields\nfew\nnot a number,abc\n")
    out = tmp_path / "out.jsonl"
    await run_batch(Batch(wf, rows, out))
    found = by_row(out)
    assert found[1]["status"] == "succeeded"
    assert found[2]["error"]["message"] == "line 3: more fields than the header has"
    assert found[3]["error"]["message"] == "line 4: fewer fields than the header has"
    assert found[4]["error"]["message"] == "line 5: input 'n' should be integer, got str"


async def test_a_failed_row_is_recorded_with_its_error(tmp_path: Path, server: FakeServer) -> None:
    server.script(Reply.error(400, "context length exceeded"))  # not retried
    rows = jsonl(tmp_path, prompts(3))
    out = tmp_path / "out.jsonl"
    totals = await run_batch(Batch(served_workflow(tmp_path, server), rows, out, concurrency=1))
    found = by_row(out)
    assert [found[n]["status"] for n in (1, 2, 3)] == ["failed", "succeeded", "succeeded"]
    error = found[1]["error"]
    assert error["status"] == 400 and "context length exceeded" in error["message"]
    assert found[1]["output"] is None or "answer" in found[1]["output"]
    assert (totals.failed, totals.succeeded, totals.calls) == (1, 2, 3)
    assert totals.model_rows()["m"]["success_rate"] == pytest.approx(2 / 3)


async def test_a_run_that_breaks_fails_its_row_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = offline_workflow(tmp_path)
    run = Engine.run

    async def breaking(self: Engine, workflow: Workflow, inputs: Any, **kw: Any) -> RunResult:
        if inputs["prompt"] == "question 2":
            raise RunError("the store is gone")
        return await run(self, workflow, inputs, **kw)

    monkeypatch.setattr(Engine, "run", breaking)
    out = tmp_path / "out.jsonl"
    totals = await run_batch(Batch(wf, jsonl(tmp_path, prompts(3)), out))
    found = by_row(out)
    assert found[2]["status"] == "failed"
    assert found[2]["error"] == {"type": "RunError", "message": "the store is gone"}
    assert (totals.failed, totals.succeeded) == (1, 2)


@pytest.mark.parametrize(
    ("broken", "kind", "message"),
    [
        ("raise", "TypeError", "unhashable type: 'dict'"),
        # A result no JSON line can hold: Python writes no integer this long.
        ("result", "ValueError", "Exceeds the limit (4300 digits) for integer string conversion"),
    ],
)
async def test_an_unforeseen_error_in_one_row_fails_that_row_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str, kind: str, message: str
) -> None:
    wf = offline_workflow(tmp_path)
    run = Engine.run

    async def breaking(self: Engine, workflow: Workflow, inputs: Any, **kw: Any) -> RunResult:
        result = await run(self, workflow, inputs, **kw)
        if inputs["prompt"] == "question 2":
            if broken == "raise":
                raise TypeError("unhashable type: 'dict'")  # a bug, say
            result.output = {"n": 10**5000}
        return result

    monkeypatch.setattr(Engine, "run", breaking)
    out = tmp_path / "out.jsonl"
    totals = await run_batch(Batch(wf, jsonl(tmp_path, prompts(3)), out, concurrency=1))
    found = by_row(out)
    assert [found[n]["status"] for n in (1, 2, 3)] == ["succeeded", "failed", "succeeded"]
    assert found[2]["error"]["type"] == kind
    assert found[2]["error"]["message"].startswith(message)
    assert found[2]["inputs"] == {"prompt": "question 2"}
    assert (totals.failed, totals.succeeded) == (1, 2)


async def test_the_fallback_models_calls_count_in_the_totals(
    tmp_path: Path, server: FakeServer
) -> None:
    server.always_for("m/model", Reply.error(404, "no such model"))
    wf = served_workflow(
        tmp_path,
        server,
        **{"models.b": {"id": "b/model", "provider": "local"}, "nodes.answer.fallbacks": ["b"]},
    )
    totals = await run_batch(Batch(wf, jsonl(tmp_path, prompts(2)), tmp_path / "out.jsonl"))
    models = totals.model_rows()
    assert models["m"]["calls"] == 2 and models["m"]["success_rate"] == 0.0
    assert models["b"]["calls"] == 2 and models["b"]["success_rate"] == 1.0
    assert totals.calls == 4 and totals.succeeded == 2


# -- rows no run can take ------------------------------------------------------------------------


async def test_rows_that_stopped_every_batch_are_invalid_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    wf = offline_workflow(tmp_path)
    rows = DATA / "unrunnable.jsonl"
    out = tmp_path / "out.jsonl"
    totals = await run_batch(Batch(wf, rows, out, concurrency=3))
    found = by_row(out)  # every line complete JSON in valid UTF-8
    assert {n: r["error"]["message"] for n, r in found.items() if r["error"]} == {
        1: "line 1: input 'prompt' is not valid Unicode text (a lone surrogate at character 5)",
        2: "line 2: not JSON (a number longer than 4300 digits)",
        3: "line 3: nested deeper than 100 levels",
    }
    assert [found[n]["status"] for n in (1, 2, 3, 4)] == [*["invalid"] * 3, "succeeded"]
    assert found[1]["inputs"] == {"prompt": "lone \ufffd surrogate"}  # U+FFFD: writable
    assert (totals.invalid, totals.succeeded) == (3, 1)
    again = await run_batch(Batch(wf, rows, out, resume=True))  # resume gets past them too
    assert (again.skipped, again.skipped_not_ok, again.done) == (4, 3, 0)


async def test_nesting_past_the_limit_makes_a_row_invalid(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    await run_batch(Batch(offline_workflow(tmp_path), DATA / "nesting.jsonl", out))
    found = by_row(out)
    assert found[1]["status"] == "succeeded"  # 100 levels: the row object and 99 arrays
    assert found[2]["error"]["message"] == "line 2: nested deeper than 100 levels"


async def test_a_lone_surrogate_anywhere_in_an_input_makes_its_row_invalid(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    await run_batch(Batch(object_input_workflow(tmp_path), DATA / "surrogates.jsonl", out))
    found = by_row(out)
    assert found[1]["error"]["message"] == (
        "line 1: input 'data' is not valid Unicode text "
        "(a lone surrogate at character 1 of ['tags'][1])"
    )
    assert found[2]["error"]["message"] == (
        "line 2: input 'data' is not valid Unicode text "
        "(a lone surrogate at character 0 of the key ['\\ud83dkey'])"
    )
    assert found[2]["inputs"] == {"prompt": "b", "data": {"\ufffdkey": 1}}
    assert found[3]["status"] == "succeeded"  # a column no input reads is not run
    assert found[3]["inputs"] == {"prompt": "c", "n": 1, "data": {}}


async def test_csv_cells_read_as_json_are_bounded_and_checked_too(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    await run_batch(Batch(object_input_workflow(tmp_path), DATA / "cells.csv", out))
    found = by_row(out)
    assert found[1]["error"]["message"] == "line 2: input 'data' is nested deeper than 100 levels"
    assert found[2]["error"]["message"] == (
        "line 3: input 'data' is not valid Unicode text (a lone surrogate at character 0 of ['k'])"
    )
    assert found[3]["status"] == "succeeded" and found[3]["inputs"]["data"] == {"k": 1}


def test_a_line_longer_than_the_limit_is_invalid_and_never_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rows_module.MAX_ROW_BYTES == 10 * 2**20
    monkeypatch.setattr(rows_module, "MAX_ROW_BYTES", 2**20)  # so the file can be 20 times longer
    rows = tmp_path / "rows.jsonl"
    with rows.open("wb") as handle:
        handle.write(b'{"prompt": "' + b"x" * 20 * 2**20 + b'"}\n{"prompt": "next"}\n')
    tracemalloc.start()
    try:
        found = [(row.line, row.problem) for row in read_rows(rows)]
        counted = count_rows(rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == [(1, "longer than 1 MB"), (2, None)] and counted == 2
    assert peak < 3 * 2**20  # a bounded part of the line (20 MB), never all of it
    # A line of exactly the limit is a row like any other.
    padding = 2**20 - len(b'{"prompt": ""}\n')
    rows.write_bytes(b'{"prompt": "' + b"y" * padding + b'"}\n')
    assert [row.problem for row in read_rows(rows)] == [None]


# -- the output file ------------------------------------------------------------------------------


async def test_a_full_disk_stops_the_batch_with_one_clear_error_and_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = offline_workflow(tmp_path)
    rows = jsonl(tmp_path, prompts(6))
    out = tmp_path / "out.jsonl"
    real_write = os.write
    calls = 0

    def full_disk(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return real_write(fd, data)
        if calls == 3:  # the disk fills in the middle of the third line
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", full_disk)
        with pytest.raises(RunError) as caught:
            await run_batch(Batch(wf, rows, out, concurrency=1))
    assert str(caught.value) == (
        f"{out}: cannot write the results (No space left on device); the rows written so far "
        "are kept: fix that, then run the same command with --resume"
    )
    assert sorted(by_row(out)) == [1, 2]  # the torn third line was cut off
    totals = await run_batch(Batch(wf, rows, out, resume=True))
    assert (totals.skipped, totals.done) == (2, 4)
    assert sorted(by_row(out)) == [1, 2, 3, 4, 5, 6]


def test_an_output_in_use_or_already_written_is_refused_under_the_lock(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out.jsonl"
    first = Output(out)
    try:
        with pytest.raises(UsageError, match=r"out\.jsonl is being written by another flowengine"):
            Output(out, resume=True)
    finally:
        first.close()
    with out.open("ab") as again:  # closing the output released its lock
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # A batch that finished between another's check and its start: caught under the lock.
    out.write_text('{"row": 1, "status": "succeeded"}\n')
    with pytest.raises(UsageError, match="already has results; pass --resume"):
        Output(out)
    assert out.read_text() == '{"row": 1, "status": "succeeded"}\n'


def test_resume_counts_a_row_written_twice_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    shutil.copy(DATA / "doubled_results.jsonl", out)
    assert done_rows(out) == dict.fromkeys(range(1, 8), "succeeded")  # the last line counts


# -- resume -------------------------------------------------------------------------------------


async def test_resume_skips_done_rows_and_repairs_a_torn_last_line(tmp_path: Path) -> None:
    wf = offline_workflow(tmp_path)
    rows = jsonl(tmp_path, prompts(6))
    out = tmp_path / "out.jsonl"
    await run_batch(Batch(wf, rows, out))
    kept = [line for line in out.read_text().splitlines() if json.loads(line)["row"] in (2, 5)]
    # Two rows survived; the power went out in the middle of a third.
    out.write_text("\n".join(kept) + '\n{"row": 3, "line": 3, "inputs": {"pro')
    assert done_rows(out) == {2: "succeeded", 5: "succeeded"}
    assert out.read_text() == "\n".join(kept) + "\n"  # cut back to the last whole line
    out.write_text(out.read_text() + '{"row": 3, "li')
    totals = await run_batch(Batch(wf, rows, out, resume=True))
    assert (totals.skipped, totals.done, totals.succeeded) == (2, 4, 4)
    assert sorted(by_row(out)) == [1, 2, 3, 4, 5, 6]


async def test_resume_with_everything_done_runs_nothing(tmp_path: Path) -> None:
    wf = offline_workflow(tmp_path)
    rows = jsonl(tmp_path, prompts(3))
    out = tmp_path / "out.jsonl"
    await run_batch(Batch(wf, rows, out))
    before = out.read_bytes()
    totals = await run_batch(Batch(wf, rows, out, resume=True))
    assert (totals.skipped, totals.done, totals.calls) == (3, 0, 0)
    assert out.read_bytes() == before


async def test_a_cancelled_batch_resumed_writes_every_row_exactly_once(tmp_path: Path) -> None:
    wf = offline_workflow(tmp_path, "40ms")
    rows = jsonl(tmp_path, prompts(30))
    out = tmp_path / "out.jsonl"
    task = asyncio.create_task(run_batch(Batch(wf, rows, out, concurrency=4)))
    await wait_for_lines(out, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first = by_row(out)  # valid JSONL, each row once, the runs in flight not written
    assert 5 <= len(first) < 30
    totals = await run_batch(Batch(wf, rows, out, concurrency=8, resume=True))
    assert totals.skipped == len(first) and totals.done == 30 - len(first)
    found = by_row(out)
    assert sorted(found) == list(range(1, 31))
    assert all(r["status"] == "succeeded" for r in found.values())


async def test_the_cache_makes_a_half_done_row_cheap(tmp_path: Path, server: FakeServer) -> None:
    server.always_for("slow/model", Reply.ok("late", delay=30))
    wf = served_workflow(
        tmp_path,
        server,
        **{
            "models.slow": {"id": "slow/model", "provider": "local"},
            "nodes.second": {
                "type": "llm",
                "needs": ["answer"],
                "model": "slow",
                "template": "{{ answer }}",
            },
        },
    )
    rows = jsonl(tmp_path, prompts(3))
    out = tmp_path / "out.jsonl"
    task = asyncio.create_task(run_batch(Batch(wf, rows, out, concurrency=3)))
    await wait_until(lambda: server.count == 6)  # every row is waiting for its second call
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert out.read_bytes() == b""
    server.always_for("slow/model", None)
    totals = await run_batch(Batch(wf, rows, out, concurrency=3, resume=True))
    asked = Counter(r["model"] for r in server.requests)
    assert asked == {"m/model": 3, "slow/model": 6}  # the first calls came from the cache
    assert totals.succeeded == 3 and totals.model_rows()["m"]["cached"] == 3


async def test_a_foreign_line_in_the_output_stops_resume_and_is_kept(tmp_path: Path) -> None:
    wf = offline_workflow(tmp_path)
    out = tmp_path / "out.jsonl"
    text = '{"row": 1, "status": "failed"}\n{"prompt": "a row, not a result"}\n'
    out.write_text(text)
    with pytest.raises(UsageError, match=r"out.jsonl:2: not a batch result line"):
        await run_batch(Batch(wf, jsonl(tmp_path, prompts(3)), out, resume=True))
    assert out.read_text() == text


async def test_files_and_options_are_checked_before_anything_runs(tmp_path: Path) -> None:
    wf = offline_workflow(tmp_path)
    rows = jsonl(tmp_path, prompts(1))
    out = tmp_path / "out.jsonl"
    out.write_text('{"row": 1}\n')
    with pytest.raises(UsageError, match="already has results; pass --resume"):
        Batch(wf, rows, out).check()
    with pytest.raises(UsageError, match="no such file"):
        Batch(wf, tmp_path / "nope.jsonl", tmp_path / "new.jsonl").check()
    with pytest.raises(UsageError, match=r"unknown input 'promt'; did you mean 'prompt'\?"):
        Batch(wf, rows, tmp_path / "new.jsonl", mapping={"promt": "q"}).check()
    Batch(wf, rows, out, resume=True).check()
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"file/out.jsonl: cannot write the results \("):
        await run_batch(Batch(wf, rows, tmp_path / "file" / "out.jsonl"))


# -- one Engine, one set of limits --------------------------------------------------------------


async def test_the_rate_limit_holds_in_every_sliding_window_across_rows(
    tmp_path: Path, server: FakeServer
) -> None:
    wf = served_workflow(
        tmp_path, server, **{"providers.local.rate_limit": {"requests": 4, "per": "400ms"}}
    )
    rows = jsonl(tmp_path, prompts(12))
    totals = await run_batch(Batch(wf, rows, tmp_path / "out.jsonl", concurrency=12))
    assert totals.succeeded == 12 and server.count == 12
    starts = sorted(server.starts)
    window = 0.4 - 0.03  # the server sees a request slightly after the limiter let it go
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s - start < window]
        assert len(in_window) <= 4, f"{len(in_window)} requests within {window}s"
    assert starts[-1] - starts[0] >= 2 * 0.4 - 0.05


async def test_the_providers_concurrency_cap_holds_across_rows(
    tmp_path: Path, server: FakeServer
) -> None:
    server.latency = 0.05
    wf = served_workflow(tmp_path, server, **{"providers.local.max_concurrency": 2})
    rows = jsonl(tmp_path, prompts(8))
    totals = await run_batch(Batch(wf, rows, tmp_path / "out.jsonl", concurrency=8))
    assert totals.succeeded == 8
    assert server.max_in_flight == 2


# -- a flaky server -----------------------------------------------------------------------------


@dataclass
class Flaky:
    """A server whose replies fail about one in five: a 503, or a 429 that asks to retry at once."""

    server: FakeServer
    script: list[Reply]

    @property
    def failed(self) -> int:
        """Failures the server sent: its replies are taken from the script in order."""
        return sum(reply.status != 200 for reply in self.script[: self.server.count])

    @property
    def count(self) -> int:
        return self.server.count


def flaky_script(seed: int, n: int) -> list[Reply]:
    rng = random.Random(seed)
    script = []
    for _ in range(n):
        draw = rng.random()
        if draw < 0.1:
            script.append(Reply.error(503, "upstream overloaded"))
        elif draw < 0.2:
            script.append(Reply.error(429, "slow down", headers={"Retry-After": "0"}))
        else:
            script.append(Reply())  # the default answer
    return script


@pytest.fixture
async def flaky(server: FakeServer) -> Flaky:
    script = flaky_script(seed=20, n=200)  # more than the tests ask for
    server.script(*script)
    return Flaky(server, script)


async def test_a_flaky_server_with_retries_still_yields_every_row(
    tmp_path: Path, flaky: Flaky
) -> None:
    retry = {"attempts": 10, "initial": "1ms", "max": "2ms"}
    wf = served_workflow(tmp_path, flaky.server, **{"providers.local.retry": retry})
    out = tmp_path / "out.jsonl"
    totals = await run_batch(Batch(wf, jsonl(tmp_path, prompts(60)), out, concurrency=8))
    found = by_row(out)
    assert sorted(found) == list(range(1, 61))
    assert all(r["status"] == "succeeded" for r in found.values())
    assert flaky.failed >= 5 and flaky.count == 60 + flaky.failed
    assert totals.retries == flaky.failed and totals.model_rows()["m"]["retries"] == flaky.failed


async def test_a_flaky_server_without_retries_still_records_every_row(
    tmp_path: Path, flaky: Flaky
) -> None:
    wf = served_workflow(tmp_path, flaky.server, **{"providers.local.retry.attempts": 1})
    out = tmp_path / "out.jsonl"
    totals = await run_batch(Batch(wf, jsonl(tmp_path, prompts(60)), out, concurrency=8))
    found = by_row(out)
    assert sorted(found) == list(range(1, 61))
    failed = [r for r in found.values() if r["status"] == "failed"]
    assert len(failed) == flaky.failed >= 5
    assert {r["error"]["status"] for r in failed} <= {503, 429}
    assert totals.failed == len(failed) and totals.succeeded == 60 - len(failed)


# -- helpers ------------------------------------------------------------------------------------


async def wait_for_lines(path: Path, n: int) -> None:
    await wait_until(lambda: path.exists() and path.read_bytes().count(b"\n") >= n)


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_many_runs_gc_settings_are_restored() -> None:
    import gc

    from flowengine.run.gc_settings import many_runs_gc

    before = gc.get_threshold()
    with many_runs_gc():
        assert gc.get_threshold()[0] > before[0]
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
