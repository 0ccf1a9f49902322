"""Streaming: time to first token through ``flowengine run --stream``, and CPU per token.

1. Time to first token. A server in this process streams an answer whose first token it sends
   50 ms after the request arrives (as a model's prefill takes a while), then at once (which
   also counts what the client still does after sending), and its second 300 ms later.
   ``flowengine run --stream`` in a subprocess prints it; this process reads the subprocess's
   stdout. Added latency = when the token is read from the pipe, less when the server wrote
   it (both ``time.monotonic()``, one clock for every process). The same for a hand-written
   aiohttp client in a subprocess that prints each token, as the floor. Target: the engine
   adds at most 5 ms to the server's own first byte.
2. CPU per streamed token, in this process, against a server in a separate process (so the
   CPU is the client's alone): the engine (``Engine.stream``, cache and records off) against a
   hand-written aiohttp SSE reader that parses each event and collects the text. Per token =
   (CPU of a long answer - CPU of a short one) / the tokens between, so per-call costs cancel.

Run by hand (never in CI)::

    .venv/bin/python -m benchmarks.bench_stream            # about a minute
    .venv/bin/python -m benchmarks.bench_stream --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from flowengine import Engine, TokenDelta, Workflow

ROOT = Path(__file__).resolve().parent.parent
TARGET_ADDED_MS = 5.0

WORKFLOW = """\
version: 1
name: bench-stream
inputs:
  prompt: {type: string}
providers:
  local: {type: openai, base_url: BASE, timeout: 30s}
defaults: {provider: local}
models:
  m: {id: bench/model}
nodes:
  answer: {type: llm, model: m, template: "{{ prompt }}"}
"""

# The hand-written client, run as `python -c HANDWRITTEN URL`: prints each token and flushes.
HANDWRITTEN = """
import asyncio, json, sys, aiohttp
async def main(url):
    async with aiohttp.ClientSession() as session:
        payload = {"model": "bench/model", "stream": True,
                   "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(url, json=payload) as response:
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                choices = json.loads(data)["choices"]
                text = choices[0]["delta"].get("content") if choices else None
                if text:
                    sys.stdout.write(text)
                    sys.stdout.flush()
    print()
asyncio.run(main(sys.argv[1]))
"""


def event(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {"object": "chat.completion.chunk", "model": "bench/model"}
    body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]  # type: ignore[assignment]
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}\n\n'


# -- 1. time to first token ------------------------------------------------------------------


class FirstTokenServer:
    """Streams "FIRST" ``wait`` seconds after the request, " second" 300 ms later; keeps when
    FIRST was written."""

    def __init__(self) -> None:
        self.wait = 0.0
        self.written: list[float] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(self.wait)
        await response.write(event("FIRST"))
        self.written.append(time.monotonic())
        await asyncio.sleep(0.3)
        await response.write(event(" second", "stop") + USAGE + b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def added_latency(server: FirstTokenServer, command: list[str]) -> float:
    """Seconds from the server's write of the first token to its arrival on our side of the
    subprocess's stdout."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT
    )
    assert process.stdout is not None
    seen = b""
    while b"FIRST" not in seen:
        more = await process.stdout.read(64)
        if not more:
            raise RuntimeError(f"no first token from {command[:3]}: {seen!r}")
        seen += more
    arrived = time.monotonic()
    await process.communicate()
    return arrived - server.written[-1]


