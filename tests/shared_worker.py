"""One process of the sharing tests: its own Engine runs a workflow several times at once.

    python -m tests.shared_worker WORKFLOW BARRIER RUNS [--same] [--no-cache]

writes BARRIER/ready-<pid> once its engine is set up and waits for BARRIER/go (so that
processes started one after another call together, however slowly each started), runs the
workflow RUNS times concurrently (each with its own prompt, or all with the same one with
``--same``), and prints one JSON line per run: its status, how many calls the cache
answered, the error of its node `answer`. The environment (FLOWENGINE_REDIS_URL,
FLOWENGINE_DB) is the test's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from flowengine import Engine, Workflow


async def main(args: argparse.Namespace) -> None:
    workflow = Workflow.load(args.workflow)
    async with Engine(cache=not args.no_cache, record=False) as engine:
        (args.barrier / f"ready-{os.getpid()}").touch()
        while not (args.barrier / "go").exists():
            await asyncio.sleep(0.005)
        prompts = ["same" if args.same else f"{os.getpid()}-{n}" for n in range(args.runs)]
        results = await asyncio.gather(*(engine.run(workflow, prompt=p) for p in prompts))
    for result in results:
        node = result.nodes["answer"]
        line = {
            "status": result.status,
            "cached": sum(m.cached for m in result.metrics.models.values()),
            "error": node.error.message if node.error else None,
        }
        print(json.dumps(line))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("workflow")
    parser.add_argument("barrier", type=Path)
    parser.add_argument("runs", type=int)
    parser.add_argument("--same", action="store_true")
    parser.add_argument("--no-cache", action="store_true")
    asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
