"""The OpenAI-compatible endpoint of `flowengine serve`, driven by the official `openai` SDK over
a real port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from flowengine import Workflow
from tests.fakeserver import FakeServer, Reply, chunk, sse
from tests.serving import listening, load, write_workflow

KEY = "sk-serve-0a9b8c7d-never-print-me"


@pytest.fixture
def steps(tmp_path: Path) -> dict[str, Workflow]:
    return load(write_workflow(tmp_path))


def sdk(address: str, key: str = KEY) -> AsyncOpenAI:
    # Two retries, as the SDK's default: the tests count what reaches the server.
    return AsyncOpenAI(base_url=f"{address}/v1", api_key=key, max_retries=2)


USER = [{"role": "user", "content": "Why is the sky blue?"}]


async def test_models_are_the_workflows(tmp_path: Path) -> None:
    workflows = load(write_workflow(tmp_path, "one"), write_workflow(tmp_path, "two"))
    async with listening(workflows) as (address, _), sdk(address) as client:
        models = [m async for m in client.models.list()]
    assert [(m.id, m.object, m.owned_by) for m in models] == [
        ("one", "model", "flowengine"),
        ("two", "model", "flowengine"),
    ]


async def test_a_completion_is_the_workflows_answer(steps: dict[str, Workflow]) -> None:
    async with listening(steps) as (address, _), sdk(address) as client:
        completion = await client.chat.completions.create(
            model="steps",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "An older question"},
                {"role": "assistant", "content": "An older answer"},
                *USER,
            ],
            extra_body={"inputs": {"tone": "formal"}},
        )
    extra: Any = completion.model_extra
    result = extra["flowengine"]["result"]
    assert extra["flowengine"]["status"] == "succeeded"
    assert completion.id == f"chatcmpl-{extra['flowengine']['run_id']}"
    assert completion.model == "steps"
    [choice] = completion.choices
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    # The answer is the last llm node's reply, as `run --stream` prints it.
    assert choice.message.content == result["nodes"]["polish"]["output"]["content"]
    assert result["inputs"] == {"prompt": "Why is the sky blue?", "tone": "formal"}
    calls = [result["nodes"][n]["output"]["usage"] for n in ("draft", "polish")]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == sum(c["prompt_tokens"] for c in calls)
    assert completion.usage.completion_tokens == sum(c["completion_tokens"] for c in calls)
    assert completion.usage.total_tokens == sum(c["total_tokens"] for c in calls)


async def when_ended(session: aiohttp.ClientSession, address: str, run_id: str) -> Any:
    """``GET /api/runs/<run_id>`` once the run is no longer running (at most 5 s from now)."""
    for _ in range(100):
        async with session.get(f"{address}/api/runs/{run_id}") as reply:
            shown = await reply.json()
        if shown["status"] != "running":
            break
        await asyncio.sleep(0.05)
    return shown


async def left_early(address: str, body: dict[str, Any]) -> Any:
    """Post ``body`` as a client that gives up on the reply after 0.3 s; the server's only run,
    once it has ended."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await session.post(f"{address}/v1/chat/completions", json=body)
        async with session.get(f"{address}/api/runs") as reply:
            [listed] = (await reply.json())["runs"]
        return await when_ended(session, address, listed["run_id"])


JUDGED = """\
version: 1
name: judged
inputs:
  prompt: {type: string}
providers:
  local: {base_url: "http://127.0.0.1:9/v1"}
defaults: {provider: local}
models:
  one: {id: model-one}
  two: {id: model-two}
  referee: {id: model-referee}
nodes:
  answers: {type: fanout, models: [one, two], template: "{{ prompt }}"}
  judge: {type: judge, needs: [answers], target: answers, criteria: [accuracy], model: referee}
  best: {type: llm, needs: [judge], model: one, template: "Improve: {{ judge.best }}"}
"""


