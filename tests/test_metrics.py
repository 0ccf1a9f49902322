"""Metrics per model and per run, and the cost of calls: from ``usage.cost``, else the provider's
price list, else null — never a made-up number."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from flowengine import CallResult, Engine, RunResult, Workflow
from flowengine.results import ModelMetrics, Usage, model_metrics, percentile
from flowengine.store import prices as pricing
from flowengine.store.db import Store
from tests.fakeserver import FakeServer, Reply

FLOW = """\
version: 1
name: measured
providers:
  local: {{base_url: "{url}", retry: {{attempts: 2, initial: 1ms, max: 2ms}}}}
models:
  a: {{id: model-a, provider: local, weight: 3}}
  b: {{id: model-b, provider: local, weight: 2}}
  c: {{id: model-c, provider: local, weight: 1}}
nodes:
  one: {{type: llm, model: a, template: "one"}}
  two: {{type: llm, model: a, template: "two"}}
  three: {{type: llm, model: a, template: "three"}}
  four: {{type: llm, model: a, template: "four"}}
  others: {{type: fanout, models: [b, c], template: "others"}}
"""


def usage(prompt: int, completion: int, cost: float | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cost is not None:
        found["cost"] = cost
    return found


def workflow(tmp_path: Path, server: FakeServer, text: str = FLOW) -> Workflow:
    path = tmp_path / "measured.yaml"
    path.write_text(text.format(url=server.base_url))
    return Workflow.load(path)


async def run(wf: Workflow) -> RunResult:
    async with Engine() as engine:
        return await engine.run(wf)


# -- from calls made against the server -------------------------------------------------------


async def test_metrics_of_a_known_set_of_calls(server: FakeServer, tmp_path: Path) -> None:
    # Four calls of a (one retried after a 503, one slow), one of b that fails after its
    # retry, one of c whose reply has no cost and whose model has no price.
    server.script_for(
        "model-a",
        Reply.ok("1", usage=usage(10, 5, 0.001)),
        Reply.error(503, "busy"),
        Reply.ok("2", usage=usage(20, 10, 0.002)),
        Reply.ok("3", usage=usage(30, 15, 0.003)),
        Reply.ok("4", usage=usage(40, 20, 0.004), delay=0.25),
    )
    server.always_for("model-b", Reply.error(429, "slow down", headers={"Retry-After": "0"}))
    server.script_for("model-c", Reply.ok("5", usage=usage(7, 3)))
    result = await run(workflow(tmp_path, server))

    assert server.count == 8  # 4 + 1 retry of a, 2 of b, 1 of c
    assert result.status == "partial"  # b failed inside the fanout, c kept it alive
    metrics = result.metrics.models
    assert set(metrics) == {"a", "b", "c"}
    a, b, c = metrics["a"], metrics["b"], metrics["c"]
    assert (a.calls, a.success_rate, a.retries, a.cached, a.tokens) == (4, 1.0, 1, 0, 150)
    assert a.cost == pytest.approx(0.010)
    assert a.latency_p95_s is not None and a.latency_p95_s >= 0.25  # the slow one
    assert a.latency_p50_s is not None and a.latency_p50_s < 0.2
    assert (b.calls, b.success_rate, b.retries, b.tokens, b.cost) == (1, 0.0, 1, 0, None)
    assert b.latency_p50_s == b.latency_p95_s and b.latency_p50_s is not None
    assert (c.calls, c.success_rate, c.retries, c.tokens, c.cost) == (1, 1.0, 0, 10, None)
    assert server.models_requests == 1  # it looked for c's price and found none

    meta = result.metadata
    assert (meta.calls, meta.tokens) == (6, 160)
    assert meta.cost == pytest.approx(0.010)  # the known costs; c's unknown one is not guessed
    assert 1 <= meta.concurrent_calls <= 6
    attempts = {c.model: c.attempts for c in result.nodes["others"].output}
    assert attempts == {"b": 2, "c": 1}


async def test_run_cost_is_null_when_no_call_has_a_cost(server: FakeServer, tmp_path: Path) -> None:
    server.always_for("model-a", Reply.ok("x", usage=usage(3, 4)))
    server.always_for("model-b", Reply.ok("y", usage=usage(3, 4)))
    server.always_for("model-c", Reply.ok("z", usage=usage(3, 4)))
    result = await run(workflow(tmp_path, server))
    assert result.metadata.tokens == 6 * 7
    assert result.metadata.cost is None
    assert all(m.cost is None for m in result.metrics.models.values())


# -- cost from the price list -------------------------------------------------------------------

PRICED = """\
version: 1
name: priced
providers:
  local: {{base_url: "{url}"}}
