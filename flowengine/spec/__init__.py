"""Pydantic models of the workflow file format, version 1.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
Structural rules live here; rules that relate parts of the file to each other (unknown models,
needs, template variables) live in :mod:`flowengine.language.checks`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from flowengine.spec.common import (
    ALIAS,
    IDENTIFIER,
    NODE_TYPES,
    PLUGIN,
    PROVIDER_TYPES,
    Duration,
    ModelAlias,
    NodeId,
    Params,
    PositiveDuration,
    Rate,
    Retry,
    Strict,
    format_duration,
    parse_duration,
)
from flowengine.spec.nodes import (
    FanoutNode,
    JudgeNode,
    LlmNode,
    LoopNode,
    Message,
    ModelQuery,
    Models,
    NodeBase,
    NodeSpec,
    PluginNode,
    Prompted,
    PythonNode,
    SelectNode,
    Until,
    When,
)
from flowengine.spec.providers import (
    BUILTIN_PROVIDERS,
    ROUTER_TEMPLATE,
    HttpSelector,
    LlmSelector,
    OfflineProvider,
    OpenAIProvider,
    PluginProvider,
    ProviderBase,
    ProviderSpec,
    SelectorSpec,
)


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


__all__ = [
    "ALIAS",
    "BUILTIN_PROVIDERS",
    "IDENTIFIER",
    "NODE_TYPES",
    "PLUGIN",
    "PROVIDER_TYPES",
    "ROUTER_TEMPLATE",
    "Budget",
    "Defaults",
    "Duration",
    "FanoutNode",
    "HttpSelector",
    "InputSpec",
    "JudgeNode",
    "LlmNode",
    "LlmSelector",
    "LoopNode",
    "Message",
    "ModelAlias",
    "ModelQuery",
    "ModelSpec",
    "Models",
    "NodeBase",
    "NodeId",
    "NodeSpec",
    "OfflineProvider",
    "OpenAIProvider",
    "Params",
    "PluginNode",
    "PluginProvider",
    "PositiveDuration",
    "Prompted",
    "ProviderBase",
    "ProviderSpec",
    "PythonNode",
    "Rate",
    "Retry",
    "SelectNode",
    "SelectorSpec",
    "Strict",
    "Until",
    "When",
    "WorkflowSpec",
    "format_duration",
    "json_schema",
    "parse_duration",
]
