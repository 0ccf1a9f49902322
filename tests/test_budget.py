"""Budgets: a run, or a batch, stops before a call that would pass its cap on calls or cost,
keeps what it finished, and says what was spent and which cap stopped it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, Workflow
from flowengine.batch.runner import Batch
from flowengine.results import RunResult
from flowengine.run.budget import usd
from flowengine.spec import Budget
from tests.clirunner import invoke
from tests.fakeserver import FakeServer, Reply, ThreadedServer

CHAIN = """\
version: 1
name: chain
inputs: {{prompt: {{}}}}
budget: {budget}
providers:
  local: {{base_url: "{url}", retry: {{attempts: 2, initial: 1ms, max: 2ms}}}}
models:
  a: {{id: model-a, provider: local}}
  b: {{id: model-b, provider: local}}
  c: {{id: model-c, provider: local}}
nodes:
  one: {{type: llm, model: a, template: "one {{{{ prompt }}}}"}}
  two: {{type: llm, model: a, needs: [one], template: "two {{{{ prompt }}}}"}}
  three: {{type: llm, model: a, needs: [two], on_error: continue, template: "three"}}
  four: {{type: llm, model: a, needs: [three], template: "four"}}
"""

FANOUT = """\
version: 1
name: wide
inputs: {{prompt: {{}}}}
budget: {budget}
providers:
  local: {{base_url: "{url}"}}
models:
  a: {{id: model-a, provider: local}}
  b: {{id: model-b, provider: local}}
  c: {{id: model-c, provider: local}}
nodes:
  all: {{type: fanout, template: "all of you: {{{{ prompt }}}}"}}
  after: {{type: llm, model: a, needs: [all], template: "after"}}
