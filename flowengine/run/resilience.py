"""Rate limits, concurrency caps, retries and the auth gate that every provider call goes through.

The pieces compose as (:mod:`flowengine.run.calls` is the one place that does it)::

    async def attempt():
        gate.check(provider.name)              # a 401 earlier in the run: do not call again
        async with limits.slot():              # concurrency cap, then rate limit, per attempt
            return await provider.complete(request)

    completion, attempts = await call_with_retries(attempt, retry)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aiolimiter import AsyncLimiter

from flowengine.errors import CallError
from flowengine.spec import ProviderBase, Rate, Retry

T = TypeVar("T")

#: The longest ``Retry-After`` honoured. Waiting less than the server asked wastes an attempt
#: (and, on most APIs, counts against the quota again), so a delay up to this cap is honoured
#: even beyond ``retry.max``, which bounds only our own guess. A server asking for longer
#: (an exhausted quota, a daily limit) will not recover within a run: give up at once.
RETRY_AFTER_CAP = 60.0

#: The window the limiter keeps is this much longer than the one promised, so that a server
#: counting arrivals sees the promise kept too: requests started evenly reach it with a few
#: milliseconds of jitter, which can put one more start into its window than into ours.
WINDOW_MARGIN = 0.02


def make_limiter(rate: Rate) -> AsyncLimiter:
    """A limiter that starts at most ``rate.requests`` in ANY sliding window of ``rate.per``.

    A leaky bucket of capacity N lets N through at once and then more within the same
    window. With burst ``b`` (default 1) the bucket has capacity ``b`` and drains at
    ``r = (N - b + 1) / per``: it admits while ``level + 1 <= b``, so in a window of length
    ``per`` it admits fewer than ``b + r * per = N + 1`` requests, whatever the arrival pattern.
    The window kept is ``per * (1 + WINDOW_MARGIN)``, so the sustained rate is 2% under the
    limit (see :data:`WINDOW_MARGIN`).

    Example::

        limiter = make_limiter(Rate(requests=20, per=1.0))
        async with limiter:
            ...
    """
    burst = rate.burst or 1  # at most rate.requests: Rate checks it
    drain_per_second = (rate.requests - burst + 1) / (rate.per * (1 + WINDOW_MARGIN))
    # AsyncLimiter(capacity, period) drains capacity/period per second.
    return AsyncLimiter(burst, burst / drain_per_second)


class Limiter(Protocol):
    """Waits until a start is allowed: aiolimiter's AsyncLimiter, or a window shared through
    Redis (:class:`~flowengine.run.shared_window.SharedWindow`)."""

    async def acquire(self) -> None: ...


class ProviderLimits:
    """One provider's rate limiter and concurrency cap, shared by every run of an engine.

    Every attempt, retries included, enters :meth:`slot`. ``in_flight``, ``peak`` and
    ``started`` count what went through. ``shared`` replaces the local limiter with one that
    other processes count against too; the concurrency cap stays this process's own.

    Example::

        limits = ProviderLimits.from_spec(spec)
        async with limits.slot():
            await provider.complete(request)
    """

    def __init__(
        self,
        rate: Rate | None = None,
        max_concurrency: int | None = None,
        *,
        shared: Limiter | None = None,
    ) -> None:
        self.limiter: Limiter | None = shared
        if shared is None and rate is not None:
            self.limiter = make_limiter(rate)
        self.semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.in_flight = 0
        self.peak = 0
        self.started = 0

    @classmethod
    def from_spec(cls, spec: ProviderBase, shared: Limiter | None = None) -> ProviderLimits:
        return cls(spec.rate_limit, spec.max_concurrency, shared=shared)

    def slot(self) -> ProviderLimits:
        """``async with limits.slot():`` waits for a concurrency slot, then for the rate limit."""
        return self

    async def __aenter__(self) -> None:
        if self.semaphore is not None:
            await self.semaphore.acquire()
        try:
            if self.limiter is not None:
                await self.limiter.acquire()
        except BaseException:  # cancelled while waiting for the rate limit
            if self.semaphore is not None:
                self.semaphore.release()
            raise
        self.started += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    async def __aexit__(self, *exc_info: object) -> None:
        self.in_flight -= 1
        if self.semaphore is not None:
            self.semaphore.release()


class NotSent(CallError):
    """A call the auth gate stopped before it was sent: it is not counted as an attempt."""


class AuthGate:
    """Stops calls to a provider once it has rejected the API key (HTTP 401 or no key).

    Keep one per run (or per engine): a key that failed once fails every time, and each
    further call would only add noise and, on some APIs, lockouts.
    """

    def __init__(self) -> None:
        self._blocked: dict[str, CallError] = {}

    def record(self, provider: str, error: CallError) -> bool:
        """Block ``provider`` if ``error`` is an authentication failure; True if it is."""
        if error.status == 401 or error.type == "auth":
            self._blocked.setdefault(provider, error)
            return True
        return False

    def blocked(self, provider: str) -> CallError | None:
        """The error that blocked ``provider``, or None."""
        return self._blocked.get(provider)

    def refusal(self, provider: str) -> NotSent:
        """The error of a call not made because ``provider`` is blocked.

        Short, and not quoting the first error: that one is in the run's result already, and
        a fanout's failure would otherwise repeat the upstream's text once per call.
        """
        first = self._blocked[provider]
        if first.status is None:  # no key at all: its message says which variable to set
            return NotSent("auth", f"not called: {first.message}")
        return NotSent(
            "auth",
            f"not called: provider '{provider}' rejected the API key earlier in this run",
            status=first.status,
        )

    def check(self, provider: str) -> None:
        """Raise a non-retryable ``auth`` error if ``provider`` is blocked."""
        if provider in self._blocked:
            raise self.refusal(provider)


def stray_error(provider: str, exc: Exception) -> CallError:
    """A provider raised something other than CallError (a plugin's bug): that call fails,
    with the exception named, is not retried, and the run goes on as for any failed call."""
    return CallError("internal", f"provider '{provider}' raised {type(exc).__name__}: {exc}")


def next_wait(retry: Retry, failed: int, error: CallError) -> float | None:
    """Seconds to wait after attempt number ``failed`` ended in ``error``; None: give up.

    ``initial * 2**(failed - 1)`` plus up to ``initial`` of jitter, capped at ``retry.max``, or
    the error's ``retry_after`` when longer (see :data:`RETRY_AFTER_CAP`).
    """
    if not error.retryable or failed >= retry.attempts:
        return None
    asked = error.retry_after
    if asked is not None and asked > RETRY_AFTER_CAP:
        return None  # the server will not recover within a run
    backoff = retry.initial * 2.0 ** (failed - 1) + random.uniform(0, retry.initial)
    delay = min(backoff, retry.max)
    return max(delay, asked) if asked is not None else delay


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    retry: Retry,
    *,
    on_retry: Callable[[int, CallError, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[T, int]:
    """Run ``attempt`` until it succeeds; return its result and how many attempts it took.

    Only a :class:`CallError` with ``retryable=True`` is retried, at most ``retry.attempts``
    attempts in all, waiting ``initial * 2**n`` plus up to ``initial`` of jitter, capped at
    ``retry.max`` -- or the error's ``retry_after`` when longer (see :data:`RETRY_AFTER_CAP`).
    ``on_retry(failed_attempt, error, delay)`` is called before each wait. The last error is
    re-raised with ``.attempts`` set; any other exception propagates at once.

    Example::

        completion, attempts = await call_with_retries(lambda: provider.complete(req), Retry())
    """
    failed = 0
    while True:
        try:
            return await attempt(), failed + 1
        except CallError as error:
            failed += 1
            error.attempts = failed
            delay = next_wait(retry, failed, error)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(failed, error, delay)
        await sleep(delay)
