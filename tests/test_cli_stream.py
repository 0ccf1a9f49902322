"""`flowengine run --stream`: the answer on stdout as it is written, from a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from flowengine.cli import cli
from flowengine.cli.run_cmd import _for_terminal
from tests.fakeserver import DONE, FakeServer, Reply, ThreadedServer, chunk, sse, usage_chunk

ROOT = Path(__file__).resolve().parent.parent

WORKFLOW = """\
version: 1
name: streamed
inputs:
  prompt: {type: string}
providers:
  local: {type: openai, base_url: BASE, retry: {attempts: 2, initial: 1ms, max: 5ms}}
defaults: {provider: local}
models:
  a: {id: model-a}
nodes:
  draft: {type: llm, model: a, template: "{{ prompt }}"}
  final: {type: llm, model: a, needs: [draft], template: "Improve: {{ draft }}"}
"""


def write_workflow(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW.replace("BASE", base_url))
    return path


async def test_the_first_token_is_on_stdout_before_the_second_is_sent(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script(Reply.ok("a draft"))
    server.script(
        Reply.stream(chunk("Hello"), 1.5, chunk(" world", finish="stop"), usage_chunk(), DONE)
    )
    out = tmp_path / "result.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flowengine",
        "run",
        str(write_workflow(tmp_path, server.base_url)),
        "--prompt",
        "hi",
        "--stream",
        "--out",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        # Block-buffered, as a pipe is by default: the CLI must flush each piece itself.
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    )
    assert process.stdout is not None and process.stderr is not None
    seen = b""
    while b"Hello" not in seen:
        more = await asyncio.wait_for(process.stdout.read(100), timeout=60)
        assert more, f"stdout ended early: {seen!r}"
        seen += more
    first_read = time.monotonic()
    rest, errors = await asyncio.wait_for(process.communicate(), timeout=60)
    second_sent = next(at for at, data in server.sent if b" world" in data)
    assert first_read < second_sent, "the first token waited for the second"
    assert seen + rest == b"Hello world\n"
    assert process.returncode == 0, errors
    result = json.loads(out.read_text())
    final = result["nodes"]["final"]["output"]
    assert final["content"] == "Hello world" and final["ttft_s"] is not None
    assert result["nodes"]["draft"]["output"]["ttft_s"] is None
    assert b"final" in errors  # progress stays on stderr


def test_offline_stdout_is_the_answer_alone_and_out_gets_the_result(
    in_repo_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "result.json"
    args = ["run", "critique", "--offline", "--prompt", "Why?", "--stream", "--out", str(out)]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.stderr
    result = json.loads(out.read_text())
    assert done.stdout == result["output"]["primary_response"]["content"] + "\n"
    assert "critiques" in done.stderr  # progress


def test_without_out_nothing_but_the_answer_reaches_stdout(in_repo_root: Path) -> None:
    done = CliRunner().invoke(cli, ["run", "route", "--offline", "--prompt", "Fix my Python"])
    assert done.exit_code == 0
    answer = json.loads(done.stdout)["output"]["answer"]
    streamed = CliRunner().invoke(
        cli, ["run", "route", "--offline", "--prompt", "Fix my Python", "--stream", "-q"]
    )
    assert streamed.exit_code == 0
    assert streamed.stdout == answer + "\n"  # the branch that ran, of answer: [code, general]


def test_a_broken_off_answer_is_a_failed_run_not_a_short_one(
    threaded_server: ThreadedServer, tmp_path: Path
) -> None:
    broken = sse({"error": {"code": 502, "message": "upstream reset"}})
    threaded_server.server.script(Reply.ok("a draft"), Reply.stream(chunk("Half "), broken))
    path = write_workflow(tmp_path, threaded_server.base_url)
    done = CliRunner().invoke(cli, ["run", str(path), "--prompt", "hi", "--stream", "-q"])
    assert done.exit_code == 1
    assert done.stdout == "Half \n"
    assert "run failed: provider 'local' reported an error: upstream reset" in done.stderr
    assert "broke off after 5 characters" in done.stderr
    assert threaded_server.server.count == 2  # not retried


def test_control_characters_do_not_reach_a_terminal() -> None:
    assert _for_terminal("a\x1b]0;pwned\x07b\tc\nd\x9b2J") == "a\ufffd]0;pwned\ufffdb\tc\nd\ufffd2J"
