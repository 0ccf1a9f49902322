"""The response cache in real runs: hits make no request, are marked and counted apart, and a
bad database file never fails a run."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, RunResult, Workflow
from flowengine.providers import Completion
from flowengine.results import CallResult
from flowengine.store import cache as cache_module
from flowengine.store.cache import ResponseCache
from flowengine.store.db import Store
from flowengine.store.records import list_runs, load_run
from tests.clirunner import invoke
from tests.fakeserver import FakeServer, Reply, ThreadedServer

ROOT = Path(__file__).resolve().parent.parent

FLOW = """\
version: 1
name: cached
inputs:
  prompt: {{type: string}}
providers:
  local: {{base_url: "{url}", retry: {{attempts: 2, initial: 1ms, max: 2ms}}}}
models:
  a: {{id: model-a, provider: local, weight: 2}}
  b: {{id: model-b, provider: local}}
defaults:
  params: {{temperature: 0.2}}
nodes:
  answer: {{type: llm, model: a, template: "Q: {{{{ prompt }}}}"{answer_extra}}}
  review:
    type: fanout
    needs: [answer]
    template: "Review: {{{{ answer }}}}"{review_extra}
"""


def flow(tmp_path: Path, url: str, *, answer_extra: str = "", review_extra: str = "") -> Path:
    path = tmp_path / "cached.yaml"
    path.write_text(FLOW.format(url=url, answer_extra=answer_extra, review_extra=review_extra))
    return path


async def run_once(
    wf: Workflow, prompt: str = "What is a cache?", *, cache: bool = True
) -> RunResult:
    async with Engine(cache=cache) as eng:
        return await eng.run(wf, prompt=prompt)


def calls_of(result: RunResult) -> list[CallResult]:
    answer = result.nodes["answer"].output
    review = result.nodes["review"].output or []
    return [answer, *review] if answer is not None else list(review)


async def test_second_identical_run_makes_no_http_call(server: FakeServer, tmp_path: Path) -> None:
    wf = Workflow.load(flow(tmp_path, server.base_url))
    first = await run_once(wf)
    assert first.status == "succeeded" and server.count == 3
    assert [c.cached for c in calls_of(first)] == [False, False, False]
    assert first.metadata.tokens > 0 and first.metadata.cost is not None

    second = await run_once(wf)
    assert server.count == 3  # not one more request
    assert second.status == "succeeded"
    hits = calls_of(second)
    assert [(c.model, c.cached, c.attempts) for c in hits] == [
        ("a", True, 0),
        ("a", True, 0),
        ("b", True, 0),
    ]
    assert [c.content for c in hits] == [c.content for c in calls_of(first)]
    assert [c.usage for c in hits] == [c.usage for c in calls_of(first)]  # what it once cost
    assert second.output["answer"]["cached"] is True  # the JSON result says so too
    # Nothing was spent: hits are counted apart, with no tokens, cost or latency.
    assert second.metadata.calls == 3 and second.metadata.tokens == 0
    assert second.metadata.cost == 0.0  # known prices, nothing spent: 0, not unknown
    a = second.metrics.models["a"]
    assert (a.calls, a.cached, a.tokens, a.cost, a.success_rate) == (2, 2, 0, 0.0, 1.0)
    assert (a.latency_p50_s, a.latency_p95_s) == (None, None)
    # The run's record says the same.
    timeline = load_run(Store(), second.run_id).timeline
    assert [(c.node, c.cached, c.attempts, c.status) for c in timeline] == [
        ("answer", True, 0, "succeeded"),
        ("review", True, 0, "succeeded"),
        ("review", True, 0, "succeeded"),
    ]


async def test_metadata_counts_only_what_was_not_cached(server: FakeServer, tmp_path: Path) -> None:
    wf = Workflow.load(flow(tmp_path, server.base_url))
    async with Engine() as engine:
        await engine.run(wf, prompt="q", only=["answer"])  # caches the answer alone
        assert server.count == 1
        result = await engine.run(wf, prompt="q")
    assert server.count == 3  # the two reviews; the answer came from the cache
    answer, *reviews = calls_of(result)
    assert answer.cached and not any(r.cached for r in reviews)
    assert result.metadata.calls == 3
    assert result.metadata.tokens == sum(r.usage.total_tokens or 0 for r in reviews)
    assert result.metadata.cost == pytest.approx(sum(r.usage.cost or 0 for r in reviews))
    a, b = result.metrics.models["a"], result.metrics.models["b"]
    assert (a.calls, a.cached, b.calls, b.cached) == (2, 1, 1, 0)
    assert a.tokens == reviews[0].usage.total_tokens
    assert a.cost == pytest.approx(reviews[0].usage.cost)


async def test_the_key_covers_prompt_and_params(server: FakeServer, tmp_path: Path) -> None:
    wf = Workflow.load(flow(tmp_path, server.base_url))
    await run_once(wf, "one")
    await run_once(wf, "two")  # another prompt: every call is new
    assert server.count == 6
    warmer = Workflow.load(flow(tmp_path, server.base_url), {"defaults.params.temperature": 0.9})
    await run_once(warmer, "one")  # other params: new calls
    assert server.count == 9
    assert server.requests[-1]["temperature"] == 0.9


async def test_engine_without_cache_neither_reads_nor_writes(
    server: FakeServer, tmp_path: Path
) -> None:
    wf = Workflow.load(flow(tmp_path, server.base_url))
    await run_once(wf, cache=False)
    result = await run_once(wf, cache=False)
    assert server.count == 6
    assert not any(c.cached for c in calls_of(result))
    await run_once(wf)  # nothing was written by the runs without cache
    assert server.count == 9
    assert ResponseCache(Store()).stats().entries == 3


async def test_node_cache_false_bypasses_the_cache(server: FakeServer, tmp_path: Path) -> None:
    wf = Workflow.load(flow(tmp_path, server.base_url, review_extra="\n    cache: false"))
    await run_once(wf)
    result = await run_once(wf)
    assert server.count == 5  # 3, then the two reviews again
    assert [c.cached for c in calls_of(result)] == [True, False, False]
    assert ResponseCache(Store()).stats().by_model == {"model-a": 1}


async def test_errors_are_never_cached(server: FakeServer, tmp_path: Path) -> None:
    wf = Workflow.load(flow(tmp_path, server.base_url))
    server.script_for("model-a", Reply.error(400, "bad request"))
    failed = await run_once(wf)
    assert failed.status == "failed" and server.count == 1
    server.script_for("model-a", Reply.error_in_200(502, "upstream down"), Reply.error(503))
    also_failed = await run_once(wf)  # an error inside a 200, then a 503: both retried, failed
    assert also_failed.status == "failed" and server.count == 3
    assert ResponseCache(Store()).stats().entries == 0

    server.script_for("model-a", Reply.error(503, "busy"), Reply.ok("the answer"))
    retried = await run_once(wf)  # a success after a retry is cached like any other
    assert retried.status == "succeeded" and server.count == 7
    assert retried.nodes["answer"].output.attempts == 2
    again = await run_once(wf)
    assert server.count == 7
    assert again.nodes["answer"].output.content == "the answer"
    assert again.nodes["answer"].output.cached is True


async def test_a_failed_review_is_not_cached_but_the_rest_is(
    server: FakeServer, tmp_path: Path
) -> None:
    wf = Workflow.load(flow(tmp_path, server.base_url, review_extra="\n    min_success: 1"))
    server.script_for("model-b", Reply.error(422, "no"))
    first = await run_once(wf)
    assert first.status == "partial" and server.count == 3
    second = await run_once(wf)
    assert server.count == 4  # only model-b's review is asked again
    assert [(c.model, c.cached, c.success) for c in calls_of(second)] == [
        ("a", True, True),
        ("a", True, True),
        ("b", False, True),
    ]
    assert second.status == "succeeded"


async def test_many_concurrent_runs_share_the_cache(server: FakeServer, tmp_path: Path) -> None:
    wf = Workflow.load(flow(tmp_path, server.base_url))
    prompts = [f"question {i}" for i in range(20)]
    async with Engine() as engine:
        first = await asyncio.gather(*(engine.run(wf, prompt=p) for p in prompts))
        assert server.count == 60
        second = await asyncio.gather(*(engine.run(wf, prompt=p) for p in prompts))
    assert server.count == 60
    assert all(r.status == "succeeded" for r in first + second)
    assert all(c.cached for r in second for c in calls_of(r))
    assert ResponseCache(Store()).stats().entries == 60
    assert len(list_runs(Store(), limit=100)) == 40


async def test_records_and_cache_entries_are_encoded_off_the_event_loop(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoders: list[str] = []
    encode, dump_json = cache_module.encode_answer, RunResult.model_dump_json

    def spy_encode(completion: Completion, **more: Any) -> str:  # a cache entry's value
        encoders.append(threading.current_thread().name)
        return encode(completion, **more)

    def spy_dump_json(self: RunResult, **options: Any) -> str:
        encoders.append(threading.current_thread().name)
        return dump_json(self, **options)

    monkeypatch.setattr(cache_module, "encode_answer", spy_encode)
    monkeypatch.setattr(RunResult, "model_dump_json", spy_dump_json)
    wf = Workflow.load(flow(tmp_path, server.base_url))
    result = await run_once(wf)
    assert result.status == "succeeded"
    assert encoders == ["flowengine-store"] * 4  # three cache entries and the run record
    assert load_run(Store(), result.run_id).result.output == result.output


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_corrupt_database_runs_without_cache_and_warns_once(
    server: FakeServer, tmp_path: Path, private_database: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private_database.write_bytes(b"not a database at all\n" * 200)
    wf = Workflow.load(flow(tmp_path, server.base_url))
    for runs in (1, 2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="flowengine"):
            result = await run_once(wf)
        assert result.status == "succeeded"
        assert server.count == 3 * runs  # no cache: every run calls again
        assert not any(c.cached for c in calls_of(result))
        [warning] = warnings_in(caplog)
        assert warning == (
            f"{private_database}: the file is corrupt (not a SQLite database); "
            "going on without cache and run records"
        )
    assert private_database.read_bytes() == b"not a database at all\n" * 200  # left as it was


async def test_locked_database_runs_without_cache_and_warns_once(
    server: FakeServer, tmp_path: Path, private_database: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wf = Workflow.load(flow(tmp_path, server.base_url, review_extra="\n    models: [b]"))
    await run_once(wf)  # creates the file and caches both calls
    assert server.count == 2
    holder = sqlite3.connect(private_database, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")  # a writer that locks readers out too
    holder.execute("BEGIN EXCLUSIVE")
    stalls: list[float] = []

    async def watch_the_loop() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            stalls.append(time.perf_counter() - before)

    watcher = asyncio.create_task(watch_the_loop())
    try:
        with caplog.at_level(logging.WARNING, logger="flowengine"):
            result = await run_once(wf, "another question")
    finally:
        watcher.cancel()
        holder.execute("ROLLBACK")
        holder.close()
    assert result.status == "succeeded" and server.count == 4
    [warning] = warnings_in(caplog)
    assert "the database is locked by another process" in warning
    # reads never wait on the event loop; writes wait in the store's own thread
    assert max(stalls) < 0.5


def test_cli_no_cache(threaded_server: ThreadedServer, tmp_path: Path) -> None:
    path = str(flow(tmp_path, threaded_server.base_url))
    code, out, err = invoke("run", path, "--prompt", "q", "-q")
    assert code == 0, err
    assert threaded_server.server.count == 3
    code, out, err = invoke("run", path, "--prompt", "q", "-q", "--no-cache")
    assert code == 0, err
    assert threaded_server.server.count == 6
    assert json.loads(out)["nodes"]["answer"]["output"]["cached"] is False
    code, out, _ = invoke("run", path, "--prompt", "q", "-q")
    assert threaded_server.server.count == 6
    result = json.loads(out)
    assert result["nodes"]["answer"]["output"]["cached"] is True
    assert result["metrics"]["models"]["a"]["cached"] == 2


def test_cli_corrupt_database_is_one_warning(
    threaded_server: ThreadedServer, tmp_path: Path, private_database: Path
) -> None:
    private_database.write_bytes(b"\x00garbage" * 500)
    code, out, err = invoke("run", str(flow(tmp_path, threaded_server.base_url)), "--prompt", "q")
    assert code == 0
    assert json.loads(out)["status"] == "succeeded"
    assert [line for line in err.splitlines() if "warning" in line] == [
        f"flowengine: warning: {private_database}: the file is corrupt (not a SQLite database); "
        "going on without cache and run records"
    ]


def test_two_processes_share_one_database(threaded_server: ThreadedServer, tmp_path: Path) -> None:
    db = tmp_path / "shared" / "flowengine.db"
    path = str(flow(tmp_path, threaded_server.base_url))

    def start(prompt: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "flowengine", "run", path, "--prompt", prompt, "--db", str(db)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "FLOWENGINE_DB": ""},
        )

    def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "warning" not in err
        result: dict[str, Any] = json.loads(out)
        return result

    first = finish(start("shared question"))  # fills the cache
    assert threaded_server.server.count == 3
    procs = [start("shared question"), start("new question")]  # at the same time
    cached, fresh = (finish(p) for p in procs)
    assert threaded_server.server.count == 6  # only the new question reached the server
    assert cached["nodes"]["answer"]["output"]["cached"] is True
    assert [c["cached"] for c in cached["nodes"]["review"]["output"]] == [True, True]
    assert (cached["metadata"]["calls"], cached["metadata"]["tokens"]) == (3, 0)
    assert fresh["status"] == "succeeded" and fresh["metadata"]["tokens"] > 0
    store = Store(db)
    assert ResponseCache(store).stats().entries == 6
    recorded = {r.run_id: r.status for r in list_runs(store)}
    assert recorded == {r["run_id"]: "succeeded" for r in (first, cached, fresh)}
