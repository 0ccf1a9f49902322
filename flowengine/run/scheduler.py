"""The async scheduler: a node starts the moment its needs are done. Emits events, never prints.

A failed node with ``on_error: fail`` (the default) cancels what is in flight and skips what has
not started; every completed output stays in the result, so nothing paid for is lost. With
``on_error: continue`` the failure is passed downstream and the run goes on.

A node is skipped, not run, when its ``when:`` is false once its needs are done, or when the
caller asks (``skip``). Skipping is neither a failure nor a partial run: the nodes after it run
and see it as none.

A loop node runs its group once per round on a scheduler of its own over the group's nodes
(:meth:`Scheduler.run_round`), whose nodes are named ``loop[round].node`` in events, calls and
the run's result.

A call the budget refuses stops the run, whatever the node's ``on_error``: nothing more starts,
the nodes in flight finish (their calls already started finish and count), and the run fails
with the budget's error. Inside a loop's round it stops the round the same way, and so the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from flowengine.events import Listener, TokenListener
from flowengine.language.functions import check_functions
from flowengine.language.inputs import template_inputs
from flowengine.language.placement import with_members
from flowengine.language.plan import CompiledNode, Group, Plan
from flowengine.language.templates import evaluate_value
from flowengine.results import (
    ErrorInfo,
    JudgeResult,
    NodeResult,
    RunMetadata,
    RunMetrics,
    RunResult,
    RunStatus,
    made,
    model_metrics,
    to_jsonable,
)
from flowengine.run.budget import BudgetMeter
from flowengine.run.conditions import holds, skip_reason
from flowengine.run.context import TEMPLATE_ERRORS, NodeContext, NodeFailure, Run
from flowengine.run.nodes import NodeRunner, node_runner
from flowengine.run.selection import allowed_models, select_nodes
from flowengine.spec import PluginProvider
from flowengine.store.records import graph_of, save_run

if TYPE_CHECKING:
    from flowengine.language.workflow import Workflow
    from flowengine.run.engine import Engine

SKIP_REASON = "requested with --skip"


async def execute(
    engine: Engine,
    workflow: Workflow,
    inputs: Mapping[str, Any],
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    listeners: Sequence[Listener] = (),
    on_token: TokenListener | None = None,
    streamed: Iterable[str] = (),
    budgets: Sequence[BudgetMeter] = (),
    run_id: str | None = None,
) -> RunResult:
    """Run a checked workflow once; bad arguments raise UsageError before anything starts.

    The calls of the ``streamed`` nodes send the pieces of their answers to ``on_token``.
    The run is ``run_id`` when given (a caller that must name it before it starts), else new.
    """
    values = workflow.bind_inputs(inputs)
    allowed = allowed_models(workflow, models)
    selected, skipped = select_nodes(workflow, only, skip)
    engine.check_credentials(workflow, allowed)
    await engine.check_shared(workflow, allowed)
    runners = _prepare(engine, workflow, selected, allowed)
    run = Run(
        engine,
        workflow,
        values,
        listeners,
        allowed,
        budgets,
        on_token=on_token,
        streamed=streamed,
        run_id=run_id,
    )
    return await Scheduler(run, selected, runners, skipped).execute()


def _prepare(
    engine: Engine, workflow: Workflow, selected: Sequence[str], allowed: Sequence[str]
) -> dict[str, NodeRunner]:
    """What plugins and python nodes need, had before any call: the run function of each
    node kind, each python node's function, and each plugin provider (PluginError, or
    WorkflowError for a function, when one cannot be had)."""
    spec = workflow.spec
    node_ids = with_members(spec, selected)  # the nodes of loops run too
    placed = workflow.placed
    kinds = dict.fromkeys(placed[node_id].node.type for node_id in node_ids)
    if "python" in kinds:  # only python nodes have functions to load
        check_functions(spec, workflow.source, node_ids)
    if not engine.offline:
        for name in dict.fromkeys(spec.provider_of(alias) for alias in allowed):
            if isinstance(spec.providers[name], PluginProvider):
                engine.provider(name, spec.providers[name])
    return {kind: node_runner(kind) for kind in kinds}


class Scheduler:
    """Starts ready nodes, collects their results, and stops early on a failure.

    It runs a workflow's nodes, or (given ``graph`` and ``scope``) one round of a loop's group.
    """

    def __init__(
        self,
        run: Run,
        selected: Sequence[str],
        runners: Mapping[str, NodeRunner],
        skipped: Sequence[str] = (),
        *,
        graph: Group | None = None,
        scope: dict[str, Any] | None = None,
    ) -> None:
        self.run = run
        self.runners = runners
        self.plan = run.workflow.plan
        #: The nodes this scheduler runs: the workflow's, or a round's.
        self.graph: Plan | Group = self.plan if graph is None else graph
        #: What stops it: the run, or one round of a loop.
        self.what = "run" if graph is None else "round"
        self.selected = selected
        # Nodes the caller asked to skip. Each is skipped once its needs are done, as a false
        # condition is: the nodes after it may read what is above it, so that must be done.
        self.skipped = frozenset(skipped)
        chosen = set(selected)
        self.position = {node_id: i for i, node_id in enumerate(selected)}
        #: How many needs of each selected node are not done yet.
        self.waiting = {n: sum(d in chosen for d in self.graph.nodes[n].needs) for n in selected}
        self.ready = [n for n in selected if not self.waiting[n]]
        self.results: dict[str, NodeResult] = {}
        self.tasks: dict[asyncio.Task[NodeResult], str] = {}
        self.inline: str | None = None  # the node running in execute() itself, if any
        self.stopped_by: str | None = None  # the failed node that stopped the run, if any
        # What templates read: the inputs (by name and as `inputs`), `models`, and each node's
        # output by id once it is done. Nodes read only their ancestors, which are done before
        # they start, so adding outputs as nodes finish never changes what a node sees.
        self.scope: dict[str, Any] = (
            {**template_inputs(run.workflow.spec.inputs, run.inputs), "models": self.plan.models}
            if scope is None
            else scope
        )

    async def execute(self) -> RunResult:
        run = self.run
        started = time.perf_counter()
        run.emit("run_started")
        try:
            failure = await self.run_nodes()
        except asyncio.CancelledError:
            # Cancelled from outside (Ctrl-C, a service's timeout): what was done, and paid
            # for, is still recorded before the cancellation goes on.
            self.finish_run(started, ErrorInfo(type="cancelled", message="the run was cancelled"))
            raise
        return self.finish_run(started, failure)

    async def run_nodes(self) -> ErrorInfo | None:
        """Run the nodes until all are done, or one fails (with ``on_error: fail``): its error.

        Nodes still running then are cancelled, as they are when this is cancelled.
        """
        failure: ErrorInfo | None = None
        try:
            while (self.ready or self.tasks) and failure is None:
                if len(self.ready) == 1 and not self.tasks:
                    # The only node there is to run runs in this coroutine: nothing else can
                    # start until it ends, and a chain of nodes (the common shape) then needs
                    # no task and no wait at all (a tenth of a run's CPU, offline benchmark).
                    node_id = self.inline = self.ready.pop()
                    result = await self.run_node(self.graph.nodes[node_id])
                    self.inline = None
                    failure = self.finish(node_id, result)
                    continue
                self.start_ready()
                done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: self.position[self.tasks[t]]):
                    failure = self.finish(self.tasks.pop(task), task.result()) or failure
            if self.run.calls.refused is not None:
                await self.drain()
        except asyncio.CancelledError:
            await self.cancel_all()
            raise
        await self.cancel_all()
        return failure

    async def run_round(
        self, loop: CompiledNode, scope: dict[str, Any], number: int
    ) -> tuple[dict[str, Any], ErrorInfo | None]:
        """Round ``number`` of ``loop``'s group, on a scheduler of its own whose nodes read
        ``scope``; their results join this run's as ``loop[number].node``."""
        assert loop.group is not None
        name = f"{loop.id}[{number}]"
        group = loop.group
        named = {n: dataclasses.replace(node, id=f"{name}.{n}") for n, node in group.nodes.items()}
        graph = Group(named, group.order, group.dependents)
        one = Scheduler(self.run, group.order, self.runners, graph=graph, scope=scope)
        try:
            failure = await one.run_nodes()
        finally:
            one.settle()
            self.results.update({f"{name}.{n}": result for n, result in one.results.items()})
        return {n: scope.get(n) for n in group.order}, failure

    def start_ready(self) -> None:
        for node_id in self.ready:
            task = asyncio.create_task(self.run_node(self.graph.nodes[node_id]))
            self.tasks[task] = node_id
        self.ready.clear()

    def finish(self, node_id: str, result: NodeResult) -> ErrorInfo | None:
        """Record a node's result and unblock its dependents; the error if the run must stop."""
        self.results[node_id] = result
        self.scope[node_id] = result.output
        if self.run.calls.refused is not None:
            return self.run.calls.refused  # the budget is spent: nothing more starts
        if result.status == "failed" and self.graph.nodes[node_id].spec.on_error == "fail":
            self.stopped_by = node_id
            return result.error
        for dependent in self.graph.dependents[node_id]:
            if dependent in self.waiting:
                self.waiting[dependent] -= 1
                if not self.waiting[dependent]:
                    self.ready.append(dependent)
        return None

    async def drain(self) -> None:
        """Let the nodes in flight finish, starting nothing after them: the budget refuses
        their further calls, and the calls they started finish and count."""
        while self.tasks:
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self.finish(self.tasks.pop(task), task.result())

    async def cancel_all(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        stopped = [*self.tasks.values(), *([self.inline] if self.inline else [])]
        for node_id in stopped:
            partial = self.run.kept(self.graph.nodes[node_id].id)
            self.results[node_id] = NodeResult(status="cancelled", output=partial)
        self.tasks.clear()
        self.inline = None

    def skip(self, node_id: str, reason: str) -> NodeResult:
        self.run.emit("node_skipped", node=node_id, reason=reason)
        return NodeResult(status="skipped", reason=reason)

    def unless_runs(self, node: CompiledNode) -> NodeResult | None:
        """The result of a node that is not to run: skipped (asked to be, or its ``when:`` is
        false), or failed when evaluating its ``when:`` failed; None when the node runs."""
        if node.id in self.skipped:
            return self.skip(node.id, SKIP_REASON)
        if node.when is None:
            return None
        try:
            if holds(node.when, self.scope, f"nodes.{node.id}.when"):
                return None
        except NodeFailure as exc:
            self.run.emit("node_failed", node=node.id, duration_s=0.0, error=exc.error)
            now = datetime.now(UTC)
            return NodeResult(status="failed", started_at=now, duration_s=0.0, error=exc.error)
        return self.skip(node.id, skip_reason(node.when))

    async def run_node(self, node: CompiledNode) -> NodeResult:
        run = self.run
        decided = self.unless_runs(node)
        if decided is not None:
            return decided
        run.emit("node_started", node=node.id)
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        ctx = NodeContext(run, node, self.scope, self.run_round)
        status: Any = "succeeded"
        output: Any = None
        error: ErrorInfo | None = None
        runner = self.runners[node.spec.type]
        try:
            if node.spec.timeout is None:
                output = await runner(ctx)
            else:
                async with asyncio.timeout(node.spec.timeout):
                    output = await runner(ctx)
        except NodeFailure as exc:
            status, output, error = "failed", exc.output, exc.error
        except TimeoutError:
            message = f"node timed out after {node.spec.timeout}s"
            status, error = "failed", ErrorInfo(type="timeout", message=message)
            output = run.kept(node.id)
        except ValidationError:
            raise
        except TEMPLATE_ERRORS as exc:
            status, error = "failed", ErrorInfo(type="template", message=f"nodes.{node.id}: {exc}")
        duration = round(time.perf_counter() - clock, 6)
        if status == "failed":
            run.emit("node_failed", node=node.id, duration_s=duration, error=error)
        else:
            run.emit("node_finished", node=node.id, duration_s=duration, status=status)
        return NodeResult(
            status=status, started_at=started_at, duration_s=duration, output=output, error=error
        )

    def settle(self) -> None:
        """Give each node that did not start a result: skipped, saying why."""
        if self.run.calls.refused is not None:
            stopped = "the budget stopped the run"
        elif self.stopped_by is not None:
            node = self.graph.nodes[self.stopped_by].id
            stopped = f"'{node}' failed, so the {self.what} stopped"
        else:
            stopped = "the run was cancelled"
        for node_id in self.selected:
            self.results.setdefault(node_id, NodeResult(status="skipped", reason=stopped))

    def finish_run(self, started: float, failure: ErrorInfo | None) -> RunResult:
        """Build the result, record it, and say the run is over."""
        run = self.run
        self.settle()
        result = self.result(time.perf_counter() - started, failure)
        engine = run.engine
        if engine.store is not None and run.calls.timeline is not None:
            workflow = run.workflow
            save_run(
                engine.store,
                result,
                workflow.source.file,
                workflow.content_hash,
                run.calls.timeline,
                graph_of(workflow.spec.nodes),
            )
        run.emit(
            "run_finished",
            status=result.status,
            duration_s=result.metadata.total_time,
            error=result.error,
        )
        return result

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
            metrics=RunMetrics(models=model_metrics(run.calls.results)),
        )

    def status(self) -> RunStatus:
        """Succeeded when every node did (or was skipped), no call in a node's output failed and
        no judge of a panel failed; else partial."""
        for result in self.results.values():
            if result.status != "succeeded" and result.status != "skipped":
                return "partial"
            output = result.output
            if isinstance(output, list):
                for item in output:
                    if getattr(item, "success", True) is False:
                        return "partial"
            if isinstance(output, JudgeResult) and output.failed_judges:
                return "partial"
        return "succeeded"

    def metadata(self, total: float) -> RunMetadata:
        """Totals of the run; tokens and cost count what was spent, so cache hits count zero."""
        calls = made(self.run.calls.results)
        tokens = prompt = completion = 0
        spent = 0.0
        priced = unpriced = False
        for call in calls:
            usage = call.usage
            if usage.cost is not None:
                priced = True  # a cache hit with a known price cost nothing this time: 0
            elif call.success:
                unpriced = True  # a call without a price makes the cost a lower bound
            if not call.cached:
                tokens += usage.total_tokens or 0
                prompt += usage.prompt_tokens or 0
                completion += usage.completion_tokens or 0
                spent += usage.cost or 0.0
        return RunMetadata(
            total_time=round(total, 6),
            calls=len(calls),
            concurrent_calls=self.run.calls.peak,
            tokens=tokens,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=round(spent, 10) if priced else None,
            cost_complete=priced and not unpriced,
            model_selector_confidence=self.run.selector_confidence,
        )

    def output(self, metadata: RunMetadata, status: RunStatus) -> tuple[Any, ErrorInfo | None]:
        """The output mapping evaluated over every node (absent ones are None)."""
        if self.plan.output is None:
            return to_jsonable({n: self.scope.get(n) for n in self.selected}), None
        context = {**self.scope, **{n: self.scope.get(n) for n in self.plan.order}}
        if self.plan.output_reads_metadata:
            context["metadata"] = metadata.model_dump()
        try:
            return to_jsonable(evaluate_value(self.plan.output, context)), None
        except ValidationError:
            raise
        except TEMPLATE_ERRORS as exc:
            if status == "failed":
                return None, None
            return None, ErrorInfo(type="template", message=f"output: {exc}")
