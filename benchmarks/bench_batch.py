"""The batch runner (``flowengine batch``) under load, against a local mock server.

Every scenario runs the shipped ``workflows/full.yaml`` -- the selector picks a model, it
answers, five other models critique the answer (three at a time), the three highest-weight
models analyse the answer and its critiques, the selected model writes the synthesis: 1 selector
call and 10 model calls per row -- through :class:`flowengine.batch.runner.Batch` over a JSONL file,
with the response cache and run records off. The server is ``benchmarks/mockserver.py`` in a
separate process, so this process's CPU time and memory are the client's alone.

- A. Throughput at zero latency: the batch runner against a hand-written asyncio batch (the
  same rows, pipeline, concurrency and output file), in alternating order; target: engine
  rows/s >= 0.8x the hand-written version's (median of per-round ratios).
- B. A provider rate limit of 50 requests/s: the rate the server sees is >= 95% of the limit
  and never above it in any one-second sliding window.
- C. 10,000 rows with 1,000 in flight: peak RSS under 300 MB, and RSS flat as rows finish.
- D. 10% of model calls answered 5xx or 429: every row ends in the output exactly once; the
  extra calls the retries cost are reported.

Run by hand (never in CI), from the project root::

    .venv/bin/python -m benchmarks.bench_batch             # everything: a few minutes
    .venv/bin/python -m benchmarks.bench_batch --quick     # smoke run
    .venv/bin/python -m benchmarks.bench_batch --only B

Each scenario runs in its own child process (unless ``--only`` picks one), so that one
scenario's heap does not show up in another's memory figures. Exit status 0 when every target
is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.handwritten import BY_WEIGHT, PARAMS, chat, select
from flowengine import Engine, Workflow
from flowengine.batch.rows import Row
from flowengine.batch.runner import Batch
from flowengine.run.gc_settings import many_runs_gc

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "workflows" / "full.yaml"
MODEL_CALLS_PER_ROW = 10  # primary + 5 critiques + 3 analyses + synthesis
CALLS_PER_ROW = MODEL_CALLS_PER_ROW + 1  # and the selector
#: The engine needs a key for the built-in provider; the mock server ignores it.
ENVIRON = {"OPENROUTER_API_KEY": "mock-key"}

TARGET_THROUGHPUT_RATIO = 0.8  # A: engine rows/s over hand-written rows/s, at least
TARGET_RATE_SHARE = 0.95  # B: achieved rate over the limit, at least
TARGET_PEAK_MB = 300.0  # C: peak RSS, below
TARGET_GROWTH = 0.05  # C: RSS growth from 30% to 90% of rows done, relative, at most


# -- the mock server, in its own process --------------------------------------------------------


class Server:
    """``benchmarks.mockserver`` as a child process; CPU time from /proc, counts from /stats."""

    def __init__(
        self, latency: float = 0.0, *, fail_rate: float = 0.0, timestamps: bool = False
    ) -> None:
        command = [sys.executable, "-m", "benchmarks.mockserver", "--port", "0"]
        command += ["--latency", f"{latency}", "--fail-rate", f"{fail_rate}"]
        if timestamps:
            command.append("--timestamps")
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"the mock server did not start: {line!r}")
        self.port = int(line.split()[-1])
        self.root = f"http://127.0.0.1:{self.port}"

    def overrides(self) -> dict[str, Any]:
        """Point the workflow's provider and selector at this server."""
        return {
            "providers.openrouter.base_url": f"{self.root}/v1",
            "selectors.ml.url": f"{self.root}/predict",
        }

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (Linux), or NaN where /proc is absent."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stats(self, reset: bool = False) -> dict[str, Any]:
        """Requests served since the last reset: ``chat``, ``predict``, ``failed``, ``times``."""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.root}/stats") as response:
                body: dict[str, Any] = await response.json()
            if reset:
                async with session.post(f"{self.root}/stats/reset") as response:
                    await response.read()
        return body

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


@asynccontextmanager
async def running(server: Server) -> AsyncIterator[Server]:
    try:
        yield server
    finally:
        server.stop()


