"""Pydantic models of the workflow file format, version 1.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
Structural rules live here; rules that relate parts of the file to each other (unknown models,
needs, template variables) live in :mod:`flowengine.language.checks`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, NewType

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError
from pydantic_core.core_schema import CoreSchema

from flowengine.rubric import Criteria, Scale

NodeId = NewType("NodeId", str)
ModelAlias = NewType("ModelAlias", str)

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
ALIAS = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> Any:
    """``"500ms"``, ``"5s"``, ``"2m"``, ``"1h"`` or a plain number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number with a unit, such as 500ms, 5s or 2m")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration must be a finite number, such as 500ms, 5s or 2m")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(
        f"invalid duration {value!r}: use a number with a unit, such as 500ms, 5s or 2m"
    )


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _DURATION.pattern},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 500ms, 5s, 2m, 1h, or a number of seconds.",
        }
    ),
]


#: A duration that must be more than zero: a timeout of 0 would mean "never time out" to aiohttp,
#: and a rate window of 0 would mean no limit at all.
PositiveDuration = Annotated[Duration, Field(gt=0)]


def _no_stream(params: dict[str, Any]) -> dict[str, Any]:
    if params.get("stream"):
        raise ValueError(
            "`stream` is not a param: flowengine streams an answer where it is shown as it "
            "is written (`flowengine run --stream`, Engine.stream); remove `stream`"
        )
    return params


#: Parameters sent to the model with every call (temperature, max_tokens, ...).
Params = Annotated[dict[str, Any], AfterValidator(_no_stream)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(Strict):
    """At most ``requests`` requests started in any window of length ``per``."""

    requests: int = Field(gt=0)
    per: PositiveDuration = 1.0
    burst: int | None = Field(
        default=None,
        gt=0,
        description="Requests allowed to start at once, at most `requests`. Default 1. The "
        "promise (at most `requests` starts in any window of `per`) still holds with a burst "
        "b, so the sustained rate drops to (requests - b + 1) / per.",
    )

    @model_validator(mode="after")
    def _burst_within_requests(self) -> Rate:
        if self.burst is not None and self.burst > self.requests:
            raise ValueError(
                f"burst ({self.burst}) must be at most requests ({self.requests}): no more "
                "than `requests` may start in one window"
            )
        return self


class Retry(Strict):
    """Exponential backoff with jitter between ``initial`` and ``max``."""

    attempts: int = Field(default=5, ge=1, le=100)
    initial: Duration = 1.0
    max: Duration = 30.0

    @model_validator(mode="after")
    def _initial_within_max(self) -> Retry:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial:g}s) must be at most max ({self.max:g}s)")
        return self


class ProviderBase(Strict):
    rate_limit: Rate | None = None
    max_concurrency: int | None = Field(default=None, gt=0)
    timeout: PositiveDuration = 60.0
    retry: Retry = Retry()


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


def _type_or(default: str) -> Callable[[Any], str | None]:
    def tag(value: Any) -> str | None:
        if isinstance(value, dict):
            found = value.get("type", default)
            return found if isinstance(found, str) else None
        return getattr(value, "type", None)

    return tag


#: The union tag of a provider type or node kind that is not built in: a plugin's. Its own keys
#: are checked against the plugin's config model by :mod:`flowengine.language.plugin_checks`.
PLUGIN = "plugin"
PROVIDER_TYPES = ("openai", "offline")
NODE_TYPES = ("select", "llm", "fanout", "judge", "python", "loop")


def _builtin_or_plugin(builtins: tuple[str, ...], default: str | None) -> Callable[[Any], Any]:
    def tag(value: Any) -> str | None:
        found = (
            value.get("type", default) if isinstance(value, dict) else getattr(value, "type", None)
        )
        if not isinstance(found, str):
            return None
        return found if found in builtins else PLUGIN

    return tag


