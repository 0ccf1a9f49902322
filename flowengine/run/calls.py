"""The one call path: every model call of a run goes through :meth:`CallPath.call`.

In order: the ``call_started`` event; the response cache; on a miss, the budget
(:mod:`.budget`), then attempts under the retry policy, each through the auth gate, the
provider's concurrency cap and rate limit, then the request; the price, charged to the budget;
then the call's result, its place on the run's timeline and the ``call_finished`` event. A failed
call is a result with ``success: false``, never an exception; a call the budget refuses is one
too, and ``refused`` tells the run to stop.

A streamed call (``on_delta``) goes the same way: the provider passes each piece of text on as
it arrives; a cache hit, or a provider that cannot stream, gives the whole answer as one piece.
A failure before the first piece is retried as any other; after it, the call fails at once with
the provider's message, since what was shown cannot be taken back.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowengine.errors import CallError
from flowengine.providers import ChatRequest, Completion, Provider
from flowengine.results import CallResult, ErrorInfo
from flowengine.run.budget import BudgetMeter, admit, charge
from flowengine.run.resilience import (
    AuthGate,
    NotSent,
    ProviderLimits,
    call_with_retries,
    stray_error,
)
from flowengine.run.single_flight import Flights
from flowengine.spec import Retry
from flowengine.store.backend import CacheBackend, SqliteCache
from flowengine.store.cache import ResponseCache, cache_key
from flowengine.store.prices import PriceBook
from flowengine.store.records import CallRecord

#: ``emit(kind, **fields)``: tell the run's listeners.
Emit = Callable[..., None]


@dataclass(slots=True)
class Target:
    """Where the calls of one model alias go."""

    alias: str
    model_id: str
    provider_name: str
    provider: Provider
    limits: ProviderLimits
    timeout: float
    retry: Retry
    #: Where the answers come from (the provider's ``cache_id``, an OpenAI-compatible API's base
    #: URL): part of cache keys, and the key of a price list. None: do not cache.
    cache_id: str | None


class Deltas:
    """The pieces of one call's answer on their way out: when the first came, how much went.

    ``first`` is seconds from the call's start (``clock``, a ``perf_counter`` reading).
    """

    __slots__ = ("chars", "clock", "first", "on_delta")

    def __init__(self, on_delta: Callable[[str], None], clock: float) -> None:
        self.on_delta = on_delta
        self.clock = clock
        self.first: float | None = None
        self.chars = 0

    def __call__(self, text: str) -> None:
        if not text:
            return
        if self.first is None:
            self.first = time.perf_counter() - self.clock
        self.chars += len(text)
        self.on_delta(text)


def cut_short(error: CallError, chars: int) -> CallError:
    """A failure after part of the answer was shown: final, as another attempt would show a
    second answer after the first one's start."""
    return CallError(
        error.type,
        f"{error.message} (the answer broke off after {chars:,} characters had been streamed; "
        "not retried, as they were shown)",
        status=error.status,
        retryable=False,
    )


