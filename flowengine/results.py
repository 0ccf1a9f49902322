"""Call, node and run results, and the metrics computed from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, is_dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter


class _Result(BaseModel):
    # Validators and serialisers are built on first use: `validate` reads these classes'
    # fields, and needs neither (a tenth of its start-up otherwise).
    model_config = ConfigDict(extra="forbid", defer_build=True)


# A run makes many of the records below and keeps them until it ends, so they are slotted
# dataclasses: a pydantic model costs three tracked objects and a validation each, which adds
# up to garbage-collector work across thousands of runs in flight. The engine builds them from
# data it has already checked; pydantic still validates and serialises them inside RunResult.


@dataclass(slots=True, kw_only=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None


@dataclass(slots=True, kw_only=True)
class ErrorInfo:
    """What went wrong: ``{type, status, message}``."""

    type: str
    status: int | str | None = None
    message: str


@dataclass(slots=True, kw_only=True)
class CallResult:
    """One model call. In a template it renders as its ``content``."""

    model: str
    model_id: str
    served_model: str | None = None
    provider: str
    content: str | None = None
    success: bool
    error: ErrorInfo | None = None
    confidence: float | None = None
    #: A judge node's mean score of this answer, from 0 (its scale's lowest) to 1 (its highest).
    quality: float | None = None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    #: Seconds the call took, not counting the time it waited for the provider's limits.
    latency_s: float = 0.0
    #: Seconds the call waited for the provider's rate limit and concurrency cap.
    queued_s: float = 0.0
    #: Seconds to the first piece of a streamed answer, not counting ``queued_s``; None when
    #: the call was not streamed. Set on a failed call too when its answer had begun.
    ttft_s: float | None = None
    attempts: int = 0
    cached: bool = False
    #: Tool calls the model asked for (OpenAI's ``message.tool_calls``), when it did.
    tool_calls: list[dict[str, Any]] | None = None
    #: The answer parsed as JSON and valid against the node's ``schema:``; None without one.
    data: Any = None

    def __str__(self) -> str:
        return self.content or ""


@dataclass(slots=True, kw_only=True)
class SelectResult:
    """A select node's choice. In a template it renders as the chosen model alias."""

    model: str
    confidence: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    source: Literal["selector", "weight", "fallback"]
    reason: str | None = None

    def __str__(self) -> str:
        return self.model


@dataclass(slots=True, kw_only=True)
class LoopResult:
    """A loop node's output: each round's outputs by node id, the last round, why it stopped.

    ``stopped`` is ``condition`` (``until`` held), ``cap`` (``max_rounds`` rounds ran, and
    ``capped`` is true) or ``failure`` (a node of the last round failed); None while it runs,
    or if it was cancelled or timed out, when ``rounds`` holds the rounds it finished.
    """

    rounds: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] | None = None
    stopped: Literal["condition", "cap", "failure"] | None = None
    capped: bool = False

    def __str__(self) -> str:
        last = self.last or {}
        return "\n".join(f"{node}: {value}" for node, value in last.items() if value is not None)


@dataclass(slots=True, kw_only=True)
class Verdict:
    """One judge's scores of one answer, on the judge node's scale, and its reason."""

    judge: str
    scores: dict[str, int | float]
    reason: str


@dataclass(slots=True, kw_only=True)
class JudgedAnswer:
    """One answer a judge node scored: its mean score, and every verdict on it."""

    letter: str
    model: str
    rank: int
    #: The mean of every score it got (each judge's, each criterion's), on the scale.
    score: float
    #: ``score`` from 0 (the scale's lowest) to 1 (its highest); also on the answer's result.
    quality: float
    #: Each criterion's score, averaged over the judges.
    scores: dict[str, float]
    verdicts: list[Verdict]


@dataclass(slots=True, kw_only=True)
class JudgeResult:
    """A judge node's output. In a template it renders as the best answer's content."""

    best: CallResult
    #: The judged models, best first.
    ranking: list[str]
    #: The judged answers, best first.
    candidates: list[JudgedAnswer]
    criteria: list[str]
    scale: tuple[int | float, int | float]
    #: The judges whose scores count.
    judges: list[str]
    #: Judges that failed, and why: their scores are left out of the averages.
    failed_judges: dict[str, ErrorInfo] = field(default_factory=dict)

    def __str__(self) -> str:
        return str(self.best)


#: ``skipped``: the node did not run, and ``reason`` says why: its condition was false, it was
#: asked to be skipped, or the run stopped before it. It is not a failure, and it made no calls.
#: ``cancelled``: it was running when the run stopped.
NodeStatus = Literal["succeeded", "failed", "skipped", "cancelled"]
RunStatus = Literal["succeeded", "partial", "failed"]


