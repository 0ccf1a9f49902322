"""Streamed chat completions from a real server on 127.0.0.1, as OpenAI-compatible servers and
OpenRouter send them; then through the one call path, with its retries and the cache."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from flowengine.errors import CallError
from flowengine.providers import ChatRequest, Completion, OpenAICompatible, ProviderContext
from flowengine.providers.sse import MAX_EVENT
from flowengine.results import CallResult
from flowengine.run.calls import CallPath, Target
from flowengine.run.resilience import ProviderLimits
from flowengine.spec import OpenAIProvider, Retry
from flowengine.store.cache import ResponseCache
from flowengine.store.db import Store
from tests.fakeserver import DONE, USAGE, FakeServer, Reply, chunk, sse, usage_chunk

KEY = "sk-test-3c2b1a0f9e8d-DO-NOT-LEAK"
MODEL = "openai/gpt-oss-120b"
MESSAGES = [{"role": "user", "content": "Say hello"}]
HELLO = [chunk("Hel"), chunk("lo, "), chunk("world", finish="stop"), usage_chunk(), DONE]


@pytest.fixture
async def provider(server: FakeServer) -> AsyncIterator[OpenAICompatible]:
    spec = OpenAIProvider(base_url=server.base_url, api_key_env="FAKE_KEY")
    async with aiohttp.ClientSession() as session:
        yield OpenAICompatible("fake", spec, ProviderContext(session, {"FAKE_KEY": KEY}))


async def streamed(
    provider: OpenAICompatible, timeout: float = 2.0
) -> tuple[Completion, list[str]]:
    pieces: list[str] = []
    request = ChatRequest(MODEL, MESSAGES, {"max_tokens": 9}, timeout, pieces.append)
    return await provider.complete(request), pieces


async def test_text_arrives_in_pieces_and_usage_from_the_last_chunk(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    server.script(Reply.stream(*HELLO))
    completion, pieces = await streamed(provider)
    assert pieces == ["Hel", "lo, ", "world"]
    assert completion.content == "Hello, world"
    assert completion.finish_reason == "stop"
    assert completion.served_model == "served/model"
    assert (completion.usage.total_tokens, completion.usage.cost) == (15, 0.000015)
    sent = server.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 9 and sent["model"] == MODEL


@pytest.mark.parametrize("piece", [1, 3])
async def test_events_split_a_few_bytes_per_read_with_crlf_and_comments(
    server: FakeServer, provider: OpenAICompatible, piece: int
) -> None:
    parts = [": OPENROUTER PROCESSING\n\n", chunk("Grüße, "), ": OPENROUTER PROCESSING\n\n"]
    server.script(
        Reply.stream(*parts, chunk("ok", finish="stop"), DONE, piece=piece, newline="\r\n")
    )
    completion, pieces = await streamed(provider)
    assert pieces == ["Grüße, ", "ok"]
    assert completion.content == "Grüße, ok"
    assert len(server.sent) > 40  # it really went out in pieces


async def test_openrouter_usage_repeats_finish_reason(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "cost": 0.25}
    server.script(
        Reply.stream(
            chunk("Hi", finish="stop"), chunk("", finish="stop", usage=usage), "data: [DONE]\n\n"
        )
    )
    completion, _ = await streamed(provider)
    assert completion.content == "Hi"
    assert (completion.usage.total_tokens, completion.usage.cost) == (7, 0.25)


async def test_tool_calls_in_deltas_are_assembled(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get"}}
    second = {"index": 1, "id": "call_2", "type": "function", "function": {"name": "put"}}
    server.script(
        Reply.stream(
            chunk(tool_calls=[first]),
            chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"ci'}}]),
            chunk(tool_calls=[second]),
            chunk(tool_calls=[{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]),
            chunk(finish="tool_calls"),
            DONE,
        )
    )
    completion, pieces = await streamed(provider)
    assert pieces == [] and completion.content == ""
    oslo = '{"city": "Oslo"}'
    assert completion.tool_calls == [
        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": oslo}},
        {"id": "call_2", "type": "function", "function": {"name": "put", "arguments": ""}},
    ]


async def test_an_error_event_first_is_a_retryable_error_with_the_upstream_text(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    error = {"code": 502, "message": "Provider returned error", "metadata": {"raw": "overloaded"}}
    server.script(Reply.stream(": OPENROUTER PROCESSING\n\n", sse({"error": error})))
    with pytest.raises(CallError) as caught:
        await streamed(provider)
    assert caught.value.retryable and caught.value.status == 502
    assert "Provider returned error (upstream: overloaded)" in caught.value.message


async def test_a_mid_stream_error_with_finish_reason_error_names_the_upstream(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    error = {"code": "server_error", "message": "Provider disconnected"}
    broken = sse(
        {
            "error": error,
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
    )
    server.script(Reply.stream(chunk("Hel"), broken))
    with pytest.raises(CallError) as caught:
        await streamed(provider)
    assert "failed while generating (finish_reason 'error'): Provider disconnected" in str(
        caught.value.message
    )


async def test_a_stream_that_ends_before_the_answer_is_an_error(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    server.script(Reply.stream(chunk("Hel")))  # no finish_reason, no [DONE]
    with pytest.raises(CallError, match="ended the stream before the answer was complete"):
        await streamed(provider)
    server.script(Reply.stream(chunk("Hel"), drop=True))  # the connection cut
    with pytest.raises(CallError) as caught:
        await streamed(provider)
    assert caught.value.retryable


async def test_a_stalled_stream_times_out_though_comments_keep_coming(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    keepalive = [": OPENROUTER PROCESSING\n\n", 0.1] * 20
    server.script(Reply.stream(chunk("Hel"), *keepalive, chunk("lo", finish="stop"), DONE))
    started = time.monotonic()
    with pytest.raises(CallError) as caught:
        await streamed(provider, timeout=0.4)
    assert 0.35 < time.monotonic() - started < 1.5
    assert caught.value.type == "timeout" and caught.value.retryable
    assert "sent no data for 0.4s (the stream stalled)" in caught.value.message


async def test_a_slow_answer_is_no_stall_while_events_keep_coming(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    words = [part for i in range(6) for part in (chunk(f"w{i} "), 0.15)]
    server.script(Reply.stream(*words, chunk("end", finish="stop"), DONE))
    completion, pieces = await streamed(provider, timeout=0.4)  # 0.9 s in all
    assert len(pieces) == 7 and completion.content.endswith("w5 end")


async def test_an_oversize_line_is_an_error_not_a_memory_blow_up(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    server.script(Reply.stream(chunk("Hel"), b"data: " + b"x" * (MAX_EVENT + 10)))
    with pytest.raises(CallError) as caught:
        await streamed(provider)
    assert caught.value.type == "malformed" and not caught.value.retryable
    assert "a line longer than 1,048,576 bytes" in caught.value.message


async def test_a_server_that_does_not_stream_is_read_whole(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    server.script(Reply.ok("whole answer"))
    completion, pieces = await streamed(provider)
    assert completion.content == "whole answer" and pieces == []


async def test_an_http_error_before_the_stream_is_read_as_ever(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    server.script(Reply.error(429, "slow down", headers={"Retry-After": "2"}))
    with pytest.raises(CallError) as caught:
        await streamed(provider)
    assert (caught.value.type, caught.value.retry_after) == ("rate_limit", 2.0)


async def test_the_key_is_masked_in_a_streamed_error(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    server.script(Reply.stream(sse({"error": {"code": 401, "message": f"bad key {KEY}"}})))
    with pytest.raises(CallError) as caught:
        await streamed(provider)
    assert KEY not in caught.value.message and "bad key ***" in caught.value.message


# -- through the one call path ---------------------------------------------------------------


def target(provider: OpenAICompatible, cache_id: str | None = None) -> Target:
    return Target(
        alias="m",
        model_id=MODEL,
        provider_name=provider.name,
        provider=provider,
        limits=ProviderLimits(),
        timeout=2.0,
        retry=Retry(attempts=3, initial=0.001, max=0.01),
        cache_id=cache_id,
    )


async def call(
    path: CallPath, provider: OpenAICompatible, pieces: list[str], cache_id: str | None = None
) -> CallResult:
    return await path.call("node", target(provider, cache_id), MESSAGES, {}, on_delta=pieces.append)


def new_path(cache: ResponseCache | None = None) -> CallPath:
    return CallPath(cache=cache, prices=None, emit=lambda kind, **fields: None)


async def test_an_error_before_the_first_piece_is_retried(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    server.script(
        Reply.stream(sse({"error": {"code": 503, "message": "busy"}})),
        Reply.error(502, "bad gateway"),
        Reply.stream(*HELLO),
    )
    pieces: list[str] = []
    result = await call(new_path(), provider, pieces)
    assert result.success and result.attempts == 3 and server.count == 3
    assert pieces == ["Hel", "lo, ", "world"] and result.content == "Hello, world"
    assert result.usage.total_tokens == 15 and result.usage.cost == 0.000015
    assert result.ttft_s is not None and 0 < result.ttft_s <= result.latency_s


async def test_a_failure_after_pieces_were_shown_fails_without_a_retry(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    error = {"code": 502, "message": "Upstream went away"}
    server.script(Reply.stream(chunk("Hel"), chunk("lo"), sse({"error": error})))
    server.script(Reply.stream(*HELLO))  # what a retry would get
    pieces: list[str] = []
    result = await call(new_path(), provider, pieces)
    assert not result.success and result.content is None
    assert result.attempts == 1 and server.count == 1
    assert pieces == ["Hel", "lo"]
    assert result.error is not None and result.error.message == (
        "provider 'fake' reported an error: Upstream went away (the answer broke off after 5 "
        "characters had been streamed; not retried, as they were shown)"
    )
    assert result.ttft_s is not None  # it had begun


async def test_a_stall_after_pieces_fails_and_before_them_is_retried(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    server.script(Reply.stream(": wait\n\n", 5.0), Reply.stream(*HELLO))
    pieces: list[str] = []
    path = new_path()
    tight = target(provider)
    tight.timeout = 0.3
    result = await path.call("node", tight, MESSAGES, {}, on_delta=pieces.append)
    assert result.success and result.attempts == 2
    server.script(Reply.stream(chunk("Hel"), 5.0))
    pieces.clear()
    result = await path.call("node", tight, MESSAGES, {}, on_delta=pieces.append)
    assert not result.success and result.attempts == 1 and pieces == ["Hel"]
    assert result.error is not None and "stream stalled" in result.error.message


async def test_the_cache_keeps_the_whole_answer_and_replays_it_as_one_piece(
    server: FakeServer, provider: OpenAICompatible, tmp_path: Path
) -> None:
    store = Store(tmp_path / "cache.db")
    try:
        path = new_path(ResponseCache(store))
        server.script(Reply.stream(*HELLO))
        first: list[str] = []
        fresh = await call(path, provider, first, cache_id=server.base_url)
        again: list[str] = []
        hit = await call(path, provider, again, cache_id=server.base_url)
    finally:
        store.close()
    assert first == ["Hel", "lo, ", "world"] and fresh.success and not fresh.cached
    assert again == ["Hello, world"] and hit.cached and hit.ttft_s is not None
    assert hit.usage.total_tokens == 15 and server.count == 1


async def test_a_provider_that_cannot_stream_gives_its_answer_as_one_piece(
    server: FakeServer, provider: OpenAICompatible
) -> None:
    server.script(Reply.ok("whole answer"))
    pieces: list[str] = []
    result = await call(new_path(), provider, pieces)
    assert pieces == ["whole answer"] and result.success and result.ttft_s is not None
    assert result.usage.total_tokens == USAGE["prompt_tokens"] + 3