# -- rows, output checks, memory ----------------------------------------------------------------


def write_rows(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(1, rows + 1):
            handle.write(json.dumps({"id": i, "prompt": f"Explain quantum computing ({i})"}))
            handle.write("\n")


@dataclass
class OutputCheck:
    """What an output file holds: each row number how often, and the statuses."""

    lines: int
    missing: int
    duplicated: int
    statuses: Counter[str]

    @property
    def exact(self) -> bool:
        return not self.missing and not self.duplicated

    def describe(self) -> str:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.lines} lines, {self.missing} rows missing, {self.duplicated} duplicated "
            f"({statuses})"
        )


def check_output(path: Path, rows: int) -> OutputCheck:
    seen: Counter[int] = Counter()
    statuses: Counter[str] = Counter()
    lines = 0
    with path.open("rb") as handle:
        for raw in handle:
            record = json.loads(raw)
            lines += 1
            seen[int(record["row"])] += 1
            statuses[str(record["status"])] += 1
    missing = sum(1 for i in range(1, rows + 1) if i not in seen)
    duplicated = sum(1 for n in seen.values() if n > 1) + sum(1 for i in seen if not 1 <= i <= rows)
    return OutputCheck(lines, missing, duplicated, statuses)


def proc_status_mb(field_name: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -- the hand-written baseline: the same batch in plain asyncio + aiohttp -----------------------

# The models and weights of workflows/full.yaml are those of benchmarks/handwritten.py.
ANALYSIS_PARAMS = {"temperature": 0.3, "max_tokens": 1024}
HEADERS = {
    "Authorization": f"Bearer {ENVIRON['OPENROUTER_API_KEY']}",
    "HTTP-Referer": "https://github.com/flowengine/flowengine",
    "X-Title": "flowengine",
}

# The text of prompts/*.j2, as f-strings.


def primary_prompt(prompt: str) -> str:
    return (
        "You are answering a user's question directly and carefully.\n\n"
        f"Question:\n{prompt}\n\n"
        "Answer the question itself. Lead with the answer, then the reasoning or steps that "
        "support it.\nState facts precisely; where something is uncertain or depends on "
        "assumptions, say so and name the\nassumption. Prefer a concrete example over a general "
        "statement. Do not pad: no restating the\nquestion, no closing summary that repeats what "
        "you said."
    )


def critique_prompt(prompt: str, primary: dict[str, Any]) -> str:
    return (
        f"You are a rigorous reviewer. Another model ({primary['model']}) answered the question "
        "below. Your\njob is to find what is wrong or missing in that answer, not to write your "
        f"own answer.\n\nQuestion:\n{prompt}\n\nAnswer under review:\n<answer>\n"
        f"{primary['content']}\n</answer>\n\n"
        "Review it in this order, and be specific — quote or point at the exact sentence each "
        "time:\n1. Errors: statements that are false, outdated, miscalculated or misleading. For "
        "each, say what is\n   wrong and give the correct statement.\n2. Omissions: anything a "
        "careful expert would expect here that is missing (a key case, a caveat, a\n   step, a "
        "counter-example). Say why it matters.\n3. Clarity: places where a reader would likely "
        'misunderstand, and how to fix them.\n4. Verdict: one line — "sound", "sound with '
        'fixes", or "unreliable" — and the single most important\n   change.\n\n'
        'If a section has nothing to report, write "none". Do not praise, and do not repeat the '
        "answer."
    )


def responses_text(responses: list[dict[str, Any]]) -> str:
    ok = [r for r in responses if r["success"]]
    return "".join(
        f'<response id="{i}" model="{r["model"]}">\n{r["content"]}\n</response>\n\n'
        for i, r in enumerate(ok, 1)
    )


def meta_prompt(prompt: str, responses: list[dict[str, Any]]) -> str:
    return (
        "You are analysing several models' responses to the same question, to prepare a final "
        "synthesis.\nDo not answer the question yourself yet.\n\n"
        f"Question:\n{prompt}\n\n{responses_text(responses)}"
        "Analyse the responses above:\n1. Agreement: the claims most responses share. Note that "
        "agreement is not proof.\n2. Conflicts: where responses contradict each other. For each "
        "conflict, say which side is better\n   supported and why, or that it cannot be settled "
        "from the responses alone.\n3. Errors: claims you believe are wrong, citing the response "
        "id.\n4. Unique insights: correct and useful points that only one response makes.\n5. "
        "Gaps: what none of the responses covers but a complete answer needs.\n\n"
        "Be concise and concrete; cite response ids, not model names."
    )


def synthesis_prompt(
    prompt: str, responses: list[dict[str, Any]], analyses: list[dict[str, Any]]
) -> str:
    reviews = "".join(
        f'<analysis by="{a["model"]}">\n{a["content"]}\n</analysis>\n\n'
        for a in analyses
        if a["success"]
    )
    return (
        "You are writing the final answer to a question, drawing on several models' responses "
        "and on\nanalyses of those responses.\n\n"
        f"Question:\n{prompt}\n\n{responses_text(responses)}{reviews}"
        "Write the single best answer to the question:\n- Weigh the analyses: adopt a correction "
        "when it is specific and well supported, and keep a\n  claim that an analysis disputes "
        "only if you can justify it.\n- Resolve conflicts explicitly rather than blending "
        "incompatible claims; where a point stays\n  uncertain, say so briefly.\n- Include the "
        "unique insights that are correct, and fill the gaps the analyses name.\n- Write for the "
        "person who asked: lead with the answer, then the support. Do not mention the\n  "
        "responses, the analyses or the models."
    )


class PipelineFailed(Exception):
    pass


class HandWritten:
    """full.yaml in plain aiohttp: one session, retries on transient errors, checked replies."""

    def __init__(self, session: aiohttp.ClientSession, root: str) -> None:
        self.session = session
        self.chat_url = f"{root}/v1/chat/completions"
        self.selector_url = f"{root}/predict"
        self.timeout = aiohttp.ClientTimeout(total=60)
        self.selector_timeout = aiohttp.ClientTimeout(total=5)

    async def run(self, prompt: str) -> dict[str, Any]:
        started = time.perf_counter()
        selected, confidence = await self.select(prompt)
        primary = await self.chat(selected, primary_prompt(prompt), PARAMS)
        if not primary["success"]:
            raise PipelineFailed(f"primary: {primary['error']}")
        others = [alias for alias in BY_WEIGHT if alias != selected][:5]
        critique = critique_prompt(prompt, primary)
        three = asyncio.Semaphore(3)  # full.yaml: critiques max_concurrency 3

        async def one_critique(alias: str) -> dict[str, Any]:
            async with three:
                return await self.chat(alias, critique, PARAMS)

        critiques = list(await asyncio.gather(*(one_critique(a) for a in others)))
        if not any(c["success"] for c in critiques):
            raise PipelineFailed("every critique failed")
        responses = [primary, *critiques]
        analysis = meta_prompt(prompt, responses)
        meta = list(
            await asyncio.gather(*(self.chat(a, analysis, ANALYSIS_PARAMS) for a in BY_WEIGHT[:3]))
        )
        if not any(m["success"] for m in meta):
            raise PipelineFailed("every analysis failed")
        synthesis = await self.chat(
            selected, synthesis_prompt(prompt, responses, meta), ANALYSIS_PARAMS
        )
        if not synthesis["success"]:
            raise PipelineFailed(f"synthesis: {synthesis['error']}")
        calls = [primary, *critiques, *meta, synthesis]
        return {
            "primary_response": primary,
            "critiques": critiques,
            "meta_responses": meta,
            "final_synthesis": synthesis,
            "metadata": {
                "total_time": time.perf_counter() - started,
                "calls": len(calls),
                "tokens": sum(c.get("usage", {}).get("total_tokens") or 0 for c in calls),
                "cost": sum(c.get("usage", {}).get("cost") or 0.0 for c in calls),
                "model_selector_confidence": confidence,
            },
        }

    async def select(self, prompt: str) -> tuple[str, float | None]:
        return await select(self.session, self.selector_url, prompt, self.selector_timeout)

    async def chat(self, alias: str, content: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await chat(
            self.session,
            self.chat_url,
            alias,
            content,
            params,
            timeout=self.timeout,
            headers=HEADERS,
            attempts=5,
            backoff=0.01,
        )


def jsonl_rows(path: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        number = 0
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                number += 1
                yield number, line_no, json.loads(line)


async def hand_written_batch(
    pipeline: HandWritten, input_path: Path, output_path: Path, concurrency: int
) -> None:
    """The batch the way one would write it: workers share a lazy row iterator and append one
    JSON line per finished row to the output."""
    fd = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    rows = jsonl_rows(input_path)

    async def worker() -> None:
        for number, line_no, values in rows:
            record: dict[str, Any] = {"row": number, "line": line_no, "inputs": values}
            try:
                record.update(status="succeeded", output=await pipeline.run(values["prompt"]))
            except PipelineFailed as exc:
                record.update(status="failed", error={"message": str(exc)})
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
            os.write(fd, line.encode("utf-8"))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        os.close(fd)


# -- A: throughput against the hand-written batch -----------------------------------------------


@dataclass
class Measure:
    rows: int
    wall_s: float
    cpu_s: float
    server_cpu_s: float
    server_calls: int
    output: OutputCheck

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s

    @property
    def cpu_per_call_us(self) -> float:
        return self.cpu_s / (self.rows * CALLS_PER_ROW) * 1e6


class SidesA:
    def __init__(
        self, server: Server, workdir: Path, concurrency: int, batch_gc: bool = True
    ) -> None:
        self.batch_gc = batch_gc
        self.server = server
        self.workdir = workdir
        self.concurrency = concurrency
        self.workflow = Workflow.load(WORKFLOW, overrides=server.overrides())
        self.engine = Engine(environ=ENVIRON, cache=False, record=False)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.pipeline = HandWritten(self.session, server.root)
        self.count = 0

    async def measure(self, side: str, input_path: Path, rows: int) -> Measure:
        self.count += 1
        output = self.workdir / f"{side}-{self.count}.jsonl"
        await self.server.stats(reset=True)
        gc.collect()
        server_before = self.server.cpu_seconds()
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        if side == "engine":
            batch = Batch(self.workflow, input_path, output, concurrency=self.concurrency)
            # As `flowengine batch` runs it (its collector settings), unless --gc default.
            with many_runs_gc() if self.batch_gc else contextlib.nullcontext():
                await batch.run(self.engine)
        else:
            await hand_written_batch(self.pipeline, input_path, output, self.concurrency)
        cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
        server_cpu = self.server.cpu_seconds() - server_before
        stats = await self.server.stats()
        checked = check_output(output, rows)
        output.unlink()
        return Measure(rows, wall, cpu, server_cpu, stats["chat"] + stats["predict"], checked)

    async def close(self) -> None:
        await self.engine.aclose()
        await self.session.close()


async def scenario_a(args: argparse.Namespace, workdir: Path) -> bool:
    rows_path = workdir / "rows-a.jsonl"
    write_rows(rows_path, args.rows)
    warm_path = workdir / "warm-a.jsonl"
    write_rows(warm_path, args.warmup)
    async with running(Server(latency=0.0)) as server:
        sides = SidesA(server, workdir, args.concurrency, batch_gc=args.gc == "batch")
        try:
            for side in ("engine", "baseline"):
                await sides.measure(side, warm_path, args.warmup)
            results: dict[str, list[Measure]] = {"engine": [], "baseline": []}
            for number in range(args.rounds):
                order = ("engine", "baseline") if number % 2 == 0 else ("baseline", "engine")
                for side in order:
                    results[side].append(await sides.measure(side, rows_path, args.rows))
        finally:
            await sides.close()
    print(
        f"\nA. Throughput, zero latency: {args.rows} rows x {args.rounds} rounds, "
        f"{args.concurrency} rows in flight, {CALLS_PER_ROW} HTTP calls per row "
        f"(1 selector + {MODEL_CALLS_PER_ROW} model), order alternating"
    )
    setting = "as `flowengine batch` sets them" if args.gc == "batch" else "Python's defaults"
    print(f"  collector settings of the engine side: {setting}; hand-written: Python's defaults")
    print(
        f"  {'':10} {'rows/s':>8} {'calls/s':>8} {'CPU us/call':>12} {'CPU ms/row':>11} "
        f"{'wall s':>7}   per round (rows/s)"
    )
    for side, measures in results.items():
        rate = statistics.median(m.rows_per_s for m in measures)
        cpu = statistics.median(m.cpu_per_call_us for m in measures)
        wall = statistics.median(m.wall_s for m in measures)
        per_round = " ".join(f"{m.rows_per_s:.0f}" for m in measures)
        print(
            f"  {side:10} {rate:8.1f} {rate * CALLS_PER_ROW:8.0f} {cpu:12.0f} "
            f"{cpu * CALLS_PER_ROW / 1000:11.2f} {wall:7.2f}   {per_round}"
        )
    ratios = [
        e.rows_per_s / b.rows_per_s
        for e, b in zip(results["engine"], results["baseline"], strict=True)
    ]
    cpu_ratios = [
        e.cpu_per_call_us / b.cpu_per_call_us
        for e, b in zip(results["engine"], results["baseline"], strict=True)
    ]
    ratio = statistics.median(ratios)
    print(f"  per-round throughput ratios (engine / hand-written): {fmt(ratios, 2)}")
    print(f"  per-round CPU-per-call ratios (engine / hand-written): {fmt(cpu_ratios, 2)}")
    all_measures = [m for ms in results.values() for m in ms]
    load = max(m.server_cpu_s / m.wall_s for m in all_measures)
    print(f"  server CPU: at most {load:.0%} of one core")
    valid = True
    for side, measures in results.items():
        for m in measures:
            expected = m.rows * CALLS_PER_ROW
            if not m.output.exact or m.output.statuses["succeeded"] != m.rows:
                valid = False
                print(f"  WARNING: {side} output: {m.output.describe()}")
            if m.server_calls != expected:
                valid = False
                print(f"  WARNING: {side} made {m.server_calls} calls, expected {expected}")
    if valid:
        print("  every round: each row once in the output, succeeded; 11 server calls per row")
    ok = valid and ratio >= TARGET_THROUGHPUT_RATIO
    print(
        f"  throughput, engine / hand-written (median of rounds): {ratio:.2f} "
        f"(target >= {TARGET_THROUGHPUT_RATIO}) {verdict(ok)}"
    )
    return ok


def fmt(values: list[float], digits: int) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values)


# -- B: the rate limit, seen at the server ------------------------------------------------------


def window_counts(times: list[float], width: float) -> list[int]:
    """For each request, how many requests start in [its time, its time + width)."""
    return [bisect.bisect_left(times, t + width, i) - i for i, t in enumerate(times)]


async def scenario_b(args: argparse.Namespace, workdir: Path) -> bool:
    limit = args.rate
    rows = max(1, -(-args.rate_calls // MODEL_CALLS_PER_ROW))
    rows_path = workdir / "rows-b.jsonl"
    write_rows(rows_path, rows)
    output = workdir / "out-b.jsonl"
    async with running(Server(latency=args.rate_latency, timestamps=True)) as server:
        overrides = {
            **server.overrides(),
            "providers.openrouter.rate_limit": {"requests": limit, "per": "1s"},
        }
        workflow = Workflow.load(WORKFLOW, overrides=overrides)
        async with Engine(environ=ENVIRON, cache=False, record=False) as engine:
            await server.stats(reset=True)
            started = time.perf_counter()
            await Batch(workflow, rows_path, output, concurrency=args.rate_concurrency).run(engine)
            wall = time.perf_counter() - started
        stats = await server.stats()
    times: list[float] = sorted(stats["times"])
    checked = check_output(output, rows)
    n = len(times)
    span = times[-1] - times[0] if n > 1 else float("nan")
    achieved = (n - 1) / span if n > 1 else 0.0
    counts = window_counts(times, 1.0)
    # Windows that lie wholly inside the traffic: how full the limiter kept each second.
    inner = [c for t, c in zip(times, counts, strict=True) if t + 1.0 <= times[-1]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    per_second = Counter(int(t - times[0]) for t in times)
    seconds = [per_second[s] for s in range(int(span) + 1)]
    print(
        f"\nB. Rate limit {limit} requests/s (sliding window, burst 1), {rows} rows "
        f"({n} model calls at the server), {args.rate_concurrency} rows in flight, "
        f"{args.rate_latency * 1000:g} ms per reply"
    )
    print(f"  wall {wall:.2f} s; model calls from first to last: {span:.2f} s")
    print(
        f"  achieved rate at the server: {achieved:.2f}/s = {achieved / limit:.1%} of the limit "
        f"(target >= {TARGET_RATE_SHARE:.0%})"
    )
    print(
        f"  requests in any 1 s sliding window [t, t+1s): max {max(counts)}, "
        f"min over inner windows {min(inner) if inner else '-'} (limit {limit})"
    )
    print(
        f"  gaps between requests: min {min(gaps) * 1000:.2f} ms, median "
        f"{statistics.median(gaps) * 1000:.2f} ms, max {max(gaps) * 1000:.2f} ms "
        f"(limit spacing {1000 / limit:.2f} ms)"
    )
    print(f"  per whole second from the first call: {' '.join(map(str, seconds))}")
    print(f"  output: {checked.describe()}")
    rate_ok = achieved >= TARGET_RATE_SHARE * limit
    window_ok = max(counts) <= limit
    ok = rate_ok and window_ok and checked.exact
    print(f"  rate >= {TARGET_RATE_SHARE:.0%} of the limit: {verdict(rate_ok)}")
    print(f"  never above the limit in any 1 s window: {verdict(window_ok)}")
    return ok


# -- C: memory over many rows -------------------------------------------------------------------


@dataclass
class Sampler:
    """RSS every ``every`` rows done, read in the batch's on_row callback."""

    every: int
    done: int = 0
    samples: list[tuple[int, float, float]] = field(default_factory=list)  # rows, MB, seconds
    started: float = field(default_factory=time.perf_counter)

    def on_row(self, row: Row, status: str, error: str | None) -> None:
        self.done += 1
        if self.done % self.every == 0:
            elapsed = time.perf_counter() - self.started
            self.samples.append((self.done, proc_status_mb("VmRSS"), elapsed))

    def at(self, rows: int) -> tuple[int, float, float]:
        """The sample nearest to ``rows`` rows done."""
        return min(self.samples, key=lambda s: abs(s[0] - rows))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


async def scenario_c(args: argparse.Namespace, workdir: Path) -> bool:
    rows = args.memory_rows
    rows_path = workdir / "rows-c.jsonl"
    write_rows(rows_path, rows)
    output = workdir / "out-c.jsonl"
    gc.collect()
    before = proc_status_mb("VmRSS")
    server: Server | None = None
    if args.memory_provider == "mock":
        server = Server(latency=args.memory_latency)
        overrides = server.overrides()
        engine = Engine(environ=ENVIRON, cache=False, record=False)
    else:
        provider = {"type": "offline", "latency": args.memory_latency}
        overrides = {"providers.openrouter": provider}
        engine = Engine(offline=True, cache=False, record=False)
    sampler = Sampler(every=max(1, rows // 10))
    try:
        workflow = Workflow.load(WORKFLOW, overrides=overrides)
        batch = Batch(workflow, rows_path, output, concurrency=args.memory_concurrency)
        batch.on_row = sampler.on_row
        sampler.started = time.perf_counter()
        cpu_before = time.process_time()
        async with engine:
            totals = await batch.run(engine)
        cpu = time.process_time() - cpu_before
        wall = time.perf_counter() - sampler.started
    finally:
        if server is not None:
            server.stop()
    peak = proc_status_mb("VmHWM")
    checked = check_output(output, rows)
    where = (
        f"mock server, {args.memory_latency * 1000:g} ms per reply"
        if server is not None
        else f"offline provider, {args.memory_latency * 1000:g} ms per call"
    )
    print(
        f"\nC. Memory: {rows} rows, {args.memory_concurrency} in flight ({where}); "
        f"RSS before the batch {before:.1f} MB"
    )
    print(
        f"  wall {wall:.1f} s, {rows / wall:.0f} rows/s, {totals.calls / wall:.0f} model calls/s, "
        f"CPU {cpu:.1f} s"
    )
    print("  rows done  RSS MB   s")
    for done, rss, elapsed in sampler.samples:
        print(f"  {done:9}  {rss:6.1f}  {elapsed:5.1f}")
    _, at30, _ = sampler.at(int(rows * 0.3))
    _, at90, _ = sampler.at(int(rows * 0.9))
    steady = [(float(d), r) for d, r, _ in sampler.samples if d >= rows * 0.3]
    per_1000 = slope(steady) * 1000
    growth = (at90 - at30) / at30
    print(f"  output: {checked.describe()}")
    print(
        f"  RSS at 30% done {at30:.1f} MB, at 90% done {at90:.1f} MB: {growth:+.1%} "
        f"(target <= {TARGET_GROWTH:+.0%}); slope from 30% on: {per_1000:+.2f} MB per 1,000 rows"
    )
    peak_ok = peak < TARGET_PEAK_MB
    flat_ok = growth <= TARGET_GROWTH
    print(f"  peak RSS (VmHWM) {peak:.1f} MB (target < {TARGET_PEAK_MB:g} MB): {verdict(peak_ok)}")
    print(f"  flat as rows finish: {verdict(flat_ok)}")
    return peak_ok and flat_ok and checked.exact


# -- D: faults and retries ----------------------------------------------------------------------


async def run_counted(
    server: Server, workflow: Workflow, rows_path: Path, output: Path, concurrency: int
) -> tuple[dict[str, Any], Batch, float]:
    async with Engine(environ=ENVIRON, cache=False, record=False) as engine:
        await server.stats(reset=True)
        batch = Batch(workflow, rows_path, output, concurrency=concurrency)
        started = time.perf_counter()
        await batch.run(engine)
        wall = time.perf_counter() - started
    return await server.stats(), batch, wall


async def scenario_d(args: argparse.Namespace, workdir: Path) -> bool:
    rows = args.fault_rows
    rows_path = workdir / "rows-d.jsonl"
    write_rows(rows_path, rows)
    retry = {"attempts": args.fault_attempts, "initial": "10ms", "max": "100ms"}

    async def one(fail_rate: float, name: str) -> tuple[dict[str, Any], Batch, float]:
        async with running(Server(latency=0.0, fail_rate=fail_rate)) as server:
            overrides = {**server.overrides(), "providers.openrouter.retry": retry}
            workflow = Workflow.load(WORKFLOW, overrides=overrides)
            output = workdir / f"out-d-{name}.jsonl"
            return await run_counted(server, workflow, rows_path, output, args.concurrency)

    clean_stats, clean, clean_wall = await one(0.0, "clean")
    stats, faulty, wall = await one(args.fail_rate, "faults")
    clean_check = check_output(clean.output, rows)
    checked = check_output(faulty.output, rows)
    extra = stats["chat"] - clean_stats["chat"]
    expected_extra = clean_stats["chat"] * (1 / (1 - args.fail_rate) - 1)
    print(
        f"\nD. Faults: {args.fail_rate:.0%} of model calls answered 500/502/503/429 "
        f"(Retry-After: 0 on 503 and 429), {rows} rows, {args.concurrency} in flight, "
        f"retry {retry}"
    )
    print(
        f"  clean run:  {clean_stats['chat']} model calls at the server, wall {clean_wall:.2f} s; "
        f"output {clean_check.describe()}"
    )
    print(
        f"  with faults: {stats['chat']} model calls at the server ({stats['failed']} answered "
        f"with a fault), wall {wall:.2f} s"
    )
    print(
        f"  extra calls the retries cost: {extra} = {extra / clean_stats['chat']:+.2%} "
        f"(at {args.fail_rate:.0%} independent faults one expects "
        f"{expected_extra / clean_stats['chat']:+.2%}); retries the engine counted: "
        f"{faulty.totals.retries}"
    )
    print(f"  output: {checked.describe()}")
    counted = faulty.totals.retries == stats["failed"] == extra
    if not counted:
        print("  note: server faults, extra calls and the engine's retry count differ")
    ok = checked.exact and clean_check.exact
    print(f"  every row in the output exactly once: {verdict(ok)}")
    return ok


# -- main ---------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[argparse.Namespace, Path], Coroutine[Any, Any, bool]]] = {
    "A": scenario_a,
    "B": scenario_b,
    "C": scenario_c,
    "D": scenario_d,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The batch runner under load (workflows/full.yaml on a mock server)."
    )
    parser.add_argument("--only", choices=sorted(SCENARIOS), help="run one scenario only")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    a = parser.add_argument_group("A: throughput against hand-written asyncio")
    a.add_argument("--rows", type=int, default=2000, help="rows per round")
    a.add_argument("--concurrency", type=int, default=100, help="rows in flight (A and D)")
    a.add_argument("--rounds", type=int, default=5, help="rounds; medians shown")
    a.add_argument("--warmup", type=int, default=200, help="unmeasured rows per side first")
    a.add_argument(
        "--gc",
        choices=["batch", "default"],
        default="batch",
        help="collector settings of the flowengine side: as `flowengine batch` sets them "
        "(default), or Python's defaults, like the hand-written side",
    )
    b = parser.add_argument_group("B: rate limit")
    b.add_argument("--rate", type=int, default=50, help="the limit, requests per second")
    b.add_argument("--rate-calls", type=int, default=1000, help="model calls to make")
    b.add_argument("--rate-concurrency", type=int, default=50, help="rows in flight")
    b.add_argument("--rate-latency", type=float, default=0.0, help="seconds per reply")
    c = parser.add_argument_group("C: memory")
    c.add_argument("--memory-rows", type=int, default=10_000, help="rows")
    c.add_argument("--memory-concurrency", type=int, default=1000, help="rows in flight")
    c.add_argument("--memory-latency", type=float, default=0.05, help="seconds per call")
    c.add_argument(
        "--memory-provider",
        choices=["mock", "offline"],
        default="mock",
        help="the mock server over HTTP, or the built-in offline provider",
    )
    d = parser.add_argument_group("D: faults")
    d.add_argument("--fault-rows", type=int, default=1000, help="rows")
    d.add_argument("--fail-rate", type=float, default=0.1, help="fraction of calls failing")
    d.add_argument("--fault-attempts", type=int, default=5, help="retry.attempts")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.rounds, args.warmup = 300, 1, 30
        args.rate_calls = 200
        args.memory_rows, args.memory_concurrency = 2000, 200
        args.fault_rows = 200
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.only is None:
        # One child process per scenario: a fresh heap for each one's memory and CPU figures.
        rest = [a for a in argv if a != "--only"]
        failed = []
        for name in SCENARIOS:
            command = [sys.executable, "-m", "benchmarks.bench_batch", *rest, "--only", name]
            if subprocess.run(command, cwd=ROOT).returncode != 0:
                failed.append(name)
        print(f"\n{'FAIL: ' + ', '.join(failed) if failed else 'PASS: A, B, C, D'}")
        sys.exit(1 if failed else 0)
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, workflow "
        f"{WORKFLOW.relative_to(ROOT)}, scenario {args.only}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as workdir:
        ok = asyncio.run(SCENARIOS[args.only](args, Path(workdir)))
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
