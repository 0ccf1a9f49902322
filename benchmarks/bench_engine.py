"""What the engine costs over hand-written asyncio code, against a local mock server.

Both clients run the same DAG -- the selector picks a model, it answers, five other models
critique the answer at once, the selected model writes a synthesis: 1 selector call and 7
model calls per run -- against ``benchmarks/mockserver.py``, which runs in a separate process
so that this process's CPU time is the client's alone.

- Scenario A (zero latency): client CPU time per call, engine against the baseline, over many
  concurrent runs. This is the engine's own overhead: scheduling, templates, results, retries.
- Scenario B (fixed latency per call): median wall time of one run. Calls dominate it, so the
  engine should add next to nothing.
- Memory: peak resident memory of a process that keeps 100 runs in flight, engine against
  baseline, each side in a process of its own.

By default the engine runs bare (no response cache, no run records), which measures its call
path; ``--defaults`` runs it as every user does, with the SQLite cache and run records on (every
prompt distinct, so every call is a cache miss that is then written).

Run by hand (never in CI)::

    .venv/bin/python -m benchmarks.bench_engine                # full: ~2-3 minutes
    .venv/bin/python -m benchmarks.bench_engine --defaults     # cache and run records on
    .venv/bin/python -m benchmarks.bench_engine --quick        # smoke run: a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.handwritten import BY_WEIGHT, PARAMS, chat, select

HERE = Path(__file__).resolve().parent
WORKFLOW = HERE / "workflow.yaml"
CALLS_PER_RUN = 8  # 1 selector call + primary + 5 critiques + synthesis
CRITICAL_PATH = 4  # selector -> primary -> critiques (at once) -> synthesis

TARGET_CPU_RATIO = 1.3  # bare engine; 1.4 with the defaults (cache and run records on)
TARGET_CPU_RATIO_DEFAULTS = 1.4
TARGET_WALL_RATIO = 1.03
TARGET_MEMORY_RATIO = 1.5


# -- the mock server, in its own process --------------------------------------------------------


class ServerProcess:
    """``benchmarks.mockserver`` as a child process, with its CPU time read from /proc."""

    def __init__(self, latency: float) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.mockserver",
                "--port",
                "0",
                "--latency",
                f"{latency}",
            ],
            cwd=HERE.parent,
            stdout=subprocess.PIPE,
            # Not this process's stderr: a server that inherited it would hold it open after
            # this process died, and count_instructions reads it until every writer closes it.
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.process.kill()
            said = line + self.process.stdout.read()
            raise RuntimeError(f"the mock server did not start:\n{said[-2000:]}")
        self.port = int(line.split()[-1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def selector_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (Linux), or NaN where /proc is absent."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        # After the command name: state is field 3, so utime and stime (14, 15) are at 11, 12.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


# -- the hand-written baseline ------------------------------------------------------------------

# The same models, weights and prompts as workflow.yaml, the way one would write them by hand
# (benchmarks/handwritten.py).


def primary_prompt(prompt: str) -> str:
    return (
        "You are answering a user's question directly and carefully.\n\n"
        f"Question:\n{prompt}\n\n"
        "Lead with the answer, then the reasoning that supports it. Do not pad."
    )


def critique_prompt(prompt: str, primary: dict[str, Any]) -> str:
    return (
        f"You are a rigorous reviewer. Another model ({primary['model']}) answered the question "
        f"below.\n\nQuestion:\n{prompt}\n\nAnswer under review:\n<answer>\n"
        f"{primary['content']}\n</answer>\n\n"
        "List errors, omissions and unclear passages, then a one-line verdict."
    )


def synthesis_prompt(prompt: str, primary: dict[str, Any], critiques: list[dict[str, Any]]) -> str:
    reviews = "".join(
        f'<review by="{c["model"]}">\n{c["content"]}\n</review>\n'
        for c in critiques
        if c["success"]
    )
    return (
        "You are writing the final answer to a question, drawing on a draft and its reviews.\n\n"
        f"Question:\n{prompt}\n\nDraft:\n{primary['content']}\n{reviews}"
        "Write the single best answer. Do not mention the draft or the reviews."
    )


class Baseline:
    """The DAG in plain aiohttp: one session, retries on transient errors, checked replies."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, selector_url: str) -> None:
        self.session = session
        self.chat_url = f"{base_url}/chat/completions"
        self.selector_url = selector_url
        self.timeout = aiohttp.ClientTimeout(total=30)
        self.selector_timeout = aiohttp.ClientTimeout(total=5)

    async def run(self, prompt: str) -> dict[str, Any]:
        started = time.perf_counter()
        selected, confidence = await self.select(prompt)
        primary = await self.chat(selected, primary_prompt(prompt))
        if not primary["success"]:
            raise RuntimeError(f"primary failed: {primary['error']}")
        others = [alias for alias in BY_WEIGHT if alias != selected][:5]
        critique = critique_prompt(prompt, primary)
        critiques = list(await asyncio.gather(*(self.chat(alias, critique) for alias in others)))
        if not any(c["success"] for c in critiques):
            raise RuntimeError("every critique failed")
        synthesis = await self.chat(selected, synthesis_prompt(prompt, primary, critiques))
        calls = [primary, *critiques, synthesis]
        return {
            "primary_response": primary,
            "critiques": critiques,
            "final_synthesis": synthesis,
            "metadata": {
                "total_time": time.perf_counter() - started,
                "model_selector_confidence": confidence,
                "tokens": sum(c["usage"].get("total_tokens") or 0 for c in calls),
            },
        }

    async def select(self, prompt: str) -> tuple[str, float | None]:
        return await select(self.session, self.selector_url, prompt, self.selector_timeout)

    async def chat(self, alias: str, content: str) -> dict[str, Any]:
        return await chat(self.session, self.chat_url, alias, content, PARAMS, timeout=self.timeout)


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Measure:
    """One side's batch of runs: client CPU, wall time, each run's duration, server CPU."""

    runs: int
    cpu_s: float
    wall_s: float
    server_cpu_s: float
    durations: list[float] = field(repr=False)
    failures: int = 0

    @property
    def cpu_per_call_us(self) -> float:
        return self.cpu_s / (self.runs * CALLS_PER_RUN) * 1e6

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.wall_s

    @property
    def server_load(self) -> float:
        """The server's CPU use during the batch, as a fraction of one core."""
        return self.server_cpu_s / self.wall_s


