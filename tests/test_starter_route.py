"""The shipped route workflow: a classification by structured answer, then one branch by when:."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.clirunner import invoke

QUESTIONS = [f"question number {i}" for i in range(12)]


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def run_route(prompt: str) -> dict[str, Any]:
    code, out, err = invoke("run", "route", "--offline", "-q", "--no-cache", "--prompt", prompt)
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_each_question_takes_one_branch_and_skips_the_other() -> None:
    routes: set[str] = set()
    for prompt in QUESTIONS:
        result = run_route(prompt)
        assert result["status"] == "succeeded"
        nodes = result["nodes"]
        route = result["output"]["route"]
        routes.add(route)
        taken, other = ("code", "general") if route == "code" else ("general", "code")
        assert nodes[taken]["status"] == "succeeded"
        assert nodes[other]["status"] == "skipped"
        assert nodes[other]["reason"].startswith("condition is false: classify.data.kind")
        assert result["output"]["model"] == ("coder" if route == "code" else "gpt-oss")
        assert result["output"]["answer"] == nodes[taken]["output"]["content"]
        assert result["metadata"]["calls"] == 2
    # Offline, the classifier's answer follows a hash of the question: both branches appear.
    assert routes == {"code", "general"}


def test_the_same_question_takes_the_same_branch_offline() -> None:
    first, second = run_route("Why is the sky blue?"), run_route("Why is the sky blue?")
    assert first["output"] == second["output"]
