"""What `run` and `batch` show while they work, on a real terminal and off it, and Ctrl-C.

The terminal tests run the command on a pseudo-terminal and read the screen it draws
(tests/terminal.py); the commands run with warnings as errors, so that a coroutine never
awaited, a task destroyed while pending or an unclosed session fails them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowengine.store.db import Store
from flowengine.store.records import load_run
from tests.clirunner import invoke
from tests.terminal import Screen, run_on_terminal

ROOT = Path(__file__).resolve().parent.parent
LIVE = "tests/data/cli/live.yaml"
CRITICS = ("glm-4.5", "qwen3", "kimi-k2", "deepseek", "llama")
# `python -m flowengine` with warnings as errors, and with Python's own Ctrl-C handling even
# where the test runner was started with SIGINT ignored (which a child would otherwise inherit).
FLOWENGINE = [
    sys.executable,
    "-W",
    "error",
    "-c",
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('flowengine', run_name='__main__', alter_sys=True)",
]
TROUBLE = (
    "Traceback",
    "Warning",
    "never awaited",
    "Task was destroyed",
    "Unclosed",
    "Exception ignored",
)


def closed_selector() -> list[str]:
    """--set pointing the selector at a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ["--set", f"selectors.ml.url=http://127.0.0.1:{port}/predict"]


def assert_clean(text: str) -> None:
    for trouble in TROUBLE:
        assert trouble not in text, text


def running_calls(screen: Screen) -> int:
    """How many fanout calls the screen shows as running."""
    critic = "|".join(re.escape(m) for m in CRITICS)
    return len(re.findall(rf"^  \S ({critic}) +running ", screen.text(), re.M))


def test_live_view_shows_every_call_and_the_fallback(tmp_path: Path) -> None:
    most = [0]

    def watch(screen: Screen, _: subprocess.Popen[bytes]) -> None:
        most[0] = max(most[0], running_calls(screen))

    # -v: log lines while the view is drawn, which must go above it and leave no stray frame.
    args = ["run", LIVE, "--prompt", "q", *closed_selector(), "--db", str(tmp_path / "db"), "-v"]
    done = run_on_terminal([*FLOWENGINE, *args], cwd=ROOT, env=dict(os.environ), watch=watch)
    screen = done.screen.text()
    assert done.returncode == 0, screen
    assert most[0] >= 2, "the critiques never showed as running at the same time"
    assert screen.startswith("flowengine: info: live ")  # the fallback, logged
    assert screen.count("live · run ") == 1 and screen.count("✓ select") == 1, screen
    assert re.search(r"^live · run [0-9a-f]{16} · succeeded in \d+\.\d\ds$", screen, re.M)
    assert re.search(r"^✓ select +done +0\.\d\ds$", screen, re.M)
    assert re.search(
        r"^  ↪ gpt-oss +fallback +selector 'ml' failed: cannot reach model selector at ",
        screen,
        re.M,
    )
    assert re.search(r"^  ✓ gpt-oss +done +0\.\d\ds$", screen, re.M)  # primary's call
    for model in CRITICS:
        assert re.search(rf"^  ✓ {re.escape(model)} +done +0\.\d\ds$", screen, re.M), screen
    assert_clean(screen)
    assert json.loads(done.stdout)["status"] == "succeeded"  # stdout keeps the data alone


def test_stream_keeps_its_answer_on_stdout_under_the_live_view(tmp_path: Path) -> None:
    args = ["run", LIVE, "--prompt", "q", "--stream", "--offline", "--db", str(tmp_path / "db")]
    done = run_on_terminal([*FLOWENGINE, *args], cwd=ROOT, env=dict(os.environ))
    screen = done.screen.text()
    assert done.returncode == 0, screen
    assert done.stdout.startswith("[offline answer from openai/gpt-oss-120b] ")
    assert done.stdout.endswith(")\n") and done.stdout.count("\n") == 1
    assert re.search(r"^live · run [0-9a-f]{16} · succeeded in ", screen, re.M)
    assert re.search(
        r"^  ↪ gpt-oss +fallback +offline run: the selector is not asked$", screen, re.M
    )
    assert "[offline answer" not in screen
    assert_clean(screen)


def test_quiet_shows_nothing_on_a_terminal(tmp_path: Path) -> None:
    args = ["run", LIVE, "--prompt", "q", "--offline", "-q", "--db", str(tmp_path / "db")]
    fast = ["--set", "providers.local.latency=0ms"]
    done = run_on_terminal([*FLOWENGINE, *args, *fast], cwd=ROOT, env=dict(os.environ))
    assert (done.returncode, done.screen.text()) == (0, "")
    assert json.loads(done.stdout)["status"] == "succeeded"


