"""Providers (`providers:`) and model selectors (`selectors:`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from flowengine.spec.common import (
    PLUGIN,
    PROVIDER_TYPES,
    Duration,
    Params,
    PositiveDuration,
    Rate,
    Retry,
    Strict,
    _builtin_or_plugin,
    _plugin_type,
    _type_or,
)


class ProviderBase(Strict):
    rate_limit: Rate | None = None
    redis_url: str | None = Field(
        default=None,
        description="The Redis that keeps `rate_limit`, shared by every process using it; "
        "overrides FLOWENGINE_REDIS_URL for this provider. No password here: put a URL with "
        "one in FLOWENGINE_REDIS_URL.",
    )
    max_concurrency: int | None = Field(default=None, gt=0)
    timeout: PositiveDuration = 60.0
    retry: Retry = Retry()

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.password or "password=" in parts.query:
            password = parts.password or parse_qs(parts.query).get("password", [""])[0]
            raise PydanticCustomError(
                "redis_password",
                "a password does not belong in the workflow file, which is shared and versioned",
                {
                    "fix": "set the URL with its password in FLOWENGINE_REDIS_URL, and leave "
                    "`redis_url:` out",
                    "secret": password,  # not shown, even in the offending line
                },
            )
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise PydanticCustomError(
                "redis_scheme",
                "not a Redis URL: {given}",
                {"given": value, "fix": "use redis://host:port/db, rediss://... or unix:///path"},
            )
        return value


class OpenAIProvider(ProviderBase):
    """Any OpenAI-compatible chat completions API (OpenRouter, vLLM, Ollama, LiteLLM...)."""

    type: Literal["openai"] = "openai"
    base_url: str
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the API key. Keys never go in YAML.",
    )
    headers: dict[str, str] = {}
    structured: Literal["json_schema", "json_object"] = Field(
        default="json_schema",
        description="How a node's `schema:` is sent. json_schema: OpenAI's structured outputs "
        "(response_format json_schema). json_object: JSON mode (response_format json_object), "
        "with the schema stated in the system message, for servers without json_schema.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")


class OfflineProvider(ProviderBase):
    """Deterministic answers with no network: for trying workflows and for tests."""

    type: Literal["offline"]
    latency: Duration = 0.0
    failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = 0


class PluginProvider(ProviderBase):
    """A provider type from a plugin; keys besides flowengine's own are the plugin's options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Annotated[str, WithJsonSchema(_plugin_type(PROVIDER_TYPES, "provider type"))]

    @property
    def options(self) -> dict[str, Any]:
        """The plugin's own keys, as written."""
        return dict(self.model_extra or {})


# A provider or selector without `type:` is the common kind (an OpenAI-compatible API, an HTTP
# selector), so the tag defaults instead of being required.
ProviderSpec = Annotated[
    Annotated[OpenAIProvider, Tag("openai")]
    | Annotated[OfflineProvider, Tag("offline")]
    | Annotated[PluginProvider, Tag(PLUGIN)],
    Discriminator(_builtin_or_plugin(PROVIDER_TYPES, "openai")),
]


BUILTIN_PROVIDERS: dict[str, dict[str, Any]] = {
    "openrouter": {
        "type": "openai",
        "base_url": "https://openrouter.ai/api/v1",
        "api_key_env": "OPENROUTER_API_KEY",
        "headers": {
            "HTTP-Referer": "https://github.com/flowengine/flowengine",
            "X-Title": "flowengine",
        },
    },
}


class HttpSelector(Strict):
    """A model-selector service: POST {"prompt"} -> {"selected_model", "confidence_scores"}."""

    type: Literal["http"] = "http"
    url: str
    timeout: PositiveDuration = 5.0
    headers: dict[str, str] = {}

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value


ROUTER_TEMPLATE = """\
You route a user's question to the model best suited to answer it.

Question:
{{ prompt }}

Candidates (alias: model id):
{% for m in candidates %}
- {{ m.alias }}: {{ m.id }}
{% endfor %}

Reply with JSON only, naming one alias from the list:
{"model": "<alias>", "confidence": <your confidence from 0 to 1>}"""


class LlmSelector(Strict):
    """A router model chooses: it sees the question and the candidates, and names one."""

    type: Literal["llm"]
    model: str = Field(min_length=1, description="The router model's alias.")
    prompt: str | None = Field(default=None, description="A router template under prompts/.")
    template: str | None = Field(
        default=None,
        description="An inline router template; it sees the inputs, `models` and `candidates`. "
        "Default: a built-in prompt asking for JSON {model, confidence}.",
    )
    params: Params = {}

    @model_validator(mode="after")
    def _one_prompt(self) -> LlmSelector:
        if self.prompt is not None and self.template is not None:
            raise ValueError("give at most one of `prompt:` or `template:`")
        return self


SelectorSpec = Annotated[
    Annotated[HttpSelector, Tag("http")] | Annotated[LlmSelector, Tag("llm")],
    Discriminator(_type_or("http")),
]
