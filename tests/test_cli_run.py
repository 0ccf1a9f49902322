"""`flowengine run`: exit codes, output formats, and the messages a user sees."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clirunner import invoke
from tests.fakeserver import Reply, ThreadedServer, run_in_thread

ROOT = Path(__file__).resolve().parent.parent
CRITIQUE = "workflows/critique.yaml"
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