async def drive(
    one: Callable[[int], Awaitable[bool]], runs: int, concurrency: int, server: ServerProcess
) -> Measure:
    """``runs`` runs of ``one(i)`` (True when it succeeded), ``concurrency`` at a time."""
    durations: list[float] = []
    failures = 0
    counter = iter(range(runs))

    async def worker() -> None:
        nonlocal failures
        for i in counter:
            started = time.perf_counter()
            if not await one(i):
                failures += 1
            durations.append(time.perf_counter() - started)

    gc.collect()
    server_before = server.cpu_seconds()
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    return Measure(runs, cpu, wall, server.cpu_seconds() - server_before, durations, failures)


class Sides:
    """The engine and the baseline, each with one shared HTTP session, on one server."""

    def __init__(self, server: ServerProcess, defaults: bool = False) -> None:
        from flowengine import Engine, Workflow  # here: the baseline's process never imports it

        self.server = server
        overrides = {
            "providers.local.base_url": server.base_url,
            "selectors.ml.url": server.selector_url,
        }
        self.workflow = Workflow.load(WORKFLOW, overrides=overrides)
        self.folder = tempfile.TemporaryDirectory(prefix="bench-engine-")
        if defaults:
            # As users run it: response cache and run records in a SQLite file.
            self.engine = Engine(environ={}, db=Path(self.folder.name) / "bench.db")
        else:
            # Bare: the benchmark measures the engine's call path, not the SQLite store.
            self.engine = Engine(environ={}, cache=False, record=False)
        self.prompts = itertools.count()  # every run's prompt is new: a cache miss
        # No per-host cap: 100 runs with 5 critiques each are up to 500 requests at once.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.baseline = Baseline(self.session, server.base_url, server.selector_url)

    async def engine_run(self, i: int) -> bool:
        prompt = f"Explain quantum computing ({next(self.prompts)})"
        result = await self.engine.run(self.workflow, prompt=prompt)
        return result.status == "succeeded"

    async def baseline_run(self, i: int) -> bool:
        try:
            await self.baseline.run(f"Explain quantum computing ({i})")
        except RuntimeError:
            return False
        return True

    async def measure(self, side: str, runs: int, concurrency: int) -> Measure:
        one = self.engine_run if side == "engine" else self.baseline_run
        return await drive(one, runs, concurrency, self.server)

    async def rounds(
        self, runs: int, concurrency: int, rounds: int, warmup: int
    ) -> dict[str, list[Measure]]:
        """Warm both sides up, then ``rounds`` rounds, alternating which side goes first."""
        for side in ("engine", "baseline"):
            await self.measure(side, warmup, min(concurrency, warmup))
        out: dict[str, list[Measure]] = {"engine": [], "baseline": []}
        for number in range(rounds):
            order = ("engine", "baseline") if number % 2 == 0 else ("baseline", "engine")
            for side in order:
                out[side].append(await self.measure(side, runs, concurrency))
        return out

    async def close(self) -> None:
        await self.engine.aclose()
        await self.session.close()
        self.folder.cleanup()


