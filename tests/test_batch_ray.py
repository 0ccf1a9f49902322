"""Batches on a local Ray: the same lines as a local batch, resume, and a worker killed mid-batch.

One small Ray (two CPUs, a small object store) serves the whole module: it takes seconds to
start. The rows go to a real HTTP server on 127.0.0.1, from the Ray workers' own processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flowengine.batch import ray_backend
from flowengine.batch.ray_backend import RaySettings, run_on_ray, worker_environment
from flowengine.batch.runner import Batch, Totals
from flowengine.errors import ConfigError, RunError, UsageError
from flowengine.spec import Budget
from tests.clirunner import invoke
from tests.fakeserver import FakeServer, Reply
from tests.test_batch import by_row, jsonl, prompts, run_batch, served_workflow

ROOT = Path(__file__).resolve().parent.parent
RAY_ARGS = ["--backend", "ray", "--workers", "1", "--concurrency", "2", "--no-cache"]
SLOW_WF = """
version: 1
name: slow
inputs:
  prompt: {type: string}
providers:
  local: {type: offline, latency: 200ms}
models:
  m: {id: m/model, provider: local}
nodes:
  answer: {type: llm, model: m, template: "{{ prompt }}"}
output:
  answer: "{{ answer }}"
"""
WORKER = b"ray::RowWorker"
TIMING = {"run_id", "total_time", "latency_s", "started_at", "duration_s", "queued_s", "ttft_s"}


@pytest.fixture(scope="session")
def ray() -> Iterator[Any]:
    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=100 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray
    ray.shutdown()


def on_ray(batch: Batch, workers: int = 2) -> Any:
    path = Path(batch.workflow.source.file)
    return run_on_ray(batch, RaySettings(path, cache=False, record=False, workers=workers))


def untimed(value: Any) -> Any:
    """``value`` without the fields that differ from run to run (ids, times)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def worker_pids() -> list[int]:
    """The processes of this batch's Ray workers (named so by Ray: ``ray::RowWorker...``)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(WORKER):
                found.append(int(proc.name))
    return found


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def counts(totals: Totals) -> tuple[int, ...]:
    return (totals.succeeded, totals.failed, totals.invalid, totals.calls, totals.tokens)


async def test_ray_writes_the_same_lines_as_a_local_batch(
    ray: Any, tmp_path: Path, server: FakeServer
) -> None:
    rows = jsonl(tmp_path, [*prompts(9), {"question": "no prompt"}])
    wf = served_workflow(tmp_path, server)
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    local_totals = await run_batch(Batch(wf, rows, local, concurrency=3), cache=False)
    ray_totals = await on_ray(Batch(wf, rows, remote, concurrency=3))
    assert untimed(by_row(remote)) == untimed(by_row(local))
    assert by_row(remote)[10]["status"] == "invalid"
    assert counts(ray_totals) == counts(local_totals) == (9, 0, 1, 9, counts(local_totals)[4])
    assert ray_totals.model_rows()["m"]["calls"] == 9
    assert ray_totals.model_rows()["m"]["latency_p50_s"] is not None  # the workers' events


async def test_a_failing_row_is_recorded_and_the_others_go_on(
    ray: Any, tmp_path: Path, server: FakeServer
) -> None:
    server.script(Reply.error(400, "context length exceeded"))  # not retried
    out = tmp_path / "out.jsonl"
    totals = await on_ray(
        Batch(served_workflow(tmp_path, server), jsonl(tmp_path, prompts(6)), out)
    )
    found = by_row(out)
    failed = [r for r in found.values() if r["status"] == "failed"]
    assert sorted(found) == list(range(1, 7)) and len(failed) == 1
    assert "context length exceeded" in failed[0]["error"]["message"]
    assert (totals.failed, totals.succeeded) == (1, 5)


async def test_resume_sends_only_the_rows_not_in_the_output(
    ray: Any, tmp_path: Path, server: FakeServer
) -> None:
    rows = jsonl(tmp_path, prompts(8))
    wf = served_workflow(tmp_path, server)
    out = tmp_path / "out.jsonl"
    await run_batch(Batch(wf, jsonl(tmp_path, prompts(3), "first.jsonl"), out), cache=False)
    server.reset_counters()
    totals = await on_ray(Batch(wf, rows, out, resume=True))
    assert server.count == 5
    assert sorted(by_row(out)) == list(range(1, 9))
    assert (totals.skipped, totals.succeeded) == (3, 5)


async def test_a_worker_killed_mid_batch_loses_no_row_and_writes_none_twice(
    ray: Any, tmp_path: Path, server: FakeServer
) -> None:
    server.latency = 0.3
    out = tmp_path / "out.jsonl"
    batch = Batch(served_workflow(tmp_path, server), jsonl(tmp_path, prompts(16)), out, 2)
    running = asyncio.ensure_future(on_ray(batch))
    while server.in_flight < 4:  # both workers have rows in flight
        await asyncio.sleep(0.01)
    os.kill(worker_pids()[0], signal.SIGKILL)
    totals = await running
    found = by_row(out)
    assert sorted(found) == list(range(1, 17))
    assert all(r["status"] == "succeeded" for r in found.values())
    assert totals.succeeded == 16
    assert server.count > 16  # the killed worker's rows in flight were sent again


async def test_the_batch_budget_is_counted_by_the_driver_across_workers(
    ray: Any, tmp_path: Path, server: FakeServer
) -> None:
    out = tmp_path / "out.jsonl"
    budget = Budget(max_calls=4)
    wf = served_workflow(tmp_path, server)
    totals = await on_ray(Batch(wf, jsonl(tmp_path, prompts(12)), out, 1, budget=budget))
    written = by_row(out)
    # Once 4 calls are counted no row is sent; the one row in flight on the other worker
    # may still finish.
    assert 4 <= len(written) == totals.calls == server.count <= 5
    assert totals.stopped is not None and "max_calls 4 reached" in totals.stopped


def test_the_command_line_stops_on_sigterm_and_resumes_on_ray(
    ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("slow.yaml").write_text(SLOW_WF)
    jsonl(tmp_path, prompts(30))
    args = ["batch", "slow.yaml", "--input", "rows.jsonl", "--output", "out.jsonl", *RAY_ARGS]
    process = subprocess.Popen(
        [sys.executable, "-m", "flowengine", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 120  # Ray starts in seconds, more on a busy machine
    while lines(Path("out.jsonl")) < 3:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the batch wrote nothing"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "\ninterrupted: " in err and "resume with the same command and --resume" in err
    assert "Traceback" not in err and "SIGTERM received" not in err  # Ray's own handler
    first = by_row(Path("out.jsonl"))
    assert 3 <= len(first) < 30
    # The rest, in this process, on the test's Ray: every row once.
    code, _, err = invoke(*args, "--resume")
    assert code == 0, err
    assert f"{30 - len(first)} rows this time ({len(first)} already done)" in err
    assert sorted(by_row(Path("out.jsonl"))) == list(range(1, 31))


def test_without_ray_the_backend_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_repo_root: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` then raises ImportError
    rows, out = jsonl(tmp_path, prompts(2)), tmp_path / "out.jsonl"
    code, _, err = invoke(
        *("batch", "workflows/critique.yaml", "--input", str(rows), "--output", str(out)),
        *("--offline", "--backend", "ray"),
    )
    assert code == 2
    assert "--backend ray needs Ray, an optional extra that is not installed" in err
    assert "pip install 'flowengine[ray]'" in err
    assert not out.exists()


def test_ray_options_need_the_ray_backend(tmp_path: Path, in_repo_root: Path) -> None:
    rows, out = jsonl(tmp_path, prompts(2)), tmp_path / "out.jsonl"
    code, _, err = invoke(
        *("batch", "workflows/critique.yaml", "--input", str(rows), "--output", str(out)),
        *("--offline", "--workers", "3"),
    )
    assert code == 2 and "--workers goes with --backend ray" in err


async def test_a_missing_key_is_said_before_ray_starts(
    tmp_path: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SERVED_KEY", raising=False)
    wf = served_workflow(tmp_path, server, **{"providers.local.api_key_env": "SERVED_KEY"})
    with pytest.raises(ConfigError, match="SERVED_KEY is not set"):
        await on_ray(Batch(wf, jsonl(tmp_path, prompts(1)), tmp_path / "out.jsonl"))


async def test_a_workflow_changed_before_the_workers_start_stops_the_batch(
    ray: Any, tmp_path: Path, server: FakeServer
) -> None:
    wf = served_workflow(tmp_path, server)
    Path(wf.source.file).write_text(wf.source.text + "# edited\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(RunError, match=r"^a Ray worker could not start: \S+ changed since the b"):
        await on_ray(Batch(wf, jsonl(tmp_path, prompts(2)), out))
    assert server.count == 0 and out.read_text() == ""


def test_a_clusters_workers_get_the_keys_the_workflow_needs_and_no_others(
    tmp_path: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("FLOWENGINE_") and n != "FLOWENGINE_DB"]:
        monkeypatch.delenv(name)  # the settings of the process running the tests
    monkeypatch.setenv("SERVED_KEY", "sk-secret")
    monkeypatch.setenv("OTHER_KEY", "sk-other")
    monkeypatch.setenv("FLOWENGINE_REDIS_URL", "redis://127.0.0.1:6379/0")
    wf = served_workflow(tmp_path, server, **{"providers.local.api_key_env": "SERVED_KEY"})
    assert worker_environment(wf) == {
        "FLOWENGINE_REDIS_URL": "redis://127.0.0.1:6379/0",
        "SERVED_KEY": "sk-secret",
    }


def test_an_address_with_no_cluster_is_a_usage_error() -> None:
    # As Ray answers `auto` where no cluster runs (this process may run one: no real call).
    def init(**options: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance.")

    no_cluster = SimpleNamespace(is_initialized=lambda: False, init=init)
    with pytest.raises(UsageError) as caught:
        ray_backend.connect(no_cluster, RaySettings(Path("wf.yaml"), address="auto"))
    assert str(caught.value) == (
        "--address auto: no Ray cluster there (Could not find any running Ray instance.); "
        "start one with `ray start --head`, or leave out --address for a local Ray"
    )
