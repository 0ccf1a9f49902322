"""Dry runs: walk a workflow as a run would, and price the model calls it would make.

A :class:`DryEngine` runs workflows through the real scheduler and nodes, but its call path
never sends a call: each one is counted and answered with the offline provider's stand-in
(JSON that matches the schema for a structured node, so ``when:`` conditions and templates that
read ``.data`` work). Retries and repairs do not happen, so they are not counted. Nothing is
written to the response cache or the run records; the price lists are fetched, and kept in the
store for a day, as in a run. The selector service is asked as in a run: it is not a model.

Estimates, per call:

- prompt tokens: the characters of the rendered messages (and of the ``response_format`` a
  structured node sends), divided by :data:`CHARS_PER_TOKEN`, rounded up;
- completion tokens: the call's ``max_tokens`` (or ``max_completion_tokens``), an upper bound;
  where neither is set, :data:`DEFAULT_COMPLETION_TOKENS`;
- cost: both times the model's price in its provider's price list; the offline provider is
  free; a model without a known price has no cost, and the total is then a lower bound.

A loop is walked as a run walks it: round after round until its ``until:`` holds on the
stand-in answers, or to its ``max_rounds``. The estimate says which (:class:`LoopWalk`): where
``until:`` held early, a real run may take more rounds, up to the cap.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from flowengine.errors import CallError
from flowengine.language.workflow import Workflow
from flowengine.providers import ChatRequest
from flowengine.providers.offline import offline_content
from flowengine.results import CallResult, LoopResult, RunResult, Usage
from flowengine.run.budget import BudgetMeter, usd
from flowengine.run.calls import CallPath, Emit, Target
from flowengine.run.engine import Engine
from flowengine.spec import Budget, LoopNode, OfflineProvider
from flowengine.store.db import Store
from flowengine.store.prices import PriceBook

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_TOKENS = 1024


def prompt_tokens(messages: list[dict[str, str]], params: Mapping[str, Any]) -> int:
    """Characters over :data:`CHARS_PER_TOKEN`: a rough count, as no tokenizer is at hand."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    if params.get("response_format") is not None:
        chars += len(json.dumps(params["response_format"], ensure_ascii=False))
    return math.ceil(chars / CHARS_PER_TOKEN)


def completion_tokens(params: Mapping[str, Any]) -> int | None:
    """The most a call may answer (its ``max_tokens``), or None when the call sets no cap."""
    for key in ("max_tokens", "max_completion_tokens"):
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass
class ModelTally:
    """The calls of one model alias over every stand-in run of a dry run."""

    provider: str
    model_id: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    uncapped: int = 0  # calls without max_tokens, counted at DEFAULT_COMPLETION_TOKENS
    cost: float | None = 0.0  # None once a call has no known price
    price_note: str | None = None


class StandInCalls(CallPath):
    """A call path that sends nothing: it counts each call and answers with a stand-in."""

    def __init__(self, engine: DryEngine, emit: Emit, confidence: Mapping[str, float]) -> None:
        super().__init__(cache=None, prices=None, emit=emit, confidence=confidence)
        self.engine = engine

    async def call(
        self,
        node_id: str,
        target: Target,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        **options: Any,
    ) -> CallResult:
        request = ChatRequest(target.model_id, messages, params, target.timeout)
        capped = completion_tokens(params)
        prompt, completion = prompt_tokens(messages, params), capped or DEFAULT_COMPLETION_TOKENS
        usage = Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )
        usage.cost = await self.engine.price(target, usage, uncapped=capped is None)
        result = CallResult(
            model=target.alias,
            model_id=target.model_id,
            served_model=target.model_id,
            provider=target.provider_name,
            content=offline_content(request),
            success=True,
            confidence=self.confidence.get(target.alias),
            finish_reason="stop",
            usage=usage,
            attempts=1,
        )
        self.results.append(result)
        self.emit(
            "call_finished",
            node=node_id,
            model=target.alias,
            duration_s=0.0,
            status="succeeded",
            error=None,
            cached=False,
        )
        return result


