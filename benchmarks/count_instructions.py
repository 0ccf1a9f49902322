"""Scenario A of ``bench_engine.py`` in instruction counts, which the machine's noise leaves alone.

CPU time on a shared machine moves by 10% or more from one run to the next. The number of
instructions the client executes per run does not: this script runs each side under
valgrind's callgrind (the mock server runs outside it, in its own process) for two numbers of
runs, and takes the difference, so that start-up and warm-up cancel out::

    .venv/bin/python -m benchmarks.count_instructions            # about 5 minutes
    .venv/bin/python -m benchmarks.count_instructions --runs 200 600
    .venv/bin/python -m benchmarks.count_instructions --defaults # cache and run records on

Instructions are not time: the engine's code and objects also miss the CPU's caches more often
per instruction, so its time ratio runs somewhat above its instruction ratio. It needs
``valgrind`` on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_engine import ServerProcess, Sides

HERE = Path(__file__).resolve().parent


async def _drive(side: str, runs: int, concurrency: int, defaults: bool) -> None:
    server = ServerProcess(latency=0.0)
    sides = Sides(server, defaults)
    try:
        measure = await sides.measure(side, runs, concurrency)
        if measure.failures:
            raise SystemExit(f"{measure.failures} {side} runs failed")
    finally:
        await sides.close()
        server.stop()


def count(side: str, runs: int, concurrency: int, defaults: bool) -> int:
    """Instructions the client executed for ``runs`` runs of ``side``, start-up included."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/callgrind.out",
            sys.executable,
            "-m",
            "benchmarks.count_instructions",
            "--drive",
            side,
            str(runs),
            str(concurrency),
            *(["--defaults"] if defaults else []),
        ]
        done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind failed for {side}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, nargs=2, default=[200, 600], metavar=("N1", "N2"))
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--defaults", action="store_true", help="engine with response cache and run records on"
    )
    parser.add_argument("--drive", nargs=3, help=argparse.SUPPRESS)  # the child under valgrind
    args = parser.parse_args(argv)
    if args.drive:
        side, runs, concurrency = args.drive
        asyncio.run(_drive(side, int(runs), int(concurrency), args.defaults))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed; this benchmark needs it", file=sys.stderr)
        return 2
    first, second = args.runs
    per_run: dict[str, float] = {}
    for side in ("engine", "baseline"):
        low = count(side, first, args.concurrency, args.defaults)
        high = count(side, second, args.concurrency, args.defaults)
        per_run[side] = (high - low) / (second - first)
        print(f"  {side:10} {per_run[side]:>12,.0f} instructions per run (8 HTTP calls)")
    ratio = per_run["engine"] / per_run["baseline"]
    print(f"  instructions per run, engine / baseline: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
