"""`flowengine serve`: requests per second through the OpenAI-compatible endpoint, and the
latency the server adds over calling the engine in the same process.

The server is the real command, ``flowengine serve --offline --port 0``, in a process of its
own, with its defaults on (response cache and run records, in a temporary database): as users
run it. The clients are aiohttp coroutines in this process (so the server's event loop is the
server's alone): each posts a non-streamed chat completion, reads the whole answer and posts
the next, for ``--seconds``. Two workflows: ``one`` (one llm node) and the shipped
``critique`` (a select, a primary call, five critiques at once). The offline provider answers
at once, so what is measured is the server and the engine, not a model.

Added latency: the median time of one request at a time through the server, less the median
time of ``Engine.run`` in this process (cache and records on, offline) for the same workflow.

Reference: a LiteLLM proxy answered about 85 non-streamed requests per second at 10
concurrent clients on this kind of machine; the target is five times that, 425/s, for the
one-node workflow.

Run by hand from the project root (never in CI)::

    .venv/bin/python -m benchmarks.bench_serve             # about a minute
    .venv/bin/python -m benchmarks.bench_serve --seconds 3 # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from flowengine import Engine, Workflow

ROOT = Path(__file__).resolve().parent.parent
TARGET_RPS = 425.0

ONE = """\
version: 1
name: one
inputs:
  prompt: {type: string}
models:
  m: {id: bench/model}
nodes:
  answer: {type: llm, model: m, template: "{{ prompt }}"}
"""


def workflows(folder: Path) -> Path:
    """A folder with the one-node workflow and the shipped critique (with its prompts)."""
    (folder / "workflows").mkdir()
    (folder / "workflows" / "one.yaml").write_text(ONE)
    shutil.copy(ROOT / "workflows" / "critique.yaml", folder / "workflows")
    shutil.copytree(ROOT / "prompts", folder / "prompts")
    return folder / "workflows"


def start_server(folder: Path, db: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "flowengine", "serve", "--offline", "--port", "0", "--db", str(db)],
        cwd=folder.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    found = re.search(r"(http://127\.0\.0\.1:\d+)", process.stderr.readline())
    assert found is not None, "serve did not start"
    return process, found.group(1)


async def load(url: str, model: str, clients: int, seconds: float) -> tuple[int, list[float]]:
    """``clients`` clients posting for ``seconds``: requests answered, and each one's time."""
    body = {"model": model, "messages": [{"role": "user", "content": "Explain quantum computing"}]}
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(n: int) -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                # A distinct prompt per request, as real traffic has.
                body["messages"][0]["content"] = f"Explain quantum computing ({n}, {began})"  # type: ignore[index]
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    assert response.status == 200, await response.text()
                    await response.read()
                times.append(time.perf_counter() - began)

        await asyncio.gather(*(client(n) for n in range(clients)))
    return len(times), times


async def in_process(path: Path, db: Path, runs: int) -> list[float]:
    """The time of ``Engine.run`` one run at a time, cache and records on, offline."""
    wf = Workflow.load(path)
    times = []
    async with Engine(offline=True, db=db) as engine:
        for n in range(runs):
            began = time.perf_counter()
            await engine.run(wf, prompt=f"Explain quantum computing ({n}, {began})")
            times.append(time.perf_counter() - began)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def main(seconds: float) -> int:
    met = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = workflows(Path(tmp))
        process, url = start_server(folder, Path(tmp) / "serve.db")
        try:
            await load(url, "one", 10, 1.0)  # warm up: imports, templates, the database
            print(f"flowengine serve at {url}; clients: aiohttp in another process\n")
            print(f"{'workflow':<10}{'clients':>8}{'req/s':>10}{'p50':>12}{'p95':>12}")
            for model in ("one", "critique"):
                for clients in (10, 100):
                    done, times = await load(url, model, clients, seconds)
                    rps = done / seconds
                    p95 = statistics.quantiles(times, n=20)[-1]
                    print(
                        f"{model:<10}{clients:>8}{rps:>10.0f}"
                        f"{ms(statistics.median(times)):>12}{ms(p95):>12}"
                    )
                    if model == "one" and clients == 10:
                        met = rps >= TARGET_RPS
            print("\nlatency added by the server, one request at a time (medians):")
            for model in ("one", "critique"):
                _, served = await load(url, model, 1, seconds / 2)
                direct = await in_process(folder / f"{model}.yaml", Path(tmp) / "direct.db", 300)
                added = statistics.median(served) - statistics.median(direct)
                print(
                    f"  {model:<10} through serve {ms(statistics.median(served))}, "
                    f"Engine.run {ms(statistics.median(direct))}: adds {ms(added)}"
                )
        finally:
            process.terminate()
            process.communicate(timeout=30)
    print(f"\ntarget: {TARGET_RPS:.0f} req/s for `one` at 10 clients: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    sys.exit(asyncio.run(main(parser.parse_args().seconds)))
