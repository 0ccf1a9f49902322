"""`--dry-run`: stand-in runs count the calls, tokens and cost a run or a batch would take,
priced from the provider's price list, and make no model call and write no cache or record."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowengine.batch import estimate as batch_estimate
from flowengine.run.dry_run import completion_tokens, prompt_tokens
from tests.clirunner import invoke
from tests.fakeserver import ThreadedServer, run_in_thread

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-dry-run-test-5f4dcc3b5aa765d6"
# USD per (prompt token, completion token). qwen/qwen3-coder and most critique models have none.
PRICES = {
    "meta-llama/llama-3.3-70b-instruct": (0.000001, 0.000002),
    "openai/gpt-oss-120b": (0.000003, 0.000004),
}


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    handle = run_in_thread(prices=PRICES, selected_model="glm-4.5")
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)


def against(server: ThreadedServer) -> list[str]:
    return ["--set", f"providers.openrouter.base_url={server.base_url}"]


def dry_json(*args: str) -> dict[str, Any]:
    code, out, err = invoke("run", *args, "--dry-run", "--format", "json")
    assert code == 0, err
    assert KEY not in out + err
    estimate: dict[str, Any] = json.loads(out)
    return estimate


def tables(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


TABLES = ("cache", "runs", "calls", "prices")


# -- shipped workflows, priced by a real server that must get no chat request ------------------


def test_route_is_priced_from_the_list_and_says_which_branch_was_skipped(
    server: ThreadedServer, private_database: Path
) -> None:
    estimate = dry_json("workflows/route.yaml", "--prompt", "Reverse a list?", *against(server))
    assert server.server.count == 0  # no chat request
    assert server.server.models_requests == 1  # the price list, once
    assert tables(private_database) == {"cache": 0, "runs": 0, "calls": 0, "prices": 1}

    skipped = estimate["not_run"]
    assert len(skipped) == 1  # one branch of two, the way the stand-in classification went
    [(branch, why)] = skipped.items()
    assert branch in ("code", "general")
    assert why == {
        "status": "skipped",
        "runs": 1,
        "reason": f"condition is false: classify.data.kind {'==' if branch == 'code' else '!='} "
        "'code'",
    }
    models = {m["model"]: m for m in estimate["models"]}
    taken = "gpt-oss" if branch == "code" else "coder"
    assert set(models) == {"llama", taken}
    for m in models.values():
        assert m["calls"] == 1
        assert m["completion_tokens_max"] == 1024  # defaults.params.max_tokens
    llama = models["llama"]
    assert llama["cost"] == pytest.approx(llama["prompt_tokens"] * 1e-6 + 1024 * 2e-6)
    if taken == "coder":  # no price for qwen/qwen3-coder: the total is a lower bound
        assert models["coder"]["cost"] is None
        assert models["coder"]["price_note"] == (
            "no price for qwen/qwen3-coder in the price list of provider 'openrouter'"
        )
        assert estimate["cost"] == llama["cost"] and estimate["cost_complete"] is False
    else:
        gpt = models["gpt-oss"]
        assert gpt["cost"] == pytest.approx(gpt["prompt_tokens"] * 3e-6 + 1024 * 4e-6)
        assert estimate["cost"] == pytest.approx(llama["cost"] + gpt["cost"])
        assert estimate["cost_complete"] is True
    assert estimate["calls"] == 2


def test_critique_counts_the_fanout_and_asks_the_selector(server: ThreadedServer) -> None:
    estimate = dry_json(
        "workflows/critique.yaml",
        "--prompt",
        "Explain quantum computing",
        *against(server),
        "--set",
        f"selectors.ml.url={server.selector_url}",
    )
    assert server.server.count == 0
    assert len(server.server.selector_requests) == 1  # a selector is not a model: it is asked
    calls = {m["model"]: m["calls"] for m in estimate["models"]}
    # The selector chose glm-4.5; the five critiques go to the other models.
    assert calls == dict.fromkeys(
        ["glm-4.5", "gpt-oss", "qwen3", "kimi-k2", "deepseek", "llama"], 1
    )
    assert estimate["calls"] == 6 and estimate["not_run"] == {}
    unpriced = {m["model"] for m in estimate["models"] if m["cost"] is None}
    assert unpriced == {"glm-4.5", "qwen3", "kimi-k2", "deepseek"}
    assert estimate["cost_complete"] is False


def test_an_unreadable_price_list_leaves_the_cost_unknown_and_says_why(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY")
    code, out, err = invoke(
        "run", "workflows/route.yaml", "--prompt", "q", *against(server), "--dry-run"
    )
    assert code == 0, err
    assert server.server.count == 0 and server.server.models_requests == 0
    assert out.count("unknown") == 3  # two models and the total
    note = out[out.index("No known price") :].splitlines()
    assert note[0] == "No known price, so the total cost counts only the other models:"
    assert note[1] in {f"  llama, {taken}: {NO_KEY}" for taken in ("coder", "gpt-oss")}


NO_KEY = (
    "no price list from provider 'openrouter': provider 'openrouter' needs an API key: set the "
    "environment variable OPENROUTER_API_KEY, or pass --offline to run without network"
)


# -- the table, exactly, for a workflow whose prompts are known --------------------------------

PRICED = """\
version: 1
name: priced
inputs: {{prompt: {{}}}}
providers:
  local: {{base_url: "{url}"}}
