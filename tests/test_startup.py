"""Start-up: the quick commands load neither the engine's HTTP client nor, for help, the language.

Not timed (benchmarks/bench_startup.py measures); this checks what each command imports, in a
fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import flowengine

ROOT = Path(__file__).resolve().parent.parent

# Run the command line as the `flowengine` script does, then list what it imported.
PROBE = """
import json, sys
from flowengine.cli import main
out, sys.argv = sys.argv[1], ["flowengine", *sys.argv[2:]]
try:
    main()
finally:
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def imported(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "args",
    [["--help"], ["schema"], ["validate", "workflows/critique.yaml"], ["init", "--help"]],
    ids=" ".join,
)
def test_quick_commands_do_not_import_aiohttp(tmp_path: Path, args: list[str]) -> None:
    modules = imported(tmp_path, *args)
    assert "aiohttp" not in modules
    assert "flowengine.run.engine" not in modules


@pytest.mark.parametrize(
    "args", [["--help"], ["validate", "workflows/critique.yaml"]], ids=" ".join
)
def test_workflows_without_a_schema_do_not_import_jsonschema(
    tmp_path: Path, args: list[str]
) -> None:
    modules = imported(tmp_path, *args)
    assert "jsonschema" not in modules
    assert "referencing" not in modules


@pytest.mark.parametrize(
    "args",
    [["--help"], ["batch", "--help"], ["validate", "workflows/critique.yaml"]],
    ids=" ".join,
)
def test_ray_is_imported_only_for_the_ray_backend(tmp_path: Path, args: list[str]) -> None:
    modules = imported(tmp_path, *args)
    assert "ray" not in modules
    assert "flowengine.batch.ray_backend" not in modules


def test_help_imports_no_language_and_no_rich(tmp_path: Path) -> None:
    modules = imported(tmp_path, "--help")
    for heavy in ("pydantic", "jinja2", "ruamel.yaml", "rich", "flowengine.language"):
        assert heavy not in modules, heavy


def test_import_flowengine_is_lazy() -> None:
    code = "import sys, flowengine; print([m for m in sys.modules if m.startswith('flowengine')])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['flowengine']"


def test_python_m_flowengine_is_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowengine", "--version"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (0, f"flowengine, version {flowengine.__version__}\n")
