"""The executor against a real HTTP server on 127.0.0.1: scheduling, failures, selector, limits."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, Event, Workflow
from flowengine.errors import ConfigError, UsageError
from tests.fakeserver import FakeServer, Reply

ROOT = Path(__file__).resolve().parent.parent
CRITIQUE = ROOT / "workflows" / "critique.yaml"
KEY = "sk-test-4f9a1c0e-never-print-me"
ENV = {"OPENROUTER_API_KEY": KEY}


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(selected_model="gpt-oss") as srv:
        yield srv


def critique(srv: FakeServer, **extra: Any) -> Workflow:
    overrides = {
        "providers.openrouter.base_url": srv.base_url,
        "providers.openrouter.retry": {"attempts": 3, "initial": "10ms", "max": "50ms"},
        "selectors.ml.url": srv.selector_url,
        **extra,
    }
    return Workflow.load(CRITIQUE, overrides=overrides)


def inline(text: str, tmp_path: Path) -> Workflow:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return Workflow.load(path)


async def test_critique_returns_the_original_clients_shape(server: FakeServer) -> None:
    server.scores = {"gpt-oss": 0.753, "z-ai/glm-4.5": 0.821, "qwen3": 0.5}
    async with Engine(environ=ENV) as engine:
        result = await engine.run(critique(server), prompt="Explain quantum computing")
    assert result.status == "succeeded"
    primary = result.output["primary_response"]
    assert primary["model"] == "gpt-oss"
    assert primary["success"] is True
    assert primary["confidence"] == 0.753
    assert primary["content"].startswith("answer from openai/gpt-oss-120b")
    critiques = result.output["critiques"]
    assert [c["model"] for c in critiques] == ["glm-4.5", "qwen3", "kimi-k2", "deepseek", "llama"]
    assert critiques[0]["confidence"] == 0.821  # the selector named it by provider id
    assert critiques[2]["confidence"] is None
    meta = result.output["metadata"]
    assert meta["model_selector_confidence"] == 0.753
    assert meta["calls"] == 6
    assert 1 <= meta["concurrent_calls"] <= 3  # the fanout's max_concurrency is 3
    assert result.metadata.tokens > 0 and result.metadata.cost is not None
    assert server.selector_requests == [{"prompt": "Explain quantum computing"}]
    assert "Explain quantum computing" in server.requests[0]["messages"][0]["content"]
    assert server.requests[0]["temperature"] == 0.7
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"


async def test_fanout_calls_run_at_once(server: FakeServer) -> None:
    server.latency = 0.3
    wf = critique(server, **{"nodes.critiques.max_concurrency": 5})
    async with Engine(environ=ENV) as engine:
        result = await engine.run(wf, prompt="q")
        # openrouter has no rate limit or cap here, yet its shared limits count every attempt
        _, limits = engine.provider("openrouter", wf.spec.providers["openrouter"])
        assert (limits.started, limits.peak, limits.in_flight) == (result.metadata.calls, 5, 0)
    assert server.max_in_flight == 5
    assert result.metadata.concurrent_calls == 5
    fanout = result.nodes["critiques"].duration_s
    assert fanout is not None and fanout < 2 * 0.3  # five calls take about one call's time


async def test_rate_limit_holds_in_every_sliding_window(server: FakeServer, tmp_path: Path) -> None:
    wf = inline(
        f"""
version: 1
name: burst
providers:
  local: {{base_url: "{server.base_url}", rate_limit: {{requests: 4, per: 400ms}}}}
models:
  a: {{id: a, provider: local}}
  b: {{id: b, provider: local}}
  c: {{id: c, provider: local}}
  d: {{id: d, provider: local}}
  e: {{id: e, provider: local}}
  f: {{id: f, provider: local}}
nodes:
  one: {{type: fanout, template: "x"}}
  two: {{type: fanout, template: "y"}}
