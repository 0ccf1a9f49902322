"""`flowengine serve` as users start it: everything checked before it listens, and a real
process stopped by SIGTERM, keeping what its runs finished."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from flowengine.store.db import Store
from flowengine.store.records import load_run
from tests.clirunner import invoke
from tests.fakeserver import Reply, ThreadedServer
from tests.serving import write_workflow

ROOT = Path(__file__).resolve().parent.parent


def test_invalid_workflows_are_all_reported_and_nothing_listens(tmp_path: Path) -> None:
    write_workflow(tmp_path, "fine")
    (tmp_path / "one.yaml").write_text(
        "version: 1\nname: one\nnodes:\n  a: {type: llm, neds: []}\n"
    )
    (tmp_path / "two.yaml").write_text("version: 1\nname: two\nnodes: {}\noutput: 3\n")
    code, out, err = invoke("serve", str(tmp_path), "--offline", "--port", "1")
    assert code == 2 and out == ""
    assert f"{tmp_path / 'one.yaml'}:4:" in err and f"{tmp_path / 'two.yaml'}:" in err
    assert err.rstrip().endswith("in 2 files")
    assert "serving" not in err


def test_two_workflows_of_one_name_are_refused(tmp_path: Path) -> None:
    write_workflow(tmp_path, "same")
    (tmp_path / "copy.yaml").write_text((tmp_path / "same.yaml").read_text())
    code, _, err = invoke("serve", str(tmp_path), "--offline")
    assert code == 2
    assert err == (
        f"flowengine: error: {tmp_path / 'copy.yaml'} and {tmp_path / 'same.yaml'} both name "
        "their workflow 'same'; give one of them another `name:`, or serve only one of them\n"
    )


def test_the_servers_key_variable_must_be_set(tmp_path: Path) -> None:
    path = write_workflow(tmp_path)
    code, _, err = invoke(
        "serve", str(path), "--offline", "--api-key-env", "SERVE_KEY", env={"SERVE_KEY": ""}
    )
    assert code == 2
    assert err == (
        "flowengine: error: --api-key-env SERVE_KEY: SERVE_KEY is not set, so no client could "
        "be let in; export SERVE_KEY=<the key clients will send>, or leave out --api-key-env\n"
    )


def test_a_provider_key_missing_is_said_before_listening(in_repo_root: Path) -> None:
    env = {"OPENROUTER_API_KEY": ""}
    code, _, err = invoke("serve", "workflows/critique.yaml", "--port", "1", env=env)
    assert code == 2
    assert err.startswith("flowengine: error: OPENROUTER_API_KEY is not set:")
    assert "or pass --offline" in err


def test_missing_paths_and_a_busy_port_are_one_line(tmp_path: Path) -> None:
    code, _, err = invoke("serve", str(tmp_path / "nowhere"), "--offline")
    assert code == 2
    assert err.startswith(f"{tmp_path / 'nowhere'}: error: no such file\n")
    assert "fix: check the path, or name a shipped workflow: critique, " in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = invoke("serve", str(write_workflow(tmp_path)), "--port", str(port))
    assert code == 2
    assert err.startswith(f"flowengine: error: cannot listen on 127.0.0.1:{port}: ")
    assert err.endswith("pick another --port (0 takes any free one), or stop what uses it\n")


# -- the real process ---------------------------------------------------------------------------


def start_server(*args: str, cwd: Path = ROOT) -> tuple[subprocess.Popen[str], str]:
    """`flowengine serve ARGS --port 0` in a process of its own, and the address it serves."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flowengine", "serve", *args, "--port", "0"],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    first = process.stderr.readline()
    if first.startswith("flowengine: no workflows/ folder here"):
        first = process.stderr.readline()
    found = re.search(r" on (http://127\.0\.0\.1:\d+): ", first)
    if found is None:
        process.kill()
        pytest.fail(f"serve did not start: {first}{process.communicate()[1]}")
    return process, found.group(1)


def call(address: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(address + path, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    return err


def test_the_real_server_answers_and_stops_on_sigterm(private_database: Path) -> None:
    process, address = start_server("--offline")  # the default: workflows/
    try:
        models = call(address, "/v1/models")
        chat = {"model": "critique", "messages": [{"role": "user", "content": "Hi"}]}
        completion = call(address, "/v1/chat/completions", chat)
    finally:
        err = stop(process)
    assert address.startswith("http://127.0.0.1:")
    assert {m["id"] for m in models["data"]} >= {"critique", "route", "judge"}
    assert completion["choices"][0]["message"]["content"].startswith("[offline answer")
    assert err.endswith(
        "flowengine: stopping; runs in flight get 10s to finish\nflowengine: stopped\n"
    )
    run_id = completion["flowengine"]["run_id"]
    assert load_run(Store(private_database), run_id).result.status == "succeeded"


def test_sigterm_cancels_what_outlives_the_grace_period_and_records_it(
    tmp_path: Path, threaded_server: ThreadedServer, private_database: Path
) -> None:
    threaded_server.server.script_for("model-second", Reply.ok("too late", delay=10))
    path = write_workflow(tmp_path, url=threaded_server.base_url)
    process, address = start_server(str(path), "--grace", "0.2")
    try:
        started = call(address, "/api/runs", {"workflow": "steps", "inputs": {"prompt": "q"}})
        deadline = time.monotonic() + 20
        while threaded_server.server.count < 2:
            assert time.monotonic() < deadline, "the run did not reach its second node"
            time.sleep(0.02)
    finally:
        err = stop(process)
    assert "flowengine: warning: cancelling 1 run(s) still running after 0.2s" in err
    record = load_run(Store(private_database), started["run_id"])
    assert record.result.status == "failed"
    assert record.result.error is not None and record.result.error.type == "cancelled"
    assert record.result.nodes["draft"].status == "succeeded"
    assert record.result.nodes["polish"].status == "cancelled"


def test_shipped_workflows_are_served_by_name_or_where_there_is_no_workflows_folder(
    tmp_path: Path,
) -> None:
    process, address = start_server("--offline", "critique", cwd=tmp_path)
    try:
        named = call(address, "/v1/models")
    finally:
        stop(process)
    assert [m["id"] for m in named["data"]] == ["critique"]
    process, address = start_server("--offline", cwd=tmp_path)  # no workflows/ here
    try:
        shipped = call(address, "/v1/models")
    finally:
        stop(process)
    assert {m["id"] for m in shipped["data"]} >= {"critique", "ensemble", "staged"}
