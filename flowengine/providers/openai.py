"""Any OpenAI-compatible chat completions API (OpenRouter, vLLM, Ollama, LiteLLM...).

One attempt per :meth:`OpenAICompatible.complete`; the engine retries. The reply is read whole
(:mod:`.openai_reply`), or streamed when the request has ``on_delta`` (:mod:`.openai_stream`).
"""

from __future__ import annotations

import json
from typing import Any

from flowengine.errors import CallError
from flowengine.providers import http
from flowengine.providers.base import (
    ChatRequest,
    Completion,
    ProviderContext,
    encode_messages,
    json_body,
)
from flowengine.providers.http import parse_json
from flowengine.providers.openai_reply import http_error, parse_reply
from flowengine.providers.openai_stream import StreamedAnswer
from flowengine.spec import OpenAIProvider, ProviderBase


class OpenAICompatible:
    """Chat completions over the engine's shared aiohttp session.

    Example::

        provider = OpenAICompatible("openrouter", spec, ProviderContext(session, os.environ))
        completion = await provider.complete(ChatRequest("openai/gpt-4o", messages))
    """

    def __init__(self, name: str, spec: OpenAIProvider, ctx: ProviderContext) -> None:
        self.name = name
        self.spec: ProviderBase = spec
        self._spec = spec
        self._ctx = ctx
        self._url = f"{spec.base_url}/chat/completions"
        #: Answers are cached by the server they came from (see Provider).
        self.cache_id = spec.base_url
        self._what = f"provider '{name}'"
        self._headers: dict[str, str] | None = None  # built on first use: the key may be missing

    async def price_list(self) -> Any:
        """The provider's ``GET /models`` reply (prices per token, on OpenRouter)."""
        reply = await http.request(
            self._ctx.session,
            "GET",
            f"{self._spec.base_url}/models",
            headers=self.headers(),
            timeout=min(self._spec.timeout, 10.0),
            what=self._what,
        )
        if not 200 <= reply.status <= 299:
            raise http_error(reply, self._what)
        return parse_json(reply, self._what)

    @classmethod
    def from_spec(cls, name: str, spec: ProviderBase, ctx: ProviderContext) -> OpenAICompatible:
        """The registry's factory for ``type: openai``."""
        if not isinstance(spec, OpenAIProvider):
            kind = type(spec).__name__
            raise TypeError(f"provider {name!r}: expected an openai spec, got {kind}")
        return cls(name, spec, ctx)

    def __repr__(self) -> str:
        return f"OpenAICompatible(name={self.name!r}, base_url={self._spec.base_url!r})"

    def headers(self) -> dict[str, str]:
        """Request headers: the spec's, plus the bearer token when ``api_key_env`` is set."""
        if self._headers is not None:
            return self._headers
        headers = dict(self._spec.headers)
        var = self._spec.api_key_env
        if var is not None:
            key = self._ctx.environ.get(var, "").strip()
            if not key:
                raise CallError(
                    "auth",
                    f"provider '{self.name}' needs an API key: set the environment variable "
                    f"{var}, or pass --offline to run without network",
                )
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers
        return headers

    async def complete(self, request: ChatRequest) -> Completion:
        """Make one attempt; any failure is raised as :class:`CallError`."""
        params, messages = request.params, request.messages
        if self._spec.structured == "json_object":
            params, messages = as_json_object(params, messages)
        # The messages as the engine encoded them already, unless JSON mode changed them.
        encoded = request.encoded_messages() if messages is request.messages else None
        # model and messages win over params, so a stray param cannot redirect the call.
        head = {**params, "model": request.model_id}
        if request.on_delta is not None:
            # include_usage asks for the usage chunk at the end, which OpenAI sends only then.
            head.update(stream=True, stream_options={"include_usage": True})
        body = json_body(head, encoded or encode_messages(messages))
        if request.on_delta is not None:
            return await self._stream(body, request)
        reply = await http.request(
            self._ctx.session,
            "POST",
            self._url,
            body,
            headers=self.headers(),
            timeout=request.timeout,
            what=self._what,
        )
        return parse_reply(reply, what=self._what)

    async def _stream(self, body: bytes, request: ChatRequest) -> Completion:
        """One streamed attempt: each piece of text to ``request.on_delta`` as it arrives.

        A server that answers with one JSON body instead is read as any reply.
        """
        assert request.on_delta is not None
        answer = StreamedAnswer(request.on_delta, self._what)
        reply = await http.stream(
            self._ctx.session,
            self._url,
            body,
            headers=self.headers(),
            timeout=request.timeout,
            what=self._what,
            on_data=answer.take,
        )
        # A reply that did not stream: the engine delivers its text as one piece.
        return answer.completion() if reply is None else parse_reply(reply, what=self._what)


def as_json_object(
    params: dict[str, Any], messages: list[dict[str, str]]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A json_schema request for a server with JSON mode only (``structured: json_object``):
    ``response_format`` becomes ``{"type": "json_object"}`` and the schema is stated in the
    system message instead."""
    asked = params.get("response_format")
    if not isinstance(asked, dict) or asked.get("type") != "json_schema":
        return params, messages
    schema = (asked.get("json_schema") or {}).get("schema")
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    instruction = (
        "Reply with one JSON object and no other text. It must match this JSON Schema:\n" + text
    )
    params = {**params, "response_format": {"type": "json_object"}}
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        system = {**first, "content": f"{first.get('content', '')}\n\n{instruction}"}
        return params, [system, *messages[1:]]
    return params, [{"role": "system", "content": instruction}, *messages]
