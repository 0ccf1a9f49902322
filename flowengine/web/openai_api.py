"""OpenAI's chat-completions protocol, where each workflow is a model.

``GET /v1/models`` lists the workflows; ``POST /v1/chat/completions`` with ``model`` set to a
workflow's name runs it: the last user message is its ``prompt`` input, and the body's extra
``inputs`` object gives the others. The answer is the reply of the workflow's answer node, as
``run --stream`` prints it (:func:`flowengine.run.engine.answer_nodes`); the whole result is
the extra field ``flowengine``. Other parameters of the request (temperature, max_tokens,
tools...) are the workflow's to set, and are ignored here.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from flowengine.events import TokenDelta
from flowengine.language.workflow import Workflow
from flowengine.results import CallResult, RunResult, call_from
from flowengine.run.engine import answer_nodes
from flowengine.web.http import HttpError, json_response, read_json
from flowengine.web.runs import LiveRun
from flowengine.web.state import APP, State, bind_inputs, find_workflow, start

STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
#: How often a stream with no piece to send checks that its client is still there.
CLIENT_CHECK_S = 0.5


async def list_models(request: web.Request) -> web.Response:
    state = request.app[APP]
    data = [
        {"id": name, "object": "model", "created": state.started, "owned_by": "flowengine"}
        for name in state.workflows
    ]
    return json_response({"object": "list", "data": data})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[APP]
    body = await read_json(request)
    workflow = find_workflow(state, body.get("model"), "model")
    inputs = bind_inputs(workflow, {**chat_inputs(body), "prompt": last_user_message(body)})
    if body.get("stream") is True:
        return await _streamed(request, state, workflow, inputs, body)
    live = start(state.runs, workflow, inputs, stream=False)
    await live.done()
    result = finished(live)
    created = int(time.time())
    message = {"role": "assistant", "content": answer(workflow, result)}
    return json_response(
        {
            "id": f"chatcmpl-{live.run_id}",
            "object": "chat.completion",
            "created": created,
            "model": workflow.name,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage(result),
            "flowengine": extra(result),
        }
    )


def chat_inputs(body: dict[str, Any]) -> dict[str, Any]:
    """The body's extra ``inputs`` object (the SDK's ``extra_body``), without ``prompt``."""
    inputs = body.get("inputs", {})
    if not isinstance(inputs, dict):
        raise HttpError(400, "`inputs` must be an object of input values", param="inputs")
    if "prompt" in inputs:
        raise HttpError(
            400,
            "`inputs` cannot hold `prompt`: the prompt is the last user message",
            param="inputs",
        )
    return inputs


def last_user_message(body: dict[str, Any]) -> str:
    """The text of the last message whose role is ``user``; 400 when there is none."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "`messages` must be a non-empty list", param="messages")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    raise HttpError(
        400, "`messages` has no user message: the last user message is the prompt", param="messages"
    )


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts, one per line."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "\n".join(part["text"] for part in content)
    raise HttpError(
        400,
        "a user message's `content` must be text, or a list of text parts",
        param="messages",
    )


def finished(live: LiveRun) -> RunResult:
    """The result of a run that has ended; a 5xx when the run failed or was cancelled."""
    if live.status == "cancelled":
        raise HttpError(
            503,
            f"run {live.run_id} was cancelled: the server is shutting down",
            type="server_error",
            code="cancelled",
        )
    result = live.result
    if result is None or result.status == "failed":
        error = live.error or (result.error if result else None)
        reason = error.message if error else "see the run's result"
        raise HttpError(
            500,
            f"workflow '{live.workflow.name}' failed (run {live.run_id}): {reason}",
            type="workflow_error",
            code="run_failed",
            extra={"flowengine": extra(result) if result else {"run_id": live.run_id}},
        )
    return result


def answer(workflow: Workflow, result: RunResult) -> str:
    """The reply of the first answer node that gave one; else the run's output as text."""
    for node_id in answer_nodes(workflow):
        node = result.nodes.get(node_id)
        call = _call(node.output) if node is not None else None
        if call is not None and call.success and call.content is not None:
            return call.content
    output = result.output
    return output if isinstance(output, str) else json.dumps(output, indent=2)