async def test_usage_counts_every_call_the_run_made(tmp_path: Path) -> None:
    path = tmp_path / "judged.yaml"
    path.write_text(JUDGED)
    async with listening(load(path)) as (address, _), sdk(address) as client:
        completion = await client.chat.completions.create(model="judged", messages=USER)
    result = completion.model_extra["flowengine"]["result"]  # type: ignore[index]
    nodes = result["nodes"]
    answers = [call["usage"] for call in nodes["answers"]["output"]] + [
        nodes["best"]["output"]["usage"]
    ]
    assert completion.usage is not None
    # The judge's own call is paid for too, though no node's output holds it.
    assert completion.usage.total_tokens == result["metadata"]["tokens"]
    assert completion.usage.total_tokens > sum(u["total_tokens"] for u in answers) > 0
    assert completion.usage.prompt_tokens == result["metadata"]["prompt_tokens"]
    assert completion.usage.completion_tokens == result["metadata"]["completion_tokens"]
    assert (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
        == completion.usage.total_tokens
    )


async def test_a_streamed_completion_sends_the_answer_as_it_is_written(
    steps: dict[str, Workflow],
) -> None:
    async with listening(steps) as (address, _), sdk(address) as client:
        stream = await client.chat.completions.create(
            model="steps",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        plain = await client.chat.completions.create(model="steps", messages=USER)  # type: ignore[arg-type]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1  # the offline provider writes an answer in several pieces
    assert "".join(pieces) == plain.choices[0].message.content
    ends = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in ends] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens  # type: ignore[union-attr]
    assert (ends[0].model_extra or {})["flowengine"]["status"] == "succeeded"


async def test_request_errors_are_the_sdks_exceptions(steps: dict[str, Workflow]) -> None:
    async with listening(steps, api_key=KEY) as (address, answered), sdk(address) as client:
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.chat.completions.create(model="stesp", messages=USER)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as no_messages:
            await client.chat.completions.create(model="steps", messages=[])
        with pytest.raises(openai.BadRequestError) as no_user:
            await client.chat.completions.create(
                model="steps", messages=[{"role": "system", "content": "Be brief."}]
            )
        with pytest.raises(openai.BadRequestError) as bad_input:
            await client.chat.completions.create(
                model="steps",
                messages=USER,  # type: ignore[arg-type]
                extra_body={"inputs": {"tone": 3}},
            )
        with pytest.raises(openai.BadRequestError) as too_large:
            await client.chat.completions.create(
                model="steps",
                messages=[{"role": "user", "content": "x" * (5 * 1024 * 1024)}],
            )
        async with sdk(address, key="sk-wrong") as stranger:
            with pytest.raises(openai.AuthenticationError) as wrong_key:
                await stranger.models.list()
    assert unknown.value.code == "model_not_found"
    assert "did you mean 'steps'?" in unknown.value.message
    assert no_messages.value.param == "messages" and no_user.value.param == "messages"
    assert "input 'tone' should be string, got int" in bad_input.value.message
    assert too_large.value.code == "body_too_large"
    assert wrong_key.value.code == "invalid_api_key"
    assert KEY not in json.dumps([wrong_key.value.body, too_large.value.body])
    # Not one of them was retried.
    assert answered == ["/v1/chat/completions"] * 5 + ["/v1/models"]


async def test_a_failed_workflow_is_a_server_error_not_retried(
    tmp_path: Path, server: FakeServer
) -> None:
    server.script(Reply.error(400, "the model refuses"))
    workflows = load(write_workflow(tmp_path, url=server.base_url))
    async with listening(workflows, offline=False) as (address, answered), sdk(address) as client:
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model="steps", messages=USER)  # type: ignore[arg-type]
    assert failed.value.status_code == 500
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert "workflow 'steps' failed" in failed.value.message
    assert "the model refuses" in failed.value.message
    assert answered == ["/v1/chat/completions"] and server.count == 1