def _plugin_type(builtins: tuple[str, ...], what: str) -> dict[str, Any]:
    """The schema of a plugin's ``type:``: any name but a built-in one, whose keys are known."""
    return {
        "type": "string",
        "not": {"enum": list(builtins)},
        "description": f"A {what} registered by a plugin (an entry point, or from code).",
    }


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


class ModelSpec(Strict):
    """A model alias: the provider's model id, its priority weight and default params."""

    id: str = Field(min_length=1)
    weight: float = 1.0
    provider: str | None = None
    params: Params = {}


class InputSpec(Strict):
    type: Literal["string", "integer", "number", "boolean", "object", "array"] = "string"
    description: str | None = None
    default: Any = None
    required: bool | None = None

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class Defaults(Strict):
    provider: str = "openrouter"
    params: Params = {}
    timeout: PositiveDuration | None = None
    retry: Retry | None = None


def _no_flag(value: Any) -> Any:
    """YAML's ``true`` is not a number: pydantic would read it as 1."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "budget_flag",
            "expected a number, got {given}",
            {
                "given": str(value).lower(),
                "fix": "write a number, such as 0.50 (max_cost) or 40 (max_calls)",
            },
        )
    return value


def _dollars(value: Any) -> Any:
    """A cost cap is a plain, finite number of US dollars."""
    if isinstance(value, str) and value.strip().startswith("$"):
        fix = f"drop the '$': `max_cost: {value.strip()[1:].strip()}`"
        raise PydanticCustomError(
            "budget_dollars", "write a plain number, got '{given}'", {"given": value, "fix": fix}
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError(
            "budget_finite",
            "must be a finite number, got {given}",
            {"given": str(value), "fix": "leave max_cost out to set no cap on cost"},
        )
    return _no_flag(value)


class Budget(Strict):
    """Caps on one run's model calls: no call starts once a cap is reached, and the run fails.

    A batch applies them to each row's run; its `--max-cost` and `--max-calls` cap the batch.
    """

    max_cost: Annotated[float | None, BeforeValidator(_dollars)] = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="US dollars. A call starts only while the run has spent less than this; "
        "calls already started finish and count. Only known costs count (usage.cost, else "
        "the provider's price list); cache hits are free.",
    )
    max_calls: Annotated[int | None, BeforeValidator(_no_flag)] = Field(
        default=None,
        gt=0,
        description="Model calls sent to a provider; a call's retries are part of it, cache "
        "hits are free.",
    )


def _condition_text(value: Any) -> Any:
    """YAML's ``when: false`` is the expression ``false``: a condition is always text."""
    return ("true" if value else "false") if isinstance(value, bool) else value


#: A condition: one Jinja expression, bare (``not quick``) or as ``"{{ not quick }}"``.
When = Annotated[
    str | None,
    BeforeValidator(_condition_text),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "minLength": 1}, {"type": "boolean"}, {"type": "null"}],
            "description": "Run the node only when this Jinja expression is true, such as "
            "`not quick` or `answers | length > 1`; it sees what the node's templates see, "
            "once its needs are done. Otherwise the node is skipped: it makes no calls, and "
            "the nodes after it see it as none.",
        }
    ),
]