@dataclass(slots=True, kw_only=True)
class NodeResult:
    status: NodeStatus
    started_at: datetime | None = None
    duration_s: float | None = None
    output: Any = None
    error: ErrorInfo | None = None
    #: Why a skipped node did not run.
    reason: str | None = None


@dataclass(slots=True, kw_only=True)
class ModelMetrics:
    calls: int = 0
    success_rate: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    tokens: int = 0
    cost: float | None = None
    cached: int = 0
    retries: int = 0
    #: Seconds the model's calls waited, in all, for the provider's rate limit and cap.
    queued_s: float = 0.0
    #: The mean quality (0 to 1) of its answers that a judge scored; None if none was.
    quality: float | None = None
    #: How many of its answers a judge scored.
    judged: int = 0
    #: The median time to the first piece of text of its streamed calls (None: none streamed).
    ttft_p50_s: float | None = None


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def to_jsonable(value: Any) -> Any:
    """Results, models and containers of them as plain JSON data."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return _adapter(type(value)).dump_python(value, mode="json")
    return value


def _adapter(kind: type) -> TypeAdapter[Any]:
    """One adapter per type, made on first use: its compiled serializer and validator are much
    faster than inferring one each time."""
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return adapter


def call_from(data: Any) -> CallResult:
    """A CallResult from its JSON form (as stored in a run record)."""
    found: CallResult = _adapter(CallResult).validate_python(data)
    return found


class RunMetadata(_Result):
    total_time: float
    #: Model calls made: sent to a provider, or answered from the cache.
    calls: int
    concurrent_calls: int
    #: Tokens the calls spent (a cache hit spends none): in all, and of prompts and of answers
    #: where the provider said (so the two may add up to less than ``tokens``).
    tokens: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: What the calls cost, where a price is known; None when no call has one.
    cost: float | None
    #: False when some call has no known price, so ``cost`` is a lower bound.
    cost_complete: bool = True
    model_selector_confidence: float | None


class RunMetrics(_Result):
    models: dict[str, ModelMetrics] = {}


class RunResult(_Result):
    """What a run returns: status, inputs, the output mapping, every node, metadata, metrics."""

    workflow: str
    run_id: str
    status: RunStatus
    inputs: dict[str, Any]
    output: Any = None
    error: ErrorInfo | None = None
    nodes: dict[str, NodeResult]
    metadata: RunMetadata
    metrics: RunMetrics


def made(calls: list[CallResult]) -> list[CallResult]:
    """The calls that were made: sent to a provider, or answered from the cache."""
    return [call for call in calls if call.attempts or call.cached]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100); None for no values."""
    if len(values) < 2:
        return values[0] if values else None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) / 100)))
    return ordered[rank - 1]


def model_metrics(calls: list[CallResult]) -> dict[str, ModelMetrics]:
    """Per-model metrics from every call of a run that was made, in first-call order.

    A call never sent (its provider had rejected the key earlier in the run) is not counted.
    """
    by_model: dict[str, list[CallResult]] = {}
    for call in made(calls):
        group = by_model.get(call.model)
        if group is None:
            by_model[call.model] = [call]
        else:
            group.append(call)
    return {alias: _metrics(group) for alias, group in by_model.items()}


def _metrics(group: list[CallResult]) -> ModelMetrics:
    latencies: list[float] = []
    firsts: list[float] = []
    qualities: list[float] = []
    succeeded = retries = tokens = 0
    queued = 0.0
    cost: float | None = None
    for call in group:
        succeeded += call.success
        if call.quality is not None:
            qualities.append(call.quality)
        if call.attempts > 1:
            retries += call.attempts - 1
        usage = call.usage
        if usage.cost is not None and cost is None:
            cost = 0.0  # priced: a cache hit then counts as 0, not as unknown
        if call.cached:  # what was spent: a cache hit costs no tokens and no money this time
            continue
        latencies.append(call.latency_s)
        if call.ttft_s is not None:
            firsts.append(call.ttft_s)
        queued += call.queued_s
        tokens += usage.total_tokens or 0
        if usage.cost is not None:
            cost = (cost or 0.0) + usage.cost
    return ModelMetrics(
        calls=len(group),
        success_rate=succeeded / len(group),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        tokens=tokens,
        cost=cost,
        cached=len(group) - len(latencies),
        retries=retries,
        queued_s=round(queued, 6),
        quality=round(sum(qualities) / len(qualities), 4) if qualities else None,
        judged=len(qualities),
        ttft_p50_s=percentile(firsts, 50),
    )
