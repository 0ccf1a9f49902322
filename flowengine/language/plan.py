"""A checked workflow compiled for running: templates parsed once, edges as plain tuples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.language.conditions import Condition, compile_condition
from flowengine.language.graph import Graph
from flowengine.language.templates import (
    CompiledTemplate,
    ModelInfo,
    compile_value,
)
from flowengine.spec import (
    ROUTER_TEMPLATE,
    FanoutNode,
    LlmNode,
    LlmSelector,
    NodeSpec,
    SelectNode,
    WorkflowSpec,
)


@dataclass(frozen=True)
class CompiledNode:
    """One node with its templates compiled."""

    id: str
    spec: NodeSpec
    needs: tuple[str, ...]
    prompt: CompiledTemplate | None = None
    system: CompiledTemplate | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    include: list[Any] | None = None
    exclude: list[Any] = field(default_factory=list)
    #: Whether a fanout's messages may differ from model to model: its templates read
    #: ``model``. If not, they are rendered once for all of its calls.
    per_model: bool = True
    #: The node's ``when:``: it runs only if this holds once its needs are done.
    when: Condition | None = None


@dataclass(frozen=True)
class Plan:
    nodes: dict[str, CompiledNode]
    order: list[str]
    dependents: dict[str, tuple[str, ...]]
    output: Any
    #: Every model as templates see it; immutable, so every run shares one table.
    models: dict[str, ModelInfo]
    #: Every model alias by weight, highest first.
    by_weight: tuple[str, ...]
    #: The prompt of each `llm` selector (a router model).
    routers: dict[str, CompiledTemplate] = field(default_factory=dict)
    #: Whether ``output:`` reads ``metadata``, which is then made for it.
    output_reads_metadata: bool = True


def compile_plan(spec: WorkflowSpec, graph: Graph, env: ImmutableSandboxedEnvironment) -> Plan:
    order = graph.order
    nodes = {node_id: _compile_node(node_id, spec.nodes[node_id], env) for node_id in order}
    dependents = {node_id: graph.dependents[node_id] for node_id in order}
    output = compile_value(env, spec.output) if spec.output is not None else None
    models = {
        alias: ModelInfo(alias, m.id, m.weight, spec.provider_of(alias))
        for alias, m in spec.models.items()
    }
    routers = {
        name: _router_template(selector, env)
        for name, selector in spec.selectors.items()
        if isinstance(selector, LlmSelector)
    }
    return Plan(
        nodes,
        order,
        dependents,
        output,
        models,
        tuple(spec.model_sorted()),
        routers=routers,
        output_reads_metadata=_reads("metadata", output),
    )


def _router_template(selector: LlmSelector, env: ImmutableSandboxedEnvironment) -> CompiledTemplate:
    if selector.prompt is not None:
        return CompiledTemplate.from_file(env, selector.prompt)
    return CompiledTemplate(env, selector.template or ROUTER_TEMPLATE, "router")


def _compile_node(node_id: str, node: NodeSpec, env: ImmutableSandboxedEnvironment) -> CompiledNode:
    needs = tuple(dict.fromkeys(node.needs))
    when = compile_condition(env, node.when) if node.when is not None else None
    if isinstance(node, SelectNode):
        return CompiledNode(node_id, node, needs, when=when)
    prompt = (
        CompiledTemplate.from_file(env, node.prompt)
        if node.prompt is not None
        else CompiledTemplate(env, node.template or "", f"nodes.{node_id}.template")
    )
    system = CompiledTemplate(env, node.system) if node.system is not None else None
    common: dict[str, Any] = {
        "prompt": prompt,
        "system": system,
        "vars": compile_value(env, node.vars),
        "when": when,
    }
    if isinstance(node, LlmNode):
        return CompiledNode(node_id, node, needs, model=compile_value(env, node.model), **common)
    assert isinstance(node, FanoutNode)
    query = node.models
    include = compile_value(env, query.include) if query.include is not None else None
    return CompiledNode(
        node_id,
        node,
        needs,
        include=include,
        exclude=compile_value(env, query.exclude),
        per_model=_reads("model", prompt, system, common["vars"]),
        **common,
    )


def _reads(name: str, *values: Any) -> bool:
    """Whether any template in ``values`` (compiled ones, in mappings or lists) reads ``name``."""
    for value in values:
        if isinstance(value, CompiledTemplate) and value.may_read(name):
            return True
        if isinstance(value, dict) and _reads(name, *value.values()):
            return True
        if isinstance(value, list) and _reads(name, *value):
            return True
    return False
