"""`--skip NODE` on `run` and `batch`, and how skipped nodes show: text, JSON, progress, compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clirunner import invoke

ROOT = Path(__file__).resolve().parent.parent
ENSEMBLE = str(ROOT / "workflows" / "ensemble.yaml")
REASON = "requested with --skip"

# The review runs only when `quick` is false.
BRANCHING = """\
version: 1
name: branching
inputs:
  prompt: {type: string}
  quick: {type: boolean, default: false}
providers:
  local: {type: offline}
models:
  m: {id: vendor/m, provider: local}
defaults: {provider: local}
nodes:
  answer: {type: llm, model: m, template: "{{ prompt }}"}
  review: {type: llm, needs: [answer], when: not quick, model: m, template: "{{ answer }}"}
output:
  answer: "{{ answer }}"
  review: "{{ review }}"
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Path("wf.yaml").write_text(BRANCHING)
    return tmp_path


def test_run_skip_meta_shows_the_skipped_stage_in_text_and_progress() -> None:
    code, out, err = invoke(
        "run", ENSEMBLE, "--offline", "--prompt", "Why?", "--skip", "meta", "--format", "text"
    )
    assert code == 0, err
    assert f"– meta skipped: {REASON}\n" in out
    assert "── final_synthesis · gpt-oss" in out
    assert "meta_responses" not in out  # none: no card
    assert out.splitlines()[-1].startswith("ensemble succeeded in ")
    assert f"  – meta skipped: {REASON}\n" in err
    assert "▸ meta" not in err


def test_run_json_and_out_file_carry_the_status_and_reason() -> None:
    code, out, err = invoke(
        "run", "wf.yaml", "--offline", "--prompt", "q", "--input", "quick=true", "--out", "r.json"
    )
    assert code == 0 and out == "", err
    result = json.loads(Path("r.json").read_text())
    assert result["status"] == "succeeded"
    assert result["nodes"]["review"] == {
        "status": "skipped",
        "started_at": None,
        "duration_s": None,
        "output": None,
        "error": None,
        "reason": "condition is false: not quick",
    }
    assert result["output"]["review"] is None
    assert "  – review skipped: condition is false: not quick\n" in err
    assert "finished with failures" not in err


def test_verbose_logs_each_skipped_node_with_its_reason() -> None:
    args = ("run", "wf.yaml", "--offline", "--prompt", "q", "--input", "quick=true", "-q")
    code, _, err = invoke(*args, "-v")
    assert code == 0
    assert ": review: node skipped (condition is false: not quick)\n" in err
    assert "skipped" not in invoke(*args)[2]


def test_skip_is_repeatable() -> None:
    code, out, err = invoke(
        "run", "wf.yaml", "--offline", "--prompt", "q", "--skip", "answer", "--skip", "review"
    )
    assert code == 0, err
    nodes = json.loads(out)["nodes"]
    assert {n: (r["status"], r["reason"]) for n, r in nodes.items()} == {
        "answer": ("skipped", REASON),
        "review": ("skipped", REASON),
    }
    assert json.loads(out)["metadata"]["calls"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--skip", "reviw"], "--skip: unknown node 'reviw'; did you mean 'review'?"),
        (["--skip", "x"], "--skip: unknown node 'x'; nodes: answer, review"),
        (
            ["--only", "review", "--skip", "review"],
            "--only review and --skip review: a node cannot be both run and skipped; "
            "give it to one of them",
        ),
    ],
)
def test_bad_skip_is_a_usage_error_before_anything_runs(args: list[str], message: str) -> None:
    code, out, err = invoke(
        "run", "wf.yaml", "--offline", "--prompt", "q", "--out", "r.json", *args
    )
    assert (code, out, err) == (2, "", f"flowengine: error: {message}\n")
    assert not Path("r.json").exists()


def test_only_keeps_the_ancestors_of_a_node_and_skip_skips_among_them() -> None:
    code, out, err = invoke(
        "run", ENSEMBLE, "--offline", "--prompt", "q", "--only", "synthesis", "--skip", "meta"
    )
    assert code == 0, err
    nodes = json.loads(out)["nodes"]
    assert {n: r["status"] for n, r in nodes.items()} == {
        "answers": "succeeded",
        "lead": "succeeded",
        "meta": "skipped",
        "synthesis": "succeeded",
    }


def test_compare_lists_the_skipped_nodes() -> None:
    code, out, _ = invoke("run", "wf.yaml", "--offline", "--prompt", "q", "--input", "quick=true")
    assert code == 0
    run_id = json.loads(out)["run_id"]
    code, text, err = invoke("compare", run_id)
    assert code == 0, err
    assert "skipped: review (condition is false: not quick)\n" in text
    code, data, _ = invoke("compare", run_id, "--format", "json")
    assert json.loads(data)["skipped"] == {"review": "condition is false: not quick"}


def test_batch_skip_names_the_skipped_nodes_on_every_line() -> None:
    Path("rows.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b", "quick": true}\n')
    code, _, err = invoke(
        "batch", "wf.yaml", "--input", "rows.jsonl", "--output", "out.jsonl", "--offline"
    )
    assert code == 0, err
    lines = [json.loads(line) for line in Path("out.jsonl").read_text().splitlines()]
    by_row = {line["row"]: line for line in lines}
    assert by_row[1]["skipped"] == {} and by_row[1]["output"]["review"] is not None
    assert by_row[2]["skipped"] == {"review": "condition is false: not quick"}
    assert by_row[2]["status"] == "succeeded" and by_row[2]["output"]["review"] is None
    code, _, err = invoke(
        "batch",
        *("wf.yaml", "--input", "rows.jsonl", "--output", "skip.jsonl", "--offline"),
        *("--skip", "answer"),
    )
    assert code == 0, err
    lines = [json.loads(line) for line in Path("skip.jsonl").read_text().splitlines()]
    by_row = {line["row"]: line for line in lines}
    assert [by_row[n]["skipped"].get("answer") for n in (1, 2)] == [REASON, REASON]
    assert [by_row[n]["metadata"]["calls"] == 1 for n in (1, 2)] == [True, False]


def test_batch_with_an_unknown_skip_stops_before_the_first_row() -> None:
    Path("rows.jsonl").write_text('{"prompt": "a"}\n')
    code, _, err = invoke(
        "batch",
        *("wf.yaml", "--input", "rows.jsonl", "--output", "out.jsonl", "--offline"),
        *("--skip", "anser"),
    )
    assert code == 2
    assert err == "flowengine: error: --skip: unknown node 'anser'; did you mean 'answer'?\n"
    assert not Path("out.jsonl").exists()