class CallPath:
    """The calls of one run: the one function that makes them, and what they add up to.

    Example::

        path = CallPath(cache=None, prices=None, emit=lambda kind, **fields: None)
        result = await path.call("primary", target, messages, {"temperature": 0})
    """

    def __init__(
        self,
        *,
        cache: CacheBackend | ResponseCache | None,
        prices: PriceBook | None,
        emit: Emit,
        timeline: list[CallRecord] | None = None,
        confidence: Mapping[str, float] | None = None,
        budgets: Sequence[BudgetMeter] = (),
        flights: Flights | None = None,
    ) -> None:
        self.cache = SqliteCache(cache) if isinstance(cache, ResponseCache) else cache
        #: Identical cached calls in flight (the engine's, shared by its runs).
        self.flights = Flights() if flights is None else flights
        self.prices = prices
        self.emit = emit
        self.timeline = timeline
        #: A selector's confidence in each model alias, given to that model's results.
        self.confidence: Mapping[str, float] = {} if confidence is None else confidence
        self.gate = AuthGate()
        #: The run's own budget and any it shares (a batch's), checked before each call.
        self.budgets = budgets
        #: Why the budget refused a call, once it has: the run stops.
        self.refused: ErrorInfo | None = None
        self.results: list[CallResult] = []
        self.in_flight = 0
        self.peak = 0

    async def call(
        self,
        node_id: str,
        target: Target,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        *,
        retry: Retry | None = None,
        use_cache: bool = True,
        cacheable: Callable[[Completion], bool] | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> CallResult:
        """One model call with everything it goes through; failures are ``success: false``.

        An answer that ``cacheable`` refuses (one that is not the JSON its schema asks for)
        is not cached, so that the next run asks again. With ``on_delta`` the answer is
        streamed to it, and the result has ``ttft_s``.
        """
        self.emit("call_started", node=node_id, model=target.alias, attempt=1)
        started_at = time.time()
        clock = time.perf_counter()
        deltas = Deltas(on_delta, clock) if on_delta is not None else None
        request = ChatRequest(target.model_id, messages, params, target.timeout, deltas)
        cache = self.cache if use_cache and target.cache_id is not None else None
        encoded = request.encoded_messages() if self.timeline is not None else ""
        if cache is None:
            result, _ = await self._fresh(node_id, target, request, retry, clock, deltas)
        else:
            key = cache_key(target.cache_id or "", request)
            # The cache's answer, or that of the same call in flight here or in another process.
            async with self.flights.once(cache, key, target.timeout) as flight:
                if flight.answer is not None:
                    if deltas is not None:
                        deltas(flight.answer.content)
                    result = self._success(target, flight.answer, clock, attempts=0, cached=True)
                else:
                    result, completion = await self._fresh(
                        node_id, target, request, retry, clock, deltas
                    )
                    if completion is not None and (cacheable is None or cacheable(completion)):
                        await cache.put(key, target.cache_id or "", target.model_id, completion)
                        flight.answer = completion
        if deltas is not None and deltas.first is not None:
            result.ttft_s = round(max(deltas.first - result.queued_s, 0.0), 6)
        self._record(node_id, result, encoded, started_at)
        return result

    async def _fresh(
        self,
        node_id: str,
        target: Target,
        request: ChatRequest,
        retry: Retry | None,
        clock: float,
        deltas: Deltas | None,
    ) -> tuple[CallResult, Completion | None]:
        """A call the cache did not answer: refused by the auth gate or the budget, or made."""
        if self.gate.blocked(target.provider_name) is not None:
            # Not sent: the provider rejected the key earlier in this run (attempts 0).
            refusal = self.gate.refusal(target.provider_name)
            refusal.attempts = 0
            return self._failure(target, refusal, clock), None
        over_budget = admit(self.budgets)
        if over_budget is not None:
            result = self._failure(target, over_budget, clock)
            self.refused = self.refused or result.error
            return result, None
        result, completion = await self._fetch(node_id, target, request, retry, clock, deltas)
        charge(self.budgets, result.usage.cost)
        if deltas is not None and completion is not None and deltas.first is None:
            deltas(completion.content)  # a provider that does not stream: one piece
        return result, completion

    async def _fetch(
        self,
        node_id: str,
        target: Target,
        request: ChatRequest,
        retry: Retry | None,
        clock: float,
        deltas: Deltas | None,
    ) -> tuple[CallResult, Completion | None]:
        """Attempts under the retry policy, then the price: the result and the completion."""
        on_retry = functools.partial(self._retried, node_id, target.alias)
        queued = [0.0]  # seconds spent waiting for the provider's limits, over every attempt
        try:
            completion, attempts = await call_with_retries(
                lambda: self._attempt(target, request, queued, deltas),
                retry or target.retry,
                on_retry=on_retry,
            )
        except CallError as error:
            if isinstance(error, NotSent):  # its last attempt was stopped by the auth gate
                error.attempts -= 1
            result = self._failure(target, error, clock, queued=queued[0])
            return result, None
        latency = time.perf_counter() - clock  # the call's own time, before any pricing
        if completion.usage.cost is None:
            completion = await self._priced(target, completion)
        result = self._success(
            target, completion, clock, attempts=attempts, latency=latency, queued=queued[0]
        )
        return result, completion

    async def _attempt(
        self, target: Target, request: ChatRequest, queued: list[float], deltas: Deltas | None
    ) -> Completion:
        """One attempt: the provider's limits, then the auth gate, then the request."""
        waiting = time.perf_counter()
        async with target.limits.slot():
            queued[0] += time.perf_counter() - waiting
            # Checked once a slot is ours: a 401 may have come while this call waited for it.
            self.gate.check(target.provider_name)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                return await target.provider.complete(request)
            except CallError as error:
                # After a 401 (or no key), no further call goes to that provider in this run.
                self.gate.record(target.provider_name, error)
                if deltas is not None and deltas.chars:
                    raise cut_short(error, deltas.chars) from error
                raise
            except Exception as exc:
                raise stray_error(target.provider_name, exc) from exc
            finally:
                self.in_flight -= 1

    def _retried(
        self, node_id: str, alias: str, number: int, error: CallError, delay: float
    ) -> None:
        info = ErrorInfo(type=error.type, status=error.status, message=error.message)
        self.emit(
            "call_retried", node=node_id, model=alias, attempt=number, delay_s=delay, error=info
        )

    async def _priced(self, target: Target, completion: Completion) -> Completion:
        """The completion with its cost from the provider's price list, when it has one."""
        price_list = getattr(target.provider, "price_list", None)
        if price_list is None or self.prices is None:
            return completion
        if target.cache_id is None:
            return completion
        cost = await self.prices.cost(
            target.cache_id, price_list, target.model_id, completion.usage
        )
        if cost is None:
            return completion
        return dataclasses.replace(
            completion, usage=dataclasses.replace(completion.usage, cost=cost)
        )

    def _success(
        self,
        target: Target,
        completion: Completion,
        clock: float,
        *,
        attempts: int,
        cached: bool = False,
        latency: float | None = None,
        queued: float = 0.0,
    ) -> CallResult:
        took = (time.perf_counter() - clock if latency is None else latency) - queued
        return CallResult(
            model=target.alias,
            model_id=target.model_id,
            served_model=completion.served_model,
            provider=target.provider_name,
            content=completion.content,
            success=True,
            confidence=self.confidence.get(target.alias),
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            latency_s=round(took, 6),
            queued_s=round(queued, 6),
            attempts=attempts,
            cached=cached,
            tool_calls=completion.tool_calls,
        )

    def _failure(
        self, target: Target, error: CallError, clock: float, *, queued: float = 0.0
    ) -> CallResult:
        return CallResult(
            model=target.alias,
            model_id=target.model_id,
            provider=target.provider_name,
            success=False,
            error=ErrorInfo(type=error.type, status=error.status, message=error.message),
            latency_s=round(time.perf_counter() - clock - queued, 6),
            queued_s=round(queued, 6),
            attempts=error.attempts,
            confidence=self.confidence.get(target.alias),
        )

    def _record(
        self, node_id: str, result: CallResult, messages_json: str, started_at: float
    ) -> None:
        """Keep the result, put it on the timeline, tell the listeners."""
        self.results.append(result)
        status = "succeeded" if result.success else "failed"
        if self.timeline is not None:
            self.timeline.append(
                CallRecord(
                    node=node_id,
                    model=result.model,
                    started=started_at,
                    ended=time.time(),
                    attempts=result.attempts,
                    status=status,
                    cached=result.cached,
                    messages_json=messages_json,
                )
            )
        self.emit(
            "call_finished",
            node=node_id,
            model=result.model,
            duration_s=result.latency_s,
            status=status,
            error=result.error,
            cached=result.cached,
        )
