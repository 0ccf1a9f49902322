"""`flowengine batch`: exit codes, progress and summary on stderr, and real interruptions."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flowengine.cli import batch_cmd
from tests.clirunner import invoke as invoke_cli
from tests.fakeserver import Reply, ThreadedServer

WORKFLOW = """
version: 1
name: rows
inputs:
  prompt: {type: string}
providers:
  local: {type: offline, latency: 0ms, retry: {attempts: 2, initial: 1ms, max: 2ms}}
  served: {base_url: "http://127.0.0.1:9/v1", retry: {attempts: 3, initial: 1ms, max: 2ms}}
models:
  m: {id: m/model, provider: local}
nodes:
  answer: {type: llm, model: m, template: "{{ prompt }}"}
output:
  answer: "{{ answer }}"
"""
SERVED = ["--set", "models.m.provider=served"]
# `python -m flowengine`, with Python's own Ctrl-C handling even where the test runner was
# started with SIGINT ignored (which a child would otherwise inherit).
LAUNCH = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('flowengine', run_name='__main__', alter_sys=True)"
)
DATA = Path(__file__).resolve().parent / "data" / "batch"
PLAIN_LINE = re.compile(
    r"^rows: \d+/\d+ rows · \d+ failed · \d+ invalid · [\d.]+ calls/s · \d+ tokens · "
    r"(\$[\d.]+|cost n/a) · ETA (\d+s|-)$"
)


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workflow and three rows in ``tmp_path``, which is the working directory."""
    monkeypatch.chdir(tmp_path)
    Path("wf.yaml").write_text(WORKFLOW)
    write_rows(Path("rows.jsonl"), 3)
    return tmp_path


def write_rows(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(n)))


def invoke(*args: str) -> tuple[int, str, str]:
    return invoke_cli("batch", *args)


def batch(*extra: str) -> tuple[int, str, str]:
    return invoke("wf.yaml", "--input", "rows.jsonl", "--output", "out.jsonl", *extra)


