"""Provider limits and the response cache shared through a real redis-server, by separate
processes (``tests/shared_worker.py``) calling one real HTTP server that records arrivals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clirunner import invoke
from tests.fakeserver import ThreadedServer, run_in_thread
from tests.redisserver import PASSWORD, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent

FLOW = """\
version: 1
name: shared
inputs:
  prompt: {{type: string}}
providers:
  local:
    base_url: "{url}"
    rate_limit: {{requests: 10, per: 1s}}
    retry: {{attempts: 1}}{extra}
models:
  m: {{id: model-m, provider: local}}
nodes:
  answer: {{type: llm, model: m, template: "{{{{ prompt }}}}"}}
"""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    redis_server.flush()
    monkeypatch.setenv("FLOWENGINE_REDIS_URL", redis_server.url)
    return redis_server.url


def flow(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "shared.yaml"
    path.write_text(FLOW.format(url=url, extra=extra))
    return path


def workers(path: Path, count: int, runs: int, *options: str) -> list[list[dict[str, Any]]]:
    """Start ``count`` worker processes that begin calling together; each one's run lines."""
    barrier = Path(tempfile.mkdtemp(dir=path.parent))
    command = [sys.executable, "-m", "tests.shared_worker", str(path), str(barrier), str(runs)]
    procs = [
        subprocess.Popen(
            [*command, *options],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "FLOWENGINE_DB": str(path.parent / f"worker{n}.db")},
        )
        for n in range(count)
    ]
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < count and time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            break  # one failed to start: its error is below
        time.sleep(0.01)
    (barrier / "go").touch()
    lines = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert PASSWORD not in out + err
        lines.append([json.loads(line) for line in out.splitlines()])
    return lines


def most_in(starts: list[float], window: float) -> int:
    """The most arrivals in any window of ``window`` seconds."""
    ordered = sorted(starts)
    return max(sum(1 for t in ordered[i:] if t < start + window) for i, start in enumerate(ordered))


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    handle = run_in_thread(latency=0.01)
    yield handle
    handle.stop()


def test_two_processes_keep_one_limit_between_them(
    redis_url: str, server: ThreadedServer, tmp_path: Path
) -> None:
    lines = workers(flow(tmp_path, server.base_url), 2, 12, "--no-cache")
    assert [line["status"] for proc in lines for line in proc] == ["succeeded"] * 24
    srv = server.server
    assert srv.count == 24
    # At most 10 starts in any second, though each process alone may start 10: the limit is
    # one. And most of it is used: more than 8 in the busiest second.
    assert 8 < most_in(srv.starts, 1.0) <= 10, sorted(srv.starts)
    # The two processes called at the same time (each prompt starts with its process id).
    by_process: dict[str, list[float]] = {}
    for body, start in zip(srv.requests, srv.starts, strict=True):
        pid = body["messages"][-1]["content"].split("-")[0]
        by_process.setdefault(pid, []).append(start)
    first, second = by_process.values()
    assert min(first) < max(second) and min(second) < max(first)


def test_identical_calls_in_two_processes_make_one_request(redis_url: str, tmp_path: Path) -> None:
    handle = run_in_thread(latency=0.5)
    try:
        lines = workers(flow(tmp_path, handle.base_url), 2, 3, "--same")
        assert handle.server.count == 1
    finally:
        handle.stop()
    runs = [line for proc in lines for line in proc]
    assert [line["status"] for line in runs] == ["succeeded"] * 6
    assert sum(line["cached"] for line in runs) == 5  # every call but the one that was made


def test_an_answer_cached_by_one_process_serves_another(
    redis_url: str, server: ThreadedServer, tmp_path: Path
) -> None:
    path = flow(tmp_path, server.base_url)
    first = workers(path, 1, 1, "--same")
    second = workers(path, 1, 1, "--same")
    assert server.server.count == 1
    assert first[0][0]["cached"] == 0
    assert second[0][0] == {"status": "succeeded", "cached": 1, "error": None}