class DryEngine(Engine):
    """An engine whose runs make no model call: :meth:`estimate` says what they would take.

    Example::

        async with DryEngine() as engine:
            result = await engine.run(workflow, prompt="Explain quantum computing")
            estimate = engine.estimate(workflow, [result])

    ``offline=True`` prices every call at the offline provider's price, nothing, and fetches no
    price list. ``db`` keeps the price lists, as an Engine's does.
    """

    def __init__(
        self,
        *,
        offline: bool = False,
        environ: Mapping[str, str] | None = None,
        db: str | Path | None = None,
    ) -> None:
        super().__init__(offline=offline, environ=environ, cache=False, record=False)
        self._price_store = None if offline else Store(db, background=True)
        self.prices = PriceBook(self._price_store)
        self.tally: dict[str, ModelTally] = {}
        self._list_errors: dict[str, str] = {}  # provider -> why its price list is not had

    async def aclose(self) -> None:
        await super().aclose()
        if self._price_store is not None:
            await asyncio.to_thread(self._price_store.close)

    def check_credentials(self, workflow: Workflow, aliases: Iterable[str]) -> None:
        """No call is sent: a missing key only leaves the price list unread (said in notes)."""

    async def check_shared(self, workflow: Workflow, aliases: Iterable[str]) -> None:
        """No call is sent: shared limits are not needed."""

    def call_path(
        self, emit: Emit, confidence: Mapping[str, float], budgets: Sequence[BudgetMeter]
    ) -> CallPath:
        return StandInCalls(self, emit, confidence)

    async def price(self, target: Target, usage: Usage, *, uncapped: bool) -> float | None:
        """Count one call of ``target``; its cost at the provider's price, or None."""
        tally = self.tally.get(target.alias)
        if tally is None:
            tally = self.tally[target.alias] = ModelTally(target.provider_name, target.model_id)
        tally.calls += 1
        tally.prompt_tokens += usage.prompt_tokens or 0
        tally.completion_tokens += usage.completion_tokens or 0
        tally.uncapped += uncapped
        cost, note = await self._cost(target, usage)
        tally.cost = None if cost is None or tally.cost is None else tally.cost + cost
        tally.price_note = tally.price_note or note
        return cost

    async def _cost(self, target: Target, usage: Usage) -> tuple[float | None, str | None]:
        if isinstance(target.provider.spec, OfflineProvider):
            return 0.0, None
        name = target.provider_name
        price_list = getattr(target.provider, "price_list", None)
        if price_list is None or target.cache_id is None:
            return None, f"provider '{name}' has no price list"

        async def fetch() -> Any:
            try:
                return await price_list()
            except CallError as error:
                self._list_errors[name] = error.message
                raise

        cost = await self.prices.cost(target.cache_id, fetch, target.model_id, usage)
        if cost is not None:
            return cost, None
        if name in self._list_errors:
            return None, f"no price list from provider '{name}': {self._list_errors[name]}"
        return None, f"no price for {target.model_id} in the price list of provider '{name}'"

    def estimate(
        self,
        workflow: Workflow,
        runs: Sequence[RunResult],
        *,
        budget: Budget | None = None,
        scale: float = 1.0,
    ) -> Estimate:
        """What the stand-in ``runs`` took, times ``scale`` (the runs each one stands for)."""
        models = [_model_estimate(alias, t, scale) for alias, t in self.tally.items()]
        known = [m.cost for m in models if m.cost is not None]
        budget = workflow.spec.budget if budget is None else budget
        return Estimate(
            workflow=workflow.name,
            runs=len(runs),
            scale=scale,
            models=models,
            calls=sum(m.calls for m in models),
            prompt_tokens=sum(m.prompt_tokens for m in models),
            completion_tokens_max=sum(m.completion_tokens_max for m in models),
            cost=round(sum(known), 10) if known or not models else None,
            cost_complete=len(known) == len(models),
            not_run=not_run(runs),
            loops=loop_walks(workflow, runs),
            budget=budget,
            over_budget=over_budget(runs, budget),
            uncapped_calls=round(sum(t.uncapped for t in self.tally.values()) * scale),
        )


class ModelEstimate(BaseModel):
    model: str
    model_id: str
    provider: str
    calls: int
    prompt_tokens: int
    #: Every call's ``max_tokens`` (or the default): the most the answers may take.
    completion_tokens_max: int
    #: USD at the price list's prices; None when the model has no known price.
    cost: float | None
    #: Why there is no price.
    price_note: str | None = None


class NotRun(BaseModel):
    """A node that did not run in some stand-in runs: skipped, or failed."""

    status: Literal["skipped", "failed"]
    runs: int
    reason: str


class LoopWalk(BaseModel):
    """How a loop went in the stand-in runs where it ran: the rounds walked (in the first),
    of its ``max_rounds``, and why it stopped there."""

    rounds: int
    max_rounds: int
    #: ``condition``: ``until:`` held on the stand-in answers, so a real run may take more
    #: rounds, up to ``max_rounds``; ``cap``: every round was walked; ``failure``: a round failed.
    stopped: Literal["condition", "cap", "failure"] | None
    runs: int