async def first_token(rounds: int) -> bool:
    server = FirstTokenServer()
    await server.start()
    url = f"http://127.0.0.1:{server.port}/v1"
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "wf.yaml"
        path.write_text(WORKFLOW.replace("BASE", url))
        engine_cmd = [sys.executable, "-m", "flowengine", "run", str(path), "--prompt", "hi"]
        engine_cmd += ["--stream", "-q", "--no-cache", "--db", str(Path(folder) / "db")]
        hand_cmd = [sys.executable, "-c", HANDWRITTEN, f"{url}/chat/completions"]
        print(f"time to first token, added to the server's first byte ({rounds} runs each):")
        for wait in (0.05, 0.0):
            server.wait = wait
            engine, hand = [], []
            for _ in range(rounds):
                engine.append(await added_latency(server, engine_cmd) * 1000)
                hand.append(await added_latency(server, hand_cmd) * 1000)
            when = f"{wait * 1000:g} ms after the request" if wait else "at once"
            print(f"  first token {when}:")
            print(
                f"    flowengine run --stream  median {statistics.median(engine):.2f} ms, "
                f"p90 {statistics.quantiles(engine, n=10)[-1]:.2f} ms"
            )
            print(
                f"    hand-written aiohttp     median {statistics.median(hand):.2f} ms, "
                f"p90 {statistics.quantiles(hand, n=10)[-1]:.2f} ms"
            )
            ok = ok and statistics.median(engine) <= TARGET_ADDED_MS
    assert server.runner is not None
    await server.runner.cleanup()
    print(f"  target: at most {TARGET_ADDED_MS:g} ms added (median): {'met' if ok else 'NOT MET'}")
    return ok


# -- 2. CPU per streamed token ---------------------------------------------------------------

SERVER = """
import asyncio, json, sys
from aiohttp import web
sys.path.insert(0, ".")
from benchmarks.bench_stream import event, USAGE

async def chat(request):
    tokens = int((await request.json())["messages"][-1]["content"])
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(tokens):
        await response.write(event(f" tok{i % 10}"))
    await response.write(event(None, "stop") + USAGE + b"data: [DONE]\\n\\n")
    await response.write_eof()
    return response

async def main():
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("listening on", site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def handwritten(session: aiohttp.ClientSession, url: str, tokens: int) -> str:
    """What one would write by hand: lines, ``data:``, JSON, the delta's text."""
    messages = [{"role": "user", "content": str(tokens)}]
    payload = {"model": "bench/model", "stream": True, "messages": messages}
    parts: list[str] = []
    async with session.post(f"{url}/chat/completions", json=payload) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            choices = json.loads(data)["choices"]
            text = choices[0]["delta"].get("content") if choices else None
            if text:
                parts.append(text)
    return "".join(parts)


async def cpu_per_token(url: str, runs: int, long: int, short: int) -> dict[str, float]:
    path = Path(tempfile.mkdtemp()) / "wf.yaml"
    path.write_text(WORKFLOW.replace("BASE", url))
    wf = Workflow.load(path)
    pieces = 0

    def count(item: Any) -> None:
        nonlocal pieces
        pieces += isinstance(item, TokenDelta)

    async def engine_run(engine: Engine, tokens: int) -> None:
        async for item in engine.stream(wf, prompt=str(tokens)):
            count(item)

    async def measure(one: Any, tokens: int) -> float:
        started = time.process_time()
        for _ in range(runs):
            await one(tokens)
        return (time.process_time() - started) / runs

    figures: dict[str, float] = {}
    engine = Engine(cache=False, record=False, environ={})
    async with engine, aiohttp.ClientSession() as session:
        sides = {
            "engine": lambda n: engine_run(engine, n),
            "hand-written": lambda n: handwritten(session, url, n),
        }
        for name, one in sides.items():
            await measure(one, short)  # warm up
            figures[name] = (await measure(one, long) - await measure(one, short)) / (long - short)
    return figures


def cpu(runs: int, long: int, short: int) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[-1])
        figures = asyncio.run(cpu_per_token(f"http://127.0.0.1:{port}/v1", runs, long, short))
    finally:
        server.terminate()
        server.wait(5)
    engine, hand = figures["engine"] * 1e6, figures["hand-written"] * 1e6
    print(f"CPU per streamed token ({long} against {short} tokens, {runs} runs each):")
    print(f"  engine        {engine:.1f} µs")
    print(f"  hand-written  {hand:.1f} µs")
    print(f"  ratio         {engine / hand:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    args = parser.parse_args()
    os.environ.pop("FLOWENGINE_DB", None)
    ok = asyncio.run(first_token(3 if args.quick else 15))
    if args.quick:
        cpu(runs=2, long=500, short=50)
    else:
        cpu(runs=10, long=4000, short=100)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
