"""The deterministic offline provider."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from flowengine.errors import CallError
from flowengine.providers import ChatRequest, Offline
from flowengine.providers.offline import offline_text
from flowengine.spec import OfflineProvider

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Explain quantum computing " + "in great detail " * 10},
]


def offline(**options: object) -> Offline:
    return Offline("offline", OfflineProvider.model_validate({"type": "offline", **options}))


async def test_answer_is_deterministic_and_says_it_is_offline() -> None:
    first = await offline().complete(ChatRequest("z-ai/glm-4.5", MESSAGES))
    second = await offline().complete(ChatRequest("z-ai/glm-4.5", MESSAGES))
    assert first == second
    assert first.content.startswith("[offline answer from z-ai/glm-4.5]")
    assert 'You asked: "Explain quantum computing in great detail' in first.content
    assert first.served_model == "z-ai/glm-4.5" and first.finish_reason == "stop"


async def test_answer_depends_on_model_messages_and_seed() -> None:
    base = offline_text("a/m", MESSAGES)
    assert offline_text("b/m", MESSAGES) != base
    assert offline_text("a/m", [*MESSAGES, {"role": "user", "content": "more"}]) != base
    assert offline_text("a/m", MESSAGES, seed=1) != base


def test_echo_is_short() -> None:
    text = offline_text("m", [{"role": "user", "content": "x" * 500}])
    assert len(text) < 300


async def test_usage_estimates_tokens_and_costs_nothing() -> None:
    usage = (await offline().complete(ChatRequest("m", MESSAGES))).usage
    assert usage.cost == 0.0 and usage.prompt_tokens and usage.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_latency() -> None:
    start = time.monotonic()
    await offline(latency="50ms").complete(ChatRequest("m", MESSAGES))
    assert time.monotonic() - start >= 0.045


async def test_latency_beyond_timeout_is_a_timeout() -> None:
    with pytest.raises(CallError) as info:
        await offline(latency="5s").complete(ChatRequest("m", MESSAGES, timeout=0.01))
    assert (info.value.type, info.value.retryable) == ("timeout", True)


async def test_failure_rate_is_deterministic_and_retries_get_fresh_draws() -> None:
    async def outcomes(provider: Offline) -> list[bool]:
        results = []
        for i in range(200):
            request = ChatRequest("m", [{"role": "user", "content": f"q{i % 50}"}])
            try:
                await provider.complete(request)
                results.append(True)
            except CallError as error:
                assert (error.type, error.status, error.retryable) == ("offline", 503, True)
                results.append(False)
        return results

    first = await outcomes(offline(failure_rate=0.3))
    assert first == await outcomes(offline(failure_rate=0.3))
    assert 0.15 < first.count(False) / len(first) < 0.45
    # the same request asked again does not always fail the same way
    assert any(first[i] != first[i + 50] for i in range(50))


async def test_failure_rate_extremes() -> None:
    request = ChatRequest("m", MESSAGES)
    with pytest.raises(CallError):
        await offline(failure_rate=1.0).complete(request)
    results = await asyncio.gather(*(offline().complete(request) for _ in range(20)))
    assert len(results) == 20


# -- answers that build on answers, and booleans ---------------------------------------------

VERDICT = {
    "type": "json_schema",
    "json_schema": {
        "name": "critique",
        "schema": {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "nested": {"type": "array", "items": {}}},
            "required": ["ok"],
        },
    },
}


async def test_an_answer_names_the_offline_answer_its_prompt_quoted() -> None:
    first = offline_text("m", [{"role": "user", "content": "Why?"}])
    assert re.search(r" \(ref [0-9a-f]{8}\)$", first)
    second = offline_text("m", [{"role": "user", "content": f"Revise: {first}"}])
    ref = re.findall(r"ref ([0-9a-f]{8})", first)[0]
    assert second.endswith(f", after {ref})")
    # The last one quoted is the one named.
    third = offline_text("m", [{"role": "user", "content": f"{second}\nor {first}"}])
    assert third.endswith(f", after {ref})")


@pytest.mark.parametrize("model", ["a/one", "b/two", "c/three"])
async def test_booleans_are_true_only_for_a_revision(model: str) -> None:
    async def ok(text: str) -> bool:
        request = ChatRequest(
            model, [{"role": "user", "content": text}], {"response_format": VERDICT}
        )
        value: bool = json.loads((await offline().complete(request)).content)["ok"]
        return value

    draft = offline_text("w", [{"role": "user", "content": "Why is the sky blue?"}])
    revision = offline_text("w", [{"role": "user", "content": f"Revise {draft}"}])
    assert await ok("Why is the sky blue?") is False
    assert await ok(f"Review {draft}") is False  # a first answer
    assert await ok(f"Review {revision}") is True  # an answer written after another
