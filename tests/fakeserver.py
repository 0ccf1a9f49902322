"""A real OpenAI-compatible HTTP server on 127.0.0.1 with a programmable fault script.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /predict`` (model selector).

In tests::

    async with FakeServer(latency=0.01) as srv:
        srv.script(Reply.error(429, headers={"Retry-After": "1"}), Reply.ok("hi"))
        srv.script_for("slow/model", Reply.ok("late", delay=2))
        ...  # point a provider at srv.base_url, a selector at srv.selector_url
        assert srv.count == 2 and srv.max_in_flight == 1

From a script or a benchmark: ``python -m tests.fakeserver --port 8080 --latency 0.1``, or
``handle = run_in_thread(latency=0.1)`` ... ``handle.stop()``.

Streamed replies: ``Reply.stream(chunk("Hel"), chunk("lo", finish="stop"), DONE)`` writes
each part (``sse(obj)`` frames any JSON; a number is a pause in seconds), ``piece=3`` in pieces
of 3 bytes, ``newline="\r\n"`` with CRLF; ``srv.sent`` has when each write went out.

Without a script, a chat request gets a plausible answer that names the model and echoes the
question, with usage and cost (streamed when the request asks for ``stream``); ``/predict``
selects ``srv.selected_model``. ``/v1/models`` lists ``srv.models`` with OpenRouter's
``pricing`` for those in ``srv.prices``; with ``report_cost=False`` replies leave
``usage.cost`` out, as most OpenAI-compatible servers do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """One scripted reply: a JSON or raw body, or a fault."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    truncate: bool = False
    content_type: str = "application/json"
    #: A streamed reply: text or bytes to write, and pauses (seconds) between them.
    parts: list[str | bytes | float] | None = None
    #: Write the parts in pieces of this many bytes, each its own write.
    piece: int | None = None

    @classmethod
    def ok(
        cls,
        content: str | None = "ok",
        *,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Reply:
        """A success; ``model`` overrides the served model (default: the requested one),
        ``usage`` the usage object (default: 12 prompt tokens, one per 4 characters, a cost)."""
        finish = kw.pop("finish_reason", "stop")
        body = _completion(model, content, finish)
        if usage is not None:
            body["usage"] = usage
        return cls(body=body, **kw)

    @classmethod
    def error(cls, status: int, message: str = "error", **kw: Any) -> Reply:
        return cls(status=status, body={"error": {"code": status, "message": message}}, **kw)

    @classmethod
    def error_in_200(
        cls, code: int | str, message: str = "Provider returned error", raw: str | None = None
    ) -> Reply:
        """What OpenRouter sends when the upstream fails: HTTP 200, an error, no choices."""
        error: dict[str, Any] = {"code": code, "message": message}
        if raw is not None:
            error["metadata"] = {"raw": raw, "provider_name": "Upstream"}
        return cls(body={"error": error, "choices": None})

    @classmethod
    def raw(cls, text: str, status: int = 200, content_type: str = "text/html") -> Reply:
        return cls(status=status, body=text, content_type=content_type)

    @classmethod
    def stream(
        cls,
        *parts: str | bytes | float,
        piece: int | None = None,
        newline: str = "\n",
        drop: bool = False,
        **kw: Any,
    ) -> Reply:
        """Server-sent events; ``drop`` closes the connection after the parts instead of
        ending the reply."""
        lines = [p.replace("\n", newline) if isinstance(p, str) else p for p in parts]
        kw.setdefault("content_type", "text/event-stream")
        return cls(parts=lines, piece=piece, drop=drop, **kw)

    @classmethod
    def dropped(cls) -> Reply:
        """Close the connection without answering."""
        return cls(drop=True)

    @classmethod
    def truncated(cls) -> Reply:
        """Promise a longer body than is sent, then close."""
        return cls(body=_completion(None, "cut short", "stop"), truncate=True)


#: The event that ends an OpenAI stream.
DONE = "data: [DONE]\n\n"


def sse(data: Any) -> str:
    """One event whose data is ``data`` as JSON."""
    return f"data: {json.dumps(data)}\n\n"


def chunk(
    content: str | None = None,
    *,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    model: str = "served/model",
    **delta: Any,
) -> str:
    """One ``chat.completion.chunk`` event; ``delta`` adds keys (``tool_calls=[...]``)."""
    if content is not None:
        delta["content"] = content
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return sse(body)


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "cost": 0.000015}