class NodeBase(Strict):
    description: str | None = None
    needs: list[str] = []
    when: When = None
    on_error: Literal["fail", "continue"] = "fail"
    cache: bool = True
    timeout: PositiveDuration | None = None
    retry: Retry | None = None

    @field_validator("needs", mode="before")
    @classmethod
    def _single_need(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SelectNode(NodeBase):
    """Choose a model: ask a selector service, or take the highest weight."""

    type: Literal["select"]
    selector: str | None = Field(
        default=None, description="A name under `selectors:`. Omit to select by weight."
    )
    candidates: list[str] | None = Field(
        default=None, description="Model aliases to choose from; default all models."
    )
    fallback: Literal["weight", "fail"] = "weight"


class Message(Strict):
    """One turn of a `messages:` prompt: its role, and its content as a template."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["content"]}, {"required": ["prompt"]}]}
    )

    role: Literal["system", "user", "assistant"]
    content: str | None = Field(default=None, min_length=1, description="An inline template.")
    prompt: str | None = Field(
        default=None, description="A template file under prompts/, instead of `content:`."
    )

    @model_validator(mode="after")
    def _one_content(self) -> Message:
        if self.content is None and self.prompt is None:
            raise PydanticCustomError(
                "message_content",
                "the {role} message has no content",
                {
                    "role": self.role,
                    "fix": "add `content:` (an inline template) or `prompt:` (a file under "
                    "prompts/)",
                },
            )
        if self.content is not None and self.prompt is not None:
            raise PydanticCustomError(
                "message_content",
                "the {role} message has both `content:` and `prompt:`",
                {"role": self.role, "fix": "keep one of them"},
            )
        return self


def _only_messages(cls: type, value: list[Message], info: ValidationInfo) -> list[Message]:
    """`messages:` is not empty, nor written beside the other prompt keys."""
    # Fields validate in order: the other prompt forms, declared before it, are known here.
    given = [key for key in ("system", "prompt", "template") if info.data.get(key) is not None]
    if given:
        raise _prompt_forms(given)
    if not value:
        fix = 'give it the turns to send, such as `- {role: user, content: "{{ prompt }}"}`'
        raise PydanticCustomError("messages_empty", "`messages:` is empty", {"fix": fix})
    return value


class Prompted(NodeBase):
    prompt: str | None = Field(default=None, description="A template file under prompts/.")
    template: str | None = Field(default=None, description="An inline Jinja template.")
    system: str | None = Field(default=None, description="An inline system-message template.")
    messages: list[Message] | None = Field(
        default=None,
        json_schema_extra={"minItems": 1},
        description="The chat turns, in order, instead of `prompt:`/`template:` and `system:`: "
        "for few-shot and multi-turn prompts.",
    )
    vars: dict[Annotated[str, Field(pattern=IDENTIFIER)], Any] = Field(
        default={},
        description='Extra names for the prompt, evaluated first: `responses: "{{ answers }}"`.',
    )
    params: Params = {}
    # `schema` would shadow BaseModel.schema: the field has another name, the file says `schema`.
    output_schema: dict[str, Any] | str | None = Field(
        default=None,
        alias="schema",
        description="The answer must be JSON matching this JSON Schema (draft 2020-12): a "
        "mapping, or a .json/.yaml file relative to the workflow's folder. The parsed answer "
        "is the result's `data`.",
    )

    _messages_alone = field_validator("messages")(_only_messages)

    @model_validator(mode="after")
    def _one_prompt(self) -> Prompted:
        if self.messages is None and (self.prompt is None) == (self.template is None):
            raise ValueError(
                "give exactly one of `prompt:` (a file under prompts/), `template:` or `messages:`"
            )
        return self


def _prompt_forms(given: list[str]) -> PydanticCustomError:
    """`messages:` written together with the other prompt keys ``given``; points at its key."""
    others = " and ".join(f"`{key}:`" for key in given)
    entries = {
        "system": "a first `{role: system, content: ...}`",
        "prompt": "`{role: user, prompt: FILE}`",
        "template": "`{role: user, content: ...}`",
    }
    moved = " and ".join(entries[key] for key in given)
    return PydanticCustomError(
        "prompt_forms",
        "`messages:` cannot be used with {others}: a node writes its prompt one way",
        {
            "others": others,
            "fix": f"move {others} into `messages:` as {moved}, or remove `messages:`",
            "at": "key",
        },
    )


class LlmNode(Prompted):
    """One model call."""

    type: Literal["llm"]
    model: str = Field(min_length=1, description="A model alias, or a template naming one.")
    fallbacks: list[str] = Field(default=[], description="Aliases tried after the last attempt.")


class ModelQuery(Strict):
    """Which models a fanout calls: ``include`` (default all, by weight), less ``exclude``."""

    include: list[str] | None = None
    exclude: list[str] = []
    top: int | None = Field(default=None, gt=0, description="Keep the N highest-weight models.")


def _models_list(value: Any) -> Any:
    return {"include": value} if isinstance(value, list) else value


class _ListOrQuery:
    """In the JSON Schema, `models:` may also be a plain list of aliases (its `include`)."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [{"type": "array", "items": {"type": "string"}}, handler(schema)]}


#: Models to call: a list of aliases, or ``{include, exclude, top}``.
Models = Annotated[ModelQuery, BeforeValidator(_models_list), _ListOrQuery()]


class FanoutNode(Prompted):
    """The same call across several models, concurrently."""

    type: Literal["fanout"]
    models: Models = ModelQuery()
    max_concurrency: int | None = Field(default=None, gt=0)
    min_success: int = Field(default=1, ge=0)


class JudgeNode(NodeBase):
    """Score another node's answers on criteria, with one judge model or a panel of them."""

    type: Literal["judge"]
    target: str = Field(
        min_length=1,
        description="The llm or fanout node whose answers are judged; it must be upstream "
        "(in `needs`, or needed by them).",
    )
    criteria: Criteria
    scale: Scale = (1, 10)
    model: str | None = Field(
        default=None, min_length=1, description="The judge: a model alias, or a template."
    )
    models: Models | None = Field(
        default=None, description="A panel of judges, as a fanout's `models:`; scores averaged."
    )
    question: str | None = Field(
        default=None,
        description="What the answers were asked, for the built-in prompt. Default: the "
        "`prompt` input, if the workflow has one.",
    )
    prompt: str | None = Field(default=None, description="A judge template under prompts/.")
    template: str | None = Field(
        default=None,
        description="An inline judge template; it sees `candidates`, `criteria`, `scale` and "
        "`question`. Default: a built-in rubric prompt.",
    )
    system: str | None = Field(default=None, description="An inline system-message template.")
    messages: list[Message] | None = Field(
        default=None,
        json_schema_extra={"minItems": 1},
        description="The chat turns, in order, instead of `prompt:`/`template:` and `system:`; "
        "they see what `template:` sees.",
    )
    vars: dict[Annotated[str, Field(pattern=IDENTIFIER)], Any] = {}
    params: Params = {}

    _messages_alone = field_validator("messages")(_only_messages)

    @model_validator(mode="after")
    def _one_judge_one_prompt(self) -> JudgeNode:
        if (self.model is None) == (self.models is None):
            raise ValueError("give exactly one of `model:` (one judge) or `models:` (a panel)")
        if self.prompt is not None and self.template is not None:
            raise ValueError("give at most one of `prompt:` or `template:`")
        return self


_FUNCTION = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class PythonNode(NodeBase):
    """Call a Python function; what it returns (JSON data) is the node's output."""

    type: Literal["python"]
    function: str = Field(
        description="`package.module:name`, a function (sync or async) on Python's import path.",
        json_schema_extra={"pattern": _FUNCTION},
    )
    args: dict[Annotated[str, Field(pattern=IDENTIFIER)], Any] | None = Field(
        default=None,
        description="Keyword arguments, templates evaluated first. "
        "Default: the output of each of `needs`, by node id.",
    )

    @field_validator("function")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not re.fullmatch(_FUNCTION, value):  # `$` alone would let a newline end it
            raise ValueError(
                f"function must be an import path, got {value!r}: write the module's dotted "
                "name, ':', then the function's name, such as `tools.text:word_count`"
            )
        return value


#: A loop's stopping condition: one Jinja expression, as `when:` is.
Until = Annotated[
    str | None,
    BeforeValidator(_condition_text),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "minLength": 1}, {"type": "boolean"}, {"type": "null"}],
            "description": "Stop after a round in which this Jinja expression is true, such as "
            "`critique.data.ok`; it sees the round's outputs by node id, `round`, `previous` "
            "and what the loop's nodes see. Without it the loop runs `max_rounds` rounds.",
        }
    ),
]