def test_off_a_terminal_progress_is_plain_lines() -> None:
    fast = ["--set", "providers.local.latency=0ms"]
    code, out, err = invoke("run", str(ROOT / LIVE), "--prompt", "q", *closed_selector(), *fast)
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == "  ▸ select"
    assert lines[1].startswith(
        "  ↪ select: fell back to gpt-oss: selector 'ml' failed: cannot reach model selector at "
    )
    assert re.fullmatch(r"  ✓ select \(\d\.\d\ds\)", lines[2])
    assert lines[3] == "  ▸ primary" and lines[-1].startswith("  ✓ critiques (")
    assert "\x1b" not in err
    assert json.loads(out)["status"] == "succeeded"


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c twice"])
def test_ctrl_c_mid_fanout_keeps_what_finished(tmp_path: Path, presses: int) -> None:
    db, out = tmp_path / "db.sqlite", tmp_path / "partial.json"
    args = ["run", LIVE, "--prompt", "q", *closed_selector(), "--db", str(db), "--out", str(out)]
    slow = ["--set", "providers.local.latency=1s", "-vv"]  # -vv: a log line per call succeeded
    process = subprocess.Popen(
        [*FLOWENGINE, *args, *slow], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    seen: list[str] = []
    # The fanout runs three calls at a time: once three critiques are done, two are in flight.
    deadline = time.monotonic() + 30
    while sum("critiques/" in line and "call succeeded" in line for line in seen) < 3:
        assert time.monotonic() < deadline and process.poll() is None, "".join(seen)
        seen.append(process.stderr.readline().decode())
    process.send_signal(signal.SIGINT)
    if presses == 2:
        time.sleep(0.02)  # while what finished is being saved
        process.send_signal(signal.SIGINT)
    stdout, rest = process.communicate(timeout=30)
    err = "".join(seen) + rest.decode()
    assert process.returncode == 130, err
    assert_clean(err)
    assert stdout == b""
    result = json.loads(out.read_text())
    run_id = result["run_id"]
    assert f"flowengine: interrupted; what finished is kept: flowengine runs show {run_id}" in err
    assert result["status"] == "failed" and result["error"]["type"] == "cancelled"
    critiques = result["nodes"]["critiques"]
    assert critiques["status"] == "cancelled"
    assert [call["success"] for call in critiques["output"]] == [True] * 3
    store = Store(db, warn=False)
    try:
        record = load_run(store, run_id)
    finally:
        store.close()
    assert record.result.status == "failed"
    calls = [(call.node, call.status) for call in record.timeline]
    assert calls == [("primary", "succeeded"), *[("critiques", "succeeded")] * 3]


BATCH = """
version: 1
name: rows
inputs:
  prompt: {type: string}
providers:
  local: {type: offline, latency: 3s}
models:
  m: {id: m/model, provider: local}
nodes:
  answer: {type: llm, model: m, template: "{{ prompt }}"}
output:
  answer: "{{ answer }}"
"""


def test_batch_bar_shows_rows_in_flight_before_any_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wf.yaml").write_text(BATCH)
    rows = "".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(4))
    (tmp_path / "rows.jsonl").write_text(rows)
    output = tmp_path / "out.jsonl"
    first: list[tuple[str, bytes]] = []

    def watch(screen: Screen, process: subprocess.Popen[bytes]) -> None:
        if not first and "2 in flight" in screen.text():
            first.append((screen.text(), output.read_bytes() if output.exists() else b""))
            process.send_signal(signal.SIGINT)

    args = ["batch", "wf.yaml", "--input", "rows.jsonl", "--output", "out.jsonl"]
    more = ["--concurrency", "2", "--db", str(tmp_path / "db")]
    done = run_on_terminal(
        [*FLOWENGINE, *args, *more], cwd=tmp_path, env=dict(os.environ), watch=watch
    )
    assert first, done.screen.text()
    bar, written = first[0]
    assert written == b""  # no row had finished when the bar showed
    assert re.search(r"^rows ━+ 0/4 rows · 2 in flight 0:00:0\d 0 failed · 0 invalid · ", bar, re.M)
    screen = done.screen.text()
    assert done.returncode == 130, screen
    assert "interrupted: 0 rows this time (0 already done) -> out.jsonl" in screen
    assert "resume with the same command and --resume" in screen
    assert_clean(screen)
    monkeypatch.chdir(tmp_path)  # the resumed batch finishes every row
    fast = ["--set", "providers.local.latency=0ms", "--resume"]
    code, _, err = invoke(*args, *more, *fast)
    assert code == 0, err
    assert "4 rows this time (0 already done)" in err


def _stdout_on_terminal(args: list[str]) -> str:
    """What ``args`` prints with its stdout on a pseudo-terminal (stderr piped away)."""
    import pty

    main, side = pty.openpty()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=side, stderr=subprocess.DEVNULL)
    os.close(side)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the other side closed: the process is done writing
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def test_on_a_terminal_run_prints_text_cards_and_piped_json() -> None:
    args = [*FLOWENGINE, "run", "workflows/critique.yaml", "--offline", "-q", "--prompt", "q"]
    shown = _stdout_on_terminal(args)
    assert re.search(r"^── primary_response · gpt-oss \(openai/gpt-oss-120b\) · ", shown, re.M)
    assert "critiques 5/5" in shown and not shown.lstrip().startswith("{")
    piped = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert json.loads(piped.stdout)["status"] == "succeeded"
