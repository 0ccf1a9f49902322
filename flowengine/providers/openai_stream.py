"""A streamed chat completion: the chunks of one answer, put together as they arrive.

Each event's data is a ``chat.completion.chunk``: text in ``choices[0].delta.content``, tool
calls in pieces under ``delta.tool_calls`` (by ``index``; their ``arguments`` are concatenated),
``finish_reason`` once. The usage comes at the end, in either form servers send: a chunk with
empty ``choices`` (OpenAI, asked with ``stream_options.include_usage``), or one that repeats
``finish_reason`` (OpenRouter). ``data: [DONE]`` ends the stream. An error may come first or
mid-stream: an ``error`` object alone, or with ``finish_reason: "error"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flowengine.errors import CallError
from flowengine.providers.base import Completion
from flowengine.providers.http import snippet
from flowengine.providers.openai_reply import api_error, choice_error, empty_answer, parse_usage
from flowengine.results import Usage
from flowengine.text import without_lone_surrogates


class StreamedAnswer:
    """Feed :meth:`take` each event's data; :meth:`completion` is the answer at the end.

    Example::

        answer = StreamedAnswer(print, "provider 'local'")
        answer.take('{"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]}')
        answer.take("[DONE]")
        answer.completion().content     # 'Hi'
    """

    def __init__(self, on_delta: Callable[[str], None], what: str) -> None:
        self._on_delta = on_delta
        self._what = what
        self._parts: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._usage = Usage()
        self._served: str | None = None
        self._done = False

    def take(self, data: str) -> bool:
        """Read one event; True once the stream says it is complete (``[DONE]``)."""
        if data == "[DONE]":
            self._done = True
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise CallError(
                "malformed",
                f"{self._what} sent an event that is not a JSON object: {snippet(data)!r}",
                retryable=True,
            )
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        choice = choice if isinstance(choice, dict) else None
        error = chunk.get("error")
        if choice is not None and choice.get("finish_reason") == "error":
            raise choice_error({**choice, "error": choice.get("error") or error}, self._what)
        if error is not None:
            raise api_error(error, self._what, 200)
        if self._served is None and isinstance(chunk.get("model"), str):
            self._served = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self._usage = parse_usage(chunk["usage"])
        if choice is not None:
            self._choice(choice)
        return False

    def _choice(self, choice: dict[str, Any]) -> None:
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._finish = finish
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        text = delta.get("content")
        if isinstance(text, str) and text:
            text = without_lone_surrogates(text)
            self._parts.append(text)
            self._on_delta(text)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._tool_call(call)

    def _tool_call(self, piece: dict[str, Any]) -> None:
        """Add one piece of a tool call to the call of the same ``index``."""
        index = piece.get("index")
        index = index if type(index) is int else len(self._tools)
        call = self._tools.setdefault(
            index, {"type": "function", "function": {"name": "", "arguments": ""}}
        )
        for key in ("id", "type"):
            if isinstance(piece.get(key), str):
                call[key] = piece[key]
        function = piece.get("function")
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    call["function"][key] += function[key]

    def completion(self) -> Completion:
        """The whole answer, once the stream has ended; an error if the answer had not."""
        if not self._done and self._finish is None:
            raise CallError(
                "malformed",
                f"{self._what} ended the stream before the answer was complete",
                retryable=True,
            )
        content = "".join(self._parts)
        tool_calls = [self._tools[i] for i in sorted(self._tools)]
        if not content.strip() and not tool_calls:
            raise empty_answer(self._finish, self._what)
        return Completion(
            content=content,
            served_model=self._served,
            finish_reason=self._finish,
            usage=self._usage,
            tool_calls=tool_calls or None,
        )
