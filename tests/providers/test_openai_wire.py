"""The OpenAI-compatible provider against mocked wire replies (aioresponses)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from hypothesis import example, given
from hypothesis import strategies as st

from flowengine.errors import CallError
from flowengine.providers import ChatRequest, OpenAICompatible, ProviderContext
from flowengine.providers.openai_reply import parse_usage
from flowengine.results import Usage
from flowengine.spec import OpenAIProvider

BASE = "https://api.example.test/v1"
URL = f"{BASE}/chat/completions"
KEY = "sk-or-v1-0123456789abcdef-SECRET"
REQUEST = ChatRequest("openai/gpt-oss-120b", [{"role": "user", "content": "Hi?"}], timeout=5)


def completion(content: Any = "Hello", finish: Any = "stop", **extra: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {"choices": [{"message": message, "finish_reason": finish}], **extra}


@pytest.fixture
async def provider() -> AsyncIterator[OpenAICompatible]:
    spec = OpenAIProvider(base_url=BASE, api_key_env="TEST_KEY", headers={"X-Title": "t"})
    async with aiohttp.ClientSession() as session:
        yield OpenAICompatible("router", spec, ProviderContext(session, {"TEST_KEY": KEY}))


async def fail(provider: OpenAICompatible) -> CallError:
    with pytest.raises(CallError) as info:
        await provider.complete(REQUEST)
    return info.value


async def test_success_reads_content_model_usage_and_cost(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.00042}
    mocked.post(URL, payload=completion("Hello", model="openai/gpt-oss-120b:free", usage=usage))
    result = await provider.complete(REQUEST)
    assert result.content == "Hello"
    assert result.served_model == "openai/gpt-oss-120b:free"
    assert result.finish_reason == "stop"
    assert dataclasses.asdict(result.usage) == usage


async def test_request_body_and_headers(mocked: aioresponses, provider: OpenAICompatible) -> None:
    mocked.post(URL, payload=completion())
    params = {"temperature": 0.2, "model": "ignored"}
    await provider.complete(ChatRequest("m/x", [{"role": "user", "content": "q"}], params))
    call = next(iter(mocked.requests.values()))[0]
    body = call.kwargs["data"]
    assert body.content_type == "application/json"
    assert json.loads(body.decode()) == {
        "temperature": 0.2,
        "model": "m/x",
        "messages": [{"role": "user", "content": "q"}],
    }
    assert call.kwargs["headers"] == {"X-Title": "t", "Authorization": f"Bearer {KEY}"}


async def test_usage_total_is_derived_and_bad_fields_dropped(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "cost": "free"}
    mocked.post(URL, payload=completion(usage=usage))
    result = await provider.complete(REQUEST)
    assert (result.usage.total_tokens, result.usage.cost) == (7, None)


async def test_missing_key_names_the_variable_and_offline(
    mocked: aioresponses,
) -> None:
    spec = OpenAIProvider(base_url=BASE, api_key_env="OPENROUTER_API_KEY")
    async with aiohttp.ClientSession() as session:
        provider = OpenAICompatible("openrouter", spec, ProviderContext(session, {}))
        error = await fail(provider)
    assert error.type == "auth" and not error.retryable
    assert "OPENROUTER_API_KEY" in error.message and "--offline" in error.message
    assert not mocked.requests


async def test_no_key_variable_sends_no_authorization(mocked: aioresponses) -> None:
    mocked.post("http://127.0.0.1:1/v1/chat/completions", payload=completion())
    spec = OpenAIProvider(base_url="http://127.0.0.1:1/v1")
    async with aiohttp.ClientSession() as session:
        await OpenAICompatible("local", spec, ProviderContext(session, {})).complete(REQUEST)
    call = next(iter(mocked.requests.values()))[0]
    assert "Authorization" not in (call.kwargs["headers"] or {})


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, "http", False),
        (401, "auth", False),
        (402, "http", False),
        (403, "http", False),
        (404, "http", False),
        (413, "http", False),
        (422, "http", False),
        (418, "http", False),
        (408, "http", True),
        (409, "http", True),
        (425, "http", True),
        (429, "rate_limit", True),
        (500, "http", True),
        (502, "http", True),
        (503, "http", True),
    ],
)
async def test_status_taxonomy(
    mocked: aioresponses, provider: OpenAICompatible, status: int, kind: str, retryable: bool
) -> None:
    mocked.post(URL, status=status, payload={"error": {"code": status, "message": "nope"}})
    error = await fail(provider)
    assert (error.type, error.status, error.retryable) == (kind, status, retryable)
    assert f"HTTP {status}: nope" in error.message


async def test_429_retry_after_seconds(mocked: aioresponses, provider: OpenAICompatible) -> None:
    mocked.post(
        URL, status=429, payload={"error": {"message": "slow down"}}, headers={"Retry-After": "3"}
    )
    error = await fail(provider)
    assert error.retry_after == 3.0 and error.retryable


async def test_429_retry_after_http_date(mocked: aioresponses, provider: OpenAICompatible) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # long past: wait no more
    mocked.post(URL, status=429, body="", headers={"Retry-After": date})
    error = await fail(provider)
    assert error.retry_after == 0.0


async def test_error_body_enriched_with_upstream_raw(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    error_body = {
        "error": {
            "code": 502,
            "message": "Provider returned error",
            "metadata": {"raw": "upstream overloaded", "provider_name": "Groq"},
        }
    }
    mocked.post(URL, status=502, payload=error_body)
    error = await fail(provider)
    assert error.message.endswith("Provider returned error (upstream Groq: upstream overloaded)")


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        (429, 429, True),
        (502, 502, True),
        ("503", 503, True),
        (400, 400, False),
        ("rate_limited", "rate_limited", True),
        ("server_error", "server_error", True),
        ("invalid_api_key", "invalid_api_key", False),
        ("unauthorized", "unauthorized", False),
        (None, None, True),
    ],
)
async def test_error_inside_http_200(
    mocked: aioresponses,
    provider: OpenAICompatible,
    code: Any,
    status: Any,
    retryable: bool,
) -> None:
    body = {
        "error": {"code": code, "message": "Rate limit exceeded", "metadata": {"raw": "busy"}},
        "choices": None,
    }
    mocked.post(URL, payload=body)
    error = await fail(provider)
    assert (error.type, error.status, error.retryable) == ("api", status, retryable)
    assert "Rate limit exceeded" in error.message and "busy" in error.message


async def test_error_inside_200_without_choices_key(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    mocked.post(URL, payload={"error": {"code": 429, "message": "Rate limited"}})
    assert (await fail(provider)).status == 429


async def test_finish_reason_error_fails_even_with_partial_content(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    body = completion("Half an ans", "error")
    body["choices"][0]["error"] = {"code": 502, "message": "stream cut"}
    mocked.post(URL, payload=body)
    error = await fail(provider)
    assert (error.type, error.status, error.retryable) == ("api", 502, True)
    assert "stream cut" in error.message


async def test_length_with_empty_content_is_not_retried(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    mocked.post(URL, payload=completion("", "length"))
    error = await fail(provider)
    assert (error.type, error.retryable) == ("length", False)
    assert "max_tokens" in error.message


async def test_length_with_content_is_a_success(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    mocked.post(URL, payload=completion("truncated answ", "length"))
    assert (await provider.complete(REQUEST)).finish_reason == "length"


async def test_null_content_is_empty_and_retryable(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    mocked.post(URL, payload=completion(None))
    error = await fail(provider)
    assert (error.type, error.retryable) == ("empty", True)


async def test_content_filter_without_content(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    mocked.post(URL, payload=completion(None, "content_filter"))
    assert (await fail(provider)).type == "content_filter"


async def test_content_parts_are_joined(mocked: aioresponses, provider: OpenAICompatible) -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    mocked.post(URL, payload=completion(parts))
    assert (await provider.complete(REQUEST)).content == "ab"


@pytest.mark.parametrize(
    "body",
    [
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        '{"choices": [{"message": {"content": "Hel',
        "[1, 2, 3]",
        '{"choices": []}',
        '{"id": "x"}',
        "",
    ],
)
async def test_malformed_2xx_bodies_are_retryable(
    mocked: aioresponses, provider: OpenAICompatible, body: str
) -> None:
    mocked.post(URL, body=body)
    error = await fail(provider)
    assert (error.type, error.retryable) == ("malformed", True)
    assert len(error.message) < 300


async def test_html_error_page_is_excerpted(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    page = "<html><head><title>x</title></head><body>" + "Bad gateway " * 100 + "</body></html>"
    mocked.post(URL, status=502, body=page, content_type="text/html")
    error = await fail(provider)
    assert error.retryable and "<" not in error.message and len(error.message) < 300


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiohttp.ServerDisconnectedError(), "connection"),
        (aiohttp.ClientConnectionError("refused"), "connection"),
        (TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError("read timeout"), "timeout"),
        (aiohttp.ClientPayloadError("cut"), "malformed"),
    ],
)
async def test_transport_errors_are_translated(
    mocked: aioresponses, provider: OpenAICompatible, exc: Exception, kind: str
) -> None:
    mocked.post(URL, exception=exc)
    error = await fail(provider)
    assert (error.type, error.retryable) == (kind, True)
    assert error.__cause__ is exc


async def test_unexpected_exception_is_internal_and_final(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    mocked.post(URL, exception=RuntimeError("boom"))
    error = await fail(provider)
    assert (error.type, error.retryable) == ("internal", False)


@pytest.mark.parametrize(
    "reply",
    [
        {"status": 401, "payload": {"error": {"message": f"Incorrect API key: {KEY}"}}},
        {"status": 200, "payload": {"error": {"code": 502, "message": f"upstream saw {KEY}"}}},
        {"status": 200, "body": f"<html>proxy error for Bearer {KEY}</html>"},
        {"exception": aiohttp.ClientConnectionError(f"reset while sending {KEY}")},
    ],
    ids=["http-error", "error-in-200", "not-json", "transport"],
)
async def test_key_echoed_by_server_is_masked(
    mocked: aioresponses, provider: OpenAICompatible, reply: dict[str, Any]
) -> None:
    mocked.post(URL, **reply)
    error = await fail(provider)
    assert KEY not in str(error) and "***" in error.message
    assert error.__cause__ is None or KEY not in str(error.__cause__)


async def test_key_never_appears_in_errors_or_reprs(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    mocked.post(URL, status=401, payload={"error": {"message": "User not found."}})
    mocked.post(URL, exception=aiohttp.ClientResponseError(None, (), status=400))  # type: ignore[arg-type]
    mocked.post(URL, exception=TimeoutError())
    mocked.post(URL, body="<html>oops</html>")
    texts = [repr(provider), str(provider.__dict__.get("spec"))]
    for _ in range(4):
        error = await fail(provider)
        texts += [str(error), repr(error), error.message, repr(error.as_dict())]
        cause: BaseException | None = error.__cause__
        while cause is not None:
            texts += [str(cause), repr(cause)]
            cause = cause.__cause__
    assert all(KEY not in text for text in texts)


_USAGE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(),  # json.loads accepts Infinity and NaN
    st.text(max_size=3),
)


_TOKENS = st.one_of(st.integers(0, 10**6), _USAGE_VALUES)


@given(
    st.one_of(
        st.none(),
        st.lists(st.integers(), max_size=2),
        st.fixed_dictionaries(
            {},
            optional={
                "prompt_tokens": _TOKENS,
                "completion_tokens": _TOKENS,
                "total_tokens": _TOKENS,
                "cost": _USAGE_VALUES,
            },
        ),
    )
)
@example({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cost": True})
@example({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cost": 0})
@example({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cost": 0.5})
@example({"prompt_tokens": True, "completion_tokens": 2, "total_tokens": 3})
@example({"prompt_tokens": 1.0, "completion_tokens": 2, "total_tokens": 3})
@example({"prompt_tokens": 1, "completion_tokens": 2})
@example({"prompt_tokens": float("inf"), "completion_tokens": 2, "total_tokens": 3})
@example({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cost": float("nan")})
def test_usage_keeps_only_finite_numbers(usage: Any) -> None:
    parsed = parse_usage(usage)
    for count in (parsed.prompt_tokens, parsed.completion_tokens, parsed.total_tokens):
        assert count is None or (type(count) is int and math.isfinite(count))
    assert parsed.cost is None or (type(parsed.cost) is float and math.isfinite(parsed.cost))
    if isinstance(usage, dict) and type(usage.get("prompt_tokens")) is int:
        assert parsed.prompt_tokens == usage["prompt_tokens"]


async def test_usage_that_is_not_finite_is_left_out(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    # Python's json accepts Infinity and NaN: the answer is kept, the nonsense counts are not
    body = (
        '{"model": "m", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],'
        ' "usage": {"prompt_tokens": Infinity, "completion_tokens": 2, "cost": NaN}}'
    )
    mocked.post(URL, status=200, body=body)
    result = await provider.complete(REQUEST)
    assert result.content == "hi"
    assert result.usage == Usage(prompt_tokens=None, completion_tokens=2, total_tokens=None)


async def test_a_reply_with_tool_calls_and_no_text_is_an_answer(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"city": "Paris"}'},
        }
    ]
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    body = {"choices": [{"message": message, "finish_reason": "tool_calls"}]}
    mocked.post(URL, payload=body)
    result = await provider.complete(REQUEST)
    assert (result.content, result.finish_reason, result.tool_calls) == ("", "tool_calls", calls)


async def test_a_key_echoed_across_the_excerpt_limit_leaves_no_prefix(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    # the key starts 190 characters in: an excerpt cut at 200 would show its first characters
    body = {"error": {"message": "x" * 170 + f" Authorization: Bearer {KEY} is not valid"}}
    mocked.post(URL, status=400, payload=body)
    error = await fail(provider)
    assert KEY[:8] not in error.message and "sk-or-v1" not in error.message
    assert "Bearer ***" in error.message


async def test_a_lone_surrogate_in_an_answer_becomes_a_replacement_character(
    mocked: aioresponses, provider: OpenAICompatible
) -> None:
    mocked.post(URL, body='{"choices": [{"message": {"content": "caf\\ud800e"}}]}')
    result = await provider.complete(REQUEST)
    assert result.content == "caf\ufffde"
    result.content.encode("utf-8")  # writable to any file, record or reply