class Estimate(BaseModel):
    """What a dry run found: calls, tokens and cost per model, and the nodes that did not run."""

    workflow: str
    dry_run: Literal[True] = True
    #: Stand-in runs walked (one for `run`; a batch's rows, or a sample of them).
    runs: int
    #: How many runs each walked one stands for: more than 1 when a batch was sampled.
    scale: float = 1.0
    models: list[ModelEstimate]
    calls: int
    prompt_tokens: int
    completion_tokens_max: int
    #: USD; a lower bound when ``cost_complete`` is false, None when no model has a price.
    cost: float | None
    cost_complete: bool
    not_run: dict[str, NotRun]
    #: Each loop that ran: how many rounds the estimate counts, and why it stopped.
    loops: dict[str, LoopWalk] = {}
    #: The caps of each run (the workflow's ``budget:``, or the flags in its place), and for
    #: each cap the walked runs that would pass it.
    budget: Budget = Budget()
    over_budget: dict[str, int] = {}
    #: Calls without ``max_tokens``, counted at DEFAULT_COMPLETION_TOKENS.
    uncapped_calls: int = 0
    #: Set by a batch's dry run: rows it stands for, invalid rows among those walked, and the
    #: caps of the batch's budget (``--max-cost``, ``--max-calls``) that the estimate passes.
    rows: int | None = None
    invalid_rows: int = 0
    batch_budget: Budget | None = None
    batch_over_budget: list[str] = []


def _model_estimate(alias: str, tally: ModelTally, scale: float) -> ModelEstimate:
    return ModelEstimate(
        model=alias,
        model_id=tally.model_id,
        provider=tally.provider,
        calls=round(tally.calls * scale),
        prompt_tokens=round(tally.prompt_tokens * scale),
        completion_tokens_max=round(tally.completion_tokens * scale),
        cost=None if tally.cost is None else round(tally.cost * scale, 10),
        price_note=tally.price_note,
    )


def not_run(runs: Sequence[RunResult]) -> dict[str, NotRun]:
    """The nodes that were skipped or failed in some runs, with the first reason seen."""
    found: dict[str, NotRun] = {}
    for result in runs:
        for node_id, node in result.nodes.items():
            if node.status not in ("skipped", "failed"):
                continue
            reason = node.reason if node.status == "skipped" else None
            reason = reason or (node.error.message if node.error else node.status)
            seen = found.get(node_id)
            if seen is None:
                found[node_id] = NotRun(status=node.status, runs=1, reason=reason)
            else:
                seen.runs += 1
    return found


def loop_walks(workflow: Workflow, runs: Sequence[RunResult]) -> dict[str, LoopWalk]:
    """Each loop node's rounds in the stand-in runs where it ran (the first run's count)."""
    found: dict[str, LoopWalk] = {}
    for node_id, node in workflow.spec.nodes.items():
        if not isinstance(node, LoopNode):
            continue
        outputs = [r.nodes[node_id].output for r in runs if node_id in r.nodes]
        walked = [o for o in outputs if isinstance(o, LoopResult)]
        if walked:
            first = walked[0]
            found[node_id] = LoopWalk(
                rounds=len(first.rounds),
                max_rounds=node.max_rounds,
                stopped=first.stopped,
                runs=len(walked),
            )
    return found


def over_budget(runs: Sequence[RunResult], budget: Budget) -> dict[str, int]:
    """For each cap of ``budget``, the runs whose stand-in would pass it."""
    over: dict[str, int] = {}
    for result in runs:
        meta = result.metadata
        if budget.max_calls is not None and meta.calls > budget.max_calls:
            over["max_calls"] = over.get("max_calls", 0) + 1
        if budget.max_cost is not None and (meta.cost or 0.0) > budget.max_cost:
            over["max_cost"] = over.get("max_cost", 0) + 1
    return over


def budget_text(budget: Budget) -> str:
    """``max_cost $0.50, max_calls 40``: the caps a budget sets."""
    caps = []
    if budget.max_cost is not None:
        caps.append(f"max_cost {usd(budget.max_cost)}")
    if budget.max_calls is not None:
        caps.append(f"max_calls {budget.max_calls}")
    return ", ".join(caps)


async def dry_run(
    workflow: Workflow,
    inputs: Mapping[str, Any],
    *,
    offline: bool = False,
    db: str | Path | None = None,
    budget: Budget | None = None,
    **options: Any,
) -> Estimate:
    """Walk one run of ``workflow`` with stand-in answers; what its calls would take.

    ``options`` are :meth:`Engine.run`'s (``only``, ``skip``, ``models``); ``budget`` is the
    run's, instead of the workflow's, for the estimate to say which caps the run would reach.
    """
    engine = DryEngine(offline=offline, db=db)
    try:
        result = await engine.run(workflow, inputs, **options)
        return engine.estimate(workflow, [result], budget=budget)
    finally:
        await engine.aclose()