async def test_a_stream_that_fails_midway_ends_with_an_error(
    tmp_path: Path, server: FakeServer
) -> None:
    cut = Reply.stream(chunk("Half an "), chunk("answer"), sse({"error": {"message": "cut"}}))
    server.script_for("model-second", cut)
    workflows = load(write_workflow(tmp_path, url=server.base_url))
    async with listening(workflows, offline=False) as (address, _), sdk(address) as client:
        stream = await client.chat.completions.create(
            model="steps",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
        )
        seen: list[str] = []
        with pytest.raises(openai.APIError) as broken:
            async for part in stream:
                if part.choices and part.choices[0].delta.content:
                    seen.append(part.choices[0].delta.content)
    assert "".join(seen) == "Half an answer"
    assert "workflow 'steps' failed" in broken.value.message
    assert "cut (the answer broke off after 14 characters" in broken.value.message


async def test_a_stream_that_fails_before_its_answer_is_a_server_error(
    tmp_path: Path, server: FakeServer
) -> None:
    server.script(Reply.error(400, "the model refuses"))
    workflows = load(write_workflow(tmp_path, url=server.base_url))
    async with listening(workflows, offline=False) as (address, answered), sdk(address) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model="steps",
                messages=USER,  # type: ignore[arg-type]
                stream=True,
            )
    assert answered == ["/v1/chat/completions"]


async def test_a_client_that_leaves_before_the_answer_starts_cancels_its_run(
    tmp_path: Path, server: FakeServer
) -> None:
    server.script_for("model-first", Reply.ok("a draft, at last", delay=20))
    workflows = load(write_workflow(tmp_path, url=server.base_url))
    async with listening(workflows, offline=False) as (address, _):
        # No piece yet: the client gives up on the stream.
        shown = await left_early(address, {"model": "steps", "messages": USER, "stream": True})
    # Cut short while the draft was still being written, long before its 20 s.
    assert shown["status"] == "failed"
    assert shown["result"]["error"]["type"] == "cancelled"
    assert shown["result"]["nodes"]["draft"]["status"] == "cancelled"
    assert shown["result"]["metadata"]["total_time"] < 5


async def test_a_client_that_leaves_a_plain_request_lets_its_run_finish(
    tmp_path: Path, server: FakeServer
) -> None:
    server.script_for("model-first", Reply.ok("a draft", delay=1))
    workflows = load(write_workflow(tmp_path, url=server.base_url))
    async with listening(workflows, offline=False) as (address, _):
        shown = await left_early(address, {"model": "steps", "messages": USER})
    # What it paid for is kept: the run went on without its client, and was recorded.
    assert shown["status"] == "succeeded"
    assert shown["result"]["nodes"]["draft"]["output"]["content"] == "a draft"


async def test_a_client_that_leaves_a_stream_cancels_its_run(
    tmp_path: Path, server: FakeServer
) -> None:
    slow = [part for i in range(40) for part in (chunk(f"piece {i} "), 0.1)]
    server.script_for("model-second", Reply.stream(*slow))
    workflows = load(write_workflow(tmp_path, url=server.base_url))
    async with listening(workflows, offline=False) as (address, _), sdk(address) as client:
        stream = await client.chat.completions.create(
            model="steps",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
        )
        async for part in stream:
            if part.choices and part.choices[0].delta.content:
                break  # the first piece of the answer: enough for this client
        await stream.close()
        run_id = part.id.removeprefix("chatcmpl-")
        async with aiohttp.ClientSession() as session:
            # The run ends at the next piece it cannot send.
            shown = await when_ended(session, address, run_id)
    # Cut short long before the 4 s the model would have taken; recorded as the engine
    # records any cancelled run: failed, with the error `cancelled`.
    assert shown["status"] == "failed"
    assert shown["result"]["error"]["type"] == "cancelled"
    assert shown["result"]["metadata"]["total_time"] < 3
