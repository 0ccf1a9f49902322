"""Rate limiter window guarantee, concurrency caps, the retry policy and the auth gate."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator

import pytest

from flowengine.errors import CallError
from flowengine.providers import ChatRequest, Completion
from flowengine.run.calls import CallPath, Target
from flowengine.run.resilience import (
    RETRY_AFTER_CAP,
    WINDOW_MARGIN,
    AuthGate,
    ProviderLimits,
    call_with_retries,
    make_limiter,
)
from flowengine.spec import OpenAIProvider, Rate, Retry


def max_in_window(times: list[float], per: float) -> int:
    """The most starts in any half-open window [t, t + per)."""
    ordered = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j < len(ordered) and ordered[j] < start + per:
            j += 1
        best = max(best, j - i)
    return best


class VirtualClock:
    """Replaces the running loop's clock; time moves only when ``advance`` is called."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time()

    def __enter__(self) -> VirtualClock:
        self.loop.time = lambda: self.now  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.loop.time  # back to the class's method

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for _ in range(5):  # let woken waiters run
            await asyncio.sleep(0)


def arrivals(rng: random.Random, count: int, span: float) -> Iterator[float]:
    """Bursty arrival times: clumps at random instants over ``span``."""
    made = 0
    while made < count:
        at, size = rng.uniform(0, span), rng.randint(1, 12)
        for _ in range(min(size, count - made)):
            made += 1
            yield at


@pytest.mark.parametrize(
    ("requests", "per", "burst"),
    [(1, 1.0, None), (5, 1.0, None), (20, 1.0, None), (20, 1.0, 5), (7, 0.25, 7), (3, 2.0, 2)],
)
async def test_limiter_never_exceeds_requests_in_any_window(
    requests: int, per: float, burst: int | None
) -> None:
    rate = Rate(requests=requests, per=per, burst=burst)
    limiter = make_limiter(rate)
    rng = random.Random(requests * 1000 + (burst or 0))
    plan = sorted(arrivals(rng, 200, span=10 * per))
    starts: list[float] = []
    with VirtualClock() as clock:
        origin = clock.now

        async def one() -> None:
            await limiter.acquire()
            starts.append(clock.now)

        tasks: list[asyncio.Task[None]] = []
        step = per / 97  # not a divisor of per, so window edges are not aligned with steps
        while len(starts) < len(plan):
            while len(tasks) < len(plan) and plan[len(tasks)] <= clock.now - origin:
                tasks.append(asyncio.create_task(one()))
            await clock.advance(step)
        await asyncio.gather(*tasks)
    assert max_in_window(starts, per) <= requests
    # ...and the same in a window 2% longer, so that a server counting arrivals, which reach
    # it with a few milliseconds of jitter, sees the promise kept too
    assert max_in_window(starts, per * (1 + WINDOW_MARGIN)) <= requests
    # ...and it is not needlessly slow: a backlog drains at the promised rate.
    busy = (max(starts) - min(starts)) / per
    assert len(starts) >= min(len(plan), 0.9 * busy * (requests - (burst or 1) + 1))


async def test_limiter_with_burst_one_admits_first_at_once_then_spaces() -> None:
    limiter = make_limiter(Rate(requests=4, per=1.0))
    starts: list[float] = []
    with VirtualClock() as clock:
        for _ in range(3):
            waiter = asyncio.create_task(limiter.acquire())
            while not waiter.done():
                await clock.advance(0.01)
            starts.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap == pytest.approx(0.25, abs=0.011) for gap in gaps)


async def test_limiter_real_time_window() -> None:
    """Real clock, short window: the invariant holds however slow the machine is."""
    per, requests = 0.1, 4
    limiter = make_limiter(Rate(requests=requests, per=per))
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        starts.append(loop.time())  # no await in between: the limiter's own clock reading

    await asyncio.gather(*(one() for _ in range(10)))
    # a small allowance for the clock moving between the limiter's reading and ours
    assert max_in_window(starts, per - 0.002) <= requests


def test_burst_larger_than_requests_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"burst \(5\) must be at most requests \(3\)"):
        Rate(requests=3, per=1.0, burst=5)


async def test_slot_caps_concurrency_and_counts() -> None:
    limits = ProviderLimits(max_concurrency=3)
    inside = 0
    seen = 0

    async def one() -> None:
        nonlocal inside, seen
        async with limits.slot():
            inside += 1
            seen = max(seen, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(12)))
    assert seen == 3 and limits.peak == 3 and limits.started == 12 and limits.in_flight == 0


async def test_slot_releases_on_error_and_from_spec() -> None:
    spec = OpenAIProvider(base_url="http://x", max_concurrency=1, rate_limit={"requests": 100})
    limits = ProviderLimits.from_spec(spec)
    assert limits.limiter is not None and limits.semaphore is not None
    with pytest.raises(RuntimeError):
        async with limits.slot():
            raise RuntimeError("boom")
    async with asyncio.timeout(1):
        async with limits.slot():
            pass
    assert limits.in_flight == 0


async def test_unlimited_slot() -> None:
    limits = ProviderLimits()
    async with limits.slot():
        assert limits.in_flight == 1


# -- retries -------------------------------------------------------------------------------