# -- the scenarios ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio <= target else "FAIL"


def check_server(results: dict[str, list[Measure]]) -> list[str]:
    """Warnings when the server was busy enough to slow the client down."""
    load = max(m.server_load for ms in results.values() for m in ms)
    failures = sum(m.failures for ms in results.values() for m in ms)
    notes = [f"server CPU: at most {load:.0%} of one core"]
    if load > 0.7:
        notes.append("WARNING: the server was busy; figures may measure it, not the client")
    if failures:
        notes.append(f"WARNING: {failures} runs failed; the figures are not valid")
    return notes


def judge(
    results: dict[str, list[Measure]],
    figure: Callable[[Measure], float],
    what: str,
    target: float,
    digits: int,
) -> bool:
    """Print ``figure``'s per-round ratios, engine / baseline, their median against ``target``,
    and the server's notes; True when the target is met and every run succeeded."""
    # Each round measures the two sides back to back, so a round's ratio is immune to the
    # machine's drift from one round to the next; the median of those ratios is the figure.
    per_round = [
        figure(e) / figure(b) for e, b in zip(results["engine"], results["baseline"], strict=True)
    ]
    ratio = median(per_round)
    print(f"  per-round ratios: {' '.join(f'{r:.{digits}f}' for r in per_round)}")
    print(
        f"  {what}, engine / baseline (median of rounds): {ratio:.{digits}f} "
        f"(target <= {target}) {verdict(ratio, target)}"
    )
    for note in check_server(results):
        print(f"  {note}")
    return ratio <= target and not any(m.failures for ms in results.values() for m in ms)


async def scenario_a(args: argparse.Namespace) -> bool:
    server = ServerProcess(latency=0.0)
    sides = Sides(server, args.defaults)
    try:
        results = await sides.rounds(args.runs, args.concurrency, args.rounds, args.warmup)
    finally:
        await sides.close()
        server.stop()
    print(
        f"\nScenario A: zero latency, {args.runs} runs x {args.rounds} rounds, "
        f"{args.concurrency} runs in flight, {CALLS_PER_RUN} HTTP calls per run "
        f"(1 selector + 7 model); engine {mode(args)}"
    )
    print(
        f"  {'':10} {'CPU us/call':>12} {'CPU ms/run':>11} {'wall s':>8} {'runs/s':>8} "
        f"{'calls/s':>8}   per round (CPU us/call)"
    )
    for side, measures in results.items():
        cpu = median([m.cpu_per_call_us for m in measures])
        wall = median([m.wall_s for m in measures])
        rate = median([m.runs_per_s for m in measures])
        rounds = " ".join(f"{m.cpu_per_call_us:.0f}" for m in measures)
        print(
            f"  {side:10} {cpu:12.0f} {cpu * CALLS_PER_RUN / 1000:11.2f} "
            f"{wall:8.2f} {rate:8.0f} {rate * CALLS_PER_RUN:8.0f}   {rounds}"
        )
    target = TARGET_CPU_RATIO_DEFAULTS if args.defaults else TARGET_CPU_RATIO
    return judge(results, lambda m: m.cpu_per_call_us, "CPU per call", target, 2)


def mode(args: argparse.Namespace) -> str:
    return "with cache and run records" if args.defaults else "bare (no cache, no run records)"