def usage_chunk(usage: dict[str, Any] | None = None) -> str:
    """The usage at the end of an OpenAI stream: a chunk with no choices."""
    return sse({"object": "chat.completion.chunk", "choices": [], "usage": usage or USAGE})


def _completion(model: str | None, content: str | None, finish: str | None) -> dict[str, Any]:
    prompt_tokens, completion_tokens = 12, max(1, len(content or "") // 4)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost": round(0.000001 * (prompt_tokens + completion_tokens), 9),
        },
    }


class FakeServer:
    """The server, its script and its counters. Use as ``async with FakeServer() as srv``."""

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        models: list[str] | None = None,
        selected_model: str = "gpt-oss",
        prices: dict[str, tuple[float, float]] | None = None,
        report_cost: bool = True,
    ) -> None:
        self.port = port
        self.latency = latency
        self.models = models or ["openai/gpt-oss-120b", "z-ai/glm-4.5", "moonshotai/kimi-k2"]
        self.selected_model = selected_model
        self.scores: dict[str, float] = {}
        # USD per (prompt token, completion token), served by /v1/models as OpenRouter does.
        self.prices: dict[str, tuple[float, float]] = dict(prices or {})
        self.report_cost = report_cost
        self._queue: deque[Reply] = deque()
        self._by_model: dict[str, deque[Reply]] = defaultdict(deque)
        self._always: dict[str, Reply] = {}
        self._selector: deque[Reply] = deque()
        self._models_replies: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.reset_counters()

    # -- script ---------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next chat requests, whatever their model."""
        self._queue.extend(replies)

    def script_for(self, model_id: str, *replies: Reply) -> None:
        """Queue replies for the next requests for ``model_id`` (before the general queue)."""
        self._by_model[model_id].extend(replies)

    def always_for(self, model_id: str, reply: Reply | None) -> None:
        """Answer every request for ``model_id`` with ``reply`` (None clears)."""
        if reply is None:
            self._always.pop(model_id, None)
        else:
            self._always[model_id] = reply

    def script_selector(self, *replies: Reply) -> None:
        """Queue replies for the next ``/predict`` requests."""
        self._selector.extend(replies)

    def script_models(self, *replies: Reply) -> None:
        """Queue replies for the next ``GET /v1/models`` requests (say, ``Reply.error(503)``)."""
        self._models_replies.extend(replies)

    def reset_counters(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.models_requests = 0
        self.headers: list[dict[str, str]] = []
        self.starts: list[float] = []
        #: ``(time.monotonic(), bytes)`` of each write of a streamed reply.
        self.sent: list[tuple[float, bytes]] = []
        self.selector_requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def count(self) -> int:
        """Chat requests received."""
        return len(self.requests)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def selector_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    async def start(self) -> FakeServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/predict", self._predict)
        # Cancel a handler when its client goes away, so a scripted delay ends with the request.
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers -------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.starts.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response(
                    {"error": {"code": 400, "message": "bad JSON"}}, status=400
                )
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            reply = self._next_for(str(body.get("model", "")))
            await asyncio.sleep(self.latency)
            return await self._send(request, reply, body)
        finally:
            self.in_flight -= 1

    def _next_for(self, model: str) -> Reply:
        if self._by_model.get(model):
            return self._by_model[model].popleft()
        if model in self._always:
            return self._always[model]
        if self._queue:
            return self._queue.popleft()
        return Reply(body=None)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.models_requests += 1
        if self._models_replies:
            return await self._send(request, self._models_replies.popleft(), {})
        data: list[dict[str, Any]] = []
        for model in dict.fromkeys([*self.models, *self.prices]):
            item: dict[str, Any] = {"id": model, "object": "model"}
            if model in self.prices:
                prompt, completion = self.prices[model]
                # OpenRouter sends prices as decimal strings, in USD per token.
                item["pricing"] = {"prompt": f"{prompt:.12f}", "completion": f"{completion:.12f}"}
            data.append(item)
        return web.json_response({"object": "list", "data": data})

    async def _predict(self, request: web.Request) -> web.StreamResponse:
        self.selector_requests.append(await request.json())
        if self._selector:
            return await self._send(request, self._selector.popleft(), {})
        scores = self.scores or {self.selected_model: 0.9}
        return web.json_response(
            {"selected_model": self.selected_model, "confidence_scores": scores}
        )

    async def _send(
        self, request: web.Request, reply: Reply, asked: dict[str, Any]
    ) -> web.StreamResponse:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            # The handler's result goes nowhere once the socket is closed.
            return web.Response(status=204)
        if reply.parts is None and reply.body is None and asked.get("stream"):
            reply = Reply.stream(*_default_stream(asked))
        if reply.parts is not None:
            return await self._stream(request, reply)
        payload = _payload(reply.body, asked, report_cost=self.report_cost)
        if reply.truncate:
            return await _truncated(request, payload)
        return web.Response(
            status=reply.status,
            body=payload,
            headers=reply.headers,
            content_type=reply.content_type,
        )

    async def _stream(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(
            status=reply.status, headers={"Content-Type": reply.content_type, **reply.headers}
        )
        await response.prepare(request)
        for part in reply.parts or ():
            if isinstance(part, int | float):
                await asyncio.sleep(part)
                continue
            data = part.encode() if isinstance(part, str) else part
            step = reply.piece or len(data) or 1
            for start in range(0, len(data), step):
                await response.write(data[start : start + step])
                self.sent.append((time.monotonic(), data[start : start + step]))
                if reply.piece:
                    await asyncio.sleep(0.001)  # so that each piece reaches the client apart
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
        else:
            await response.write_eof()
        return response


def _default_stream(asked: dict[str, Any]) -> list[str | bytes | float]:
    answer = _default_answer(asked)
    words = answer.split(" ")
    model = str(asked.get("model"))
    parts: list[str | bytes | float] = [
        chunk(word if i == 0 else " " + word, model=model) for i, word in enumerate(words)
    ]
    tokens = max(1, len(answer) // 4)
    usage = {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens}
    return [*parts, chunk(finish="stop", model=model), usage_chunk(usage), DONE]


def _payload(body: Any, asked: dict[str, Any], *, report_cost: bool = True) -> bytes:
    """Bytes to send; the default answer and a missing served model come from the request."""
    if body is None:
        body = _completion(None, _default_answer(asked), "stop")
    if isinstance(body, dict) and "choices" in body and body.get("model", 1) is None:
        body = {**body, "model": asked.get("model")}
    if not report_cost and isinstance(body, dict) and isinstance(body.get("usage"), dict):
        body = {**body, "usage": {k: v for k, v in body["usage"].items() if k != "cost"}}
    if isinstance(body, bytes):
        return body
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


def _default_answer(asked: dict[str, Any]) -> str:
    messages = asked.get("messages") or [{}]
    last = str(messages[-1].get("content", "")) if isinstance(messages[-1], dict) else ""
    return f"answer from {asked.get('model')}: {' '.join(last.split())[:60]}"


async def _truncated(request: web.Request, payload: bytes) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = len(payload) + 100
    await response.prepare(request)
    await response.write(payload[: len(payload) // 2])
    assert request.transport is not None
    request.transport.close()
    return response


@dataclass
class ThreadedServer:
    """A FakeServer running on its own loop in a daemon thread."""

    server: FakeServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def selector_url(self) -> str:
        return self.server.selector_url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def run_in_thread(**options: Any) -> ThreadedServer:
    """Start a FakeServer (``FakeServer(**options)``) in a thread; returns once it listens."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fakeserver", daemon=True)
    thread.start()
    server = FakeServer(**options)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    return ThreadedServer(server, loop, thread)


async def serve_forever(port: int = 8080, latency: float = 0.0) -> None:
    """Run until cancelled, printing the base URL."""
    async with FakeServer(port=port, latency=latency) as srv:
        print(f"fake OpenAI-compatible server at {srv.base_url}", flush=True)
        print(f"fake model selector at {srv.selector_url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server for tests.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat reply")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(args.port, args.latency))


if __name__ == "__main__":
    main()
