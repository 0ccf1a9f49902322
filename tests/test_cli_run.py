"""`flowengine run`: exit codes, output formats, and the messages a user sees."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clirunner import invoke
from tests.fakeserver import Reply, ThreadedServer, run_in_thread

ROOT = Path(__file__).resolve().parent.parent
CRITIQUE = "workflows/critique.yaml"
DATA = "tests/data/cli"
KEY = "sk-cli-test-d41d8cd98f00b204"


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    handle = run_in_thread(selected_model="gpt-oss")
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)


def against(server: ThreadedServer) -> list[str]:
    return [
        "--set",
        f"providers.openrouter.base_url={server.base_url}",
        "--set",
        f"selectors.ml.url={server.selector_url}",
        "--set",
        "providers.openrouter.retry.initial=1ms",
    ]


def test_offline_run_prints_json_result() -> None:
    code, out, err = invoke("run", CRITIQUE, "--prompt", "Explain quantum computing", "--offline")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded"
    assert set(result["output"]) == {"primary_response", "critiques", "metadata"}
    assert len(result["output"]["critiques"]) == 5
    assert result["output"]["metadata"]["concurrent_calls"] == 3  # the fanout's cap
    assert "✓ critiques" in err  # progress on stderr, data on stdout


def test_text_format_shows_cards() -> None:
    code, out, _ = invoke("run", CRITIQUE, "--prompt", "q", "--offline", "--format", "text", "-q")
    assert code == 0
    assert "── primary_response · gpt-oss (openai/gpt-oss-120b)" in out
    assert "── critiques 5/5 · llama" in out
    assert "critique succeeded in" in out


def test_out_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    code, out, err = invoke(
        "run", CRITIQUE, "--prompt", "q", "--offline", "-q", "--out", str(target)
    )
    assert code == 0 and out == ""
    assert json.loads(target.read_text())["workflow"] == "critique"
    assert f"result written to {target}" in err


def test_missing_key_is_one_line_naming_the_variable_and_offline() -> None:
    code, out, err = invoke("run", CRITIQUE, "--prompt", "q")
    assert code == 2 and out == ""
    assert err == (
        "flowengine: error: OPENROUTER_API_KEY is not set: workflows/critique.yaml calls "
        "provider 'openrouter', which needs an API key; export OPENROUTER_API_KEY=..., or pass "
        "--offline to try the workflow with offline answers\n"
    )


def test_usage_errors_exit_2() -> None:
    assert invoke("run", CRITIQUE, "--offline")[2] == (
        "flowengine: error: missing input 'prompt'; pass --prompt TEXT\n"
    )
    code, _, err = invoke("run", CRITIQUE, "--offline", "--prompt", "q", "--input", "topic=x")
    assert code == 2 and "unknown input 'topic'" in err
    code, _, err = invoke("run", CRITIQUE, "--offline", "--prompt", "q", "--only", "primay")
    assert code == 2 and "did you mean 'primary'?" in err
    code, _, err = invoke("run", "workflows/nope.yaml", "--prompt", "q")
    assert code == 2 and "workflows/nope.yaml: error: no such file" in err


def test_real_run_against_local_server(server: ThreadedServer) -> None:
    code, out, err = invoke(
        "run", CRITIQUE, "--prompt", "q", *against(server), env={"OPENROUTER_API_KEY": KEY}
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["output"]["primary_response"]["content"].startswith("answer from openai/gpt-oss")
    assert result["output"]["metadata"]["model_selector_confidence"] == 0.9
    assert KEY not in out + err


def test_failed_run_exits_1_and_keeps_completed_output(server: ThreadedServer) -> None:
    server.server.always_for("openai/gpt-oss-120b", Reply.error(400, "context too long"))
    code, out, err = invoke(
        "run", CRITIQUE, "--prompt", "q", *against(server), env={"OPENROUTER_API_KEY": KEY}
    )
    assert code == 1
    result = json.loads(out)
    assert result["status"] == "failed"
    assert result["nodes"]["select"]["status"] == "succeeded"
    assert result["nodes"]["primary"]["output"]["error"]["status"] == 400
    assert result["nodes"]["critiques"]["status"] == "skipped"
    assert "flowengine: run failed: " in err and "context too long" in err
    assert "Traceback" not in err


def test_retries_are_reported_and_key_never_printed(server: ThreadedServer) -> None:
    server.server.script(Reply.error(429, f"slow down {KEY}", headers={"Retry-After": "0"}))
    code, out, err = invoke(
        "run", CRITIQUE, "--prompt", "q", *against(server), env={"OPENROUTER_API_KEY": KEY}
    )
    assert code == 0, err
    assert "↻ primary/gpt-oss: attempt 1 failed (rate_limit 429)" in err
    assert KEY not in out + err


def test_python_m_flowengine_and_no_traceback() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowengine",
            "run",
            CRITIQUE,
            "--prompt",
            "q",
            "--set",
            "version=3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("--set version=3: error: this file is format version 3;")
    assert "Traceback" not in done.stderr


# -- hostile input: one clear line, before any call, nothing lost ---------------------------------


def flowengine(
    *args: str | bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess; arguments may be bytes that are not UTF-8, as from a shell."""
    return subprocess.run(
        [sys.executable, "-m", "flowengine", *args],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def no_run_recorded() -> bool:
    return invoke("runs", "list") == (0, "", "no stored runs\n")


NOT_UTF8 = [
    (
        ["--prompt", b"caf\xe9"],
        "input 'prompt' is not valid UTF-8 text (byte 0xe9 at character 4); pass UTF-8 text",
    ),
    (
        ["--prompt", "q", "--input", b'data={"tags": ["ok", "caf\xe9"]}'],
        "input 'data' is not valid UTF-8 text (byte 0xe9 at character 21); pass UTF-8 text",
    ),
    (
        ["--prompt", "q", "--input", b"caf\xe9=1"],
        "the name in --input NAME=VALUE is not valid UTF-8 text (byte 0xe9 at character 4); "
        "pass UTF-8 text",
    ),
    (
        ["--prompt", "q", "--set", b"models.gpt-oss.id=caf\xe9"],
        "--set models.gpt-oss.id is not valid UTF-8 text (byte 0xe9 at character 4); "
        "pass UTF-8 text",
    ),
]


@pytest.mark.parametrize(("args", "message"), NOT_UTF8)
def test_arguments_that_are_not_utf8_are_refused_before_the_run(
    args: list[str | bytes], message: str
) -> None:
    done = flowengine("run", f"{DATA}/object_input.yaml", *args, "--offline")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"flowengine: error: {message}\n")
    assert no_run_recorded()