def _call(output: Any) -> CallResult | None:
    if isinstance(output, CallResult):
        return output
    if isinstance(output, dict) and "content" in output and "success" in output:
        return call_from(output)
    return None


def usage(result: RunResult) -> dict[str, int]:
    """Tokens of every call of the run, a judge's and a router's included; a cache hit spent
    none."""
    spent = result.metadata
    return {
        "prompt_tokens": spent.prompt_tokens,
        "completion_tokens": spent.completion_tokens,
        "total_tokens": spent.tokens,
    }


def extra(result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "status": result.status,
        "result": result.model_dump(mode="json"),
    }


async def _streamed(
    request: web.Request,
    state: State,
    workflow: Workflow,
    inputs: dict[str, Any],
    body: dict[str, Any],
) -> web.StreamResponse:
    """The answer's pieces as ``chat.completion.chunk`` events, as they are written.

    The response starts at the first piece: a run that fails before it answers as the plain
    request would (a 5xx in OpenAI's shape); one that fails after, with a last event
    ``{"error": {...}}``. A client that goes away cancels the run: noticed at the next piece,
    or within :data:`CLIENT_CHECK_S` while none comes (before the answer starts, say).
    """
    pieces: asyncio.Queue[TokenDelta | None] = asyncio.Queue()
    live = start(state.runs, workflow, inputs, stream=True, on_token=pieces.put_nowait)
    assert live.task is not None
    live.task.add_done_callback(lambda _: pieces.put_nowait(None))
    chunks = Chunks(request, live, workflow.name)
    shown: str | None = None  # the answer node streaming, the first to send a piece
    try:
        while (piece := await _next_piece(pieces, request)) is not None:
            if shown in (None, piece.node):
                shown = piece.node
                await chunks.send({"content": piece.text})
        await live.done()
        try:
            result = finished(live)
        except HttpError as exc:
            if chunks.response is None:
                raise
            await chunks.fail(exc)
            return chunks.response
        if shown is None:
            await chunks.send({"content": answer(workflow, result)})
        return await chunks.end(result, body)
    except ConnectionResetError:  # the client went away: the run is of no use to anyone
        live.task.cancel()
        await live.done()
        return chunks.response or web.Response(status=499)


async def _next_piece(
    pieces: asyncio.Queue[TokenDelta | None], request: web.Request
) -> TokenDelta | None:
    """The next piece of the answer (None: the run has ended); ConnectionResetError once the
    client has gone."""
    while True:
        try:
            async with asyncio.timeout(CLIENT_CHECK_S):
                return await pieces.get()  # a get cut short by the timeout takes no piece
        except TimeoutError:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the client went away") from None


class Chunks:
    """One streamed chat completion: its chunks, opened at the first."""

    def __init__(self, request: web.Request, live: LiveRun, model: str) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None
        self.base = {
            "id": f"chatcmpl-{live.run_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    async def write(self, data: dict[str, Any] | str) -> None:
        if self.response is None:
            self.response = web.StreamResponse(headers=STREAM_HEADERS)
            await self.response.prepare(self.request)
            await self.write(self.chunk({"role": "assistant", "content": ""}))
        text = data if isinstance(data, str) else json.dumps(data)
        await self.response.write(f"data: {text}\n\n".encode())

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    async def send(self, delta: dict[str, Any]) -> None:
        await self.write(self.chunk(delta))

    async def fail(self, error: HttpError) -> None:
        assert self.response is not None
        await self.write(error.body())
        await self.response.write_eof()

    async def end(self, result: RunResult, body: dict[str, Any]) -> web.StreamResponse:
        await self.write({**self.chunk({}, "stop"), "flowengine": extra(result)})
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            await self.write({**self.base, "choices": [], "usage": usage(result)})
        await self.write("[DONE]")
        assert self.response is not None
        await self.response.write_eof()
        return self.response
