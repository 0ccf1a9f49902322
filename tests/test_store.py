"""The SQLite store: cache entries, degrading on a bad file, sharing between processes, records."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from flowengine.cli.render import render_comparison
from flowengine.compare import compare
from flowengine.errors import UsageError
from flowengine.providers.base import ChatRequest, Completion, encode_messages
from flowengine.results import CallResult, NodeResult, RunMetadata, RunMetrics, RunResult, Usage
from flowengine.store.cache import ResponseCache, cache_key
from flowengine.store.db import Store
from flowengine.store.records import CallRecord, list_runs, load_run, save_run

REQUEST = ChatRequest("openai/gpt-4o", [{"role": "user", "content": "hi"}], {"temperature": 0.7})
ANSWER = Completion("hello", "openai/gpt-4o-2024", "stop", Usage(prompt_tokens=3, total_tokens=5))


def test_cache_round_trip(tmp_path: Path) -> None:
    cache = ResponseCache(Store(tmp_path / "db.sqlite"))
    key = cache_key("https://api.example/v1", REQUEST)
    assert cache.get(key) is None
    cache.put(key, "https://api.example/v1", REQUEST.model_id, ANSWER)
    assert cache.get(key) == ANSWER
    stats = cache.stats()
    assert stats.entries == 1 and stats.by_model == {"openai/gpt-4o": 1}
    assert cache.clear() == 1 and cache.get(key) is None


def test_cache_key_covers_what_decides_the_answer() -> None:
    base = cache_key("https://a/v1", REQUEST)
    assert base == cache_key("https://a/v1", dataclasses.replace(REQUEST))
    assert base != cache_key("https://b/v1", REQUEST)
    assert base != cache_key("https://a/v1", ChatRequest("other", REQUEST.messages, REQUEST.params))
    changed = ChatRequest(REQUEST.model_id, REQUEST.messages, {"temperature": 0.1})
    assert base != cache_key("https://a/v1", changed)
    # Messages changed after encoding are encoded again: a copy does not keep the old JSON.
    asked = dataclasses.replace(REQUEST)
    asked.encoded_messages()
    other = dataclasses.replace(asked, messages=[{"role": "user", "content": "bye"}])
    assert cache_key("https://a/v1", other) != base


def test_cache_keys_stay_the_same_across_versions() -> None:
    # A cache filled by an earlier version keeps answering: the key of a call never changes.
    key = cache_key("https://api.example/v1", REQUEST)
    assert key == "c63d6a5df174f9f35614748263e39c101a0d109faf0e19312a3bc316c30694b4"
    lone = ChatRequest("m", [{"role": "user", "content": "a\ud800"}])  # no UTF-8 form
    assert len(cache_key("https://api.example/v1", lone)) == 64


def test_corrupt_file_degrades_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = ResponseCache(Store(path))
    with caplog.at_level(logging.WARNING, logger="flowengine"):
        assert cache.get("k") is None
        cache.put("k", "u", "m", ANSWER)
        assert cache.get("k") is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "corrupt" in warnings[0] and "going on without cache" in warnings[0]


def test_locked_file_skips_instead_of_failing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db.sqlite"
    cache = ResponseCache(Store(path))
    cache.put("k", "u", "m", ANSWER)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        other = ResponseCache(Store(path))
        with caplog.at_level(logging.WARNING, logger="flowengine"):
            other.put("k2", "u", "m", ANSWER)
            other.put("k3", "u", "m", ANSWER)
        assert len(caplog.records) == 1 and "locked" in caplog.records[0].getMessage()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert other.get("k") == ANSWER  # the store came back once the lock was gone


def test_two_processes_share_one_cache_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    script = textwrap.dedent(
        f"""
        import sys
        from flowengine.store.cache import ResponseCache
        from flowengine.providers.base import Completion
        from flowengine.store.db import Store
        cache = ResponseCache(Store({str(path)!r}))
        me = sys.argv[1]
        for i in range(200):
            cache.put(f"{{me}}-{{i}}", "u", me, Completion(f"{{me}} {{i}}"))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("left", "right")]
    assert [p.wait(60) for p in procs] == [0, 0]
    cache = ResponseCache(Store(path))
    assert cache.stats().by_model == {"left": 200, "right": 200}
    hit = cache.get("right-199")
    assert hit is not None and hit.content == "right 199"


def _result(status: str = "failed") -> RunResult:
    primary = CallResult(
        model="gpt",
        model_id="openai/gpt-4o",
        provider="p",
        content="a long and careful answer",
        success=True,
        confidence=0.8,
        latency_s=1.5,
        usage=Usage(total_tokens=40, cost=0.002),
    )
    critique = CallResult(
        model="glm",
        model_id="z-ai/glm",
        provider="p",
        content="short",
        success=True,
        confidence=0.9,
        latency_s=0.5,
    )
    broken = CallResult(model="kimi", model_id="k", provider="p", success=False)
    return RunResult(
        workflow="critique",
        run_id="abc123def456",
        status=status,  # type: ignore[arg-type]
        inputs={"prompt": "q"},
        nodes={
            "primary": NodeResult(status="succeeded", output=primary),
            "critiques": NodeResult(status="failed", output=[critique, broken]),
            "after": NodeResult(status="skipped"),
        },
        metadata=RunMetadata(
            total_time=2.0,
            calls=3,
            concurrent_calls=2,
            tokens=40,
            cost=0.002,
            model_selector_confidence=0.8,
        ),
        metrics=RunMetrics(),
    )