"""


def usage(cost: float) -> dict[str, Any]:
    return {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": cost}


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(latency=0.01) as srv:
        yield srv


def load(tmp_path: Path, server: FakeServer, text: str = CHAIN, budget: str = "{}") -> Workflow:
    path = tmp_path / "wf.yaml"
    path.write_text(text.format(url=server.base_url, budget=budget))
    return Workflow.load(path)


async def run(wf: Workflow, **options: Any) -> RunResult:
    async with Engine() as engine:
        return await engine.run(wf, {"prompt": "p"}, **options)


def test_money_is_shown_with_the_digits_a_call_needs() -> None:
    assert [usd(x) for x in (0.5, 0.0004, 1.234567, 0.0, 12)] == [
        "$0.50",
        "$0.0004",
        "$1.234567",
        "$0.00",
        "$12.00",
    ]


async def test_max_calls_stops_the_run_and_keeps_what_it_finished(
    server: FakeServer, tmp_path: Path, private_database: Path
) -> None:
    server.always_for("model-a", Reply.ok("fine", usage=usage(0.001)))
    result = await run(load(tmp_path, server, budget="{max_calls: 2}"))
    assert server.count == 2
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.type, result.error.status) == ("budget", "max_calls")
    assert result.error.message == (
        "the run's budget: max_calls 2 reached (2 calls made, $0.002 spent): nothing more "
        "starts; raise budget.max_calls or pass --max-calls"
    )
    nodes = result.nodes
    assert [nodes[n].status for n in ("one", "two", "three", "four")] == [
        "succeeded",
        "succeeded",
        "failed",  # its call was refused, and on_error: continue does not carry the run on
        "skipped",
    ]
    assert nodes["one"].output.content == "fine"  # what was paid for is kept
    assert nodes["four"].reason == "the budget stopped the run"
    assert (result.metadata.calls, result.metadata.cost) == (2, pytest.approx(0.002))

    # The finished calls are in the cache and the run is recorded.
    again = await run(load(tmp_path, server, budget="{max_calls: 2}"))
    assert server.count == 4 and again.metadata.calls == 4  # two cache hits, then two new
    assert again.status == "succeeded"
    async with Engine() as engine:
        assert engine.store is not None
        recorded = engine.store.use(lambda db: db.execute("SELECT COUNT(*) FROM runs").fetchone())
    assert recorded == (2,)


async def test_cache_hits_are_free(server: FakeServer, tmp_path: Path) -> None:
    server.always_for("model-a", Reply.ok("fine", usage=usage(0.001)))
    assert (await run(load(tmp_path, server))).status == "succeeded"
    assert server.count == 4
    result = await run(load(tmp_path, server, budget="{max_calls: 1, max_cost: 0.0001}"))
    assert result.status == "succeeded" and server.count == 4


async def test_a_cost_cap_starts_calls_only_while_the_spend_is_below_it(
    server: FakeServer, tmp_path: Path
) -> None:
    server.always_for("model-a", Reply.ok("fine", usage=usage(0.01)))
    result = await run(load(tmp_path, server, budget="{max_cost: 0.025}"))
    # Spent 0, 0.01, 0.02 before the first three calls: below the cap. 0.03 before the fourth.
    assert server.count == 3
    assert result.error is not None and result.error.status == "max_cost"
    assert result.error.message == (
        "the run's budget: max_cost $0.025 reached (3 calls made, $0.03 spent): nothing more "
        "starts; raise budget.max_cost or pass --max-cost"
    )
    assert result.nodes["three"].status == "succeeded"
    assert result.nodes["four"].status == "failed"


async def test_a_cost_from_the_price_list_counts(tmp_path: Path) -> None:
    async with FakeServer(report_cost=False, prices={"model-a": (0.001, 0.0)}) as server:
        server.always_for("model-a", Reply.ok("fine", usage=usage(0)))  # 10 tokens: $0.01
        result = await run(load(tmp_path, server, budget="{max_cost: 0.015}"))
        assert server.count == 2
        assert result.error is not None and "(2 calls made, $0.02 spent)" in result.error.message


async def test_calls_in_flight_finish_and_count(server: FakeServer, tmp_path: Path) -> None:
    server.script(*(Reply.ok("x", usage=usage(0.01)) for _ in range(3)))
    result = await run(load(tmp_path, server, FANOUT, budget="{max_cost: 0.001}"))
    # All three fanout calls started at once, with nothing spent: they finish and count, and
    # the run ends above its cap by what they cost. The next call is refused.
    assert server.count == 3
    assert [call.success for call in result.nodes["all"].output] == [True] * 3
    assert result.nodes["after"].status == "failed"
    assert result.metadata.cost == pytest.approx(0.03)
    assert result.error is not None and "(3 calls made, $0.03 spent)" in result.error.message


async def test_a_refused_fanout_call_fails_the_run_though_the_node_succeeds(
    server: FakeServer, tmp_path: Path
) -> None:
    result = await run(load(tmp_path, server, FANOUT, budget="{max_calls: 2}"))
    assert server.count == 2
    calls = result.nodes["all"].output
    assert result.nodes["all"].status == "succeeded"  # min_success 1: two answers
    assert [c.error.type if c.error else None for c in calls] == [None, None, "budget"]
    assert calls[2].attempts == 0  # never sent
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "budget"
    assert result.nodes["after"].status == "skipped"


async def test_the_callers_budget_replaces_the_workflows(
    server: FakeServer, tmp_path: Path
) -> None:
    wf = load(tmp_path, server, budget="{max_calls: 1}")
    result = await run(wf, budget=Budget(max_calls=3))
    assert server.count == 3 and result.error is not None
    assert "max_calls 3 reached" in result.error.message


# -- the command line ----------------------------------------------------------------------------


def write(tmp_path: Path, server: ThreadedServer, text: str, budget: str) -> str:
    path = tmp_path / "wf.yaml"
    path.write_text(text.format(url=server.base_url, budget=budget))
    return str(path)


def test_run_flags_override_the_workflows_budget(
    threaded_server: ThreadedServer, tmp_path: Path
) -> None:
    wf = write(tmp_path, threaded_server, CHAIN, "{max_calls: 1, max_cost: 5}")
    code, out, err = invoke("run", wf, "--prompt", "p", "-q", "--max-calls", "3")
    assert code == 1
    assert threaded_server.server.count == 3
    assert json.loads(out)["error"]["message"].startswith(
        "the run's budget: max_calls 3 reached (3 calls made,"
    )
    assert err.startswith("flowengine: run failed: the run's budget: max_calls 3 reached")

    # --max-cost replaces only max_cost: the workflow's max_calls still holds.
    code, out, _ = invoke("run", wf, "--prompt", "q", "-q", "--max-cost", "0.00003")
    assert code == 1 and threaded_server.server.count == 4
    assert (
        "max_calls 1 reached (1 call made, $0.000018 spent)" in json.loads(out)["error"]["message"]
    )
    # Each call costs $0.000018 here: the third would start with $0.000036 spent.
    code, out, _ = invoke("run", wf, "--prompt", "r", "--max-cost", "0.00003", "--max-calls", "9")
    assert code == 1 and threaded_server.server.count == 6
    message = json.loads(out)["error"]["message"]
    assert message.startswith(
        "the run's budget: max_cost $0.00003 reached (2 calls made, $0.000036"
    )


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-cost", "0", "0.0 is not in the range x>0"),
        ("--max-cost", "inf", "give a number of US dollars, such as 0.50"),
        ("--max-calls", "0", "0 is not in the range x>=1"),
        ("--max-calls", "2.5", "'2.5' is not a valid integer"),
    ],
)
def test_bad_flag_values_are_usage_errors(flag: str, value: str, message: str) -> None:
    for command in ("run", "batch"):
        code, out, err = invoke(command, "workflows/route.yaml", flag, value)
        assert code == 2 and out == ""
        assert message in err


def test_a_batch_stops_starting_rows_and_leaves_cut_rows_to_resume(
    threaded_server: ThreadedServer, tmp_path: Path
) -> None:
    srv = threaded_server.server
    wf = write(tmp_path, threaded_server, CHAIN[: CHAIN.index("  three:")], "{}")
    # Two calls a row, one row at a time: row 1 makes calls 1-2, row 2 makes call 3 and is
    # refused its fourth; row 3 never starts.
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    args = [wf, "--input", str(rows), "--output", str(out), "--concurrency", "1"]
    code, stdout, err = invoke("batch", *args, "--max-calls", "3")
    assert code == 1 and stdout == ""
    assert srv.count == 3
    assert [json.loads(line)["row"] for line in out.read_text().splitlines()] == [1]
    assert "  calls 3 · retries 0" in err
    assert (
        "  stopped: the batch's budget: max_calls 3 reached (3 calls made, $0.000054 spent): no "
        "more rows start; to go on, run it again with --resume and a higher --max-calls\n"
        "  1 row in flight cut short by it, not in the output: --resume runs them\n"
    ) in err

    code, _, err = invoke("batch", *args, "--resume", "--max-calls", "10")
    assert code == 0, err
    assert srv.count == 3 + 3  # row 2's first call came from the cache
    rows_out = [json.loads(line)["row"] for line in out.read_text().splitlines()]
    assert rows_out == [1, 2, 3]


async def test_a_batch_budget_is_shared_by_rows_in_flight(tmp_path: Path) -> None:
    async with FakeServer(latency=0.02) as server:
        wf = load(tmp_path, server, FANOUT, budget="{max_calls: 100}")
        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(10)))
        job = Batch(wf, rows, tmp_path / "out.jsonl", concurrency=4, budget=Budget(max_calls=10))
        async with Engine() as engine:
            totals = await job.run(engine)
        assert server.count == 10  # the cap, across rows
        assert totals.calls == 10
        assert totals.stopped is not None and "max_calls 10 reached" in totals.stopped
        written = (tmp_path / "out.jsonl").read_text().splitlines()
        # Four calls a row: 10 calls end some row in flight, which is cut short, not written.
        assert totals.cut_short >= 1
        assert totals.done == len(written) <= 3
        assert all(json.loads(line)["status"] == "succeeded" for line in written)
