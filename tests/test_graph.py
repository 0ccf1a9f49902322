"""The DAG: order, ancestors, cycles, Mermaid and DOT."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from flowengine.cli import cli
from flowengine.errors import WorkflowError
from flowengine.language.graph import Graph, describe_cycle
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
    assert set(wf.dag.edges) == FULL_EDGES
    assert wf.order == ["select", "primary", "critiques", "meta", "synthesis"]
    assert wf.ancestors("synthesis") == {"select", "primary", "critiques", "meta"}
    assert wf.ancestors("select") == set()
    assert wf.dependents["primary"] == ("critiques", "meta")
    assert wf.dependents["synthesis"] == ()


def test_edges_dependents_and_ancestors_keep_file_order() -> None:
    graph = Graph({"c": ["b", "a", "b", "unknown"], "a": [], "b": ["a"], "d": ["a", "d"]})
    assert graph.needs == {"c": ("b", "a"), "a": (), "b": ("a",), "d": ("a",)}
    assert graph.dependents == {"c": (), "a": ("c", "b", "d"), "b": ("c",), "d": ()}
    assert graph.edges == [("a", "c"), ("a", "b"), ("a", "d"), ("b", "c")]
    ancestors = graph.ancestors("c")
    assert list(ancestors) == ["a", "b"]
    assert len(ancestors) == 2
    assert "a" in ancestors and "c" not in ancestors and "unknown" not in ancestors


def test_order_keeps_file_order_among_independent_nodes() -> None:
    wf = Workflow.from_string(chain(("b", []), ("a", []), ("c", ["a"]), ("d", [])))
    assert wf.order == ["b", "a", "c", "d"]


def test_cycles_are_found_once_from_the_first_node_in_file_order() -> None:
    # Edges run need -> node: x needs z, y needs x, z needs y. A need of itself is no edge.
    graph = Graph({"x": ["z"], "y": ["x"], "z": ["y"], "w": ["w"]})
    assert graph.cycles() == [["x", "y", "z"]]
    assert describe_cycle(["x", "y", "z"]) == "x -> y -> z -> x"
    with pytest.raises(ValueError, match="cycle"):
        graph.order  # noqa: B018


def test_every_cycle_of_a_dense_graph() -> None:
    graph = Graph({"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]})
    assert graph.cycles() == [["a", "b"], ["a", "b", "c"], ["a", "c"], ["a", "c", "b"], ["b", "c"]]


def _brute_force_cycles(needs: dict[str, list[str]]) -> list[list[str]]:
    """Every cycle, by trying each ordering of each set of nodes (small graphs only)."""
    order = list(needs)
    edges = {(need, node) for node, ns in needs.items() for need in ns if need != node}
    found = []
    for size in range(2, len(order) + 1):
        for nodes in itertools.permutations(order, size):
            if order.index(nodes[0]) != min(order.index(n) for n in nodes):
                continue
            if all((a, b) in edges for a, b in zip(nodes, nodes[1:] + nodes[:1], strict=True)):
                found.append(list(nodes))
    return sorted(found, key=lambda c: [order.index(n) for n in c])


_NAMES = ["a", "b", "c", "d", "e", "f"]


@given(
    st.lists(st.sampled_from(_NAMES), min_size=1, max_size=6, unique=True).flatmap(
        lambda nodes: st.fixed_dictionaries(
            {n: st.lists(st.sampled_from(nodes), max_size=4) for n in nodes}
        )
    )
)
@settings(max_examples=300, deadline=None)
def test_graph_matches_brute_force(needs: dict[str, list[str]]) -> None:
    graph = Graph(needs)
    assert graph.cycles() == _brute_force_cycles(needs)
    if graph.cycles():
        return
    order = graph.order
    assert sorted(order) == sorted(needs)
    for node_id in needs:
        reach = {n for n in needs[node_id] if n != node_id}
        while True:
            more = reach | {n for r in reach for n in needs[r] if n != r}
            if more == reach:
                break
            reach = more
        assert set(graph.ancestors(node_id)) == reach
        assert all(order.index(a) < order.index(node_id) for a in reach)
    # Among the nodes ready at each step, the first in file order runs first.
    done: set[str] = set()
    for node_id in order:
        ready = [n for n in needs if n not in done and set(graph.needs[n]) <= done]
        assert node_id == ready[0]
        done.add(node_id)


def test_long_chains_and_rings_need_no_recursion_and_little_time() -> None:
    size = 5000
    chain = Graph({f"n{i}": [f"n{i - 1}"] if i else [] for i in range(size)})
    ring = Graph({f"n{i}": [f"n{(i - 1) % size}"] for i in range(size)})
    start = time.perf_counter()
    assert chain.cycles() == []
    assert chain.order[-1] == "n4999"
    assert all(f"n{i - 1}" in chain.ancestors(f"n{i}") for i in range(1, size))
    assert len(chain.ancestors("n4999")) == size - 1
    assert [len(c) for c in ring.cycles()] == [size]
    assert time.perf_counter() - start < 10


def test_loading_a_workflow_does_not_import_networkx() -> None:
    code = "import sys, flowengine.language.workflow; print('networkx' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


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
