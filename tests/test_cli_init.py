"""`flowengine init`: a starter project that validates and runs --offline at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowengine.cli.starter import starter_dir, starter_files
from tests.clirunner import invoke

SCHEMA_COMMENT = "# yaml-language-server: $schema=../flowengine.schema.json"


def test_init_writes_a_project_that_validates_and_runs_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "new" / "project"  # created, parents included
    code, out, err = invoke("init", str(project))
    assert code == 0, err
    assert out == ""
    assert f"wrote a starter project in {project}/" in err
    assert f"cd {project}" in err
    workflows = sorted(p.name for p in (project / "workflows").glob("*.yaml"))
    assert workflows == [
        "critique.yaml",
        "ensemble.yaml",
        "full.yaml",
        "judge.yaml",
        "refine.yaml",
        "route.yaml",
        "staged.yaml",
    ]
    first = (project / "workflows" / "critique.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == SCHEMA_COMMENT
    assert (project / "flowengine.schema.json").read_bytes() == (
        starter_dir() / "flowengine.schema.json"
    ).read_bytes()
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert "flowengine validate workflows/*.yaml" in readme
    assert "flowengine run workflows/critique.yaml --offline" in readme

    monkeypatch.chdir(project)
    code, _, err = invoke("validate", *(f"workflows/{name}" for name in workflows))
    assert code == 0, err
    assert "workflows/critique.yaml: ok" in err
    code, out, err = invoke("run", "workflows/critique.yaml", "--offline", "-q", "--prompt", "hi")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded"
    assert {"primary_response", "critiques"} <= set(result["output"])


def test_init_defaults_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("init")
    assert code == 0, err
    assert "cd " not in err  # already there
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        str(name) for name in starter_files()
    ]


def test_init_never_overwrites_a_file(tmp_path: Path) -> None:
    assert invoke("init", str(tmp_path))[0] == 0
    (tmp_path / "README.md").write_text("mine\n", encoding="utf-8")
    code, out, err = invoke("init", str(tmp_path))
    assert code == 2
    assert out == ""
    assert err == (
        f"flowengine: error: {tmp_path / 'README.md'} already exists, and "
        f"{len(starter_files()) - 1} more of the starter's files; init never overwrites a file; "
        "move them away, or name a new or empty directory: flowengine init DIR\n"
    )
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "mine\n"


def test_one_existing_file_stops_init_before_it_writes_anything(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "full.yaml").write_text("mine\n", encoding="utf-8")
    code, _, err = invoke("init", str(tmp_path))
    assert code == 2
    assert f"error: {tmp_path / 'workflows' / 'full.yaml'} already exists; init never" in err
    assert "move it away" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["full.yaml", "workflows"]


def test_init_into_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("", encoding="utf-8")
    code, _, err = invoke("init", str(tmp_path / "taken"))
    assert code == 2
    assert "is a file" in err
