"""The OpenAI-compatible provider against a real local server, through the one call path
(:class:`flowengine.run.calls.CallPath`), with its limits, retries and auth gate."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from flowengine.errors import CallError
from flowengine.providers import ChatRequest, OpenAICompatible, ProviderContext
from flowengine.results import CallResult
from flowengine.run.calls import CallPath, Target
from flowengine.run.resilience import ProviderLimits
from flowengine.spec import OpenAIProvider, Rate, Retry
from tests.fakeserver import FakeServer, Reply

KEY = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK"
MODEL = "openai/gpt-oss-120b"
RETRY = Retry(attempts=4, initial=0.001, max=0.01)


def request(timeout: float = 2.0, text: str = "Explain quantum computing") -> ChatRequest:
    return ChatRequest(MODEL, [{"role": "user", "content": text}], {"max_tokens": 5}, timeout)


def make(server: FakeServer, session: aiohttp.ClientSession) -> OpenAICompatible:
    spec = OpenAIProvider(base_url=server.base_url, api_key_env="FAKE_KEY")
    return OpenAICompatible("fake", spec, ProviderContext(session, {"FAKE_KEY": KEY}))


def new_path(events: list[tuple[str, dict[str, object]]] | None = None) -> CallPath:
    def emit(kind: str, **fields: object) -> None:
        if events is not None:
            events.append((kind, fields))

    return CallPath(cache=None, prices=None, emit=emit)


async def call_once(
    provider: OpenAICompatible,
    *,
    path: CallPath | None = None,
    limits: ProviderLimits | None = None,
    timeout: float = 2.0,
) -> CallResult:
    """One call through the run's call path, as every node makes it."""
    target = Target(
        alias="m",
        model_id=MODEL,
        provider_name=provider.name,
        provider=provider,
        limits=limits or ProviderLimits(),
        timeout=timeout,
        retry=RETRY,
        cache_id=None,
    )
    messages = [{"role": "user", "content": "Explain quantum computing"}]
    return await (path or new_path()).call("node", target, messages, {"max_tokens": 5})


async def call(provider: OpenAICompatible, timeout: float = 2.0) -> tuple[str | None, int]:
    result = await call_once(provider, timeout=timeout)
    assert result.success, result.error
    return result.content, result.attempts


async def failed(provider: OpenAICompatible, **options: object) -> CallResult:
    result = await call_once(provider, **options)  # type: ignore[arg-type]
    assert not result.success and result.error is not None
    return result


