"""The DAG: order, cycles, Mermaid and DOT."""

from __future__ import annotations

import re
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner

from flowengine.cli import cli
from flowengine.errors import WorkflowError
from flowengine.language import graph as dag
from flowengine.language.workflow import Workflow

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "workflows" / "full.yaml"
FULL_EDGES = {
    ("select", "primary"),
    ("primary", "critiques"),
    ("primary", "meta"),
    ("critiques", "meta"),
    ("meta", "synthesis"),
}


def chain(*needs: tuple[str, list[str]]) -> str:
    lines = ["version: 1", "name: g", "models:", "  m: {id: x/m}", "nodes:"]
    for node, node_needs in needs:
        lines += [f"  {node}:", "    type: llm", "    model: m", "    template: hi"]
        lines.append(f"    needs: [{', '.join(node_needs)}]")
    return "\n".join(lines) + "\n"


def test_build_and_order_of_full() -> None:
    wf = Workflow.load(FULL)
    assert set(wf.graph.edges) == FULL_EDGES
    assert wf.order == ["select", "primary", "critiques", "meta", "synthesis"]
    assert dag.ancestors(wf.graph, "synthesis") == {"select", "primary", "critiques", "meta"}


def test_order_keeps_file_order_among_independent_nodes() -> None:
    wf = Workflow.from_string(chain(("b", []), ("a", []), ("c", ["a"]), ("d", [])))
    assert wf.order == ["b", "a", "c", "d"]


def test_cycles_are_found_once_from_the_first_node_in_file_order() -> None:
    graph = nx.DiGraph()
    graph.add_nodes_from(["x", "y", "z", "w"])
    graph.add_edges_from([("z", "x"), ("x", "y"), ("y", "z"), ("w", "w")])
    assert dag.cycles(graph) == [["x", "y", "z"], ["w"]]
    assert dag.describe_cycle(["x", "y", "z"]) == "x -> y -> z -> x"


def test_cycle_is_a_validation_error() -> None:
    text = chain(("a", ["c"]), ("b", ["a"]), ("c", ["b"]))
    with pytest.raises(WorkflowError) as info:
        Workflow.from_string(text)
    (problem,) = info.value.problems
    assert problem.message == "cycle in needs: a -> b -> c -> a"
    assert problem.location.line == 10


def test_self_need_is_reported_once() -> None:
    with pytest.raises(WorkflowError) as info:
        Workflow.from_string(chain(("a", ["a"])))
    assert [p.message for p in info.value.problems] == ["node 'a' needs itself"]


def mermaid_structure(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    ids = set(re.findall(r"^    (\w+)[\[{(/]", text, re.MULTILINE))
    edges = set(re.findall(r"^    (\w+) --> (\w+)$", text, re.MULTILINE))
    return ids, edges


def test_mermaid_of_full() -> None:
    text = Workflow.load(FULL).to_mermaid()
    assert text.splitlines()[0] == "flowchart TD"
    ids, edges = mermaid_structure(text)
    nodes = ["select", "primary", "critiques", "meta", "synthesis"]
    assert ids == {f"n_{n}" for n in nodes} | {"in_prompt", "output"}
    assert {(f"n_{a}", f"n_{b}") for a, b in FULL_EDGES} <= edges
    assert ("in_prompt", "n_select") in edges
    assert ("n_synthesis", "output") in edges
    assert len(edges) == len(FULL_EDGES) + 2
    assert 'n_critiques[["critiques<br/>fanout · 5 models"]]' in text
    assert 'n_select{"select<br/>select · ml"}' in text


def test_mermaid_ids_survive_reserved_words() -> None:
    text = Workflow.from_string(chain(("end", []), ("graph", ["end"]))).to_mermaid()
    ids, edges = mermaid_structure(text)
    assert ids == {"n_end", "n_graph", "output"}
    assert ("n_end", "n_graph") in edges
    assert not re.search(r"^\s*end\b", text, re.MULTILINE)


def test_dot_of_full() -> None:
    text = Workflow.load(FULL).to_dot()
    assert text.startswith('digraph "full" {\n')
    assert text.endswith("}\n")
    for a, b in FULL_EDGES:
        assert f'    "{a}" -> "{b}";' in text
    assert '"critiques" [label="critiques\\nfanout · 5 models", shape=box3d];' in text
    assert '"in_prompt" -> "select";' in text


def test_graph_command(in_repo_root: Path) -> None:
    runner = CliRunner()
    mermaid = runner.invoke(cli, ["graph", "workflows/full.yaml"])
    assert mermaid.exit_code == 0
    assert mermaid.stdout == Workflow.load(FULL).to_mermaid()
    dot = runner.invoke(cli, ["graph", "workflows/full.yaml", "--format", "dot"])
    assert dot.exit_code == 0
    assert dot.stdout == Workflow.load(FULL).to_dot()
    assert dot.stderr == ""


def test_graph_command_on_an_invalid_file(in_repo_root: Path) -> None:
    result = CliRunner().invoke(cli, ["graph", "tests/data/invalid/cycle.yaml"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "cycle in needs: x -> y -> z -> x" in result.stderr
