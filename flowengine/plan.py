"""A checked workflow compiled for running: templates parsed once, edges as plain tuples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.spec import FanoutNode, LlmNode, NodeSpec, SelectNode, WorkflowSpec
from flowengine.templates import CompiledTemplate, compile_value


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


@dataclass(frozen=True)
class Plan:
    nodes: dict[str, CompiledNode]
    order: list[str]
    dependents: dict[str, tuple[str, ...]]
    output: Any


def compile_plan(
    spec: WorkflowSpec, graph: nx.DiGraph, order: list[str], env: ImmutableSandboxedEnvironment
) -> Plan:
    nodes = {node_id: _compile_node(node_id, spec.nodes[node_id], env) for node_id in order}
    dependents = {node_id: tuple(graph.successors(node_id)) for node_id in order}
    output = compile_value(env, spec.output) if spec.output is not None else None
    return Plan(nodes, order, dependents, output)


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
        node_id, node, needs, include=include, exclude=compile_value(env, query.exclude), **common
    )