""",
        tmp_path,
    )
    async with Engine() as engine:
        result = await engine.run(wf)
    assert result.status == "succeeded" and server.count == 12
    starts = sorted(server.starts)
    # The server sees requests slightly later than the limiter released them; allow 30 ms.
    window = 0.4 - 0.03
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s - start < window]
        assert len(in_window) <= 4, f"{len(in_window)} requests within {window}s"
    assert starts[-1] - starts[0] >= 2 * 0.4 - 0.05  # 12 calls at 4 per 400ms span two windows


async def test_selector_down_falls_back_to_weight(server: FakeServer) -> None:
    wf = critique(server, **{"selectors.ml.url": "http://127.0.0.1:9/predict"})
    async with Engine(environ=ENV) as engine:
        result = await engine.run(wf, prompt="q")
    select = result.nodes["select"].output
    assert select.source == "fallback" and select.model == "gpt-oss"
    assert "selector 'ml' failed" in (select.reason or "")
    assert result.metadata.model_selector_confidence is None
    assert result.status == "succeeded"


async def test_selector_naming_unknown_model_falls_back(server: FakeServer) -> None:
    server.selected_model = "mystery-model"
    server.scores = {"mystery-model": 0.99}
    async with Engine(environ=ENV) as engine:
        result = await engine.run(critique(server), prompt="q")
    select = result.nodes["select"].output
    assert select.source == "fallback"
    assert "unknown model: 'mystery-model'" in (select.reason or "")


async def test_selector_by_provider_id(server: FakeServer) -> None:
    server.selected_model = "qwen/qwen3-235b-a22b-2507"
    server.scores = {"qwen/qwen3-235b-a22b-2507": 0.66}
    async with Engine(environ=ENV) as engine:
        result = await engine.run(critique(server), prompt="q")
    assert result.output["primary_response"]["model"] == "qwen3"
    assert result.output["primary_response"]["confidence"] == 0.66
    assert "qwen3" not in [c["model"] for c in result.output["critiques"]]


async def test_failed_node_cancels_in_flight_and_keeps_completed(
    server: FakeServer, tmp_path: Path
) -> None:
    server.always_for("slow", Reply.ok("late", delay=5))
    server.always_for("bad", Reply.error(400, "bad request"))
    wf = inline(
        f"""
version: 1
name: failing
providers:
  local: {{base_url: "{server.base_url}", retry: {{attempts: 1}}}}
models:
  good: {{id: good, provider: local}}
  slow: {{id: slow, provider: local}}
  bad: {{id: bad, provider: local}}
nodes:
  first: {{type: llm, model: good, template: "hi"}}
  waits: {{type: llm, model: slow, template: "hi"}}
  breaks: {{type: llm, needs: [first], model: bad, template: "{{{{ first }}}}"}}
  after: {{type: llm, needs: [breaks], model: good, template: "{{{{ breaks }}}}"}}
""",
        tmp_path,
    )
    started = time.perf_counter()
    async with Engine() as engine:
        result = await engine.run(wf)
    assert time.perf_counter() - started < 3  # the slow call was cancelled, not awaited
    assert result.status == "failed"
    assert result.error is not None and result.error.status == 400
    statuses = {n: r.status for n, r in result.nodes.items()}
    assert statuses == {
        "first": "succeeded",
        "waits": "cancelled",
        "breaks": "failed",
        "after": "skipped",
    }
    assert result.nodes["first"].output.content.startswith("answer from good")
    assert result.nodes["breaks"].output.success is False
    assert "bad request" in result.nodes["breaks"].output.error.message


async def test_on_error_continue_passes_failure_downstream(
    server: FakeServer, tmp_path: Path
) -> None:
    server.always_for("bad", Reply.error(404, "no such model"))
    wf = inline(
        f"""
version: 1
name: continuing
providers:
  local: {{base_url: "{server.base_url}"}}
models:
  good: {{id: good, provider: local}}
  bad: {{id: bad, provider: local}}
nodes:
  breaks: {{type: llm, model: bad, template: "hi", on_error: continue}}
  after:
    type: llm
    needs: [breaks]
    model: good
    template: "ok={{{{ breaks.success }}}} err={{{{ breaks.error.status }}}}"
""",
        tmp_path,
    )
    async with Engine() as engine:
        result = await engine.run(wf)
    assert result.status == "partial"
    assert result.nodes["after"].status == "succeeded"
    assert server.requests[-1]["messages"][0]["content"] == "ok=False err=404"
    assert server.count == 2  # 404 is not retried


async def test_llm_fallbacks_after_last_attempt(server: FakeServer, tmp_path: Path) -> None:
    server.always_for("down", Reply.error(503, "overloaded"))
    wf = inline(
        f"""
version: 1
name: fallback
providers:
  local: {{base_url: "{server.base_url}", retry: {{attempts: 2, initial: 1ms, max: 2ms}}}}
models:
  down: {{id: down, provider: local, weight: 5}}
  spare: {{id: spare, provider: local}}
nodes:
  answer: {{type: llm, model: down, fallbacks: [spare], template: "hi"}}
