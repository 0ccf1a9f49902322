"""Shipped workflows by name, and the one copy of each starter file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowengine.cli.starter import resolve_workflow
from flowengine.shipped import shipped_workflows, starter_dir
from tests.clirunner import invoke

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Far from the repository's workflows/, as after `pip install flowengine`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_shipped_workflows() -> None:
    assert list(shipped_workflows()) == [
        "critique",
        "ensemble",
        "full",
        "judge",
        "refine",
        "route",
        "staged",
    ]


def test_the_repository_links_into_the_starter_project() -> None:
    for name in ("workflows", "prompts", "flowengine.schema.json"):
        assert (ROOT / name).is_symlink(), f"{name} should link into flowengine/starter/"
        assert (ROOT / name).resolve() == starter_dir() / name


def test_a_shipped_workflow_by_name_validates_and_runs() -> None:
    code, _, err = invoke("validate", "critique", "ensemble", "full")
    assert code == 0, err
    assert err.startswith("critique: ok (3 nodes: select -> primary -> critiques)\n")
    code, out, err = invoke("run", "critique", "--offline", "-q", "--prompt", "hi")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded"
    assert len(result["output"]["critiques"]) == 5


def test_a_path_that_exists_wins_over_a_shipped_name(elsewhere: Path) -> None:
    (elsewhere / "critique").write_text("version: 1\n", encoding="utf-8")
    assert resolve_workflow("critique") == "critique"
    assert resolve_workflow("full") == str(starter_dir() / "workflows" / "full.yaml")


def test_no_such_file_lists_the_shipped_workflows() -> None:
    code, out, err = invoke("run", "workflows/nope.yaml", "--offline", "--prompt", "q")
    assert (code, out) == (2, "")
    assert err == (
        "workflows/nope.yaml: error: no such file\n"
        "      = fix: check the path, or name a shipped workflow: "
        "critique, ensemble, full, judge, refine, route, staged\n"
        "1 error in workflows/nope.yaml\n"
    )


def test_a_misspelt_name_gets_a_suggestion() -> None:
    code, _, err = invoke("validate", "critque")
    assert code == 2
    assert "critque: error: no such file\n" in err
    shipped = "critique, ensemble, full, judge, refine, route, staged"
    assert f"= fix: did you mean 'critique'? (shipped workflows: {shipped})" in err
