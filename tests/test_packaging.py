"""The wheel is complete: built, installed with its dependencies into a fresh virtual
environment, and used from a directory far from this checkout, it validates and runs the
shipped workflows by name and writes a starter project.

It needs the package registry (pip's cache makes a second run quicker) and takes tens of
seconds; `pytest -m "not packaging"` leaves it out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowengine

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy, so that the build's own files (build/, *.egg-info) stay out of the
    # checkout, and so that only what is in the tree can end up in the wheel.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "flowengine", source / "flowengine", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp_path_factory.mktemp("dist")
    _run([*PIP, "wheel", "--no-deps", "-w", str(dist), str(source)])
    [built] = dist.glob("flowengine-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel and its dependencies; yields its bin/."""
    env = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)])
    bin_dir = env / ("Scripts" if os.name == "nt" else "bin")
    # This interpreter's pip installs into the new environment: quicker than giving it a pip.
    _run([*PIP, "--python", str(bin_dir / "python"), "install", "--no-compile", str(wheel)])
    yield bin_dir


@pytest.fixture
def outside(tmp_path: Path, installed: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory outside the checkout, with only the new environment on PATH."""
    monkeypatch.setenv("PATH", f"{installed}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    return tmp_path


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_wheel_holds_every_subpackage_and_the_starter_project(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "flowengine").rglob("__init__.py")}
    assert packages <= names
    starter = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "flowengine" / "starter").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "flowengine/starter/flowengine.schema.json" in starter
    assert {
        "flowengine/starter/workflows/critique.yaml",
        "flowengine/starter/prompts/critique.j2",
    } <= starter
    assert starter <= names
    assert "flowengine/py.typed" in names
    templates = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "flowengine" / "web" / "templates").iterdir()
    }
    assert "flowengine/web/templates/run.html.j2" in templates
    assert templates <= names


def test_the_installed_command_line_works_anywhere(outside: Path, installed: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(list(args), cwd=outside)  # outside: `python -c`/`-m` put the cwd on sys.path

    python = str(installed / "python")
    where = run(python, "-c", "import flowengine; print(flowengine.__file__)").stdout
    assert Path(where.strip()).is_relative_to(installed.parent)
    assert (
        run("flowengine", "--version").stdout == f"flowengine, version {flowengine.__version__}\n"
    )
    assert "Usage: flowengine [OPTIONS] COMMAND" in run(python, "-m", "flowengine", "--help").stdout

    assert run("flowengine", "validate", "critique").stderr.startswith("critique: ok (3 nodes")
    done = run("flowengine", "run", "critique", "--offline", "-q", "--prompt", "Why?")
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    primary = result["output"]["primary_response"]
    assert {"model", "content", "confidence", "success"} <= set(primary)
    assert primary["success"] is True
    assert len(result["output"]["critiques"]) == 5
    page = run("flowengine", "report", result["run_id"], "-o", "-").stdout
    assert page.startswith("<!doctype html>") and "Recommended:" in page


def test_the_installed_server_serves_the_shipped_workflows_and_the_page(outside: Path) -> None:
    process = subprocess.Popen(
        ["flowengine", "serve", "--offline", "--port", "0"],
        cwd=outside,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(2)]
        assert lines[0] == "flowengine: no workflows/ folder here: serving the shipped workflows\n"
        address = lines[1].split(" on ", 1)[1].split(": ", 1)[0]
        with urllib.request.urlopen(address + "/v1/models", timeout=30) as reply:
            models = {m["id"] for m in json.load(reply)["data"]}
        with urllib.request.urlopen(address + "/", timeout=30) as reply:
            page = reply.read().decode()
        with urllib.request.urlopen(address + "/static/app.js", timeout=30) as reply:
            assert reply.status == 200
    finally:
        process.terminate()
        process.communicate(timeout=30)  # and closes its stderr
    assert {"critique", "staged"} <= models
    assert '<script src="/static/app.js"' in page


def test_the_installed_init_writes_a_working_project(outside: Path) -> None:
    _run(["flowengine", "init", "project"], cwd=outside)
    project = outside / "project"
    assert (project / "flowengine.schema.json").is_file()
    _run(["flowengine", "validate", "workflows/critique.yaml", "workflows/full.yaml"], cwd=project)


def test_an_installed_plugin_is_found_by_its_entry_points(
    outside: Path, installed: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Installed from a copy, so that its build's files stay out of the checkout.
    plugin = tmp_path_factory.mktemp("plugin")
    shutil.copytree(ROOT / "tests" / "data" / "plugin_echo", plugin, dirs_exist_ok=True)
    _run([*PIP, "--python", str(installed / "python"), "install", "--no-compile", str(plugin)])
    shutil.copy(plugin / "workflow.yaml", outside / "echo.yaml")

    assert _run(["flowengine", "validate", "echo.yaml"], cwd=outside).stderr.startswith(
        "echo.yaml: ok"
    )
    done = _run(["flowengine", "run", "echo.yaml", "-q", "--prompt", "hi"], cwd=outside)
    output = json.loads(done.stdout)["output"]
    assert output["answer"]["content"] == "echo: hi"
    assert output["loud"] == "ECHO: HI"
