"""The node kinds (`nodes:`): the keys each kind of node is written with."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
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
from flowengine.spec.common import (
    IDENTIFIER,
    NODE_TYPES,
    PLUGIN,
    Params,
    PositiveDuration,
    Retry,
    Strict,
    _builtin_or_plugin,
    _plugin_type,
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