class Script:
    """An attempt that raises the scripted errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def transient(**kw: object) -> CallError:
    return CallError("http", "unavailable", status=503, retryable=True, **kw)  # type: ignore[arg-type]


async def test_success_first_time() -> None:
    sleeps = Sleeps()
    assert await call_with_retries(Script(), Retry(), sleep=sleeps) == ("done", 1)
    assert sleeps == []


async def test_retryable_errors_back_off_exponentially_with_jitter() -> None:
    sleeps, seen = Sleeps(), []
    retry = Retry(attempts=5, initial=1.0, max=30.0)
    result = await call_with_retries(
        Script(*(transient() for _ in range(4))),
        retry,
        sleep=sleeps,
        on_retry=lambda n, err, delay: seen.append((n, err.status, delay)),
    )
    assert result == ("done", 5)
    for n, delay in enumerate(sleeps):
        assert 2**n <= delay <= 2**n + 1.0
    assert [(n, status) for n, status, _ in seen] == [(1, 503), (2, 503), (3, 503), (4, 503)]
    assert [delay for *_, delay in seen] == sleeps


async def test_backoff_is_capped_at_max() -> None:
    sleeps = Sleeps()
    retry = Retry(attempts=8, initial=1.0, max=3.0)
    await call_with_retries(Script(*(transient() for _ in range(7))), retry, sleep=sleeps)
    assert max(sleeps) == 3.0 and min(sleeps) >= 1.0


async def test_non_retryable_error_raised_at_once() -> None:
    script = Script(CallError("http", "bad request", status=400), transient())
    with pytest.raises(CallError) as info:
        await call_with_retries(script, Retry(), sleep=Sleeps())
    assert (info.value.status, info.value.attempts, script.calls) == (400, 1, 1)


async def test_foreign_exception_propagates_unretried() -> None:
    script = Script(KeyError("bug"))
    with pytest.raises(KeyError):
        await call_with_retries(script, Retry(), sleep=Sleeps())
    assert script.calls == 1


async def test_last_error_reraised_with_attempts() -> None:
    errors = [transient() for _ in range(3)]
    with pytest.raises(CallError) as info:
        await call_with_retries(Script(*errors), Retry(attempts=3), sleep=Sleeps())
    assert info.value is errors[-1] and info.value.attempts == 3


async def test_retry_after_beyond_max_is_honoured_up_to_the_cap() -> None:
    sleeps = Sleeps()
    retry = Retry(attempts=3, initial=0.1, max=1.0)
    await call_with_retries(
        Script(transient(retry_after=12.0), transient(retry_after=0.0)), retry, sleep=sleeps
    )
    assert sleeps[0] == 12.0
    assert 0.2 <= sleeps[1] <= 0.3  # a Retry-After shorter than the backoff does not shorten it


async def test_retry_after_beyond_the_cap_gives_up_at_once() -> None:
    sleeps = Sleeps()
    with pytest.raises(CallError) as info:
        await call_with_retries(
            Script(transient(retry_after=RETRY_AFTER_CAP + 1)), Retry(), sleep=sleeps
        )
    assert info.value.attempts == 1 and sleeps == []


async def test_real_sleep_is_the_default() -> None:
    retry = Retry(attempts=2, initial=0.001, max=0.002)
    assert await call_with_retries(Script(transient()), retry) == ("done", 2)


# -- auth gate -----------------------------------------------------------------------------


def test_auth_gate_blocks_after_401() -> None:
    gate = AuthGate()
    gate.check("router")
    assert not gate.record("router", transient())
    assert gate.record("router", CallError("auth", "User not found.", status=401))
    assert gate.blocked("router") is not None and gate.blocked("other") is None
    with pytest.raises(CallError) as info:
        gate.check("router")
    assert (info.value.type, info.value.status, info.value.retryable) == ("auth", 401, False)
    assert "rejected the API key earlier in this run" in info.value.message
    assert "User not found" not in info.value.message  # said once, by the first failure
    gate.check("other")


def test_auth_gate_blocks_on_missing_key() -> None:
    gate = AuthGate()
    gate.record("router", CallError("auth", "set OPENROUTER_API_KEY"))
    with pytest.raises(CallError, match="OPENROUTER_API_KEY"):
        gate.check("router")


async def test_a_provider_raising_a_foreign_exception_fails_once_as_internal() -> None:
    class Buggy:
        name = "plugin"
        spec = None

        def __init__(self) -> None:
            self.calls = 0

        async def complete(self, request: ChatRequest) -> Completion:
            self.calls += 1
            raise KeyError("choices")

    provider = Buggy()
    target = Target(
        alias="m",
        model_id="m",
        provider_name="plugin",
        provider=provider,  # type: ignore[arg-type]
        limits=ProviderLimits(),
        timeout=1.0,
        retry=Retry(attempts=3),
        cache_id=None,
    )
    path = CallPath(cache=None, prices=None, emit=lambda kind, **fields: None)
    result = await path.call("node", target, [{"role": "user", "content": "q"}], {})
    assert provider.calls == 1 and not result.success and result.attempts == 1
    assert result.error is not None
    assert (result.error.type, result.error.message) == (
        "internal",
        "provider 'plugin' raised KeyError: 'choices'",
    )
