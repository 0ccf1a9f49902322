"""Loops on the command line: text cards round by round, progress, --out JSON, runs show, graph,
and --skip naming a node inside a loop. The shipped refine workflow, offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.clirunner import invoke

ARGS = ("run", "refine", "--offline", "--prompt", "Why is the sky blue?", "--no-cache")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_text_shows_each_round_and_how_the_loop_ended() -> None:
    code, out, err = invoke(*ARGS, "--format", "text")
    assert code == 0, err
    titles = [line.split(" · ")[0] for line in out.splitlines() if line.startswith("── ")]
    assert titles == [
        "── answer",
        "── refine[1].critique",
        "── refine[2].revise",
        "── refine[2].critique",
        "── refine: 2 rounds: stopped when `until` held",
    ]
    assert '{"ok": false, "issues": [' in out and '{"ok": true, "issues": [' in out
    assert "– refine[1].revise skipped: condition is false: round > 1\n" in out
    assert out.splitlines()[-1].startswith("refine succeeded in ")
    assert " · 4 calls " in out.splitlines()[-1]
    # Progress names each node by its round.
    progress = [re.sub(r"\(\d+\.\d+s\)", "(…)", line) for line in err.splitlines()]
    assert progress == [
        "  ▸ draft",
        "  ✓ draft (…)",
        "  ▸ refine",
        "  – refine[1].revise skipped: condition is false: round > 1",
        "  ▸ refine[1].critique",
        "  ✓ refine[1].critique (…)",
        "  ▸ refine[2].revise",
        "  ✓ refine[2].revise (…)",
        "  ▸ refine[2].critique",
        "  ✓ refine[2].critique (…)",
        "  ✓ refine (…)",
    ]


def test_text_shows_the_cap() -> None:
    code, out, err = invoke(*ARGS, "--format", "text", "--set", "nodes.refine.max_rounds=1")
    assert code == 0, err
    assert "── refine: 1 round: reached max_rounds, capped\n" in out
    assert "refine[2]" not in out


def test_out_json_holds_every_round_and_its_nodes() -> None:
    code, out, err = invoke(*ARGS, "--out", "r.json", "-q")
    assert (code, out, err) == (0, "", "result written to r.json\n")
    result = json.loads(Path("r.json").read_text(encoding="utf-8"))
    assert result["status"] == "succeeded"
    loop = result["output"]["refine"]
    assert list(loop) == ["rounds", "last", "stopped", "capped"]
    assert (len(loop["rounds"]), loop["stopped"], loop["capped"]) == (2, "condition", False)
    assert loop["rounds"][0]["revise"] is None
    assert loop["last"] == loop["rounds"][1]
    assert result["output"]["answer"] == loop["last"]["revise"]
    assert list(result["nodes"]) == [
        "draft",
        "refine[1].revise",
        "refine[1].critique",
        "refine[2].revise",
        "refine[2].critique",
        "refine",
    ]
    assert result["nodes"]["refine"]["output"] == loop
    assert result["nodes"]["refine[2].critique"]["output"]["data"]["ok"] is True
    assert result["metadata"]["calls"] == 4
    assert result["metrics"]["models"]["glm-4.5"]["calls"] == 2


def test_a_recorded_run_shows_its_rounds() -> None:
    code, out, _ = invoke(*ARGS, "-q")
    assert code == 0
    run_id = json.loads(out)["run_id"]
    code, shown, err = invoke("runs", "show", run_id, "--format", "text")
    assert code == 0, err
    assert "── refine[2].revise · gpt-oss" in shown
    assert "── refine: 2 rounds: stopped when `until` held" in shown
    code, compared, err = invoke("compare", run_id)
    assert code == 0, err
    rows = [line.split()[0] for line in compared.splitlines()[2:] if line.strip()]
    assert rows[:4] == ["draft", "refine[1].critique", "refine[2].revise", "refine[2].critique"]


def test_validate_and_graph() -> None:
    code, _, err = invoke("validate", "refine")
    assert code == 0, err
    code, out, err = invoke("graph", "refine")
    assert code == 0, err
    assert 'n_refine["refine<br/>loop · revise, critique · up to 3 rounds"]' in out
    assert "n_draft --> n_refine" in out


def test_skip_names_the_loop_not_a_node_inside_it() -> None:
    code, out, err = invoke(*ARGS, "--skip", "critique")
    assert (code, out) == (2, "")
    assert err == (
        "flowengine: error: --skip: node 'critique' is inside loop 'refine', which runs it "
        "every round; name the loop, 'refine', or give 'critique' a `when:`\n"
    )