def rows_in(path: Path) -> Counter[int]:
    """How many times each row is in an output file whose every line is complete JSON."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the last line is torn"
    return Counter(json.loads(line)["row"] for line in data.decode().splitlines())


def against(srv: ThreadedServer) -> list[str]:
    return [*SERVED, "--set", f"providers.served.base_url={srv.base_url}"]


# -- exit codes and the summary ------------------------------------------------------------------


def test_all_rows_ok_exits_0_with_a_summary_on_stderr(files: Path) -> None:
    code, out, err = batch()
    assert code == 0, err
    assert out == ""  # results go to --output; stdout stays empty
    assert rows_in(files / "out.jsonl") == {1: 1, 2: 1, 3: 1}
    summary = err[err.index("3 rows this time") :].splitlines()
    assert summary[0] == "3 rows this time (0 already done) -> out.jsonl"
    assert summary[1] == "  succeeded 3 · partial 0 · failed 0 · invalid 0"
    assert re.fullmatch(
        r"  calls 3 · retries 0 · tokens \d+ · cost \$0\.000000 · wall \d+\.\ds", summary[2]
    )
    assert summary[3] == (
        "  model            calls  ok%   retries  cached  p50     p95     tokens    cost"
    )
    model = summary[4].split()
    assert model[:5] == ["m", "3", "100", "0", "0"] and model[-1] == "$0.000000"
    assert all(re.fullmatch(r"\d+\.\d\ds", p) for p in model[5:7]) and int(model[7]) > 0
    assert len(summary) == 5


def test_summary_counts_retries_tokens_and_cost(
    files: Path, threaded_server: ThreadedServer
) -> None:
    threaded_server.server.script(Reply.error(429, "slow down", headers={"Retry-After": "0"}))
    code, _, err = batch(*against(threaded_server), "--concurrency", "1")
    assert code == 0, err
    # Each answer is 12 prompt and 7 completion tokens at $0.000001 a token.
    assert "  calls 3 · retries 1 · tokens 57 · cost $0.000057 · wall " in err
    model = err.splitlines()[-1].split()
    assert model[:5] == ["m", "3", "100", "1", "0"] and model[-2:] == ["57", "$0.000057"]


def test_failed_rows_exit_1_and_the_batch_goes_on(files: Path) -> None:
    code, _, err = batch("--set", "providers.local.failure_rate=1")
    assert code == 1
    assert "  succeeded 0 · partial 0 · failed 3 · invalid 0" in err
    assert "retries 3" in err  # two attempts per row
    records = [json.loads(line) for line in (files / "out.jsonl").read_text().splitlines()]
    assert {r["status"] for r in records} == {"failed"} and len(records) == 3
    assert "simulated failure" in records[0]["error"]["message"]
    assert "Traceback" not in err


def test_invalid_rows_are_reported_with_their_line_and_exit_1(files: Path) -> None:
    Path("rows.jsonl").write_text('{"prompt": "a"}\nnot json\n{"question": "b"}\n{"prompt": "c"}\n')
    code, _, err = batch()
    assert code == 1
    assert "rows.jsonl: skipped row 2, line 2: not JSON (Expecting value)\n" in err
    assert "rows.jsonl: skipped row 3, line 3: missing column 'prompt' (input 'prompt')\n" in err
    assert "  succeeded 2 · partial 0 · failed 0 · invalid 2" in err
    assert rows_in(files / "out.jsonl") == {1: 1, 2: 1, 3: 1, 4: 1}


def test_map_reads_an_input_from_another_column(files: Path) -> None:
    Path("rows.csv").write_text("id,question\n1,What is 2+2?\n2,Why?\n")
    code, _, err = invoke(
        "wf.yaml", "--input", "rows.csv", "--output", "out.jsonl", "--map", "prompt=question"
    )
    assert code == 0, err
    records = [json.loads(line) for line in (files / "out.jsonl").read_text().splitlines()]
    assert sorted(r["inputs"]["prompt"] for r in records) == ["What is 2+2?", "Why?"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--input", "nope.jsonl"],
            "nope.jsonl: no such file; give a .jsonl or .csv file of rows",
        ),
        (
            ["--output", "taken.jsonl"],
            "taken.jsonl already has results; pass --resume to continue it, "
            "or choose another --output",
        ),
        (
            ["--map", "prompt"],
            "--map prompt: expected INPUT=COLUMN; for example --map prompt=question",
        ),
        (
            ["--map", "promt=question"],
            "--map promt=...: unknown input 'promt'; did you mean 'prompt'?",
        ),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
    ],
)
def test_usage_errors_exit_2_before_anything_runs(
    files: Path, args: list[str], message: str
) -> None:
    Path("taken.jsonl").write_text('{"row": 1, "status": "succeeded"}\n')
    options = {"--input": "rows.jsonl", "--output": "out.jsonl"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        options[flag] = value
    code, out, err = invoke("wf.yaml", *[part for pair in options.items() for part in pair])
    assert (code, out, err) == (2, "", f"flowengine: error: {message}\n")
    assert not (files / "out.jsonl").exists()


def test_an_unreadable_csv_file_is_a_usage_error(files: Path) -> None:
    Path("rows.csv").write_bytes(b"prompt\n\xff\xfe\n")
    code, _, err = invoke("wf.yaml", "--input", "rows.csv", "--output", "out.jsonl")
    assert code == 2
    assert err == "flowengine: error: rows.csv: not UTF-8 text (invalid start byte at byte 7)\n"
    Path("rows.csv").write_text("prompt\nfine\n" + "x" * 200_000 + "\n")
    code, _, err = invoke("wf.yaml", "--input", "rows.csv", "--output", "out.jsonl")
    assert (code, err) == (
        2,
        "flowengine: error: rows.csv:3: cannot read the CSV file "
        "(field larger than field limit (131072))\n",
    )


def test_rows_that_stopped_every_batch_are_skipped_and_resume_gets_past_them(files: Path) -> None:
    shutil.copy(DATA / "unrunnable.jsonl", "rows.jsonl")
    code, _, err = batch()
    assert code == 1
    assert (
        "rows.jsonl: skipped row 1, line 1: input 'prompt' is not valid Unicode text "
        "(a lone surrogate at character 5)\n"
    ) in err
    assert "rows.jsonl: skipped row 2, line 2: not JSON (a number longer than 4300 digits)\n" in err
    assert "rows.jsonl: skipped row 3, line 3: nested deeper than 100 levels\n" in err
    assert "  succeeded 1 · partial 0 · failed 0 · invalid 3" in err
    assert "Traceback" not in err
    assert rows_in(files / "out.jsonl") == {1: 1, 2: 1, 3: 1, 4: 1}  # valid UTF-8 JSON lines
    code, _, err = batch("--resume")
    assert code == 1
    assert "0 rows this time (4 already done, 3 of them failed or invalid) -> out.jsonl" in err


def test_a_full_disk_ends_the_batch_with_one_clear_line(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    room = 1  # lines the disk has room for

    def full_disk(fd: int, data: Any) -> int:
        nonlocal room
        if room:
            room -= 1
            return real_write(fd, data)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    code, _, err = batch("--concurrency", "1")
    assert code == 1
    assert err.endswith(
        "flowengine: error: out.jsonl: cannot write the results (No space left on device); "
        "the rows written so far are kept: fix that, then run the same command with --resume\n"
    )
    assert "Traceback" not in err
    assert rows_in(files / "out.jsonl") == {1: 1}


def test_an_output_that_cannot_be_created_is_an_error_before_any_call(
    files: Path, threaded_server: ThreadedServer
) -> None:
    Path("file").write_text("")
    code, out, err = invoke(
        "wf.yaml", "--input", "rows.jsonl", "--output", "file/out.jsonl", *against(threaded_server)
    )
    assert (code, out, err) == (
        2,
        "",
        "flowengine: error: file/out.jsonl: cannot write the results (file is not a directory)\n",
    )
    assert threaded_server.server.count == 0
    code, _, err = invoke("wf.yaml", "--input", "rows.jsonl", "--output", "new/dir/out.jsonl")
    assert code == 0, err  # a missing directory is still created
    assert rows_in(files / "new" / "dir" / "out.jsonl") == {1: 1, 2: 1, 3: 1}


# -- progress -----------------------------------------------------------------------------------


def test_plain_progress_lines_when_stderr_is_not_a_terminal(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_cmd, "PLAIN_EVERY_S", 0.0)  # a line per row instead of every 5 s
    write_rows(Path("rows.jsonl"), 4)
    code, _, err = batch("--concurrency", "1")
    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("rows: ")]
    assert [line.split(" · ")[0] for line in progress] == [
        f"rows: {n}/4 rows" for n in (1, 2, 3, 4)
    ]
    assert all(PLAIN_LINE.match(line) for line in progress), progress
    assert progress[-1].endswith(" · ETA 0s")
    assert "\x1b" not in err  # no terminal codes in a log


def test_plain_progress_is_periodic(files: Path) -> None:
    write_rows(Path("rows.jsonl"), 5)
    code, _, err = batch("--concurrency", "1")
    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("rows: ")]
    # The first row and the last, and nothing between within the five-second period.
    assert [line.split(" · ")[0] for line in progress] == ["rows: 1/5 rows", "rows: 5/5 rows"]


def test_a_progress_bar_on_a_terminal(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich then draws as it would on a terminal
    code, _, err = batch()
    assert code == 0, err
    assert "\x1b[" in err and "3/3 rows" in err and "0 failed · 0 invalid" in err
    assert not any(line.startswith("rows: ") for line in err.splitlines())
    assert "3 rows this time (0 already done)" in err


# -- resume -------------------------------------------------------------------------------------


def test_resume_runs_only_what_is_left_and_remembers_failures(files: Path) -> None:
    assert batch()[0] == 0
    lines = (files / "out.jsonl").read_text().splitlines(keepends=True)
    failed = {**json.loads(lines[0]), "status": "failed"}
    (files / "out.jsonl").write_text(json.dumps(failed) + "\n" + lines[1])
    code, _, err = batch("--resume")
    assert code == 1  # the output still holds a failed row
    assert "1 rows this time (2 already done, 1 of them failed or invalid) -> out.jsonl" in err
    assert rows_in(files / "out.jsonl") == {1: 1, 2: 1, 3: 1}
    code, _, err = batch("--resume", "--set", "providers.local.failure_rate=1")
    assert code == 1
    assert "0 rows this time (3 already done, 1 of them failed or invalid)" in err


def test_resume_warns_about_rows_written_twice_and_counts_each_once(files: Path) -> None:
    shutil.copy(DATA / "doubled_results.jsonl", "out.jsonl")
    write_rows(Path("rows.jsonl"), 8)
    code, _, err = batch("--resume")
    assert code == 0, err  # row 2 failed the first time, and its last line succeeded
    assert (
        "flowengine: warning: out.jsonl holds 7 rows more than once (rows 1, 2, 3, 4, 5, ...), "
        "as when two batches write it at once; each row counts once\n"
    ) in err
    assert "1 rows this time (7 already done) -> out.jsonl" in err
    assert rows_in(files / "out.jsonl")[8] == 1


# -- one batch per output -------------------------------------------------------------------------


def in_use(pid: int) -> str:
    """The error a batch gives for an output that the process ``pid`` is writing."""
    # Linux tells which process holds a lock (/proc/locks); elsewhere the message has no pid.
    holder = f" (pid {pid})" if Path("/proc/locks").exists() else ""
    return (
        f"flowengine: error: out.jsonl is being written by another flowengine batch{holder}; "
        "wait for it to finish, or choose another --output\n"
    )


def test_an_output_another_batch_is_writing_is_refused_at_once(files: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    with open("out.jsonl", "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running batch holds it
        for extra in ([], ["--resume"]):
            assert batch(*extra) == (2, "", in_use(os.getpid()))
    assert (files / "out.jsonl").read_bytes() == b""


def test_a_second_batch_process_on_an_output_in_use_stops_at_once(files: Path) -> None:
    pytest.importorskip("fcntl")
    # Every call takes 30 s: the first batch is surely still running when the second starts.
    Path("slow.yaml").write_text(WORKFLOW.replace("latency: 0ms", "latency: 30s"))
    command = [sys.executable, "-m", "flowengine", "batch", "slow.yaml", "--offline"]
    command += ["--input", "rows.jsonl", "--output", "out.jsonl"]
    first = subprocess.Popen(command, cwd=files, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (files / "out.jsonl").exists():  # it is locked as soon as it is opened
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first batch never opened its output"
            time.sleep(0.01)
        second = subprocess.run(
            [*command, "--resume"], cwd=files, capture_output=True, text=True, timeout=30
        )
        assert (second.returncode, second.stderr) == (2, in_use(first.pid))
        assert first.poll() is None
    finally:
        first.terminate()  # stops as Ctrl-C does
        first.communicate(timeout=30)
    assert first.returncode == 130
    assert (files / "out.jsonl").read_bytes() == b""


# -- real interruptions ---------------------------------------------------------------------------


def start_batch(tmp: Path, srv: ThreadedServer) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-c",
        LAUNCH,
        "batch",
        "wf.yaml",
        "--input",
        "rows.jsonl",
        "--output",
        "out.jsonl",
        "--concurrency",
        "4",
        *against(srv),
    ]
    return subprocess.Popen(
        command,
        cwd=tmp,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_lines(path: Path, n: int, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while not (path.exists() and path.read_bytes().count(b"\n") >= n):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the batch wrote nothing"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_an_interrupted_batch_resumed_writes_every_row_exactly_once(
    files: Path, threaded_server: ThreadedServer, sig: signal.Signals
) -> None:
    rows = 40
    write_rows(Path("rows.jsonl"), rows)
    threaded_server.server.latency = 0.2  # 40 rows, 4 at a time: about two seconds in all
    process = start_batch(files, threaded_server)
    wait_for_lines(files / "out.jsonl", 5, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    if sig == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 130, err
        assert "\ninterrupted: " in err and "resume with the same command and --resume" in err
        assert "Traceback" not in err
    first = rows_in(files / "out.jsonl")  # valid JSONL, with no row twice
    assert set(first.values()) == {1} and 5 <= len(first) < rows
    threaded_server.server.latency = 0.0
    code, _, err = batch("--resume", "--concurrency", "8", *against(threaded_server))
    assert code == 0, err
    assert f"{rows - len(first)} rows this time ({len(first)} already done)" in err
    assert rows_in(files / "out.jsonl") == dict.fromkeys(range(1, rows + 1), 1)