ASKED = [{"role": "user", "content": "q"}]


def test_failed_run_is_recorded_with_what_it_completed(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    timeline = [
        CallRecord("primary", "gpt", 10.0, 11.5, 1, "succeeded", False, encode_messages(ASKED)),
        CallRecord("critiques", "kimi", 11.5, 12.0, 3, "failed", False, encode_messages(ASKED)),
    ]
    save_run(store, _result(), "workflows/critique.yaml", "f" * 64, timeline)
    [summary] = list_runs(store)
    assert (summary.run_id, summary.status, summary.calls) == ("abc123def456", "failed", 3)
    record = load_run(store, "abc123")  # a unique prefix is enough
    assert record.result.nodes["primary"].output["content"] == "a long and careful answer"
    assert record.result.nodes["after"].status == "skipped"
    assert record.content_hash == "f" * 64
    assert record.timeline == timeline
    assert record.timeline[0].as_dict()["messages"] == ASKED
    with pytest.raises(UsageError, match="no stored run 'zzz'"):
        load_run(store, "zzz")


def test_compare_recommends_and_says_why() -> None:
    data = compare(_result())
    assert [(c["node"], c["model"], c["success"]) for c in data["responses"]] == [
        ("primary", "gpt", True),
        ("critiques", "glm", True),
        ("critiques", "kimi", False),
    ]
    assert data["responses"][0]["words"] == 5 and data["responses"][0]["cost"] == 0.002
    assert data["recommended"]["model"] == "glm"
    assert "highest selector confidence (0.900)" in data["recommended"]["reason"]
    text = render_comparison(data)
    assert text.splitlines()[0].split() == [
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
    assert "recommended: glm (critiques): highest selector confidence" in text


def test_compare_without_scores_prefers_the_last_stage() -> None:
    result = _result("succeeded")
    for node in result.nodes.values():
        calls = node.output if isinstance(node.output, list) else [node.output]
        for call in calls:
            if call is not None:
                call.confidence = None
    rec = compare(result)["recommended"]
    assert rec["node"] == "critiques" and rec["model"] == "glm"
    assert "last stage" in rec["reason"]


def test_a_write_that_fails_is_skipped_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "db.sqlite", background=True)
    cache = ResponseCache(store)
    done: list[str] = []

    def bad(db: sqlite3.Connection) -> None:
        # What a lone surrogate or a 5000-digit number used to do to the writer thread.
        db.execute("SELECT ?", ("lone \ud800 surrogate",))

    store.write(bad, after=lambda: done.append("bad"))
    key = cache_key("https://api.example/v1", REQUEST)
    cache.put(key, "https://api.example/v1", "openai/gpt-4o", ANSWER)
    store.flush()
    store.write(lambda db: db.execute("SELECT ?", (10**5000,)), after=lambda: done.append("big"))
    later = cache_key("https://api.example/v1", dataclasses.replace(REQUEST, params={}))
    cache.put(later, "https://api.example/v1", "openai/gpt-4o", ANSWER)
    store.close()
    assert done == ["bad", "big"]
    reopened = ResponseCache(Store(tmp_path / "db.sqlite"))
    assert reopened.get(key) == ANSWER and reopened.get(later) == ANSWER  # both made it
    skipped = [r.getMessage() for r in caplog.records if "a write was skipped" in r.getMessage()]
    assert len(skipped) == 2


def test_writes_wait_for_room_when_the_writer_falls_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flowengine.store.db.MAX_WAITING", 20)
    store = Store(tmp_path / "db.sqlite", background=True)
    most = 0

    def slow(db: sqlite3.Connection) -> None:
        time.sleep(0.002)  # a writer slower than the writes
        db.execute("INSERT INTO prices VALUES (?, ?, ?)", (f"u{time.monotonic_ns()}", 0.0, "{}"))

    for _ in range(200):
        store.write(slow)
        most = max(most, len(store._waiting))
    store.flush()
    assert most <= 20  # bounded: no unwritten work piles up in memory
    assert store.use(lambda db: db.execute("SELECT COUNT(*) FROM prices").fetchone()[0]) == 200
    store.close()


def test_a_stuck_writer_holds_a_write_up_for_a_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flowengine.store.db.MAX_WAITING", 2)
    monkeypatch.setattr("flowengine.store.db.ROOM_WAIT_S", 0.2)
    store = Store(tmp_path / "db.sqlite", background=True)
    release = threading.Event()
    store.write(lambda db: release.wait(10))  # the writer is stuck on this one
    time.sleep(0.1)
    started = time.monotonic()
    for _ in range(4):
        store.write(lambda db: None)
    waited = time.monotonic() - started
    release.set()
    store.close()
    assert 0.2 <= waited < 2  # each full write waited at most ROOM_WAIT_S, then went on
