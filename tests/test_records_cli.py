"""Run records and the commands over them: runs list/show, compare, cache stats/clear, models,
and the run options that choose models and nodes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, Workflow
from flowengine.compare import compare
from flowengine.providers.base import Completion
from flowengine.results import NodeResult, RunMetadata, RunMetrics, RunResult
from flowengine.store.cache import ResponseCache
from flowengine.store.db import Store
from flowengine.store.records import list_runs, load_run, save_run
from tests.clirunner import invoke
from tests.fakeserver import FakeServer, Reply, ThreadedServer

ROOT = Path(__file__).resolve().parent.parent
CRITIQUE = "workflows/critique.yaml"

FLOW = """\
version: 1
name: halfway
inputs:
  prompt: {{type: string}}
providers:
  local: {{base_url: "{url}", retry: {{attempts: 1}}}}
models:
  a: {{id: model-a, provider: local, weight: 3}}
  b: {{id: model-b, provider: local, weight: 2}}
  c: {{id: model-c, provider: local, weight: 1}}
nodes:
  answer: {{type: llm, model: a, template: "Q: {{{{ prompt }}}}"}}
  review: {{type: fanout, needs: [answer], models: [a, b], template: "Review: {{{{ answer }}}}"}}
  final:
    type: llm
    needs: [review]
    model: c
    template: "Merge {{{{ review | length }}}}: {{{{ prompt }}}}"
  after: {{type: llm, needs: [final], model: a, template: "{{{{ final }}}}"}}