class LoopNode(NodeBase):
    """Repeat a group of nodes, round after round, until a condition holds or the cap is hit."""

    type: Literal["loop"]
    max_rounds: int = Field(
        ge=1,
        le=100,
        description="The most rounds the loop runs (required): its cap, even if `until` "
        "never holds.",
    )
    until: Until = None
    on_cap: Literal["succeed", "fail"] = Field(
        default="succeed",
        description="Reaching `max_rounds` before `until` holds: succeed (the output says "
        "`capped: true`) or fail the node.",
    )
    nodes: dict[Annotated[str, Field(pattern=IDENTIFIER)], NodeSpec] = Field(
        min_length=1,
        description="The nodes of one round, run as a DAG each round; they also read `round` "
        "(1, 2...) and `previous` (the round before's outputs by node id; none in round 1).",
    )

    @field_validator("cache", "retry")
    @classmethod
    def _no_calls(cls, value: Any, info: ValidationInfo) -> Any:
        key = info.field_name
        raise PydanticCustomError(
            "loop_key",
            "a loop makes no calls of its own",
            {"fix": f"set `{key}:` on the nodes under `nodes:`, which make the calls", "at": "key"},
        )


class PluginNode(NodeBase):
    """A node kind from a plugin; keys besides flowengine's own are the plugin's options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Annotated[str, WithJsonSchema(_plugin_type(NODE_TYPES, "node kind"))]

    @property
    def options(self) -> dict[str, Any]:
        """The plugin's own keys, as written."""
        return dict(self.model_extra or {})


