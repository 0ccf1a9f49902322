"""Call, node and run results, and the metrics computed from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(_Result):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None


class ErrorInfo(_Result):
    """What went wrong: ``{type, status, message}``."""

    type: str
    status: int | str | None = None
    message: str


class CallResult(_Result):
    """One model call. In a template it renders as its ``content``."""

    model: str
    model_id: str
    served_model: str | None = None
    provider: str
    content: str | None = None
    success: bool
    error: ErrorInfo | None = None
    confidence: float | None = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    attempts: int = 0
    cached: bool = False
    started_at: float | None = Field(default=None, exclude=True)

    def __str__(self) -> str:
        return self.content or ""


class SelectResult(_Result):
    """A select node's choice. In a template it renders as the chosen model alias."""

    model: str
    confidence: float | None = None
    scores: dict[str, float] = {}
    source: Literal["selector", "weight", "fallback"]
    reason: str | None = None

    def __str__(self) -> str:
        return self.model


NodeStatus = Literal["succeeded", "failed", "skipped", "cancelled"]
RunStatus = Literal["succeeded", "partial", "failed"]


class NodeResult(_Result):
    status: NodeStatus
    started_at: datetime | None = None
    duration_s: float | None = None
    output: Any = None
    error: ErrorInfo | None = None


class ModelMetrics(_Result):
    calls: int = 0
    success_rate: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    tokens: int = 0
    cost: float | None = None
    cached: int = 0
    retries: int = 0


class RunMetadata(_Result):
    total_time: float
    calls: int
    concurrent_calls: int
    tokens: int
    cost: float | None
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


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def model_metrics(calls: list[CallResult]) -> dict[str, ModelMetrics]:
    """Per-model metrics from every call of a run, in first-call order."""
    by_model: dict[str, list[CallResult]] = {}
    for call in calls:
        by_model.setdefault(call.model, []).append(call)
    out: dict[str, ModelMetrics] = {}
    for alias, group in by_model.items():
        live = [c for c in group if not c.cached]
        latencies = [c.latency_s for c in live]
        # What was spent: a cache hit costs no tokens and no money this time.
        costs = [c.usage.cost for c in live if c.usage.cost is not None]
        out[alias] = ModelMetrics(
            calls=len(group),
            success_rate=sum(c.success for c in group) / len(group),
            latency_p50_s=percentile(latencies, 50),
            latency_p95_s=percentile(latencies, 95),
            tokens=sum(c.usage.total_tokens or 0 for c in live),
            cost=sum(costs) if costs else None,
            cached=len(group) - len(live),
            retries=sum(max(0, c.attempts - 1) for c in group),
        )
    return out
