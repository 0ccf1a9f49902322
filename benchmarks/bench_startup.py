"""How long the quick commands take to start, whole process, and what each one imports.

Each command runs ``--runs`` times as a user runs it (the ``flowengine`` script beside this
interpreter, from the project root); the figures are the median and the best wall time, with
``python -c pass`` as the floor no command can go under. Modules start from compiled bytecode,
as an installed package's do (pip compiles them at install): one untimed run first writes it to
a cache of the benchmark's own, even where ``PYTHONDONTWRITEBYTECODE`` is set, which would
otherwise have every run compile every module from source. Then each command runs once under
``python -X importtime`` to list which heavy modules it loads and what each cost.

Run by hand (never in CI); it exits 0 when every target is met::

    .venv/bin/python -m benchmarks.bench_startup
    .venv/bin/python -m benchmarks.bench_startup --runs 50
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / ("flowengine.exe" if os.name == "nt" else "flowengine")

# label -> (command line, the most its median may take in seconds, or None for no target)
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "python -c pass": ([sys.executable, "-c", "pass"], None),
    "flowengine --help": ([str(SCRIPT), "--help"], 0.25),
    "flowengine schema": ([str(SCRIPT), "schema"], None),
    "flowengine validate workflows/critique.yaml": (
        [str(SCRIPT), "validate", "workflows/critique.yaml"],
        0.5,
    ),
}
# Modules worth naming when a command loads them: the engine's HTTP client and the rest.
HEAVY = (
    "aiohttp",
    "networkx",
    "rich",
    "pydantic",
    "jinja2",
    "ruamel.yaml",
    "sqlite3",
    "asyncio",
    "click",
    "flowengine.language",
    "flowengine.run",
)
IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)$")


def environment(tmp: Path) -> dict[str, str]:
    """This process's environment, with bytecode written to and read from ``tmp``."""
    env = {**os.environ, "FLOWENGINE_DB": str(tmp / "flowengine.db")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def wall_times(command: list[str], runs: int, env: dict[str, str]) -> list[float]:
    subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=True)  # compiles
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return times


def heavy_imports(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Each heavy module the command loads, with its cumulative import time in seconds."""
    if command[0] == str(SCRIPT):
        command = [sys.executable, "-X", "importtime", "-m", "flowengine", *command[1:]]
    else:
        command = [command[0], "-X", "importtime", *command[1:]]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    found: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = IMPORTTIME.match(line)
        if not match:
            continue
        module, took = match.group(4), int(match.group(2)) / 1e6
        # A package's own line, or its costliest submodule where the package's
        # __init__ is empty (flowengine's layers).
        for name in HEAVY:
            if module == name or module.startswith(name + "."):
                found[name] = max(found.get(name, 0.0), took)
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (20)")
    args = parser.parse_args(argv)
    if not SCRIPT.exists():
        sys.exit(f"no flowengine script beside {sys.executable}; install the package first")
    print(f"{args.runs} runs each, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'command':<46} {'median':>8} {'best':>8} {'target':>8}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        env = environment(Path(tmp))
        for label, (command, target) in COMMANDS.items():
            times = wall_times(command, args.runs, env)
            median = statistics.median(times)
            met = target is None or median <= target
            ok = ok and met
            limit = f"{target:.2f}s" if target is not None else "-"
            verdict = "" if target is None else ("  ok" if met else "  MISSED")
            print(f"{label:<46} {median:>7.3f}s {min(times):>7.3f}s {limit:>8}{verdict}")
        print("\nheavy modules imported (cumulative import time, one run under -X importtime):")
        for label, (command, _) in COMMANDS.items():
            loaded = heavy_imports(command, env)
            names = ", ".join(f"{name} {took * 1000:.0f}ms" for name, took in loaded.items())
            print(f"  {label}: {names or 'none'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
