"""The async scheduler: a node starts the moment its needs are done. Emits events, never prints.

A failed node with ``on_error: fail`` (the default) cancels what is in flight and skips what has
not started; every completed output stays in the result, so nothing paid for is lost. With
``on_error: continue`` the failure is passed downstream and the run goes on.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jinja2
import networkx as nx
from pydantic import ValidationError

from flowengine.errors import UsageError
from flowengine.events import Listener
from flowengine.language.plan import CompiledNode, Plan
from flowengine.language.templates import Scope, evaluate_value
from flowengine.results import (
    ErrorInfo,
    NodeResult,
    RunMetadata,
    RunMetrics,
    RunResult,
    RunStatus,
    model_metrics,
    to_jsonable,
    to_micros,
)
from flowengine.run.calls import NodeFailure, Run
from flowengine.run.nodes import RUNNERS
from flowengine.store.records import save_run

# What a template can raise at run time: its own errors, and Python's from expressions it evaluates.
TEMPLATE_ERRORS = (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError)

if TYPE_CHECKING:
    from flowengine.language.workflow import Workflow
    from flowengine.run.engine import Engine


def execute(
    engine: Engine,
    workflow: Workflow,
    inputs: Mapping[str, Any],
    *,
    only: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    listeners: list[Listener] | None = None,
) -> Coroutine[Any, Any, RunResult]:
    """The run of a checked workflow, to await; bad arguments raise here, before it starts.

    A plain function: the caller awaits the scheduler's coroutine itself, one frame fewer
    between the event loop and every call of the run.
    """
    values = workflow.bind_inputs(inputs)
    allowed = _allowed_models(workflow, models)
    selected = _selected_nodes(workflow, only)
    engine.check_credentials(workflow, allowed)
    run = Run(engine, workflow, new_run_id(), values, listeners or (), allowed)
    return Scheduler(run, workflow.plan, selected).execute()


def new_run_id() -> str:
    """16 hex digits, unique in practice: ids name records, they guard nothing.

    ``random`` rather than ``os.urandom``, a system call on every run; each process's
    generator is seeded from the system's randomness, and again in a forked child.
    """
    return f"{random.getrandbits(64):016x}"


def _allowed_models(workflow: Workflow, models: Iterable[str] | None) -> Sequence[str]:
    spec = workflow.spec
    if models is None:
        return workflow.plan.by_weight
    chosen = []
    for name in models:
        if name not in spec.models:
            from flowengine.errors import did_you_mean

            fix = did_you_mean(name, spec.models) or f"models: {', '.join(spec.models)}"
            raise UsageError(f"--models: unknown model '{name}'", fix)
        chosen.append(name)
    return spec.model_sorted(chosen)


def _selected_nodes(workflow: Workflow, only: Iterable[str] | None) -> Sequence[str]:
    if only is None:
        return workflow.order
    keep: set[str] = set()
    for node_id in only:
        if node_id not in workflow.spec.nodes:
            from flowengine.errors import did_you_mean

            fix = (
                did_you_mean(node_id, workflow.spec.nodes)
                or f"nodes: {', '.join(workflow.spec.nodes)}"
            )
            raise UsageError(f"--only: unknown node '{node_id}'", fix)
        keep |= {node_id, *nx.ancestors(workflow.graph, node_id)}
    return [n for n in workflow.order if n in keep]


class Scheduler:
    """Starts ready nodes, collects their results, and stops early on a failure."""

    __slots__ = (
        "done",
        "plan",
        "ready",
        "results",
        "run",
        "scope",
        "selected",
        "tasks",
        "waiting",
        "wake",
    )

    def __init__(self, run: Run, plan: Plan, selected: Sequence[str]) -> None:
        self.run = run
        self.plan = plan
        self.selected = selected
        # How many needs of each selected node are not done yet (a count, not a set: a run
        # keeps this for its whole life, and thousands of runs may be in flight).
        if selected is plan.order:
            self.waiting = dict(plan.needs_count)
        else:
            chosen = set(selected)
            self.waiting = {n: sum(d in chosen for d in plan.nodes[n].needs) for n in selected}
        self.ready = deque(n for n in selected if not self.waiting[n])
        self.results: dict[str, NodeResult] = {}
        self.tasks: dict[asyncio.Task[NodeResult], str] = {}
        # Finished tasks, in the order they finished, and the future that wakes execute().
        # Cheaper than asyncio.wait(), which hooks every pending task again on each wake-up.
        self.done: deque[asyncio.Task[NodeResult]] = deque()
        self.wake: asyncio.Future[None] | None = None
        # One scope per run, shared by its nodes: each reads only its ancestors, which are done
        # before it starts, so adding outputs as nodes finish never changes what a node sees.
        self.scope = scope = Scope(run.workflow.env.globals)
        scope.update(run.inputs)
        scope["inputs"] = run.inputs
        scope["models"] = run.models

    async def execute(self) -> RunResult:
        run = self.run
        started = time.perf_counter()
        run.emit("run_started")
        failure: ErrorInfo | None = None
        try:
            while self.ready or self.tasks:
                if len(self.ready) == 1 and not self.tasks:
                    # The one node there is to run runs in this coroutine: nothing else can
                    # become ready until it finishes, so a task of its own would only cost
                    # time (a chain of nodes, the common shape, then runs with no task at all).
                    node_id = self.ready.popleft()
                    try:
                        result = await self.run_node(self.plan.nodes[node_id])
                    except asyncio.CancelledError:
                        self.results[node_id] = self.cancelled(node_id)
                        raise
                    failure = self.finish(node_id, result)
                else:
                    failure = await self.run_concurrently()
                if failure is not None:
                    await self.cancel_all()
                    break
        except asyncio.CancelledError:
            # Cancelled from outside (Ctrl-C, a service's timeout): what was done, and paid
            # for, is still recorded before the cancellation goes on.
            await self.cancel_all()
            self.finish_run(started, ErrorInfo(type="cancelled", message="the run was cancelled"))
            raise
        finally:
            if self.tasks:
                await self.cancel_all()
        return self.finish_run(started, failure)

    def finish_run(self, started: float, failure: ErrorInfo | None) -> RunResult:
        """Build the result, record it, and say the run is over."""
        run = self.run
        results = self.results
        for node_id in self.selected:
            if node_id not in results:
                results[node_id] = NodeResult(status="skipped")
        result = self.result(time.perf_counter() - started, failure)
        engine = run.engine
        if engine.record and engine.store is not None:
            workflow = run.workflow
            save_run(
                engine.store, result, workflow.source.file, workflow.content_hash, run.timeline
            )
        if run.listeners:
            run.emit(
                "run_finished",
                status=result.status,
                duration_s=result.metadata.total_time,
                error=result.error,
            )
        return result

    async def run_concurrently(self) -> ErrorInfo | None:
        """Start every ready node as a task; wait for at least one to finish."""
        while self.ready:
            self.start(self.ready.popleft())
        if not self.done:
            self.wake = asyncio.get_running_loop().create_future()
            await self.wake
        failure = None
        while self.done:
            task = self.done.popleft()
            failure = self.finish(self.tasks.pop(task), task.result()) or failure
        return failure

    def cancelled(self, node_id: str) -> NodeResult:
        partial = self.run.partial.get(node_id)
        return NodeResult(status="cancelled", output=list(partial) if partial else None)

    def start(self, node_id: str) -> None:
        task = asyncio.create_task(self.run_node(self.plan.nodes[node_id]), name=f"node:{node_id}")
        self.tasks[task] = node_id
        task.add_done_callback(self.task_done)

    def task_done(self, task: asyncio.Task[NodeResult]) -> None:
        self.done.append(task)
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def finish(self, node_id: str, result: NodeResult) -> ErrorInfo | None:
        """Record a node's result, start what it unblocked; the error if the run must stop."""
        self.results[node_id] = result
        self.scope[node_id] = result.output
        node = self.plan.nodes[node_id]
        if result.status == "failed" and node.spec.on_error == "fail":
            return result.error
        for dependent in self.plan.dependents[node_id]:
            if dependent in self.waiting:
                self.waiting[dependent] -= 1
                if not self.waiting[dependent]:
                    self.ready.append(dependent)
        return None

    async def cancel_all(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for node_id in self.tasks.values():
            self.results[node_id] = self.cancelled(node_id)
        self.tasks.clear()
        self.done.clear()

    async def run_node(self, node: CompiledNode) -> NodeResult:
        run = self.run
        if run.listeners:
            run.emit("node_started", node=node.id)
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        context = self.scope
        status: Any = "succeeded"
        output: Any = None
        error: ErrorInfo | None = None
        runner = RUNNERS[node.spec.type]
        try:
            if node.spec.timeout is None:
                output = await runner(run, node, context)
            else:
                async with asyncio.timeout(node.spec.timeout):
                    output = await runner(run, node, context)
        except NodeFailure as exc:
            status, output, error = "failed", exc.output, exc.error
        except TimeoutError:
            status, error = (
                "failed",
                ErrorInfo(type="timeout", message=f"node timed out after {node.spec.timeout}s"),
            )
            partial = run.partial.get(node.id)
            output = list(partial) if partial else None
        except ValidationError:
            raise
        except TEMPLATE_ERRORS as exc:
            status, error = "failed", ErrorInfo(type="template", message=f"nodes.{node.id}: {exc}")
        duration = to_micros(time.perf_counter() - clock)
        if run.listeners:
            if status == "failed":
                run.emit("node_failed", node=node.id, duration_s=duration, error=error)
            else:
                run.emit("node_finished", node=node.id, duration_s=duration, status=status)
        return NodeResult(
            status=status, started_at=started_at, duration_s=duration, output=output, error=error
        )

    def result(self, total: float, failure: ErrorInfo | None) -> RunResult:
        run = self.run
        status: RunStatus = "failed" if failure is not None else self.status()
        metadata = self.metadata(total)
        output, output_error = self.output(metadata, status)
        if output_error is not None and failure is None:
            status, failure = "failed", output_error
        return RunResult(
            workflow=run.spec.name,
            run_id=run.run_id,
            status=status,
            inputs=run.inputs,
            output=output,
            error=failure,
            nodes=self.results,
            metadata=metadata,
            metrics=RunMetrics(models=model_metrics(run.calls)),
        )

    def status(self) -> RunStatus:
        for result in self.results.values():
            if result.status != "succeeded":
                return "partial"
            if isinstance(result.output, list) and any(
                not getattr(item, "success", True) for item in result.output
            ):
                return "partial"
        return "succeeded"

    def metadata(self, total: float) -> RunMetadata:
        """Totals of the run; tokens and cost count what was spent, so cache hits count zero."""
        calls = self.run.calls
        tokens, spent, priced = 0, 0.0, False
        for call in calls:
            # A cache hit with a known price cost nothing this time: 0, not unknown.
            priced = priced or call.usage.cost is not None
            if not call.cached:
                tokens += call.usage.total_tokens or 0
                spent += call.usage.cost or 0.0
        return RunMetadata(
            total_time=to_micros(total),
            calls=len(calls),
            concurrent_calls=self.run.peak,
            tokens=tokens,
            cost=round(spent, 10) if priced else None,
            model_selector_confidence=self.run.selector_confidence,
        )

    def output(self, metadata: RunMetadata, status: RunStatus) -> tuple[Any, ErrorInfo | None]:
        """The output mapping evaluated over every node (absent ones are None)."""
        plan, scope = self.plan, self.scope
        if plan.output is None:
            return to_jsonable({n: scope.get(n) for n in self.selected}), None
        context = scope
        if plan.output_reads_metadata or any(n not in scope for n in plan.order):
            outputs = {n: scope.get(n) for n in plan.order}
            context = scope.child(**outputs, metadata=metadata.model_dump())
        try:
            return to_jsonable(evaluate_value(plan.output, context)), None
        except ValidationError:
            raise
        except TEMPLATE_ERRORS as exc:
            if status == "failed":
                return None, None
            return None, ErrorInfo(type="template", message=f"output: {exc}")
