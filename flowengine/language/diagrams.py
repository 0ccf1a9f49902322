"""The workflow's DAG drawn as a Mermaid flowchart or a Graphviz digraph."""

from __future__ import annotations

from flowengine.language.graph import Graph
from flowengine.spec import (
    FanoutNode,
    JudgeNode,
    LlmNode,
    LoopNode,
    ModelQuery,
    PythonNode,
    SelectNode,
    WorkflowSpec,
)


def _label(spec: WorkflowSpec, node_id: str) -> str:
    node = spec.nodes[node_id]
    if isinstance(node, SelectNode):
        detail = f"select · {node.selector}" if node.selector else "select · by weight"
    elif isinstance(node, LlmNode):
        model = node.model if "{" not in node.model else "chosen model"
        detail = f"llm · {model}"
    elif isinstance(node, FanoutNode):
        detail = f"fanout · {_fanout_models(spec, node.models)}"
    elif isinstance(node, JudgeNode):
        if node.models is not None:
            judges = _fanout_models(spec, node.models)
        else:
            judges = node.model if node.model and "{" not in node.model else "chosen model"
        detail = f"judge · {node.target} · by {judges}"
    elif isinstance(node, PythonNode):
        detail = f"python · {node.function}"
    elif isinstance(node, LoopNode):
        detail = f"loop · {', '.join(node.nodes)} · up to {node.max_rounds} rounds"
    else:
        detail = node.type
    return f"{node_id}<br/>{detail}"


def _fanout_models(spec: WorkflowSpec, query: ModelQuery) -> str:
    count = len(query.include) if query.include is not None else len(spec.models)
    if query.top is not None:
        count = min(count, query.top)
    return f"{count} models"


def _roots(graph: Graph) -> list[str]:
    return [node_id for node_id in graph.nodes if not graph.needs[node_id]]


def _leaves(graph: Graph) -> list[str]:
    return [node_id for node_id in graph.nodes if not graph.dependents[node_id]]


# Other kinds (python, plugins) are drawn as a plain box, like llm.
_SHAPES = {
    "select": ('{"', '"}'),
    "llm": ('["', '"]'),
    "fanout": ('[["', '"]]'),
    "judge": ('{{"', '"}}'),
}


def to_mermaid(spec: WorkflowSpec, graph: Graph) -> str:
    """A Mermaid flowchart: inputs, nodes by kind, and the output."""
    lines = ["flowchart TD"]
    for name in spec.inputs:
        lines.append(f'    in_{name}(["{name}"])')
    for node_id in graph.order:
        left, right = _SHAPES.get(spec.nodes[node_id].type, ('["', '"]'))
        lines.append(f"    {_mid(node_id)}{left}{_escape(_label(spec, node_id))}{right}")
    for name in spec.inputs:
        for root in _roots(graph):
            lines.append(f"    in_{name} --> {_mid(root)}")
    for need, node_id in graph.edges:
        lines.append(f"    {_mid(need)} --> {_mid(node_id)}")
    lines.append('    output[/"output"/]')
    for leaf in _leaves(graph):
        lines.append(f"    {_mid(leaf)} --> output")
    return "\n".join(lines) + "\n"


def _mid(node_id: str) -> str:
    # Prefixed so that ids such as `end` or `graph`, reserved words in Mermaid, stay valid.
    return f"n_{node_id}"


def _escape(text: str) -> str:
    return text.replace('"', "#quot;")


def to_dot(spec: WorkflowSpec, graph: Graph) -> str:
    """A Graphviz digraph with the same content as the Mermaid chart."""
    shapes = {"select": "diamond", "llm": "box", "fanout": "box3d", "judge": "hexagon"}
    lines = [f'digraph "{spec.name}" {{', "    rankdir=TB;", '    node [fontname="Helvetica"];']
    for name in spec.inputs:
        lines.append(f'    "in_{name}" [label="{name}", shape=ellipse];')
    for node_id in graph.order:
        label = _label(spec, node_id).replace("<br/>", "\\n").replace('"', '\\"')
        shape = shapes.get(spec.nodes[node_id].type, "box")
        lines.append(f'    "{node_id}" [label="{label}", shape={shape}];')
    for name in spec.inputs:
        for root in _roots(graph):
            lines.append(f'    "in_{name}" -> "{root}";')
    for need, node_id in graph.edges:
        lines.append(f'    "{need}" -> "{node_id}";')
    lines.append('    "output" [shape=parallelogram];')
    for leaf in _leaves(graph):
        lines.append(f'    "{leaf}" -> "output";')
    lines.append("}")
    return "\n".join(lines) + "\n"