def test_cache_stats_and_clear_on_redis_hide_the_password(
    redis_url: str, server: ThreadedServer, tmp_path: Path
) -> None:
    path = str(flow(tmp_path, server.base_url))
    code, out, err = invoke("run", path, "--prompt", "hello", "-v")
    assert code == 0, err
    assert PASSWORD not in out + err
    code, out, err = invoke("cache", "stats")
    assert code == 0, err
    shown = redis_url.replace(PASSWORD, "***")
    assert out.splitlines()[:2] == [f"cache: {shown}", "entries: 1"]
    assert "  model-m: 1" in out.splitlines()
    code, out, err = invoke("cache", "clear")
    assert (code, err.strip()) == (0, "removed 1 cached response")
    assert PASSWORD not in out + err
    assert invoke("cache", "stats")[1].splitlines()[1] == "entries: 0"


def test_an_unreachable_redis_stops_the_run_before_any_call(
    server: ThreadedServer, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://default:{PASSWORD}@127.0.0.1:{port}/0"
    path = str(flow(tmp_path, server.base_url))
    code, out, err = invoke("run", path, "--prompt", "hi", env={"FLOWENGINE_REDIS_URL": url})
    assert code == 2
    assert server.server.count == 0
    assert PASSWORD not in out + err
    assert err.count("\n") == 1  # one line
    assert err.startswith(
        f"flowengine: error: cannot use Redis at redis://default:***@127.0.0.1:{port}/0 "
        "(FLOWENGINE_REDIS_URL): "
    )
    assert f"Error 111 connecting to 127.0.0.1:{port}" in err
    assert err.rstrip().endswith(
        "; start Redis there, or correct FLOWENGINE_REDIS_URL (unset FLOWENGINE_REDIS_URL to "
        "keep limits and cache in each process)"
    )


def test_a_wrong_password_is_refused_without_showing_it(
    redis_server: RedisServer, server: ThreadedServer, tmp_path: Path
) -> None:
    url = redis_server.url.replace(PASSWORD, "not-the-password")
    path = str(flow(tmp_path, server.base_url))
    code, out, err = invoke("run", path, "--prompt", "hi", env={"FLOWENGINE_REDIS_URL": url})
    assert code == 2
    assert server.server.count == 0
    assert "not-the-password" not in out + err
    assert f"cannot use Redis at redis://default:***@127.0.0.1:{redis_server.port}/0" in err


async def test_redis_gone_mid_run_fails_calls_rather_than_starting_them_unlimited(
    tmp_path: Path,
) -> None:
    from flowengine import Engine, Workflow
    from tests.fakeserver import FakeServer

    with RedisServer(tmp_path, password=None) as redis:
        async with FakeServer() as srv:
            wf = Workflow.load(flow(tmp_path, srv.base_url))
            env = {"FLOWENGINE_REDIS_URL": redis.url}
            async with Engine(environ=env, cache=False, record=False) as engine:
                assert (await engine.run(wf, prompt="one")).status == "succeeded"
                redis.stop()
                result = await engine.run(wf, prompt="two")
    assert srv.count == 1
    assert result.status == "failed"
    error = result.nodes["answer"].error
    assert error is not None and error.type == "limits"
    assert error.message.startswith(
        f"the shared rate limit cannot be checked: Redis at {redis.url} (FLOWENGINE_REDIS_URL): "
    )


async def test_a_providers_redis_url_keeps_its_limit_there(tmp_path: Path) -> None:
    import redis.asyncio

    from flowengine import Engine, Workflow
    from tests.fakeserver import FakeServer

    with RedisServer(tmp_path, password=None) as own:
        async with FakeServer() as srv:
            path = flow(tmp_path, srv.base_url, f"\n    redis_url: {own.url}")
            async with Engine(environ={}, cache=False, record=False) as engine:
                result = await engine.run(Workflow.load(path), prompt="hi")
            assert result.status == "succeeded"
            async with redis.asyncio.Redis.from_url(own.url) as client:
                keys = await client.keys("flowengine:limit:*")
    assert keys == [f"flowengine:limit:{srv.base_url}::10/1s:1".encode()]


async def test_entries_have_the_ttl_asked_for_and_sqlite_can_keep_the_cache(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    import redis.asyncio

    from flowengine import Engine, Workflow
    from tests.fakeserver import FakeServer

    redis_server.flush()
    url = redis_server.url
    async with FakeServer() as srv:
        wf = Workflow.load(flow(tmp_path, srv.base_url))
        env = {"FLOWENGINE_REDIS_URL": url, "FLOWENGINE_CACHE_TTL": "1h"}
        async with Engine(environ=env, record=False) as engine:
            await engine.run(wf, prompt="kept an hour")
        env = {"FLOWENGINE_REDIS_URL": url, "FLOWENGINE_CACHE": "sqlite"}
        async with Engine(environ=env, record=False) as engine:
            await engine.run(wf, prompt="kept here")
            again = await engine.run(wf, prompt="kept here")
    assert again.metrics.models["m"].cached == 1  # from this machine's SQLite file
    async with redis.asyncio.Redis.from_url(url) as client:
        keys = await client.keys("flowengine:cache:*")
        assert len(keys) == 1  # the first engine's answer only
        assert 3590 * 1000 < await client.pttl(keys[0]) <= 3600 * 1000
        assert len(await client.keys("flowengine:limit:*")) == 1  # both engines' limit


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FLOWENGINE_CACHE": "redis"},
            "FLOWENGINE_CACHE=redis, but FLOWENGINE_REDIS_URL is not set; set "
            "FLOWENGINE_REDIS_URL=redis://host:6379/0, or FLOWENGINE_CACHE=sqlite",
        ),
        (
            {"FLOWENGINE_REDIS_URL": "http://u:pw@host:6379"},
            "FLOWENGINE_REDIS_URL: 'http://u:***@host:6379' is not a Redis URL; use "
            "redis://[user:password@]host:port/db, rediss://... (TLS) or unix:///path",
        ),
        (
            {"FLOWENGINE_REDIS_URL": "redis://host", "FLOWENGINE_CACHE_TTL": "soon"},
            "FLOWENGINE_CACHE_TTL='soon' is not a duration; use a duration such as 30m, 24h",
        ),
        (
            {"FLOWENGINE_REDIS_URL": "redis://host", "FLOWENGINE_CACHE": "memcached"},
            "FLOWENGINE_CACHE='memcached' is not a cache backend; use redis or sqlite",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused(env: dict[str, str], message: str) -> None:
    from flowengine import Engine
    from flowengine.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        Engine(environ=env)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://alice:s3cret@10.0.0.5:6379/0", "redis://alice:***@10.0.0.5:6379/0"),
        ("redis://:s3cret@host:6379", "redis://:***@host:6379"),
        ("rediss://alice@host:6380/1", "rediss://alice@host:6380/1"),
        ("redis://host/0?password=s3cret&db=2", "redis://host/0?password=***&db=2"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    from flowengine.store.redis_link import redact

    assert redact(url) == shown


async def test_the_window_keeps_both_rules_for_two_limiters_at_once(
    redis_server: RedisServer,
) -> None:
    """Two windows on one key (two processes' worth): at most 6 starts in any 0.3 s, at most
    3 (the burst) in any 0.15 s, and the first 3 at once."""
    import asyncio

    from flowengine.run.shared_window import SharedWindow
    from flowengine.spec import Rate
    from flowengine.store.redis_link import RedisLink
    from tests.test_resilience import max_in_window

    redis_server.flush()
    link = RedisLink(redis_server.url, "test")
    link.join()
    rate = Rate(requests=6, per=0.3, burst=3)
    windows = [SharedWindow(link, "flowengine:limit:test", rate, 0.3 * 1.02) for _ in range(2)]
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def start(window: SharedWindow) -> None:
        await window.acquire()
        starts.append(loop.time())

    began = loop.time()
    try:
        await asyncio.gather(*(start(windows[n % 2]) for n in range(18)))
    finally:
        await link.leave()
    assert max_in_window(starts, 0.3) <= 6
    assert max_in_window(starts, 0.15) <= 3
    assert sorted(starts)[2] - began < 0.1
    assert max(starts) - began < 0.3 * 1.02 * 3 + 0.2  # 18 starts: three windows, not more