""",
        tmp_path,
    )
    events: list[Event] = []
    async with Engine(listeners=[events.append]) as engine:
        result = await engine.run(wf)
    answer = result.nodes["answer"].output
    assert answer.model == "spare" and answer.success
    assert [r["model"] for r in server.requests] == ["down", "down", "spare"]
    retried = [e for e in events if e.kind == "call_retried"]
    assert len(retried) == 1 and retried[0].error is not None and retried[0].error.status == 503
    assert result.metrics.models["down"].success_rate == 0.0
    assert result.metrics.models["down"].retries == 1


async def test_after_401_no_further_call_to_that_provider(server: FakeServer) -> None:
    server.script(Reply.error(401, "invalid key"))
    async with Engine(environ=ENV) as engine:
        result = await engine.run(critique(server), prompt="q")
    assert result.status == "failed"
    assert server.count == 1
    assert result.error is not None and result.error.status == 401


async def test_after_401_a_fanout_says_the_upstream_text_once_and_counts_one_call(
    server: FakeServer, tmp_path: Path
) -> None:
    upstream = "User not found. " + "x" * 200  # a long upstream text, as providers send
    for model in ("vendor/a", "vendor/b", "vendor/c"):
        server.always_for(model, Reply.error(401, upstream))
    wf = inline(
        f"""\
version: 1
name: gated
providers:
  openrouter: {{base_url: "{server.base_url}", max_concurrency: 1}}
models:
  a: {{id: vendor/a, weight: 3}}
  b: {{id: vendor/b, weight: 2}}
  c: {{id: vendor/c, weight: 1}}
nodes:
  all: {{type: fanout, models: {{}}, template: "q"}}
""",
        tmp_path,
    )
    async with Engine(environ=ENV) as engine:
        result = await engine.run(wf)
    assert server.count == 1
    assert result.metadata.calls == 1  # one request was sent
    assert sum(m.calls for m in result.metrics.models.values()) == 1
    assert result.error is not None
    assert result.error.message.count("User not found") == 1
    assert len(result.error.message) < 600
    not_sent = [c for c in result.nodes["all"].output if c.attempts == 0]
    assert len(not_sent) == 2
    assert all("rejected the API key earlier" in (c.error.message or "") for c in not_sent)


async def test_the_key_is_checked_for_every_workflow_and_none_is_kept(server: FakeServer) -> None:
    import gc
    import weakref

    async with Engine(environ={}) as engine:
        for _ in range(3):  # a new workflow object each time, as a service loads them
            wf = critique(server)
            with pytest.raises(ConfigError, match="OPENROUTER_API_KEY is not set"):
                await engine.run(wf, prompt="q")
        kept = weakref.ref(wf)
        del wf
        gc.collect()
        assert kept() is None  # the engine holds no workflow it has seen
    assert server.count == 0


async def test_min_success(server: FakeServer, tmp_path: Path) -> None:
    server.always_for("bad", Reply.error(422, "nope"))
    wf = inline(
        f"""
version: 1
name: quorum
providers:
  local: {{base_url: "{server.base_url}"}}
models:
  good: {{id: good, provider: local}}
  bad: {{id: bad, provider: local}}
nodes:
  all: {{type: fanout, template: "hi", min_success: 2}}
""",
        tmp_path,
    )
    async with Engine() as engine:
        result = await engine.run(wf)
    node = result.nodes["all"]
    assert node.status == "failed" and node.error is not None
    assert node.error.type == "min_success"
    assert "1 of 2 calls succeeded" in node.error.message
    assert [c.success for c in node.output] == [True, False]  # paid-for output kept


async def test_node_timeout(server: FakeServer, tmp_path: Path) -> None:
    server.always_for("slow", Reply.ok("late", delay=3))
    wf = inline(
        f"""
version: 1
name: timing
providers:
  local: {{base_url: "{server.base_url}"}}
models:
  slow: {{id: slow, provider: local}}
nodes:
  wait: {{type: llm, model: slow, template: "hi", timeout: 200ms}}
