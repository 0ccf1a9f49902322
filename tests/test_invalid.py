"""Broken workflows, each with the exact message `flowengine validate` must print.

Every case is ``tests/data/invalid/NAME.yaml`` with ``NAME.err``, the expected stderr, and
optionally ``NAME.args``, extra command-line arguments. A case without a ``.yaml`` checks a
missing file.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowengine.cli import cli

DATA = Path("tests/data/invalid")
ROOT = Path(__file__).resolve().parent.parent
CASES = sorted(p.stem for p in (ROOT / DATA).glob("*.err"))
# `file:line:col: error:`, or `file: error:` for a whole file or a --set override.
PROBLEM_LINE = re.compile(r"^\S.*?(:\d+:\d+)?: error: \S")


def command(name: str) -> list[str]:
    args = ["validate", str(DATA / f"{name}.yaml")]
    extra = ROOT / DATA / f"{name}.args"
    if extra.exists():
        args += shlex.split(extra.read_text(encoding="utf-8"))
    return args


def expected(name: str) -> str:
    return (ROOT / DATA / f"{name}.err").read_text(encoding="utf-8")


def test_there_are_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", CASES)
def test_invalid_workflow_message(name: str, in_repo_root: Path) -> None:
    result = CliRunner().invoke(cli, command(name))
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == expected(name)


@pytest.mark.parametrize("name", CASES)
def test_one_error_line_per_problem(name: str) -> None:
    text = expected(name)
    count = int(re.search(r"^(\d+) errors? in ", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    headers = [line for line in text.splitlines() if ": error: " in line and not line[0].isspace()]
    assert len(headers) == count
    assert all(PROBLEM_LINE.match(line) for line in headers)
    assert "Traceback" not in text


def test_problems_are_sorted_by_line() -> None:
    text = expected("many_problems")
    lines = [int(m.group(1)) for m in re.finditer(r"^\S+?:(\d+):\d+: error:", text, re.MULTILINE)]
    assert len(lines) >= 5
    assert lines == sorted(lines)


@pytest.mark.parametrize("name", ["yaml_unclosed_quote", "many_problems"])
def test_real_process_prints_no_traceback(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flowengine", *command(name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == expected(name)