async def scenario_b(args: argparse.Namespace) -> bool:
    server = ServerProcess(latency=args.latency)
    sides = Sides(server, args.defaults)
    try:
        warmup = min(args.warmup, args.latency_runs)
        results = await sides.rounds(
            args.latency_runs, args.latency_concurrency, args.rounds, warmup
        )
    finally:
        await sides.close()
        server.stop()
    ms = args.latency * 1000
    print(
        f"\nScenario B: {ms:g} ms per call (selector included), {args.latency_runs} runs x "
        f"{args.rounds} rounds, {args.latency_concurrency} runs in flight; engine {mode(args)}"
    )
    print(
        f"  critical path: selector -> primary -> 5 critiques at once -> synthesis = "
        f"{CRITICAL_PATH} calls in sequence = {CRITICAL_PATH * ms:g} ms at least"
    )
    print(f"  {'':10} {'median run ms':>14} {'p95 run ms':>11} {'over path ms':>13}")
    for side, measures in results.items():
        middle = median([median(m.durations) for m in measures])
        p95 = median([statistics.quantiles(m.durations, n=20)[-1] for m in measures])
        over = middle * 1000 - CRITICAL_PATH * ms
        print(f"  {side:10} {middle * 1000:14.1f} {p95 * 1000:11.1f} {over:13.1f}")
    return judge(results, lambda m: median(m.durations), "median run time", TARGET_WALL_RATIO, 3)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Engine overhead against a hand-written aiohttp client, on a mock server."
    )
    parser.add_argument("--scenario", choices=["a", "b", "memory", "all"], default="all")
    parser.add_argument(
        "--defaults", action="store_true", help="engine with response cache and run records on"
    )
    parser.add_argument("--memory-side", choices=["engine", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=2000, help="scenario A runs per round")
    parser.add_argument("--concurrency", type=int, default=100, help="scenario A runs in flight")
    parser.add_argument("--latency", type=float, default=0.1, help="scenario B seconds per call")
    parser.add_argument("--latency-runs", type=int, default=200, help="scenario B runs per round")
    parser.add_argument(
        "--latency-concurrency", type=int, default=100, help="scenario B runs in flight"
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds per side; medians shown")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured runs per side first")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few runs, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.latency_runs, args.rounds, args.warmup = 200, 50, 1, 20
    return args


async def main_async(args: argparse.Namespace) -> bool:
    ok = True
    if args.scenario in ("a", "all"):
        ok = await scenario_a(args) and ok
    if args.scenario in ("b", "all"):
        ok = await scenario_b(args) and ok
    if args.scenario in ("memory", "all"):
        ok = scenario_memory(args) and ok
    return ok


MEMORY_RUNS = 1000
MEMORY_IN_FLIGHT = 100
MEMORY_LATENCY = 0.05  # long enough that 100 runs really are in flight at once


def scenario_memory(args: argparse.Namespace) -> bool:
    """Each side in a fresh process: imports and all, as a user's process has them."""
    peaks = {}
    for side in ("engine", "baseline"):
        command = [sys.executable, "-m", "benchmarks.bench_engine", "--memory-side", side]
        if args.defaults:
            command.append("--defaults")
        done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True, check=True)
        peaks[side] = float(done.stdout.split()[-1])
    ratio = peaks["engine"] / peaks["baseline"]
    print(
        f"\nMemory: {MEMORY_RUNS} runs, {MEMORY_IN_FLIGHT} in flight, {MEMORY_LATENCY * 1000:g} ms "
        f"per call; engine {mode(args)}"
    )
    for side, peak in peaks.items():
        print(f"  {side:10} peak RSS {peak:6.1f} MB")
    verdict_text = verdict(ratio, TARGET_MEMORY_RATIO)
    print(
        f"  peak memory, engine / baseline: {ratio:.2f} (target <= {TARGET_MEMORY_RATIO}) "
        f"{verdict_text}"
    )
    return ratio <= TARGET_MEMORY_RATIO


async def memory_side(side: str, defaults: bool) -> float:
    """Peak RSS in MB of this process after MEMORY_RUNS runs of ``side``."""
    server = ServerProcess(latency=MEMORY_LATENCY)
    try:
        if side == "engine":
            sides = Sides(server, defaults)
            await sides.measure("engine", MEMORY_RUNS, MEMORY_IN_FLIGHT)
            await sides.close()
        else:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            baseline = Baseline(session, server.base_url, server.selector_url)

            async def one(i: int) -> bool:
                await baseline.run(f"Explain quantum computing ({i})")
                return True

            await drive(one, MEMORY_RUNS, MEMORY_IN_FLIGHT, server)
            await session.close()
    finally:
        server.stop()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_side:
        print(f"{asyncio.run(memory_side(args.memory_side, args.defaults)):.1f}")
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, workflow {WORKFLOW.name}")
    ok = asyncio.run(main_async(args))
    print("\nPASS" if ok else "\nFAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
