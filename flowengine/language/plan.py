"""A checked workflow compiled for running: templates parsed once, edges as plain tuples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.language.conditions import Condition, compile_condition
from flowengine.language.graph import Graph
from flowengine.language.judging import JUDGE_TEMPLATE
from flowengine.language.response_schemas import ResponseSchema
from flowengine.language.templates import (
    CompiledTemplate,
    ModelInfo,
    compile_value,
)
from flowengine.spec import (
    ROUTER_TEMPLATE,
    FanoutNode,
    JudgeNode,
    LlmNode,
    LlmSelector,
    LoopNode,
    NodeSpec,
    PluginNode,
    Prompted,
    PythonNode,
    SelectNode,
    WorkflowSpec,
)


@dataclass(frozen=True)
class Turn:
    """One chat message of a node's prompt: its role, and the template of its content."""

    role: str
    content: CompiledTemplate


@dataclass(frozen=True)
class CompiledNode:
    """One node with its templates compiled."""

    id: str
    spec: NodeSpec
    needs: tuple[str, ...]
    #: The chat messages, in order: `messages:` as written, or `system:` then the prompt.
    messages: tuple[Turn, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    include: list[Any] | None = None
    exclude: list[Any] = field(default_factory=list)
    #: Whether a fanout's messages may differ from model to model: its templates read
    #: ``model``. If not, they are rendered once for all of its calls.
    per_model: bool = True
    #: The JSON Schema the node's answers must match (``schema:``), if it has one.
    response: ResponseSchema | None = None
    #: A judge's ``question:`` (what the answers were asked), compiled; None without one.
    question: Any = None
    #: A python node's keyword arguments, templates compiled; None: the outputs of its needs.
    args: dict[str, Any] | None = None
    #: The node's ``when:``: it runs only if this holds once its needs are done.
    when: Condition | None = None
    #: A loop's group: the nodes of one round, run as a DAG each round.
    group: Group | None = None
    #: A loop's ``until:``: it stops after a round in which this holds.
    until: Condition | None = None


@dataclass(frozen=True)
class Group:
    """The nodes of a loop's round: compiled, in run order, with the nodes that need each."""

    nodes: dict[str, CompiledNode]
    order: list[str]
    dependents: dict[str, tuple[str, ...]]


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


def compile_plan(
    spec: WorkflowSpec,
    graph: Graph,
    env: ImmutableSandboxedEnvironment,
    schemas: Mapping[str, dict[str, Any]] | None = None,
) -> Plan:
    order = graph.order
    schemas = schemas or {}
    nodes = {n: _compile_node(n, spec.nodes[n], env, schemas, spec) for n in order}
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


def _compile_node(
    node_id: str,
    node: NodeSpec,
    env: ImmutableSandboxedEnvironment,
    schemas: Mapping[str, dict[str, Any]],
    spec: WorkflowSpec,
) -> CompiledNode:
    if isinstance(node, JudgeNode):
        return _compile_judge(node_id, node, spec, env)
    needs = tuple(dict.fromkeys(node.needs))
    when = compile_condition(env, node.when) if node.when is not None else None
    if isinstance(node, SelectNode | PluginNode):
        return CompiledNode(node_id, node, needs, when=when)
    if isinstance(node, PythonNode):
        args = compile_value(env, node.args) if node.args is not None else None
        return CompiledNode(node_id, node, needs, args=args, when=when)
    if isinstance(node, LoopNode):
        until = compile_condition(env, node.until) if node.until is not None else None
        group = _compile_group(node, env, schemas, spec)
        return CompiledNode(node_id, node, needs, when=when, group=group, until=until)
    schema = schemas.get(node_id)
    common: dict[str, Any] = {
        "messages": _turns(node_id, node, env),
        "vars": compile_value(env, node.vars),
        "response": ResponseSchema.of(node_id, schema) if schema is not None else None,
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
        per_model=_reads("model", *(t.content for t in common["messages"]), common["vars"]),
        **common,
    )


def _compile_group(
    loop: LoopNode,
    env: ImmutableSandboxedEnvironment,
    schemas: Mapping[str, dict[str, Any]],
    spec: WorkflowSpec,
) -> Group:
    graph = Graph({node_id: node.needs for node_id, node in loop.nodes.items()})
    nodes = {n: _compile_node(n, loop.nodes[n], env, schemas, spec) for n in graph.order}
    return Group(nodes, graph.order, {n: graph.dependents[n] for n in graph.order})


def _compile_judge(
    node_id: str, node: JudgeNode, spec: WorkflowSpec, env: ImmutableSandboxedEnvironment
) -> CompiledNode:
    """A judge: its prompt (the built-in one by default), question, and judge models."""
    question = node.question
    if question is None and "prompt" in spec.inputs:
        # An optional `prompt` a run is not given is undefined: the prompt then has no question.
        question = "{{ prompt | default('') }}"
    query = node.models
    return CompiledNode(
        node_id,
        node,
        tuple(dict.fromkeys(node.needs)),
        messages=_turns(node_id, node, env, default=JUDGE_TEMPLATE),
        vars=compile_value(env, node.vars),
        model=compile_value(env, node.model),
        include=compile_value(env, query.include) if query and query.include is not None else None,
        exclude=compile_value(env, query.exclude) if query else [],
        question=compile_value(env, question),
        when=compile_condition(env, node.when) if node.when is not None else None,
    )


def _turns(
    node_id: str, node: Prompted | JudgeNode, env: ImmutableSandboxedEnvironment, default: str = ""
) -> tuple[Turn, ...]:
    """`messages:` as written; else the optional `system:`, then the prompt as the user turn
    (``default`` when the node has neither `prompt:` nor `template:`, as a judge may)."""
    if node.messages is not None:
        return tuple(
            Turn(m.role, _template(env, m.content, m.prompt, f"nodes.{node_id}.messages.{i}"))
            for i, m in enumerate(node.messages)
        )
    inline = node.template or default
    user = Turn("user", _template(env, inline, node.prompt, f"nodes.{node_id}.template"))
    if node.system is None:
        return (user,)
    return (Turn("system", CompiledTemplate(env, node.system, f"nodes.{node_id}.system")), user)


def _template(
    env: ImmutableSandboxedEnvironment, inline: str | None, file: str | None, name: str
) -> CompiledTemplate:
    """A prompt file's template, or an inline one."""
    if file is not None:
        return CompiledTemplate.from_file(env, file)
    return CompiledTemplate(env, inline or "", name)


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
