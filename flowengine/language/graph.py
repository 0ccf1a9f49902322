"""The workflow as a networkx DAG: edges from ``needs``, cycles, order, Mermaid and DOT."""

from __future__ import annotations

import networkx as nx

from flowengine.spec import FanoutNode, LlmNode, SelectNode, WorkflowSpec


def build(spec: WorkflowSpec) -> nx.DiGraph:
    """One vertex per node, an edge need -> node for every known need."""
    graph = nx.DiGraph()
    for node_id, node in spec.nodes.items():
        graph.add_node(node_id, kind=node.type)
    for node_id, node in spec.nodes.items():
        for need in node.needs:
            if need in spec.nodes:
                graph.add_edge(need, node_id)
    return graph


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Each cycle once, starting from its first node in file order."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    found = []
    for cycle in nx.simple_cycles(graph):
        start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
        found.append(cycle[start:] + cycle[:start])
    return sorted(found, key=lambda c: [order[n] for n in c])


def describe_cycle(cycle: list[str]) -> str:
    return " -> ".join([*cycle, cycle[0]])


def ancestors(graph: nx.DiGraph, node_id: str) -> set[str]:
    return set(nx.ancestors(graph, node_id))


def order(graph: nx.DiGraph) -> list[str]:
    """Topological order that keeps file order among independent nodes."""
    position = {n: i for i, n in enumerate(graph.nodes)}
    return list(nx.lexicographical_topological_sort(graph, key=lambda n: position[n]))


def _label(spec: WorkflowSpec, node_id: str) -> str:
    node = spec.nodes[node_id]
    if isinstance(node, SelectNode):
        detail = f"select · {node.selector}" if node.selector else "select · by weight"
    elif isinstance(node, LlmNode):
        model = node.model if "{" not in node.model else "chosen model"
        detail = f"llm · {model}"
    else:
        assert isinstance(node, FanoutNode)
        detail = f"fanout · {_fanout_models(spec, node)}"
    return f"{node_id}<br/>{detail}"


def _fanout_models(spec: WorkflowSpec, node: FanoutNode) -> str:
    query = node.models
    count = len(query.include) if query.include is not None else len(spec.models)
    if query.top is not None:
        count = min(count, query.top)
    return f"{count} models"


_SHAPES = {"select": ('{"', '"}'), "llm": ('["', '"]'), "fanout": ('[["', '"]]')}


def to_mermaid(spec: WorkflowSpec) -> str:
    """A Mermaid flowchart: inputs, nodes by kind, and the output."""
    graph = build(spec)
    lines = ["flowchart TD"]
    for name in spec.inputs:
        lines.append(f'    in_{name}(["{name}"])')
    for node_id in order(graph):
        left, right = _SHAPES[spec.nodes[node_id].type]
        lines.append(f"    {_mid(node_id)}{left}{_escape(_label(spec, node_id))}{right}")
    roots = [n for n in graph.nodes if graph.in_degree(n) == 0]
    for name in spec.inputs:
        for root in roots:
            lines.append(f"    in_{name} --> {_mid(root)}")
    for need, node_id in graph.edges:
        lines.append(f"    {_mid(need)} --> {_mid(node_id)}")
    lines.append('    output[/"output"/]')
    for leaf in (n for n in graph.nodes if graph.out_degree(n) == 0):
        lines.append(f"    {_mid(leaf)} --> output")
    return "\n".join(lines) + "\n"


def _mid(node_id: str) -> str:
    # Prefixed so that ids such as `end` or `graph`, reserved words in Mermaid, stay valid.
    return f"n_{node_id}"


def _escape(text: str) -> str:
    return text.replace('"', "#quot;")


def to_dot(spec: WorkflowSpec) -> str:
    """A Graphviz digraph with the same content as the Mermaid chart."""
    graph = build(spec)
    shapes = {"select": "diamond", "llm": "box", "fanout": "box3d"}
    lines = [f'digraph "{spec.name}" {{', "    rankdir=TB;", '    node [fontname="Helvetica"];']
    for name in spec.inputs:
        lines.append(f'    "in_{name}" [label="{name}", shape=ellipse];')
    for node_id in order(graph):
        label = _label(spec, node_id).replace("<br/>", "\\n").replace('"', '\\"')
        lines.append(
            f'    "{node_id}" [label="{label}", shape={shapes[spec.nodes[node_id].type]}];'
        )
    roots = [n for n in graph.nodes if graph.in_degree(n) == 0]
    for name in spec.inputs:
        for root in roots:
            lines.append(f'    "in_{name}" -> "{root}";')
    for need, node_id in graph.edges:
        lines.append(f'    "{need}" -> "{node_id}";')
    lines.append('    "output" [shape=parallelogram];')
    for leaf in (n for n in graph.nodes if graph.out_degree(n) == 0):
        lines.append(f'    "{leaf}" -> "output";')
    lines.append("}")
    return "\n".join(lines) + "\n"