""",
        tmp_path,
    )
    async with Engine() as engine:
        result = await engine.run(wf)
    assert result.nodes["wait"].status == "failed"
    assert result.nodes["wait"].error is not None
    assert result.nodes["wait"].error.type == "timeout"


async def test_events_in_order(server: FakeServer) -> None:
    events: list[Event] = []
    async with Engine(environ=ENV, listeners=[events.append]) as engine:
        await engine.run(critique(server), prompt="q")
    kinds = [(e.kind, e.node) for e in events if e.kind != "call_finished"]
    assert kinds[0] == ("run_started", None) and kinds[-1] == ("run_finished", None)
    assert kinds.index(("node_finished", "select")) < kinds.index(("node_started", "primary"))
    assert sum(e.kind == "call_finished" for e in events) == 6


async def test_api_key_never_appears(server: FakeServer) -> None:
    server.script(Reply.error(500, f"echo {KEY}"), Reply.error(401, "bad key"))
    events: list[Event] = []
    async with Engine(environ=ENV, listeners=[events.append]) as engine:
        result = await engine.run(critique(server), prompt="q")
    text = result.model_dump_json() + "".join(repr(e) for e in events)
    assert KEY not in text
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"  # it was sent, only there


async def test_missing_key_names_the_variable(server: FakeServer) -> None:
    async with Engine(environ={}) as engine:
        with pytest.raises(ConfigError) as caught:
            await engine.run(critique(server), prompt="q")
    assert "OPENROUTER_API_KEY is not set" in str(caught.value)
    assert "--offline" in str(caught.value)
    assert server.count == 0


async def test_offline_needs_no_key_and_no_network() -> None:
    async with Engine(offline=True, environ={}) as engine:
        result = await engine.run(Workflow.load(CRITIQUE), prompt="q")
    assert result.status == "succeeded"
    assert result.nodes["select"].output.source == "fallback"
    assert "offline" in result.output["primary_response"]["content"]
    json.dumps(result.model_dump(mode="json"))  # the whole result is JSON


async def test_only_and_models_restrict_the_run(server: FakeServer) -> None:
    async with Engine(environ=ENV) as engine:
        result = await engine.run(
            critique(server), prompt="q", only=["primary"], models=["glm-4.5", "llama"]
        )
    assert set(result.nodes) == {"select", "primary"}
    assert result.nodes["primary"].output.model == "glm-4.5"
    with pytest.raises(UsageError, match="did you mean 'llama'"):
        async with Engine(environ=ENV) as engine:
            await engine.run(critique(server), prompt="q", models=["lama"])


async def test_output_reads_none_for_nodes_that_did_not_run(tmp_path: Path) -> None:
    wf = inline(
        """\
version: 1
name: partial-output
models:
  m: {id: some/model}
nodes:
  first: {type: llm, model: m, template: "one"}
  second: {type: llm, needs: [first], model: m, template: "two {{ first.model }}"}
output:
  a: "{{ first.model }}"
  b: "{{ second }}"
  both: "{{ first.model }} and {{ second.model if second else 'nothing' }}"
""",
        tmp_path,
    )
    async with Engine(offline=True, environ={}, cache=False, record=False) as engine:
        whole = await engine.run(wf)
        part = await engine.run(wf, only=["first"])
    assert whole.output["a"] == "m" and whole.output["b"]["model"] == "m"
    assert whole.output["both"] == "m and m"
    assert part.status == "succeeded"
    assert part.output == {"a": "m", "b": None, "both": "m and nothing"}


async def test_inputs_are_checked() -> None:
    wf = Workflow.load(CRITIQUE)
    with pytest.raises(UsageError, match="missing input 'prompt'"):
        wf.bind_inputs({})
    with pytest.raises(UsageError, match="did you mean 'prompt'"):
        wf.bind_inputs({"promt": "x"})


# A fanout over three models of the built-in offline provider's type.
THREE_MODELS = """\
version: 1
name: {name}
models:
  a: {{id: vendor/a, weight: 3}}
  b: {{id: vendor/b, weight: 2}}
  c: {{id: vendor/c, weight: 1}}
nodes:
  all: {{type: fanout, models: {{}}, template: "q"{extra}}}
