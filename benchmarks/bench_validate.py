"""How long ``flowengine validate`` takes on large workflow files, and where the time goes.

Each case is a generated file, validated in a fresh process (``python -m flowengine validate``,
so that ``PYTHONPATH=other/checkout`` measures another version); the figures are the best wall
time and the best CPU time (user + system) of ``--runs``: on a shared machine the CPU time
moves less. Then the same file is loaded in this process, once, to split the CPU time between
reading the YAML and everything after it (structure, checks, templates).

Run by hand (never in CI)::

    .venv/bin/python -m benchmarks.bench_validate
    .venv/bin/python -m benchmarks.bench_validate --only chain --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import resource
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


def validate_time(path: Path, runs: int) -> tuple[float, float, str]:
    """Best wall and CPU seconds of ``flowengine validate`` on ``path``, and its last line."""
    best = best_cpu = float("inf")
    last = ""
    for _ in range(runs):
        cpu = _children_cpu()
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "flowengine", "validate", str(path)],
            cwd=path.parent,  # not the checkout: `-m` would import its flowengine first
            capture_output=True,
            text=True,
            check=False,
        )
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, _children_cpu() - cpu)
        last = (proc.stderr.strip().splitlines() or [""])[-1]
    return best, best_cpu, last


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def phases(path: Path) -> tuple[float, float]:
    """CPU seconds to read the YAML, and for everything after it, in this process."""
    from flowengine.errors import WorkflowError
    from flowengine.language.loader import read_source
    from flowengine.language.templates import find_prompts_dir
    from flowengine.language.workflow import Workflow, checked_spec

    started = time.process_time()
    source = read_source(path)
    parsed = time.process_time()
    with contextlib.suppress(WorkflowError):
        Workflow(checked_spec(source), source, find_prompts_dir(path))
    return parsed - started, time.process_time() - parsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="processes per case (best is kept)")
    parser.add_argument("--only", choices=sorted(CASES), action="append", help="run this case")
    args = parser.parse_args()
    print(f"{'case':<12} {'size':>9} {'validate':>9} {'cpu':>7} {'read':>7} {'rest':>7}  last line")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or CASES:
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(CASES[name](), encoding="utf-8")
            seconds, cpu, last = validate_time(path, args.runs)
            read, rest = phases(path)
            size = f"{path.stat().st_size / 1e6:.1f} MB"
            times = f"{seconds:>8.2f}s {cpu:>6.2f}s {read:>6.2f}s {rest:>6.2f}s"
            print(f"{name:<12} {size:>9} {times}  {last[:60]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