def test_a_prompt_that_is_not_utf8_makes_no_call(server: ThreadedServer) -> None:
    done = flowengine(
        "run", CRITIQUE, "--prompt", b"caf\xe9", *against(server), env={"OPENROUTER_API_KEY": KEY}
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == f"flowengine: error: {NOT_UTF8[0][1]}\n"
    assert server.server.count == 0 and no_run_recorded()


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("data", deep(3000)),  # flow style: refused before the YAML parser spends seconds on it
        ("items", deep(101)),
        ("items", "- " * 3000 + "x"),  # block style: the parser's RecursionError
        ("data", "{a: " * 150 + "1" + "}" * 150),
    ],
)
def test_an_input_nested_too_deep_is_one_clear_line(name: str, value: str) -> None:
    code, out, err = invoke(
        "run",
        f"{DATA}/object_input.yaml",
        "--prompt",
        "q",
        "--input",
        f"{name}={value}",
        "--offline",
    )
    assert (code, out) == (2, "")
    assert err == (
        f"flowengine: error: input '{name}' is nested deeper than 100 levels; "
        "pass at most 100 levels of arrays and objects\n"
    )
    assert no_run_recorded()


def test_an_input_nested_up_to_the_bound_runs() -> None:
    code, out, err = invoke(
        "run",
        f"{DATA}/object_input.yaml",
        "--prompt",
        "q",
        "--input",
        f"items={deep(100)}",
        "--offline",
        "-q",
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "succeeded"


# aiohttp warns that it sends a body over 1 MB from memory; the test suite makes warnings errors.
@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")
def test_a_10_mb_prompt_a_server_refuses_ends_in_one_line(server: ThreadedServer) -> None:
    code, out, err = invoke(
        "run",
        CRITIQUE,
        "--prompt",
        "x" * 10_000_000,
        "-q",
        *against(server),
        env={"OPENROUTER_API_KEY": KEY},
    )
    assert code == 1 and "Traceback" not in err
    assert err == (
        "flowengine: run failed: provider 'openrouter' answered HTTP 413: Maximum request body "
        "size 1048576 exceeded. (tried: gpt-oss)\n"
    )
    assert json.loads(out)["nodes"]["select"]["status"] == "succeeded"  # kept, as ever


def test_out_creates_missing_directories(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "dir" / "result.json"
    code, _, err = invoke("run", CRITIQUE, "--prompt", "q", "--offline", "-q", "--out", str(target))
    assert code == 0, err
    assert json.loads(target.read_text())["status"] == "succeeded"


def test_out_where_no_file_can_be_is_refused_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("a file, not a directory\n")
    code, out, err = invoke(
        "run", str(ROOT / CRITIQUE), "--prompt", "q", "--offline", "--out", "notes.txt/result.json"
    )
    assert (code, out) == (2, "")
    assert err == (
        "flowengine: error: cannot write --out notes.txt/result.json: notes.txt is not a "
        "directory; create the directory or choose another path\n"
    )
    assert no_run_recorded()


def disk_full_for(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing ``target`` fails as on a full disk; every other write goes on."""
    write_text = Path.write_text

    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        if self == target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)


def test_a_full_disk_after_the_run_keeps_the_result_in_the_run_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "result.json"
    disk_full_for(target, monkeypatch)
    code, out, err = invoke(
        "run", CRITIQUE, "--prompt", "q", "--offline", "-q", "--out", str(target)
    )
    run_id = invoke("runs", "list")[1].split()[0]
    assert (code, out) == (1, "")
    assert err == (
        f"flowengine: error: could not write the result to {target} (No space left on device); "
        f"the run is recorded: flowengine runs show {run_id}\n"
    )
    code, shown, _ = invoke("runs", "show", run_id)
    assert code == 0 and json.loads(shown)["result"]["status"] == "succeeded"


def test_a_full_disk_and_no_run_record_put_the_result_on_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "result.json"
    disk_full_for(target, monkeypatch)
    (tmp_path / "notes.txt").write_text("a file, so the database cannot be opened\n")
    db = str(tmp_path / "notes.txt" / "flowengine.db")
    code, out, err = invoke(
        "run", CRITIQUE, "--prompt", "q", "--offline", "-q", "--out", str(target), "--db", db
    )
    assert code == 1
    assert err.endswith(
        f"flowengine: error: could not write the result to {target} (No space left on device); "
        "the result follows on stdout\n"
    )
    assert json.loads(out)["status"] == "succeeded"


def test_an_optional_input_without_a_default_runs_from_the_cli() -> None:
    code, out, err = invoke(
        "run", f"{DATA}/optional_input.yaml", "--prompt", "hi", "--offline", "-q"
    )
    assert code == 0, err
    output = json.loads(out)["output"]
    assert output["style"] is None and 'You asked: "hi"' in output["text"]
    code, out, _ = invoke(
        "run",
        f"{DATA}/optional_input.yaml",
        "--prompt",
        "hi",
        "--input",
        "style=haiku",
        "--offline",
        "-q",
    )
    assert code == 0
    assert 'You asked: "hi in the style of haiku"' in json.loads(out)["output"]["text"]