"""


def offline_is(monkeypatch: pytest.MonkeyPatch, provider: Any) -> None:
    """Make ``type: offline`` (what --offline uses) build ``provider(name, spec)`` in this test
    (the ``isolated_plugins`` fixture forgets it after)."""
    from flowengine.providers import registry

    registry.register_provider("offline", lambda name, spec, ctx: provider(name, spec))


# -- a cancelled run ends every call it started ----------------------------------------------


async def test_a_cancelled_run_ends_every_call_of_its_fanout_and_keeps_what_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from flowengine.providers import ChatRequest, Completion

    ended: list[str] = []
    slow_started = asyncio.Event()

    class Slow:
        """Answers "vendor/a" at once; every other model only after a long time."""

        def __init__(self, name: str, spec: Any) -> None:
            self.name, self.spec = name, spec

        async def complete(self, request: ChatRequest) -> Completion:
            try:
                if request.model_id != "vendor/a":
                    slow_started.set()
                    await asyncio.sleep(10)
                return Completion(content=f"answer from {request.model_id}")
            finally:
                await asyncio.sleep(0.01)  # cleanup that takes time, as a closed request's does
                ended.append(request.model_id)

    offline_is(monkeypatch, Slow)
    wf = inline(THREE_MODELS.format(name="slow-fanout", extra=""), tmp_path)
    events: list[Event] = []
    async with Engine(offline=True, environ={}, cache=False, listeners=[events.append]) as engine:
        task = asyncio.create_task(engine.run(wf))
        await slow_started.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # every call has ended, its cleanup done, by the time the run's cancellation is over
    assert sorted(ended) == ["vendor/a", "vendor/b", "vendor/c"]
    finished = [e for e in events if e.kind == "run_finished"]
    assert [e.error.type for e in finished if e.error] == ["cancelled"]
    assert [e.model for e in events if e.kind == "call_finished"] == ["a"]
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.name == "asyncio"]


async def test_a_provider_that_raises_fails_only_its_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowengine.providers import ChatRequest, Completion

    class Buggy:
        """A plugin with a bug: it raises ValueError, not CallError, for one model."""

        def __init__(self, name: str, spec: Any) -> None:
            self.name, self.spec = name, spec

        async def complete(self, request: ChatRequest) -> Completion:
            await asyncio.sleep(0)
            if request.model_id == "vendor/b":
                raise ValueError("unexpected field 'x'")
            return Completion(content=f"answer from {request.model_id}")

    offline_is(monkeypatch, Buggy)
    extra = ", retry: {attempts: 3, initial: 1ms}"
    wf = inline(THREE_MODELS.format(name="buggy-plugin", extra=extra), tmp_path)
    async with Engine(offline=True, environ={}, cache=False, record=False) as engine:
        result = await engine.run(wf)
    assert result.status == "partial"
    calls = {c.model: c for c in result.nodes["all"].output}
    assert calls["a"].success and calls["c"].success
    failed = calls["b"]
    assert failed.error is not None and failed.error.type == "internal"
    assert failed.attempts == 1  # a bug is not retried
    assert failed.error.message == "provider 'openrouter' raised ValueError: unexpected field 'x'"


async def test_a_finished_run_leaves_no_reference_cycles() -> None:
    """Runs are freed by reference counting alone: a service with thousands of runs in flight
    does not wait for the garbage collector to give their memory back."""
    import gc

    wf = Workflow.load(CRITIQUE)
    async with Engine(offline=True, environ={}) as engine:
        await engine.run(wf, prompt="warm up")
        gc.collect()
        gc.disable()
        try:
            for i in range(5):
                await engine.run(wf, prompt=f"question {i}")
            assert gc.collect() == 0
        finally:
            gc.enable()


async def test_a_run_takes_the_id_it_is_given(server: FakeServer) -> None:
    events: list[Event] = []
    async with Engine(environ=ENV) as engine:
        result = await engine.run(
            critique(server), prompt="q", run_id="given-id", listeners=[events.append]
        )
        streamed = [
            item async for item in engine.stream(critique(server), prompt="q", run_id="other")
        ]
    assert result.run_id == "given-id"
    assert {e.run_id for e in events} == {"given-id"}
    assert {getattr(item, "run_id", "other") for item in streamed} == {"other"}


async def test_events_only_logging_hears_are_built_only_when_it_would_log_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    built: list[str] = []

    class Counted(Event):
        def __init__(self, kind: Any, *args: Any, **fields: Any) -> None:
            built.append(kind)
            super().__init__(kind, *args, **fields)

    monkeypatch.setattr("flowengine.run.context.Event", Counted)
    wf = inline(
        "version: 1\nname: quiet\nmodels: {a: {id: model-a}}\n"
        'nodes: {answer: {type: llm, model: a, template: "Hi"}}\n',
        tmp_path,
    )
    async with Engine(offline=True, cache=False, record=False) as engine:
        caplog.set_level(logging.WARNING, logger="flowengine.run")
        assert (await engine.run(wf)).status == "succeeded"
        # At WARNING only failures are logged: the kinds that may report one are built.
        assert built == ["call_finished", "run_finished"]
        caplog.set_level(logging.DEBUG, logger="flowengine.run")
        await engine.run(wf)
        assert "call_started" in built and "call started" in caplog.text
        built.clear()
        seen: list[Event] = []
        await engine.run(wf, listeners=[seen.append])  # another listener hears every event
    assert built == [event.kind for event in seen] and "run_started" in built