NodeSpec = Annotated[
    Annotated[SelectNode, Tag("select")]
    | Annotated[LlmNode, Tag("llm")]
    | Annotated[FanoutNode, Tag("fanout")]
    | Annotated[JudgeNode, Tag("judge")]
    | Annotated[PythonNode, Tag("python")]
    | Annotated[LoopNode, Tag("loop")]
    | Annotated[PluginNode, Tag(PLUGIN)],
    Discriminator(_builtin_or_plugin(NODE_TYPES, None)),
]
LoopNode.model_rebuild()  # its `nodes:` hold any node: NodeSpec is defined now


class WorkflowSpec(Strict):
    """A workflow file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="flowengine workflow",
    )

    version: Literal[1] = Field(description="The format version; this engine reads version 1.")
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    description: str | None = None
    inputs: dict[Annotated[str, Field(pattern=IDENTIFIER)], InputSpec] = {}
    providers: dict[str, ProviderSpec] = {}
    selectors: dict[str, SelectorSpec] = {}
    models: dict[Annotated[str, Field(pattern=ALIAS)], ModelSpec] = {}
    defaults: Defaults = Defaults()
    budget: Budget = Budget()
    nodes: dict[Annotated[str, Field(pattern=IDENTIFIER)], NodeSpec] = Field(min_length=1)
    output: dict[str, Any] | None = Field(
        default=None,
        description='The run\'s result. "{{ expr }}" alone keeps the native value. '
        "Default: every node's output by id.",
    )

    answer: Annotated[
        list[Annotated[str, Field(pattern=IDENTIFIER)]] | None,
        BeforeValidator(lambda value: [value] if isinstance(value, str) else value),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": IDENTIFIER},
                    {"type": "array", "items": {"type": "string", "pattern": IDENTIFIER}},
                ],
                "description": "The llm node whose reply `flowengine run --stream` prints as it "
                "is written, or a list of alternatives (the first of them to stream is "
                "printed). Default: the last llm node without `schema:`.",
            }
        ),
    ] = None

    def model_sorted(self, aliases: list[str] | None = None) -> list[str]:
        """Aliases by weight, highest first; ties keep file order."""
        names = list(self.models) if aliases is None else aliases
        order = {name: i for i, name in enumerate(self.models)}
        return sorted(names, key=lambda a: (-self.models[a].weight, order.get(a, 0)))

    def provider_of(self, alias: str) -> str:
        return self.models[alias].provider or self.defaults.provider


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the workflow format, as shipped in ``flowengine.schema.json``."""
    schema = WorkflowSpec.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
