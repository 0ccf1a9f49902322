"""A lean OpenAI-compatible mock server for benchmarks: chat completions and a model selector.

It speaks just enough HTTP/1.1 (keep-alive, ``Content-Length`` bodies) on a bare
``asyncio.Protocol`` so that it costs a small fraction of what the client under test costs: a
benchmark of the client must not measure the server. Replies are built once per model and
then reused; a fixed ``--latency`` delays every reply, the selector's included.

Routes: ``POST /v1/chat/completions`` (any model id), ``POST /predict`` (always selects
``--select``), ``GET /v1/models`` (the models seen so far, OpenRouter's shape, with prices),
``GET /stats`` (requests served, as JSON) and ``POST /stats/reset``. Run it on its own::

    python -m benchmarks.mockserver --port 8080 --latency 0.1

Options for the batch benchmarks, all off by default:

- ``--fail-rate F``: that fraction of chat requests is answered with an error instead, cycling
  through 500, 502, 503 and 429 (429 and 503 with ``Retry-After: 0``), drawn from ``--seed``.
- ``--timestamps``: keep the arrival time (``time.monotonic()``) of every chat request, which
  ``/stats`` returns as ``times``, for checking a client's rate limit at the server.

It prints ``listening on PORT`` once it accepts connections, which is what
``bench_engine.py`` waits for when it starts the server as a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from typing import Any

#: Answer text of every chat reply, about the size of a short real answer (~600 characters).
ANSWER = (
    "Quantum computers store information in qubits, which can be in a superposition of 0 and 1. "
    "Operations on many qubits act on all their combined states at once, and interference "
    "makes the wrong answers cancel while the right ones add up. That is why some problems, "
    "such as factoring large numbers or simulating molecules, need far fewer steps on a quantum "
    "computer. Today's machines are small and noisy: errors build up quickly, so useful "
    "algorithms need error correction, which costs many physical qubits per logical qubit. "
)


def chat_body(model: str) -> bytes:
    prompt_tokens, completion_tokens = 120, len(ANSWER) // 4
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"[{model}] {ANSWER}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "cost": 0.00042,
            },
        }
    ).encode()


def response(status: str, body: bytes, headers: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def error_reply(status: str, message: str, retry_after: bool) -> bytes:
    code = int(status.split()[0])
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return response(status, body, "Retry-After: 0\r\n" if retry_after else "")


#: What ``--fail-rate`` answers with, in turn.
FAULTS = (
    error_reply("500 Internal Server Error", "mock: internal error", retry_after=False),
    error_reply("502 Bad Gateway", "mock: upstream unavailable", retry_after=False),
    error_reply("503 Service Unavailable", "mock: overloaded", retry_after=True),
    error_reply("429 Too Many Requests", "mock: rate limited", retry_after=True),
)


class Stats:
    """Requests served, by route; printed on exit and served by ``GET /stats``."""

    def __init__(self) -> None:
        self.chat = 0
        self.predict = 0
        self.failed = 0  # chat requests answered with an injected fault
        self.times: list[float] = []  # chat request arrival times, with --timestamps

    def as_json(self) -> bytes:
        return json.dumps(
            {"chat": self.chat, "predict": self.predict, "failed": self.failed, "times": self.times}
        ).encode()


class MockServer:
    """The replies and the delay shared by every connection."""

    def __init__(
        self,
        latency: float,
        selected: str,
        fail_rate: float = 0.0,
        timestamps: bool = False,
        seed: int = 0,
    ) -> None:
        self.latency = latency
        self.fail_rate = fail_rate
        self.timestamps = timestamps
        self.random = random.Random(seed)
        self.stats = Stats()
        scores = {selected: 0.82, "glm-4.5": 0.74, "qwen3": 0.61}
        self.predict = response(
            "200 OK", json.dumps({"selected_model": selected, "confidence_scores": scores}).encode()
        )
        self.not_found = response("404 Not Found", b'{"error": {"code": 404, "message": "?"}}')
        self.reset_done = response("200 OK", b"{}")
        self._chat: dict[str, bytes] = {}

    def reply(self, path: bytes, body: bytes) -> bytes:
        if path == b"/v1/chat/completions":
            stats = self.stats
            stats.chat += 1
            if self.timestamps:
                stats.times.append(time.monotonic())
            if self.fail_rate and self.random.random() < self.fail_rate:
                stats.failed += 1
                return FAULTS[stats.failed % len(FAULTS)]
            model = str(json.loads(body).get("model", ""))
            found = self._chat.get(model)
            if found is None:
                found = self._chat[model] = response("200 OK", chat_body(model))
            return found
        if path == b"/predict":
            self.stats.predict += 1
            return self.predict
        if path == b"/v1/models":
            return response("200 OK", self.models())
        if path == b"/stats":
            return response("200 OK", self.stats.as_json())
        if path == b"/stats/reset":
            self.stats = Stats()
            return self.reset_done
        return self.not_found

    def models(self) -> bytes:
        """The models asked for so far, as OpenRouter lists them (USD per token)."""
        pricing = {"prompt": "0.0000005", "completion": "0.0000015"}
        data = [{"id": model, "name": model, "pricing": pricing} for model in sorted(self._chat)]
        return json.dumps({"data": data}).encode()


class Connection(asyncio.Protocol):
    """One keep-alive connection: requests are parsed from the buffer as they complete."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            path = lines[0].split(b" ", 2)[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            reply = self.server.reply(path, body)
            if self.server.latency > 0 and not path.startswith(b"/stats"):
                self.loop.call_later(self.server.latency, self.send, reply)
            else:
                self.send(reply)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(
    port: int,
    latency: float,
    selected: str,
    fail_rate: float = 0.0,
    timestamps: bool = False,
    seed: int = 0,
) -> None:
    server = MockServer(latency, selected, fail_rate, timestamps, seed)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: Connection(server), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    bound: Any = listener.sockets[0].getsockname()[1]
    print(f"listening on {bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        listener.close()
        stats = server.stats
        print(
            f"served {stats.chat} chat ({stats.failed} failed on purpose), {stats.predict} predict",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Lean OpenAI-compatible mock server.")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--select", default="gpt-oss", help="what /predict selects")
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="fraction of chat requests answered 5xx/429"
    )
    parser.add_argument(
        "--timestamps", action="store_true", help="keep chat request times for GET /stats"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --fail-rate draws")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(args.port, args.latency, args.select, args.fail_rate, args.timestamps, args.seed)
        )


if __name__ == "__main__":
    main()