"""


@pytest.fixture(autouse=True)
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)


def run_json(*args: str) -> dict[str, Any]:
    code, out, err = invoke("run", *args, "-q")
    assert code in (0, 1), err
    result: dict[str, Any] = json.loads(out)
    return result


def halfway(tmp_path: Path, threaded_server: ThreadedServer) -> Path:
    path = tmp_path / "halfway.yaml"
    path.write_text(FLOW.format(url=threaded_server.base_url))
    return path


# -- run records --------------------------------------------------------------------------------


def test_a_run_that_fails_halfway_is_recorded_with_what_it_completed(
    threaded_server: ThreadedServer, tmp_path: Path
) -> None:
    threaded_server.server.always_for("model-c", Reply.error(400, "context too long"))
    path = halfway(tmp_path, threaded_server)
    before = time.time()
    code, out, err = invoke("run", str(path), "--prompt", "hello", "-q")
    assert code == 1, err
    run_id = json.loads(out)["run_id"]

    code, shown, err = invoke("runs", "show", run_id, "--format", "json")
    assert code == 0, err
    record = json.loads(shown)
    assert set(record) == {"result", "file", "content_hash", "timeline"}
    assert record["result"] == json.loads(out)  # the full result, as the run printed it
    assert record["file"] == str(path)
    assert record["content_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()
    result = record["result"]
    assert result["status"] == "failed"
    assert {n: r["status"] for n, r in result["nodes"].items()} == {
        "answer": "succeeded",
        "review": "succeeded",
        "final": "failed",
        "after": "skipped",
    }
    answer = result["nodes"]["answer"]["output"]["content"]
    assert answer == "answer from model-a: Q: hello"
    assert [c["content"] for c in result["nodes"]["review"]["output"]] == [
        f"answer from model-a: Review: {answer}",
        f"answer from model-b: Review: {answer}",
    ]
    assert result["nodes"]["final"]["output"]["error"]["status"] == 400

    timeline = record["timeline"]
    steps = [(c["node"], c["model"], c["status"], c["attempts"]) for c in timeline]
    assert steps[0] == ("answer", "a", "succeeded", 1)
    assert sorted(steps[1:3]) == [("review", "a", "succeeded", 1), ("review", "b", "succeeded", 1)]
    assert steps[3] == ("final", "c", "failed", 1)
    assert len(steps) == 4
    # The rendered prompts, exactly as they were sent.
    assert timeline[0]["messages"] == [{"role": "user", "content": "Q: hello"}]
    assert timeline[3]["messages"] == [{"role": "user", "content": "Merge 2: hello"}]
    assert all(c["cached"] is False for c in timeline)
    assert before <= timeline[0]["started"] <= timeline[0]["ended"] <= timeline[1]["started"]
    assert timeline[-1]["ended"] <= time.time()


def test_every_run_is_recorded_and_listed_newest_first(
    threaded_server: ThreadedServer, tmp_path: Path
) -> None:
    path = str(halfway(tmp_path, threaded_server))
    ok = run_json(path, "--prompt", "one")
    threaded_server.server.script_for("model-b", Reply.error(422, "no"))
    partial = run_json(path, "--prompt", "two")
    threaded_server.server.script_for("model-c", Reply.error(422, "no"))
    failed = run_json(path, "--prompt", "three")
    offline = run_json(CRITIQUE, "--prompt", "four", "--offline")
    runs = (offline, failed, partial, ok)
    assert [r["status"] for r in runs] == ["succeeded", "failed", "partial", "succeeded"]

    code, out, err = invoke("runs", "list")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert [row[0] for row in rows] == [r["run_id"] for r in runs]  # newest first
    assert [row[2:4] for row in rows] == [
        ["critique", "succeeded"],
        ["halfway", "failed"],
        ["halfway", "partial"],
        ["halfway", "succeeded"],
    ]
    assert [row[5:7] for row in rows] == [
        ["6", "calls"],
        ["4", "calls"],
        ["5", "calls"],
        ["5", "calls"],
    ]
    assert rows[3][7] == f"${ok['metadata']['cost']:.6f}"

    code, out, _ = invoke("runs", "list", "--workflow", "halfway", "--limit", "1")
    assert [line.split()[0] for line in out.splitlines()] == [failed["run_id"]]
    code, out, _ = invoke("runs", "list", "--format", "json", "--limit", "2")
    listed = json.loads(out)
    assert [{k: v for k, v in row.items() if k != "started_at"} for row in listed] == [
        {
            "run_id": run["run_id"],
            "workflow": run["workflow"],
            "status": run["status"],
            "total_time": run["metadata"]["total_time"],
            "calls": run["metadata"]["calls"],
            "cost": run["metadata"]["cost"],
        }
        for run in (offline, failed)
    ]
    assert listed[0]["started_at"] > listed[1]["started_at"]  # ISO times, newest first
    for run in runs:  # each with its full result
        assert load_run(Store(), run["run_id"]).result.model_dump(mode="json") == run


def test_runs_list_when_there_are_none() -> None:
    assert invoke("runs", "list") == (0, "", "no stored runs\n")
    assert invoke("runs", "list", "--format", "json") == (0, "[]\n", "")
    code, _, err = invoke("runs", "list", "--limit", "0")
    assert code == 2 and "0 is not in the range x>=1" in err


def test_runs_show_text_and_unknown_ids(threaded_server: ThreadedServer, tmp_path: Path) -> None:
    path = halfway(tmp_path, threaded_server)
    result = run_json(str(path), "--prompt", "hello")
    run_id = result["run_id"]
    code, out, err = invoke("runs", "show", run_id[:6], "--format", "text")  # a prefix will do
    assert code == 0, err
    assert "── answer · a (model-a)" in out
    assert f"file: {path}  sha256: {hashlib.sha256(path.read_bytes()).hexdigest()}\n" in out
    assert "  final/c: succeeded, 1 attempt(s), " in out
    assert out.count(" attempt(s), ") == 5

    code, out, err = invoke("runs", "show", "0000nope")
    assert (code, out) == (2, "")
    assert err == (
        f"flowengine: error: no stored run '0000nope' in {Store().path}; "
        "list stored runs with `flowengine runs list`\n"
    )


# -- compare ------------------------------------------------------------------------------------


def test_compare_a_stored_run(threaded_server: ThreadedServer, tmp_path: Path) -> None:
    threaded_server.server.script_for(
        "model-b", Reply.ok("a much longer review with many more words in it")
    )
    result = run_json(str(halfway(tmp_path, threaded_server)), "--prompt", "hello")

    code, out, err = invoke("compare", result["run_id"], "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["run_id"], data["workflow"], data["status"]) == (
        result["run_id"],
        "halfway",
        "succeeded",
    )
    cards = data["responses"]
    assert [(c["node"], c["model"]) for c in cards] == [
        ("answer", "a"),
        ("review", "a"),
        ("review", "b"),
        ("final", "c"),
        ("after", "a"),
    ]
    review_b = cards[2]
    assert review_b["content"] == "a much longer review with many more words in it"
    assert (review_b["length"], review_b["words"]) == (47, 10)
    assert review_b["tokens"] == 12 + 47 // 4
    assert review_b["cost"] == pytest.approx(0.000001 * (12 + 47 // 4))
    assert review_b["confidence"] is None and review_b["cached"] is False
    assert review_b["latency_s"] == result["nodes"]["review"]["output"][1]["latency_s"]
    assert data["recommended"]["node"] == "after" and data["recommended"]["model"] == "a"
    assert "no response has a confidence score" in data["recommended"]["reason"]

    code, text, err = invoke("compare", result["run_id"][:8])
    assert code == 0, err
    lines = text.splitlines()
    assert lines[0].split() == [
        "node",
        "model",
        "ok",
        "words",
        "latency",
        "tokens",
        "cost",
        "confidence",
        "quality",
    ]
    assert lines[4].split()[:4] == ["review", "b", "yes", "10"]
    assert lines[4].split()[5:] == [str(12 + 47 // 4), f"${0.000001 * 23:.6f}", "-", "-"]
    assert lines[-1] == f"recommended: a (after): {data['recommended']['reason']}"


async def test_compare_from_the_python_api_matches_the_stored_run(
    tmp_path: Path,
) -> None:
    wf = Workflow.load(ROOT / CRITIQUE)
    async with Engine(offline=True) as engine:
        result = await engine.run(wf, prompt="Explain quantum computing")
    live = compare(result)
    assert live == compare(load_run(Store(), result.run_id).result)
    json.dumps(live)  # plain data, ready for a UI
    assert [c["model"] for c in live["responses"]] == [
        "gpt-oss",
        "glm-4.5",
        "qwen3",
        "kimi-k2",
        "deepseek",
        "llama",
    ]
    assert set(live["responses"][0]) == {
        "stage",
        "node",
        "model",
        "model_id",
        "success",
        "length",
        "words",
        "latency_s",
        "tokens",
        "cost",
        "confidence",
        "quality",
        "cached",
        "content",
        "error",
    }
    assert live["recommended"] is not None and live["recommended"]["node"] == "critiques"


# -- cache commands -----------------------------------------------------------------------------


def test_cache_stats_and_clear(threaded_server: ThreadedServer, tmp_path: Path) -> None:
    code, out, _ = invoke("cache", "stats")
    assert code == 0
    assert out.splitlines()[:2] == [f"cache: {Store().path}", "entries: 0"]

    path = str(halfway(tmp_path, threaded_server))
    run_json(path, "--prompt", "hello")
    code, out, err = invoke("cache", "stats")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == [f"cache: {Store().path}", "entries: 5"]
    assert lines[2].startswith("size: ") and lines[2].endswith(" KiB")
    assert lines[3:] == ["  model-a: 3", "  model-b: 1", "  model-c: 1"]

    assert invoke("cache", "clear") == (0, "", "removed 5 cached responses\n")
    assert invoke("cache", "stats")[1].splitlines()[1] == "entries: 0"
    assert invoke("cache", "clear") == (0, "", "removed 0 cached responses\n")
    assert threaded_server.server.count == 5
    again = run_json(path, "--prompt", "hello")
    assert threaded_server.server.count == 10  # the cache was really empty
    assert again["nodes"]["answer"]["output"]["cached"] is False
    assert len(invoke("runs", "list")[1].splitlines()) == 2  # runs are kept


def test_cache_commands_take_db(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    run_json(CRITIQUE, "--prompt", "q", "--offline", "--db", str(db))
    assert invoke("cache", "stats", "--db", str(db))[1].splitlines()[0] == f"cache: {db}"
    assert len(invoke("runs", "list", "--db", str(db))[1].splitlines()) == 1
    assert invoke("runs", "list") == (0, "", "no stored runs\n")


# -- model priorities ---------------------------------------------------------------------------


def test_models_lists_by_weight_and_honours_set() -> None:
    code, out, err = invoke("models", CRITIQUE)
    assert code == 0, err
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["alias", "weight"],
        ["gpt-oss", "3"],
        ["glm-4.5", "2"],
        ["qwen3", "2"],
        ["kimi-k2", "1"],
        ["deepseek", "1"],
        ["llama", "1"],
    ]
    assert out.splitlines()[1].split() == ["gpt-oss", "3", "openrouter", "openai/gpt-oss-120b"]
    code, out, _ = invoke("models", CRITIQUE, "--set", "models.llama.weight=4")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [
        "llama",
        "gpt-oss",
        "glm-4.5",
        "qwen3",
        "kimi-k2",
        "deepseek",
    ]
    assert out.splitlines()[1].split()[1] == "4"
    code, out, err = invoke("models", CRITIQUE, "--set", "models.qwen3.weight=2.5")
    assert out.splitlines()[2].split()[:2] == ["qwen3", "2.5"]


def test_weights_order_the_fanout_and_the_fallback_selection() -> None:
    result = run_json(CRITIQUE, "--prompt", "q", "--offline", "--set", "models.llama.weight=4")
    # Offline, the select node falls back to the highest weight; the critiques follow by weight.
    assert result["nodes"]["select"]["output"]["model"] == "llama"
    assert result["output"]["primary_response"]["model"] == "llama"
    assert [c["model"] for c in result["output"]["critiques"]] == [
        "gpt-oss",
        "glm-4.5",
        "qwen3",
        "kimi-k2",
        "deepseek",
    ]
    top = run_json(CRITIQUE, "--prompt", "q", "--offline", "--set", "nodes.critiques.models.top=2")
    assert [c["model"] for c in top["output"]["critiques"]] == ["glm-4.5", "qwen3"]


def test_run_models_restricts_the_run() -> None:
    result = run_json(CRITIQUE, "--prompt", "q", "--offline", "--models", "llama, glm-4.5")
    assert result["output"]["primary_response"]["model"] == "glm-4.5"
    assert [c["model"] for c in result["output"]["critiques"]] == ["llama"]
    assert set(result["metrics"]["models"]) == {"glm-4.5", "llama"}
    code, out, err = invoke("run", CRITIQUE, "--prompt", "q", "--offline", "--models", "lama")
    assert (code, out) == (2, "")
    assert err == "flowengine: error: --models: unknown model 'lama'; did you mean 'llama'?\n"


def test_run_only_runs_the_node_and_its_ancestors(
    threaded_server: ThreadedServer, tmp_path: Path
) -> None:
    result = run_json(
        str(halfway(tmp_path, threaded_server)), "--prompt", "hello", "--only", "review"
    )
    assert result["status"] == "succeeded"
    assert list(result["nodes"]) == ["answer", "review"]
    assert threaded_server.server.count == 3
    assert [r["model"] for r in threaded_server.server.requests] == [
        "model-a",
        "model-a",
        "model-b",
    ]
    assert result["metadata"]["calls"] == 3
    # The recorded run is the restricted one.
    record = load_run(Store(), result["run_id"])
    assert set(record.result.nodes) == {"answer", "review"}
    assert len(record.timeline) == 3


def test_a_run_is_dated_by_its_first_node_to_start() -> None:
    early = datetime(2020, 1, 1, 12, 0, 0, tzinfo=UTC)
    nodes = {  # in the order they finished: the slow first node finished last
        "quick": NodeResult(status="succeeded", started_at=early + timedelta(seconds=1)),
        "slow": NodeResult(status="succeeded", started_at=early),
    }
    meta = RunMetadata(
        total_time=2.0,
        calls=0,
        concurrent_calls=0,
        tokens=0,
        cost=None,
        model_selector_confidence=None,
    )
    store = Store()
    for run_id, found in (("1" * 16, nodes), ("2" * 16, {"x": NodeResult(status="skipped")})):
        result = RunResult(
            workflow="w",
            run_id=run_id,
            status="failed",
            inputs={},
            nodes=found,
            metadata=meta,
            metrics=RunMetrics(),
        )
        save_run(store, result, "w.yaml", "0" * 64, [])
    newest, oldest = list_runs(store)
    assert oldest.run_id == "1" * 16 and oldest.started_at == early.isoformat()
    # A run in which no node started is dated when it ended, less its duration.
    assert newest.run_id == "2" * 16
    started = datetime.fromisoformat(newest.started_at)
    assert abs((datetime.now(UTC) - started).total_seconds() - 2.0) < 5


def test_run_id_prefixes_are_taken_literally() -> None:
    run_json(CRITIQUE, "--prompt", "q", "--offline")
    for pattern in ("%", "_"):
        code, _, err = invoke("runs", "show", pattern)
        assert code == 2 and f"no stored run '{pattern}'" in err


async def test_a_run_cancelled_from_outside_is_still_recorded(tmp_path: Path) -> None:
    async with FakeServer() as srv:
        srv.always_for("model-c", Reply.ok("late", delay=3))
        path = tmp_path / "halfway.yaml"
        path.write_text(FLOW.format(url=srv.base_url))
        async with Engine() as engine:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(engine.run(Workflow.load(path), prompt="q"), 0.3)
        assert srv.count == 4  # answer, two reviews, and the final call that was cut short
    [summary] = list_runs(Store())
    record = load_run(Store(), summary.run_id)
    assert record.result.status == "failed"
    assert record.result.nodes["review"].status == "succeeded"
    assert len(record.timeline) == 3


def test_store_commands_report_an_unusable_file(private_database: Path) -> None:
    private_database.write_bytes(b"not a database\n" * 100)
    expected = (
        f"flowengine: error: {private_database}: the file is corrupt (not a SQLite database); "
        "delete it (its cache and run records are lost), or pass --db with another file\n"
    )
    for command in (
        ["cache", "stats"],
        ["cache", "clear"],
        ["runs", "list"],
        ["runs", "show", "abc"],
        ["compare", "abc"],
    ):
        assert invoke(*command) == (2, "", expected), command
    assert private_database.read_bytes() == b"not a database\n" * 100


def test_cache_clear_while_another_connection_reads(tmp_path: Path) -> None:
    run_json(CRITIQUE, "--prompt", "q", "--offline")  # creates the file (offline: no entries)
    db = Store()
    cache = ResponseCache(db)
    for i in range(3):
        cache.put(f"k{i}", "u", "m", Completion(f"c{i}"))
    reader = sqlite3.connect(db.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM cache").fetchone()  # holds a read snapshot
    try:
        assert invoke("cache", "clear") == (0, "", "removed 3 cached responses\n")
    finally:
        reader.execute("ROLLBACK")
        reader.close()
    db.close()
    assert invoke("cache", "stats")[1].splitlines()[1] == "entries: 0"


def test_a_key_an_error_echoes_is_masked_in_the_record_and_in_runs_show(
    threaded_server: ThreadedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-or-v1-RELTEST-7f3c0123456789abcdef"
    monkeypatch.setenv("LOCAL_KEY", key)
    # The key starts 190 characters in: an excerpt cut at 200 would keep its first characters.
    echoed = "x" * 170 + f" Authorization: Bearer {key} is not valid"
    threaded_server.server.always_for("model-a", Reply.error(400, echoed))
    path = tmp_path / "keyed.yaml"
    path.write_text(
        FLOW.format(url=threaded_server.base_url).replace(
            "retry: {attempts: 1}", "retry: {attempts: 1}, api_key_env: LOCAL_KEY"
        )
    )
    code, out, err = invoke("run", str(path), "--prompt", "hello", "-q")
    assert code == 1, err
    run_id = json.loads(out)["run_id"]
    shown = [invoke("runs", "show", run_id, "--format", f)[1] for f in ("json", "text")]
    db = Path(os.environ["FLOWENGINE_DB"])
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # with its WAL
    assert run_id.encode() in stored
    for text in (out, err, *shown):
        assert "Bearer ***" in text or text == err
        assert key[:8] not in text and "RELTEST" not in text
    assert b"RELTEST" not in stored and key[:8].encode() not in stored