models:
  llama: {{id: meta-llama/llama-3.3-70b-instruct, provider: local, params: {{max_tokens: 100}}}}
  mystery: {{id: some/unlisted-model, provider: local}}
nodes:
  ask: {{type: llm, model: llama, template: "{{{{ prompt }}}}"}}
  again: {{type: llm, model: llama, needs: [ask], template: "{{{{ prompt }}}}"}}
  other: {{type: llm, model: mystery, needs: [ask], template: "{{{{ prompt }}}}!"}}
  never: {{type: llm, model: mystery, needs: [ask], when: "false", template: "x"}}
"""


def test_the_table(server: ThreadedServer, tmp_path: Path) -> None:
    path = tmp_path / "priced.yaml"
    path.write_text(PRICED.format(url=server.base_url))
    code, out, err = invoke("run", str(path), "--prompt", "x" * 40, "--dry-run", "--max-calls", "2")
    assert code == 0, err
    assert server.server.count == 0
    # llama: 2 calls of 10 prompt tokens (40 characters / 4) and at most 100 completion tokens:
    # 2 * (10 * 0.000001 + 100 * 0.000002) = 0.00042. mystery: 11 tokens (41 characters), no
    # max_tokens so 1024, and no price.
    assert out == (
        "Dry run of priced: no model was called; every figure is an estimate.\n"
        "\n"
        "model    calls  prompt tokens  completion tokens (max)      cost estimate\n"
        "-------  -----  -------------  -----------------------  -----------------\n"
        "llama        2             20                      200           $0.00042\n"
        "mystery      1             11                     1024            unknown\n"
        "-------  -----  -------------  -----------------------  -----------------\n"
        "total        3             31                     1224  at least $0.00042\n"
        "\n"
        "Not run in the stand-in run (stand-in answers: a real run may branch otherwise):\n"
        "  never: skipped (reason: condition is false: false)\n"
        "No known price, so the total cost counts only the other models:\n"
        "  mystery: no price for some/unlisted-model in the price list of provider 'local'\n"
        "The run's budget (max_calls 2) would stop this run before its end.\n"
        "Prompt tokens: characters / 4 of the rendered messages. Completion tokens: each call's "
        "max_tokens, the most it may answer; each call without max_tokens (1 here) counts 1024. "
        "Retries and repairs are not counted.\n"
    )


def test_offline_dry_run_is_free_and_fetches_no_price_list(server: ThreadedServer) -> None:
    estimate = dry_json("workflows/route.yaml", "--prompt", "q", *against(server), "--offline")
    assert server.server.models_requests == 0 and server.server.count == 0
    assert estimate["cost"] == 0.0 and estimate["cost_complete"] is True


def test_out_is_refused_with_a_dry_run(tmp_path: Path) -> None:
    code, out, err = invoke(
        "run", "workflows/route.yaml", "--prompt", "q", "--dry-run", "--out", str(tmp_path / "r")
    )
    assert code == 2 and out == ""
    assert err == (
        "flowengine: error: --out takes a run's result, and a dry run has none; drop --out\n"
    )


def test_the_estimates_of_one_call() -> None:
    messages = [{"role": "system", "content": "abc"}, {"role": "user", "content": "de"}]
    assert prompt_tokens(messages, {}) == 2  # 5 characters / 4, rounded up
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    assert prompt_tokens(messages, {"response_format": fmt}) == math.ceil(
        (5 + len(json.dumps(fmt))) / 4
    )
    assert completion_tokens({"max_tokens": 300}) == 300
    assert completion_tokens({"max_completion_tokens": 50}) == 50
    assert completion_tokens({"max_tokens": True}) is None
    assert completion_tokens({}) is None


# -- batch ---------------------------------------------------------------------------------------


def rows(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt": "x" * 40}) + "\n" for _ in range(n)))
    return path


def dry_batch(*args: str) -> dict[str, Any]:
    code, out, err = invoke("batch", *args, "--dry-run", "--format", "json")
    assert code == 0, err
    estimate: dict[str, Any] = json.loads(out)
    return estimate


def test_batch_walks_every_row_and_writes_nothing(
    server: ThreadedServer, tmp_path: Path, private_database: Path
) -> None:
    path = tmp_path / "priced.yaml"
    path.write_text(PRICED.format(url=server.base_url))
    data = rows(tmp_path / "rows.jsonl", 5)
    data.write_text(data.read_text() + '{"other": 1}\n')  # an invalid row: no prompt
    out = tmp_path / "out.jsonl"
    estimate = dry_batch(str(path), "--input", str(data), "--output", str(out))
    assert server.server.count == 0 and not out.exists()
    assert tables(private_database) == {"cache": 0, "runs": 0, "calls": 0, "prices": 1}
    assert (estimate["rows"], estimate["runs"], estimate["invalid_rows"]) == (6, 5, 1)
    assert estimate["scale"] == pytest.approx(6 / 6)
    calls = {m["model"]: m["calls"] for m in estimate["models"]}
    assert calls == {"llama": 10, "mystery": 5}
    assert estimate["models"][0]["cost"] == pytest.approx(5 * 0.00042)
    assert estimate["not_run"]["never"]["runs"] == 5


def test_a_large_batch_is_sampled_and_multiplied(
    server: ThreadedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_estimate, "SAMPLE_ROWS", 4)
    path = tmp_path / "priced.yaml"
    path.write_text(PRICED.format(url=server.base_url))
    data = rows(tmp_path / "rows.jsonl", 10)
    code, out, err = invoke("batch", str(path), "--input", str(data), "--dry-run")
    assert code == 0, err
    # Every 3rd row (rows 1, 4, 7, 10): 4 walked, each standing for 10 / 4 rows.
    assert "Walked 4 of the 10 rows to run, evenly spread, and multiplied the figures by 2.5" in out
    assert "\nllama       20  " in out  # 4 runs * 2 calls * 2.5
    assert "  never: skipped in 4 of 4 walked rows (first reason: condition is false: false)" in out


def test_batch_budget_notes(server: ThreadedServer, tmp_path: Path) -> None:
    path = tmp_path / "priced.yaml"
    path.write_text(PRICED.format(url=server.base_url))
    data = rows(tmp_path / "rows.jsonl", 3)
    args = [str(path), "--input", str(data), "--max-calls", "8", "--max-cost", "1"]
    estimate = dry_batch(*args, "--set", "budget.max_calls=2")
    assert estimate["batch_over_budget"] == ["max_calls"]  # 9 calls > 8; $0.00126 < $1
    assert estimate["over_budget"] == {"max_calls": 3}  # each row makes 3 calls, its cap is 2
    code, out, _ = invoke("batch", *args, "--set", "budget.max_calls=2", "--dry-run")
    assert code == 0  # an estimate, not a stop
    assert "The workflow's budget (max_calls 2, per row) would stop 3 of 3 walked rows" in out
    assert "The batch's budget (max_calls 8) would stop the batch before its end." in out
