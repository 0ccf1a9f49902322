"""Hostile input never crashes, hangs or leaks: every read is bounded, every template load stays
inside prompts/, and what a template makes is bounded when checking and when running.

Broken workflow files are cases of ``tests/data/invalid`` (see test_invalid.py); broken
``--set`` values are ``tests/data/hostile/NAME.args`` with the exact message in ``NAME.err``.
Special and huge files are made here, since a repository cannot hold them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowengine import Workflow
from flowengine.cli import cli
from flowengine.errors import WorkflowError
from flowengine.language import prompt_files
from flowengine.language.files import MAX_PROMPT_BYTES, MAX_WORKFLOW_BYTES
from flowengine.language.templates import make_environment

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = Path("tests/data/hostile")
INVALID = ROOT / "tests" / "data" / "invalid"
SET_CASES = sorted(p.stem for p in (ROOT / HOSTILE).glob("*.args"))
WORKFLOW = """\
version: 1
name: hostile
inputs:
  prompt: {}
models:
  gpt: {id: openai/gpt-4o}
nodes:
  answer:
    type: llm
    model: gpt
"""


def validate_in_process(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stderr


def validate_in_child(path: Path) -> subprocess.CompletedProcess[str]:
    """`flowengine validate` in a process of its own: a read that blocks fails only this test."""
    return subprocess.run(
        [sys.executable, "-m", "flowengine", "validate", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- 5: bounded reads ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SET_CASES)
def test_a_hostile_set_value_is_one_clear_line(name: str, in_repo_root: Path) -> None:
    args = shlex.split((ROOT / HOSTILE / f"{name}.args").read_text(encoding="utf-8"))
    code, err = validate_in_process(str(HOSTILE / "workflow.yaml"), *args)
    assert code == 2
    assert err == (ROOT / HOSTILE / f"{name}.err").read_text(encoding="utf-8")


def test_an_alias_bomb_is_refused_before_it_grows() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(WorkflowError, match="aliases expand to more than 100,000 values"):
            Workflow.load(INVALID / "yaml_alias_bomb.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000


def test_a_device_is_refused_without_reading_it() -> None:
    code, err = validate_in_process("/dev/zero")
    assert code == 2
    assert err == (
        "/dev/zero: error: is a character device, not a regular file\n"
        "      = fix: name a workflow file saved on disk, not a pipe or device\n"
        "1 error in /dev/zero\n"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_workflow_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    proc = validate_in_child(tmp_path / "pipe.yaml")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "pipe.yaml: error: is a FIFO (named pipe), not a regular file\n"
        "      = fix: name a workflow file saved on disk, not a pipe or device\n"
        "1 error in pipe.yaml\n"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_prompt_file_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    os.mkfifo(tmp_path / "prompts" / "pipe.j2")
    (tmp_path / "wf.yaml").write_text(WORKFLOW + "    prompt: pipe.j2\n")
    proc = validate_in_child(tmp_path / "wf.yaml")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "wf.yaml:11:13: error: prompt file 'pipe.j2' is a FIFO (named pipe), not a regular file\n"
        "   11 |     prompt: pipe.j2\n"
        "      |             ^\n"
        "      = fix: name a prompt file saved on disk, not a pipe or device\n"
        "1 error in wf.yaml\n"
    )


def test_a_workflow_file_past_the_limit_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.truncate(MAX_WORKFLOW_BYTES + 1)  # sparse: no disk used, and never read
    code, err = validate_in_process(str(path))
    assert code == 2
    assert err == (
        f"{path}: error: is larger than 10 MB, the most flowengine reads of a workflow file\n"
        "      = fix: make it smaller: keep long texts in prompt files, and data in inputs\n"
        f"1 error in {path}\n"
    )


def test_workflow_text_past_the_limit_is_not_parsed() -> None:
    with pytest.raises(WorkflowError) as raised:
        Workflow.from_string("#" * (MAX_WORKFLOW_BYTES + 1))
    assert raised.value.render() == (
        "<workflow>: error: is larger than 10 MB, the most flowengine reads of a workflow\n"
        "      = fix: make it smaller: keep long texts in prompt files, and data in inputs\n"
        "1 error in <workflow>"
    )


def test_a_prompt_file_past_the_limit_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    with (tmp_path / "prompts" / "huge.j2").open("wb") as file:
        file.truncate(MAX_PROMPT_BYTES + 1)
    with pytest.raises(WorkflowError) as raised:
        Workflow.from_string(WORKFLOW + "    prompt: huge.j2\n", prompts_dir=tmp_path / "prompts")
    assert raised.value.render() == (
        "<workflow>:11:13: error: prompt file 'huge.j2' is larger than 1 MB, the most flowengine "
        "reads of a prompt file\n"
        "   11 |     prompt: huge.j2\n"
        "      |             ^\n"
        "      = fix: make it smaller: keep long texts in prompt files, and data in inputs\n"
        "1 error in <workflow>"
    )


def test_each_prompt_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "outer.j2").write_text("{% include 'inner.j2' %} and {{ prompt }}")
    (prompts / "inner.j2").write_text("inner {{ prompt }}")
    reads: list[str] = []
    real = prompt_files.read_bytes

    def counted(path: str | Path, limit: int, what: str) -> bytes:
        reads.append(Path(path).name)
        return real(path, limit, what)

    monkeypatch.setattr(prompt_files, "read_bytes", counted)
    wf = Workflow.from_string(WORKFLOW + "    prompt: outer.j2\n", prompts_dir=prompts)
    (turn,) = wf.plan.nodes["answer"].messages
    assert turn.content.render({"prompt": "q"}) == "inner q and q"
    assert sorted(reads) == ["inner.j2", "outer.j2"]


# -- 6 and 7: templates that nest too deep, or make too much ---------------------------------


def test_run_reports_an_unknown_filter_as_validate_does(in_repo_root: Path) -> None:
    args = ["run", "tests/data/invalid/template_unknown_filter.yaml", "--offline", "--prompt", "q"]
    result = CliRunner().invoke(cli, args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (INVALID / "template_unknown_filter.err").read_text(encoding="utf-8")


def test_checking_a_template_never_evaluates_it() -> None:
    env = make_environment(None)
    tracemalloc.start()
    try:
        for source in ("{{ 'a' | center(3000000000) }}", "{{ 'a' * 3000000000 }}"):
            env.compile(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000


@pytest.mark.parametrize(
    ("template", "n", "message"),
    [
        ("{{ prompt * n }}", 3_000_000_000, "'*' would make 6,000,000,000 items"),
        ("{{ n ** n }}", 100_000, "'**' would make a number of about 500,001 digits"),
        ("{{ '%*d' % (n, 1) }}", 3_000_000_000, "'%' would pad to 3,000,000,000 characters"),
    ],
)
async def test_a_run_refuses_to_make_a_huge_value(template: str, n: int, message: str) -> None:
    text = WORKFLOW.replace("  prompt: {}\n", "  prompt: {}\n  n: {type: integer}\n")
    wf = Workflow.from_string(text + f'    template: "{template}"\n')
    result = await wf.run(offline=True, prompt="ab", n=n)
    assert result.status == "failed"
    error = result.nodes["answer"].error
    assert error is not None
    most = "100,000" if "digits" in message else "1,000,000"
    assert error.message == f"nodes.answer: {message}; the most is {most}"


# -- 8 and 11: every template load stays inside prompts/, and ends ---------------------------


async def test_a_computed_include_of_a_link_out_of_prompts_is_refused_at_run() -> None:
    text = WORKFLOW.replace("  prompt: {}\n", "  prompt: {}\n  which: {default: notes_link.j2}\n")
    wf = Workflow.from_string(
        text + '    template: "{% include which %}"\n', prompts_dir=INVALID / "prompts"
    )
    result = await wf.run(offline=True, prompt="q")
    error = result.nodes["answer"].error
    assert error is not None
    assert error.message == (
        "nodes.answer: prompt path 'notes_link.j2' leads outside prompts/ through a link"
    )
    assert "do not read me" not in result.model_dump_json()


async def test_a_computed_include_cycle_fails_the_node_at_run() -> None:
    text = WORKFLOW.replace(
        "  prompt: {}\n", "  prompt: {}\n  which: {default: include_itself.j2}\n"
    )
    wf = Workflow.from_string(
        text + '    template: "{% include which %}"\n', prompts_dir=INVALID / "prompts"
    )
    result = await wf.run(offline=True, prompt="q")
    error = result.nodes["answer"].error
    assert error is not None
    assert error.message == (
        "nodes.answer: template recursed too deeply (a macro or include calling itself?)"
    )


def test_an_error_on_a_huge_line_shows_a_window_around_its_column(tmp_path: Path) -> None:
    filler = "x" * 2_000_000
    path = tmp_path / "long.yaml"
    path.write_text(
        "version: 1\nname: long\nmodels: {gpt: {id: openai/gpt-4o}}\nnodes:\n"
        f'  a: {{type: llm, model: gpt, template: "{filler} {{{{ nope }}}} {filler}"}}\n',
        encoding="utf-8",
    )
    code, err = validate_in_process(str(path))
    assert code == 2
    first, shown, caret, *_ = err.splitlines()
    assert first.startswith(f"{path}:5:") and "'nope'" in first
    assert len(shown) < 200 and shown.startswith("    5 | …") and shown.endswith("…")
    # The caret stands under the name, as it would on a short line.
    assert shown[caret.index("^") :].startswith("nope")
    assert len(err) < 1000