async def test_default_answer_usage_and_wire(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    completion = await make(server, session).complete(request())
    assert completion.content == f"answer from {MODEL}: Explain quantum computing"
    assert completion.served_model == MODEL
    assert completion.usage.cost is not None and completion.usage.total_tokens
    assert server.requests[0]["max_tokens"] == 5
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_retried_then_success(
    server: FakeServer, session: aiohttp.ClientSession, status: int
) -> None:
    server.script(Reply.error(status), Reply.error(status), Reply.ok("finally"))
    assert await call(make(server, session)) == ("finally", 3)


async def test_429_with_retry_after_is_honoured(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.script(Reply.error(429, headers={"Retry-After": "0.05"}), Reply.ok("ok"))
    events: list[tuple[str, dict[str, object]]] = []
    result = await call_once(make(server, session), path=new_path(events))
    waits = [fields["delay_s"] for kind, fields in events if kind == "call_retried"]
    assert result.attempts == 2 and waits == [pytest.approx(waits[0])] and waits[0] >= 0.05


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_errors_not_retried(
    server: FakeServer, session: aiohttp.ClientSession, status: int
) -> None:
    server.script(Reply.error(status, "bad"), Reply.ok("never"))
    result = await failed(make(server, session))
    assert result.error is not None and result.error.status == status and result.attempts == 1
    assert server.count == 1


async def test_slow_reply_times_out_and_is_retried(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.script(Reply.ok("late", delay=0.5), Reply.ok("quick"))
    assert await call(make(server, session), timeout=0.1) == ("quick", 2)


async def test_dropped_connection_is_retried(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.script(Reply.dropped(), Reply.ok("back"))
    assert await call(make(server, session)) == ("back", 2)


@pytest.mark.parametrize(
    "fault",
    [
        Reply.truncated(),
        Reply.raw("<html><body>Service Unavailable</body></html>"),
        Reply.raw('{"choices": [', content_type="application/json"),
        Reply.error_in_200(502, raw="upstream timeout"),
        Reply.error_in_200("rate_limited"),
        Reply.ok(None),
        Reply.ok("partial", finish_reason="error"),
    ],
)
async def test_transient_faults_are_retried(
    server: FakeServer, session: aiohttp.ClientSession, fault: Reply
) -> None:
    server.script(fault, Reply.ok("recovered"))
    assert await call(make(server, session)) == ("recovered", 2)


async def test_attempts_exhausted_reraises_last_error(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.always_for(MODEL, Reply.error(503, "down"))
    result = await failed(make(server, session))
    assert result.error is not None
    assert (result.error.status, result.attempts, server.count) == (503, 4, 4)


async def test_length_without_content_not_retried(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.script(Reply.ok("", finish_reason="length"), Reply.ok("never"))
    result = await failed(make(server, session))
    assert result.error is not None and result.error.type == "length" and server.count == 1


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    async with FakeServer() as srv:
        provider = make(srv, session)
    with pytest.raises(CallError) as info:
        await provider.complete(request())
    assert (info.value.type, info.value.retryable) == ("connection", True)


async def test_401_closes_the_gate_for_the_rest_of_the_run(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.always_for(MODEL, Reply.error(401, "User not found."))
    provider, path = make(server, session), new_path()
    for _ in range(3):
        result = await failed(provider, path=path)
        assert result.error is not None and result.error.status == 401
    assert server.count == 1
    assert result.error is not None and "rejected the API key" in result.error.message


async def test_concurrency_cap_holds_across_retries(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeServer(latency=0.02) as srv:
        srv.script(*[Reply.error(503)] * 4)
        provider, limits = make(srv, session), ProviderLimits(max_concurrency=2)

        await asyncio.gather(*(call_once(provider, limits=limits) for _ in range(6)))
    assert srv.max_in_flight <= 2 and limits.peak == 2
    assert srv.count == 10 and limits.started == 10


async def test_rate_limit_applies_to_every_attempt(session: aiohttp.ClientSession) -> None:
    async with FakeServer() as srv:
        srv.script(Reply.error(503), Reply.error(503))
        limits = ProviderLimits(Rate(requests=2, per=0.2))
        assert (await call_once(make(srv, session), limits=limits)).success
    starts = srv.starts
    assert len(starts) == 3
    # At most 2 starts in any 0.2 s: the third waits for the window (small tolerance for jitter).
    assert starts[2] - starts[0] >= 0.2 - 0.02


async def test_api_key_never_leaks(session: aiohttp.ClientSession) -> None:
    texts: list[str] = []
    async with FakeServer() as srv:
        provider = make(srv, session)
        faults = [
            Reply.error(401, f"Incorrect API key provided: {KEY}"),
            Reply.error(500, "internal"),
            Reply.dropped(),
            Reply.truncated(),
            Reply.ok("slow", delay=0.3),
            Reply.raw("<html>x</html>"),
            Reply.error_in_200(429, raw="busy"),
        ]
        for fault in faults:
            srv.script(fault)
            with pytest.raises(CallError) as info:
                await provider.complete(request(timeout=0.1))
            error: BaseException | None = info.value
            while error is not None:
                texts += [str(error), repr(error), repr(getattr(error, "__dict__", ""))]
                error = error.__cause__ or error.__context__
        texts += [repr(provider), repr(provider.spec), str(provider.spec.model_dump())]
    assert texts and all(KEY not in text for text in texts)
