"""How long ``flowengine validate`` takes on large workflow files, and where the time goes.

Each case is a generated file, validated in a fresh process (``python -m flowengine validate``,
so that ``PYTHONPATH=other/checkout`` measures another version); the figure is the best wall
time of ``--runs``.
Then the same file is loaded in this process, once, to split the time between reading the
YAML and everything after it (structure, checks, templates).

Run by hand (never in CI)::

    .venv/bin/python -m benchmarks.bench_validate
    .venv/bin/python -m benchmarks.bench_validate --only chain --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HEAD = "version: 1\nname: big\ninputs:\n  prompt: {}\nmodels:\n  gpt: {id: openai/gpt-4o}\n"


def chain(n: int, typo: bool = False) -> str:
    """``n`` llm nodes, each reading the one before it (the last one misspells it if ``typo``)."""
    lines = [HEAD + "nodes:", "  n0:", "    type: llm", "    model: gpt"]
    lines.append('    template: "{{ prompt }}"')
    for i in range(1, n):
        read = f"m{i - 1}" if typo and i == n - 1 else f"n{i - 1}"
        lines += [f"  n{i}:", "    type: llm", "    model: gpt", f"    needs: [n{i - 1}]"]
        lines.append(f'    template: "{{{{ {read} }}}}"')
    return "\n".join(lines) + "\n"


def models(n: int, typo: bool = False) -> str:
    """``n`` models and one node that uses one of them (a misspelt one if ``typo``)."""
    lines = ["version: 1", "name: models", "inputs:", "  prompt: {}", "models:"]
    lines += [f"  m{i}: {{id: vendor/model-{i}, weight: {i % 7}}}" for i in range(n)]
    lines += ["nodes:", "  a:", "    type: llm", f"    model: {'mx1' if typo else 'm1'}"]
    lines.append('    template: "{{ prompt }}"')
    return "\n".join(lines) + "\n"


def comments(size: int) -> str:
    """A small workflow with ``size`` bytes of comment lines after its name (after a scalar:
    where ruamel's round-trip scanner joins them one by one)."""
    line = "# " + "x" * 97 + "\n"
    rest = HEAD.removeprefix("version: 1\nname: big\n")
    tail = 'nodes:\n  a:\n    type: llm\n    model: gpt\n    template: "{{ prompt }}"\n'
    return "version: 1\nname: big\n" + line * (size // len(line)) + rest + tail


CASES: dict[str, Callable[[], str]] = {
    "chain": lambda: chain(5000),
    "chain-typo": lambda: chain(5000, typo=True),
    "models": lambda: models(100_000),
    "models-typo": lambda: models(100_000, typo=True),
    "comments": lambda: comments(10_000_000 - 500),
}


def validate_time(path: Path, runs: int) -> tuple[float, str]:
    best = float("inf")
    last = ""
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "flowengine", "validate", str(path)],
            cwd=path.parent,  # not the checkout: `-m` would import its flowengine first
            capture_output=True,
            text=True,
            check=False,
        )
        best = min(best, time.perf_counter() - started)
        last = (proc.stderr.strip().splitlines() or [""])[-1]
    return best, last


def phases(path: Path) -> tuple[float, float]:
    """Seconds to read the YAML, and seconds for everything after it, in this process."""
    from flowengine.errors import WorkflowError
    from flowengine.language.loader import read_source
    from flowengine.language.templates import find_prompts_dir
    from flowengine.language.workflow import Workflow, checked_spec

    started = time.perf_counter()
    source = read_source(path)
    parsed = time.perf_counter()
    with contextlib.suppress(WorkflowError):
        Workflow(checked_spec(source), source, find_prompts_dir(path))
    return parsed - started, time.perf_counter() - parsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="processes per case (best is kept)")
    parser.add_argument("--only", choices=sorted(CASES), action="append", help="run this case")
    args = parser.parse_args()
    print(f"{'case':<12} {'size':>9} {'validate':>9} {'read':>7} {'rest':>7}  last line")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or CASES:
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(CASES[name](), encoding="utf-8")
            seconds, last = validate_time(path, args.runs)
            read, rest = phases(path)
            size = f"{path.stat().st_size / 1e6:.1f} MB"
            print(f"{name:<12} {size:>9} {seconds:>8.2f}s {read:>6.2f}s {rest:>6.2f}s  {last[:60]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