models:
  a: {{id: model-a, provider: local}}
  b: {{id: model-b, provider: local}}
nodes:
  one: {{type: llm, model: a, template: "one"}}
  two: {{type: llm, model: a, needs: [one], template: "two"}}
  three: {{type: llm, model: b, needs: [two], template: "three"}}
"""
PRICES = {"model-a": (0.000002, 0.00001)}


async def test_cost_from_the_price_list_when_usage_has_none(tmp_path: Path) -> None:
    async with FakeServer(report_cost=False, prices=PRICES) as server:
        server.script_for(
            "model-a", Reply.ok("x", usage=usage(100, 20)), Reply.ok("y", usage=usage(50, 10))
        )
        server.script_for("model-b", Reply.ok("z", usage=usage(100, 20)))
        wf = workflow(tmp_path, server, PRICED)
        result = await run(wf)
        assert server.models_requests == 1  # fetched once for the whole run
        one, two = result.nodes["one"].output, result.nodes["two"].output
        assert one.usage.cost == pytest.approx(100 * 0.000002 + 20 * 0.00001)
        assert two.usage.cost == pytest.approx(50 * 0.000002 + 10 * 0.00001)
        assert result.nodes["three"].output.usage.cost is None  # model-b has no price
        assert result.metrics.models["a"].cost == pytest.approx(0.0004 + 0.0002)
        assert result.metrics.models["b"].cost is None
        assert result.metadata.cost == pytest.approx(0.0006)
        assert result.metadata.cost_complete is False  # model-b's call has no price: a floor

        # Another engine (another process, say) reads the list from the database.
        server.script_for("model-a", Reply.ok("x2", usage=usage(10, 10)))
        again = await run(workflow(tmp_path, server, PRICED.replace('"one"', '"one again"')))
        assert server.models_requests == 1
        assert again.nodes["one"].output.usage.cost == pytest.approx(10 * 0.000002 + 10 * 0.00001)


async def test_usage_cost_wins_and_the_list_is_not_fetched(tmp_path: Path) -> None:
    async with FakeServer(prices=PRICES) as server:
        server.always_for("model-a", Reply.ok("x", usage=usage(100, 20, cost=0.5)))
        server.always_for("model-b", Reply.ok("x", usage=usage(100, 20, cost=0.25)))
        result = await run(workflow(tmp_path, server, PRICED))
        assert server.models_requests == 0
        assert result.nodes["one"].output.usage.cost == 0.5
        assert result.metadata.cost == pytest.approx(1.25)
        assert result.metadata.cost_complete is True


async def test_cost_is_null_when_the_price_list_is_unreachable(tmp_path: Path) -> None:
    async with FakeServer(report_cost=False, prices=PRICES) as server:
        server.script_models(Reply.error(503, "maintenance"))
        result = await run(workflow(tmp_path, server, PRICED))
        assert result.status == "succeeded"
        assert server.models_requests == 1  # tried once, not once per call
        assert [result.nodes[n].output.usage.cost for n in ("one", "two", "three")] == [None] * 3
        assert result.metadata.cost is None
        assert result.metadata.tokens > 0
        assert result.metrics.models["a"].cost is None

        # A failure is not remembered: the next engine asks again, and now gets prices.
        again = await run(workflow(tmp_path, server, PRICED.replace('"one"', '"one again"')))
        assert server.models_requests == 2
        assert again.nodes["one"].output.usage.cost is not None


async def test_cost_is_null_when_the_price_list_is_not_json(tmp_path: Path) -> None:
    async with FakeServer(report_cost=False, prices=PRICES) as server:
        server.script_models(Reply.raw("<html>gateway</html>"))
        result = await run(workflow(tmp_path, server, PRICED))
        assert result.status == "succeeded"
        assert result.metadata.cost is None


# -- the arithmetic, from calls built by hand -------------------------------------------------


def call(model: str, latency: float, **kw: Any) -> CallResult:
    return CallResult(
        model=model, model_id=model, provider="p", success=True, latency_s=latency, **kw
    )


def test_model_metrics_by_hand() -> None:
    calls = [
        call("a", 0.3, usage=Usage(total_tokens=10, cost=0.01), attempts=1),
        call("a", 0.1, usage=Usage(total_tokens=20, cost=None), attempts=3),
        call("a", 0.2, usage=Usage(total_tokens=30, cost=0.02), attempts=1),
        call("a", 9.9, usage=Usage(total_tokens=99, cost=9.0), attempts=0, cached=True),
        CallResult(model="a", model_id="a", provider="p", success=False, latency_s=0.4, attempts=2),
        call("b", 1.0, usage=Usage(total_tokens=5), attempts=1),
    ]
    metrics = model_metrics(calls)
    assert list(metrics) == ["a", "b"]  # in first-call order
    assert metrics["a"].cost == pytest.approx(0.03)  # the call with no cost adds nothing
    assert dataclasses.replace(metrics["a"], cost=None) == ModelMetrics(
        calls=5,
        success_rate=0.8,
        latency_p50_s=0.2,  # of 0.1, 0.2, 0.3, 0.4: the cached hit is left out
        latency_p95_s=0.4,
        tokens=60,
        cost=None,
        cached=1,
        retries=3,
    )
    assert metrics["b"] == ModelMetrics(
        calls=1,
        success_rate=1.0,
        latency_p50_s=1.0,
        latency_p95_s=1.0,
        tokens=5,
        cost=None,
        cached=0,
        retries=0,
    )
    assert model_metrics([]) == {}


def test_time_to_first_token_is_the_median_of_the_streamed_calls() -> None:
    calls = [
        call("a", 0.5, ttft_s=0.2, attempts=1),
        call("a", 0.5, ttft_s=0.1, attempts=1),
        call("a", 0.5, ttft_s=0.3, attempts=1),
        call("a", 0.5, attempts=1),  # not streamed
        call("a", 0.0, ttft_s=0.0, cached=True),  # a hit took no time to its first token
        call("b", 0.5, attempts=1),
    ]
    metrics = model_metrics(calls)
    assert (metrics["a"].ttft_p50_s, metrics["b"].ttft_p50_s) == (0.2, None)


@pytest.mark.parametrize(
    "single",
    [
        call("a", 0.3, usage=Usage(total_tokens=10, cost=0.01), attempts=1),
        call("a", 0.3, usage=Usage(total_tokens=10), attempts=3),
        call("a", 0.3, usage=Usage(total_tokens=None, cost=0.0), attempts=2),
        call("a", 9.9, usage=Usage(total_tokens=99, cost=9.0), attempts=0, cached=True),
        call("a", 9.9, usage=Usage(total_tokens=99), attempts=0, cached=True),
        CallResult(model="a", model_id="a", provider="p", success=False, latency_s=0.4, attempts=3),
    ],
)
def test_a_model_with_one_call_has_the_metrics_of_any_group(single: CallResult) -> None:
    # One call per model is the common case and has a path of its own: it must agree with
    # the general one, which a group of two identical calls takes (halving the sums).
    alone = model_metrics([single])["a"]
    pair = model_metrics([single, single])["a"]
    assert alone.calls == 1
    assert alone == dataclasses.replace(
        pair,
        calls=1,
        tokens=pair.tokens // 2,
        cost=None if pair.cost is None else pair.cost / 2,
        cached=pair.cached // 2,
        retries=pair.retries // 2,
    )


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([0.7], 95) == 0.7
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([float(i) for i in range(1, 101)], 50) == 50.0
    assert percentile([float(i) for i in range(1, 11)], 95) == 10.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0  # sorts first


@pytest.mark.parametrize(
    ("n", "q", "rank"),
    [(2, 50, 1), (6, 50, 3), (10, 50, 5), (20, 95, 19), (100, 95, 95)],
)
def test_percentile_nearest_rank_is_the_ceiling(n: int, q: float, rank: int) -> None:
    assert percentile([float(i) for i in range(1, n + 1)], q) == float(rank)


async def test_a_long_lived_engine_asks_again_after_a_failed_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeServer(report_cost=False, prices=PRICES) as server:
        server.script_models(Reply.error(503, "maintenance"))
        async with Engine() as engine:
            first = await engine.run(workflow(tmp_path, server, PRICED))
            again = await engine.run(workflow(tmp_path, server, PRICED.replace('"one"', '"uno"')))
            assert server.models_requests == 1  # not asked again at once
            monkeypatch.setattr(pricing, "RETRY_FAILED_S", 0.0)
            later = await engine.run(workflow(tmp_path, server, PRICED.replace('"one"', '"eins"')))
        assert server.models_requests == 2
        assert first.metadata.cost is None and again.metadata.cost is None
        assert later.nodes["one"].output.usage.cost is not None


async def test_an_unreadable_stored_price_list_is_fetched_again(tmp_path: Path) -> None:
    async with FakeServer(report_cost=False, prices=PRICES) as server:
        store = Store()
        store.use(lambda db: None)  # creates the tables
        store.use(
            lambda db: db.execute(
                "INSERT INTO prices VALUES (?, ?, ?)", (server.base_url, time.time(), "{oops")
            )
        )
        store.close()
        result = await run(workflow(tmp_path, server, PRICED))
        assert server.models_requests == 1
        assert result.nodes["one"].output.usage.cost is not None


async def test_latency_does_not_include_fetching_the_price_list(tmp_path: Path) -> None:
    async with FakeServer(report_cost=False, prices=PRICES) as server:
        listing = {"data": [{"id": "model-a", "pricing": {"prompt": "1e-6", "completion": "1e-6"}}]}
        server.script_models(Reply(body=listing, delay=0.3))
        result = await run(workflow(tmp_path, server, PRICED))
        one = result.nodes["one"].output
        assert one.usage.cost is not None  # it was priced from the slow list
        assert one.latency_s < 0.2


def test_price_lists_keep_only_real_prices() -> None:
    body = {
        "data": [
            {"id": "a", "pricing": {"prompt": "0.000001", "completion": "0.000002"}},
            {"id": "auto", "pricing": {"prompt": "-1", "completion": "-1"}},  # varies by model
            {"id": "inf", "pricing": {"prompt": "inf", "completion": "0"}},
            {"id": "nan", "pricing": {"prompt": float("nan"), "completion": "0"}},
            {"id": "text", "pricing": {"prompt": "free", "completion": "0"}},
            {"id": "none", "pricing": None},
            {"pricing": {"prompt": "0", "completion": "0"}},
            "junk",
        ]
    }
    assert pricing.parse_prices(body) == {"a": (0.000001, 0.000002)}
    assert pricing.parse_prices({"data": "nope"}) == {} == pricing.parse_prices([])


QUEUED = """\
version: 1
name: queued
providers:
  local: {{base_url: "{url}", rate_limit: {{requests: 1, per: 150ms}}}}
models:
  a: {{id: model-a, provider: local, weight: 3}}
  b: {{id: model-b, provider: local, weight: 2}}
  c: {{id: model-c, provider: local, weight: 1}}
nodes:
  all: {{type: fanout, template: "q"}}
"""


async def test_time_waiting_for_the_rate_limit_is_queue_time_not_latency(
    server: FakeServer, tmp_path: Path
) -> None:
    server.latency = 0.02
    result = await run(workflow(tmp_path, server, QUEUED))
    calls = result.nodes["all"].output
    waited = sorted(c.queued_s for c in calls)
    assert waited[0] < 0.05 and waited[2] > 0.2  # the third waited for two windows
    assert all(0.01 < c.latency_s < 0.15 for c in calls)  # the server's 20 ms, not the wait
    total = sum(m.queued_s for m in result.metrics.models.values())
    assert total == pytest.approx(sum(waited), abs=1e-5)
    p95 = max(m.latency_p95_s or 0.0 for m in result.metrics.models.values())
    assert p95 < 0.15
