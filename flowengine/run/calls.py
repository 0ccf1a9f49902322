"""One run's state: its inputs, its calls and their counters, and the call path every node uses."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowengine.errors import CallError
from flowengine.events import Event, EventKind, Listener
from flowengine.providers import ChatRequest, Completion, Provider
from flowengine.results import CallResult, ErrorInfo, to_micros
from flowengine.run.resilience import AuthGate, ProviderLimits, call_with_retries, stray_error
from flowengine.spec import ModelSpec, NodeSpec, OpenAIProvider, Retry
from flowengine.store.cache import cache_key
from flowengine.store.records import CallRecord

if TYPE_CHECKING:
    from flowengine.language.workflow import Workflow
    from flowengine.run.engine import Engine


class NodeFailure(Exception):
    """A node did not succeed; ``output`` keeps what it produced (failed calls included)."""

    def __init__(self, error: ErrorInfo, output: Any = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.output = output


class Run:
    """The state of one run, shared by its nodes."""

    __slots__ = (
        "_targets",
        "allowed",
        "calls",
        "engine",
        "gate",
        "in_flight",
        "inputs",
        "listeners",
        "models",
        "partial",
        "peak",
        "run_id",
        "scores",
        "selector_confidence",
        "spec",
        "timeline",
        "workflow",
    )

    def __init__(
        self,
        engine: Engine,
        workflow: Workflow,
        run_id: str,
        inputs: dict[str, Any],
        listeners: Sequence[Listener],
        allowed: Sequence[str],
    ) -> None:
        self.engine = engine
        self.workflow = workflow
        self.spec = workflow.spec
        self.run_id = run_id
        self.inputs = inputs
        self.listeners = listeners
        self.allowed = allowed  # model aliases this run may use, by weight
        self.gate: AuthGate | None = None  # made at the first authentication failure
        self.calls: list[CallResult] = []
        self.partial: dict[str, list[CallResult]] = {}
        self.scores: dict[str, float] = {}
        self.selector_confidence: float | None = None
        self.in_flight = 0
        self.peak = 0
        self._targets: dict[str, _Target] = engine.table(workflow.spec)
        self.timeline: list[CallRecord] = []
        self.models = workflow.plan.models

    def emit(self, kind: EventKind, **fields: Any) -> None:
        if not self.listeners:
            return
        event = Event(kind, self.run_id, self.spec.name, **fields)
        for listener in self.listeners:
            listener(event)

    def by_weight(self, aliases: Iterable[str]) -> list[str]:
        """``aliases`` (known ones, once each) in the workflow's priority order."""
        wanted = set(aliases)
        return [alias for alias in self.workflow.plan.by_weight if alias in wanted]

    def resolve_alias(self, name: str) -> str | None:
        """An alias for a name that is an alias or a provider model id (exact, then any case)."""
        if name in self.spec.models:
            return name
        lowered = name.strip().lower()
        for alias, model in self.spec.models.items():
            if model.id == name or alias.lower() == lowered or model.id.lower() == lowered:
                return alias
        return None

    def _target(self, alias: str) -> _Target:
        found = self._targets.get(alias)
        if found is None:
            model: ModelSpec = self.spec.models[alias]
            name = self.spec.provider_of(alias)
            spec = self.spec.providers[name]
            provider, limits = self.engine.provider(name, spec)
            live = provider.spec
            # Offline answers cost nothing and never change: caching them would only add I/O.
            cache_url = live.base_url if isinstance(live, OpenAIProvider) else None
            timeout = self.spec.defaults.timeout or spec.timeout
            found = _Target(model.id, name, provider, limits, timeout, spec.retry, cache_url)
            self._targets[alias] = found
        return found

    async def call(
        self,
        node_id: str,
        node: NodeSpec,
        alias: str,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        into: list[CallResult] | None = None,
    ) -> CallResult:
        """One model call with limits and retries; failures come back as ``success: false``.

        ``into`` collects the result as soon as it exists, so that a node cancelled midway
        still reports the calls it completed (and paid for).
        """
        target = self._target(alias)
        request = ChatRequest(target.model_id, messages, params, target.timeout)
        wall = time.time() if self.engine.record else 0.0  # for the run's timeline
        started = time.perf_counter()
        cache = self.engine.cache if node.cache and target.cache_url else None
        key = cache_key(target.cache_url or "", request) if cache is not None else ""
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            latency = time.perf_counter() - started
            result = self._result(alias, target, hit, latency, attempts=0, cached=True)
        else:
            # The first attempt is made here, directly: nearly every call succeeds at once,
            # and the retry policy's machinery costs more CPU than a fast call. With no limit
            # to wait for and no provider blocked, the attempt runs in this very coroutine.
            outcome: Completion | CallError
            attempts = 1
            limits = target.limits
            try:
                if limits.free and self.gate is None:
                    limits.enter_now()
                    self._opened()
                    try:
                        outcome = await target.provider.complete(request)
                    except CallError as error:
                        self._failed(target, error)
                        raise
                    except Exception as exc:
                        raise stray_error(target.provider_name, exc) from exc
                    finally:
                        limits.exit()
                        self._closed()
                else:
                    outcome = await self._attempt(target, request)
            except CallError as error:
                try:
                    outcome, attempts = await self._retry(
                        node_id, node, alias, target, request, error
                    )
                except CallError as final:
                    outcome, attempts = final, final.attempts
            latency = time.perf_counter() - started  # the call's own time, before any pricing
            if isinstance(outcome, Completion) and outcome.usage.cost is None:
                outcome = await self._priced(target, outcome)
            result = self._finished(alias, target, outcome, attempts, latency)
            if result.success and cache is not None:
                cache.put(key, target.cache_url or "", target.model_id, _completion(result))
        self._record(node_id, alias, result, messages, wall, into)
        return result

    async def _retry(
        self,
        node_id: str,
        node: NodeSpec,
        alias: str,
        target: _Target,
        request: ChatRequest,
        first: CallError,
    ) -> tuple[Completion, int]:
        """The retry policy, from a failed first attempt; raises the last CallError."""
        retry: Retry = node.retry or self.spec.defaults.retry or target.retry
        on_retry = self._on_retry(node_id, alias) if self.listeners else None
        return await call_with_retries(
            functools.partial(self._attempt, target, request), retry, on_retry=on_retry, first=first
        )

    def _finished(
        self,
        alias: str,
        target: _Target,
        outcome: Completion | CallError,
        attempts: int,
        latency: float,
    ) -> CallResult:
        """The call's result from its completion or its last error."""
        if isinstance(outcome, CallError):
            return CallResult(
                model=alias,
                model_id=target.model_id,
                provider=target.provider_name,
                success=False,
                error=ErrorInfo(type=outcome.type, status=outcome.status, message=outcome.message),
                latency_s=to_micros(latency),
                attempts=attempts,
                confidence=self.scores.get(alias),
            )
        return self._result(alias, target, outcome, latency, attempts=attempts, cached=False)

    def _record(
        self,
        node_id: str,
        alias: str,
        result: CallResult,
        messages: list[dict[str, str]],
        wall: float,
        into: list[CallResult] | None,
    ) -> None:
        """Keep the result: in the run, in ``into``, on the timeline; tell the listeners."""
        self.calls.append(result)
        if into is not None:
            into.append(result)
        status = "succeeded" if result.success else "failed"
        if self.engine.record:
            self.timeline.append(
                CallRecord(
                    node_id,
                    alias,
                    wall,
                    time.time(),
                    result.attempts,
                    status,
                    result.cached,
                    messages,
                )
            )
        if self.listeners:
            self.emit(
                "call_finished",
                node=node_id,
                model=alias,
                duration_s=result.latency_s,
                status=status,
                error=result.error,
                cached=result.cached,
            )

    async def _attempt(self, target: _Target, request: ChatRequest) -> Completion:
        """One attempt: the auth gate, then the provider's limits, then the request."""
        if self.gate is not None:
            self.gate.check(target.provider_name)
        async with target.limits.slot():
            self._opened()
            try:
                return await target.provider.complete(request)
            except CallError as error:
                self._failed(target, error)
                raise
            except Exception as exc:
                raise stray_error(target.provider_name, exc) from exc
            finally:
                self._closed()

    def _opened(self) -> None:
        """Count an attempt in, for the run's ``concurrent_calls``."""
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight

    def _closed(self) -> None:
        self.in_flight -= 1

    def _failed(self, target: _Target, error: CallError) -> None:
        """After a 401 (or no key), no further call goes to that provider in this run."""
        if error.status == 401 or error.type == "auth":
            self.gate = self.gate or AuthGate()
            self.gate.record(target.provider_name, error)

    def _on_retry(self, node_id: str, alias: str) -> Callable[[int, CallError, float], None]:
        def on_retry(number: int, error: CallError, delay: float) -> None:
            info = ErrorInfo(type=error.type, status=error.status, message=error.message)
            self.emit(
                "call_retried", node=node_id, model=alias, attempt=number, delay_s=delay, error=info
            )

        return on_retry

    async def _priced(self, target: _Target, completion: Completion) -> Completion:
        """The completion with its cost from the provider's price list, when it has one."""
        models = getattr(target.provider, "price_list", None)
        if models is None or target.cache_url is None:
            return completion
        cost = await self.engine.prices.cost(
            target.cache_url, models, target.model_id, completion.usage
        )
        if cost is None:
            return completion
        usage = dataclasses.replace(completion.usage, cost=cost)
        return dataclasses.replace(completion, usage=usage)

    def _result(
        self,
        alias: str,
        target: _Target,
        completion: Completion,
        latency: float,
        *,
        attempts: int,
        cached: bool,
    ) -> CallResult:
        return CallResult(
            model=alias,
            model_id=target.model_id,
            served_model=completion.served_model,
            provider=target.provider_name,
            content=completion.content,
            success=True,
            error=None,
            confidence=self.scores.get(alias),
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            latency_s=to_micros(latency),
            attempts=attempts,
            cached=cached,
        )


@dataclass(frozen=True, slots=True)
class _Target:
    """Where calls for one model alias go, resolved once per run."""

    model_id: str
    provider_name: str
    provider: Provider
    limits: ProviderLimits
    timeout: float
    retry: Retry
    cache_url: str | None  # the provider's base URL, part of cache keys; None: do not cache


def _completion(result: CallResult) -> Completion:
    return Completion(result.content or "", result.served_model, result.finish_reason, result.usage)
