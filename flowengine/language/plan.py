"""A checked workflow compiled for running: templates parsed once, edges as plain tuples."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from jinja2 import TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.language.templates import (
    CompiledTemplate,
    analyse,
    compile_value,
    expose,
    included_templates,
    is_template,
)
from flowengine.results import CallResult, ErrorInfo, SelectResult, Usage
from flowengine.spec import (
    ROUTER_TEMPLATE,
    FanoutNode,
    LlmNode,
    LlmSelector,
    NodeSpec,
    Prompted,
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
    #: Whether a fanout's messages may differ by model (its templates read ``model``); if not,
    #: they are rendered once for all of its calls.
    per_model: bool = True


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as templates see it (``models.llama.weight``, ``model.id``); renders as its alias."""

    alias: str
    id: str
    weight: float
    provider: str

    def __str__(self) -> str:
        return self.alias


for _data in (CallResult, SelectResult, Usage, ErrorInfo):
    expose(_data, (f.name for f in dataclasses.fields(_data)))
expose(ModelInfo, ("alias", "id", "weight", "provider"))


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
    #: Merged call params by (node spec id, alias), filled as runs need them.
    params: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    #: Whether ``output:`` reads ``metadata``, which is then built for it.
    output_reads_metadata: bool = True
    #: How many needs each node has: where a run of every node starts counting down.
    needs_count: dict[str, int] = field(default_factory=dict)


def compile_plan(
    spec: WorkflowSpec, graph: nx.DiGraph, order: list[str], env: ImmutableSandboxedEnvironment
) -> Plan:
    nodes = {node_id: _compile_node(node_id, spec.nodes[node_id], env) for node_id in order}
    dependents = {node_id: tuple(graph.successors(node_id)) for node_id in order}
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
        output_reads_metadata=_output_reads(env, spec.output, "metadata"),
        needs_count={node_id: len(nodes[node_id].needs) for node_id in order},
    )


def _router_template(selector: LlmSelector, env: ImmutableSandboxedEnvironment) -> CompiledTemplate:
    if selector.prompt is not None:
        return CompiledTemplate.from_file(env, selector.prompt)
    return CompiledTemplate(env, selector.template or ROUTER_TEMPLATE, "router")


def _compile_node(node_id: str, node: NodeSpec, env: ImmutableSandboxedEnvironment) -> CompiledNode:
    needs = tuple(dict.fromkeys(node.needs))
    if isinstance(node, SelectNode):
        return CompiledNode(node_id, node, needs)
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
        per_model=_reads(env, node, "model"),
        **common,
    )


def _reads(env: ImmutableSandboxedEnvironment, node: Prompted, name: str) -> bool:
    """Whether the node's prompt, system or vars templates may read ``name``.

    True as well when a template includes or imports another: names read there are not seen.
    """
    sources = [node.system, *_strings(node.vars)]
    if node.prompt is None:
        sources.append(node.template)
    else:
        try:
            assert env.loader is not None
            sources.append(env.loader.get_source(env, node.prompt)[0])
        except (AssertionError, TemplateNotFound):
            return True
    for source in sources:
        if source is None or not is_template(source):
            continue
        uses, _ = analyse(env, source)
        if any(use.name == name for use in uses) or included_templates(env, source):
            return True
    return False


def _output_reads(env: ImmutableSandboxedEnvironment, output: Any, name: str) -> bool:
    """Whether a template of ``output:`` may read ``name`` (see :func:`_reads`)."""
    for source in _strings(output):
        if is_template(source):
            uses, _ = analyse(env, source)
            if any(use.name == name for use in uses) or included_templates(env, source):
                return True
    return False


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
