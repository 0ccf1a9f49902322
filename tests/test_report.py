"""`flowengine report`: the HTML page of a stored run and of a batch output, read as HTML."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from flowengine.web import batch_view
from flowengine.web.dag import depths, layout, run_needs
from tests.clirunner import invoke
from tests.htmltree import Element, parse

FLOW = """\
version: 1
name: review
inputs:
  prompt: {type: string}
providers:
  fast: {type: offline, latency: 40ms}
  broken: {type: offline, failure_rate: 1.0, retry: {attempts: 1}}
models:
  a: {id: model-a, provider: fast, weight: 3}
  b: {id: model-b, provider: fast, weight: 2}
  c: {id: model-c, provider: fast, weight: 1}
  down: {id: model-down, provider: broken, weight: 1}
nodes:
  answer: {type: llm, model: a, template: "Q: {{ prompt }}"}
  reviews:
    type: fanout
    needs: [answer]
    models: [b, c, down]
    template: "Review: {{ answer }}"
    min_success: 1
  extra: {type: llm, needs: [answer], model: c, when: "false", template: "never"}
  final: {type: llm, needs: [reviews], model: a, template: "Merge: {{ prompt }}"}
output:
  answer: "{{ final }}"
"""
#: Markup and a template in the question; the offline models echo it in their answers.
HOSTILE = '<script>pwned=1</script>"><img src=x onerror=pwned=2> {{ 7*7 }}'


def run_flow(folder: Path, prompt: str = HOSTILE) -> str:
    """Run the workflow above (its files in ``folder``, the working directory); its run id."""
    (folder / "flow.yaml").write_text(FLOW)
    code, out, err = invoke("run", "flow.yaml", "--prompt", prompt, "-q", "--no-cache")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "partial"  # one of the reviews failed
    run_id: str = result["run_id"]
    return run_id


def report_of(run_id: str) -> Element:
    code, out, err = invoke("report", run_id[:8], "-o", "-")
    assert code == 0, err
    assert out.startswith("<!doctype html>")
    return parse(out)


@pytest.fixture
def page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Element:
    monkeypatch.chdir(tmp_path)
    return report_of(run_flow(tmp_path))


def test_the_header_names_the_run_and_its_figures(page: Element) -> None:
    summary = page.find("header", id="summary")
    assert "review" in summary.find("h1").text
    assert summary.find("span", cls="status").text == "partial"
    facts = summary.find("dl").text
    for word in ("run", "started", "took", "calls", "5 (up to", "tokens", "cost", "flow.yaml"):
        assert word in facts


def test_the_graph_shows_each_node_with_its_state_and_edges_from_needs(page: Element) -> None:
    graph = page.find("section", id="graph")
    states = {g.attrs["data-node"]: g.classes - {"node"} for g in graph.find_all("g", "node")}
    assert states == {
        "answer": {"succeeded"},
        "reviews": {"succeeded"},
        "extra": {"skipped"},
        "final": {"succeeded"},
    }
    edges = sorted(p.find("title").text for p in graph.find_all("path", "edge"))
    assert edges == ["extra needs answer", "final needs reviews", "reviews needs answer"]
    skipped = next(t for t in graph.find_all("tr") if "extra" in t.text)
    assert "condition is false" in skipped.text


def test_the_timeline_has_a_bar_per_call_and_parallel_calls_overlap(page: Element) -> None:
    bars = page.find("section", id="timeline").find_all("div", "bar")
    spans = {
        b.attrs["title"].split(":")[0]: (float(b.attrs["data-start"]), float(b.attrs["data-end"]))
        for b in bars
    }
    assert set(spans) == {"answer · a", "reviews · b", "reviews · c", "reviews · down", "final · a"}
    (b0, b1), (c0, c1) = spans["reviews · b"], spans["reviews · c"]
    assert b0 < c1 and c0 < b1  # the fanout's calls ran at the same time
    assert spans["answer · a"][1] <= b0 and max(b1, c1) <= spans["final · a"][0]
    assert "failed" in next(b for b in bars if "down" in b.attrs["title"]).classes


def test_every_call_has_a_card_and_a_failed_call_shows_its_error(page: Element) -> None:
    cards = page.find("section", id="responses").find_all("article", "card")
    assert [(c.attrs["data-node"], c.attrs["data-model"]) for c in cards] == [
        ("answer", "a"),
        ("reviews", "b"),
        ("reviews", "c"),
        ("reviews", "down"),
        ("final", "a"),
    ]
    failed = cards[3]
    assert "failed" in failed.classes
    assert "simulated failure" in failed.find("p", "error").text
    ok = cards[1]
    for fact in ("confidence", "quality", "latency", "tokens", "cost", "cached", "model-b"):
        assert fact in ok.find("dl").text
    assert "[offline answer from model-b]" in ok.find("pre", "content").text


def test_the_comparison_recommends_one_response_and_says_why(page: Element) -> None:
    comparison = page.find("section", id="comparison")
    assert comparison.find("p", "recommendation").text.startswith("Recommended: a of final,")
    assert "last stage of the run" in comparison.text
    heads = [th.text for th in comparison.find_all("th", "recommended")]
    assert heads == ["finala"]
    assert "extra" in comparison.text  # skipped, so no response
    recommended = [c for c in page.find_all("article", "card") if "recommended" in c.classes]
    assert [c.attrs["data-node"] for c in recommended] == ["final"]


def test_models_prompts_and_the_raw_result_are_shown(page: Element) -> None:
    rows = page.find("section", id="metrics").find_all("tr")[1:]
    assert {r.find("td").text: r.find_all("td")[2].text for r in rows} == {
        "a": "100%",
        "b": "100%",
        "c": "100%",
        "down": "0%",
    }
    prompts = page.find("section", id="prompts").find_all("details")
    assert len(prompts) == 5
    assert any("Review: [offline answer from model-a]" in d.text for d in prompts)
    raw = json.loads(page.find("section", id="raw").find("pre").text)
    assert raw["status"] == "partial" and set(raw["nodes"]) == {
        "answer",
        "reviews",
        "extra",
        "final",
    }


def test_a_huge_result_is_cut_in_the_raw_section_saying_where_it_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("flowengine.web.run_view.RAW_LIMIT", 500)
    run_id = run_flow(tmp_path)
    raw = report_of(run_id).find("section", id="raw").find("pre").text
    head, tail = raw.split("\n… cut here: ")
    assert len(head) == 500
    assert tail.endswith(f"more characters; `flowengine runs show {run_id}` prints it whole")


def test_markup_and_templates_in_answers_and_prompts_stay_text(page: Element) -> None:
    assert page.find_all("script") == []
    assert page.find_all("img") == []
    assert not any(k.startswith("on") for e in page.walk() for k in e.attrs)
    answer = page.find("article", "card").find("pre", "content").text
    assert (
        'You asked: "Q: <script>pwned=1</script>"><img src=x onerror=pwned=2> {{ 7*7 }}"' in answer
    )
    prompt = page.find("section", id="prompts").find("details").text
    assert "Q: " + HOSTILE in prompt
    assert "49" not in page.find("section", id="responses").text


def test_the_page_is_self_contained(page: Element) -> None:
    for element in page.walk():
        for name in ("src", "href"):
            value = element.attrs.get(name) or ""
            assert not value or value.startswith("#"), f"<{element.tag} {name}={value}>"
    assert page.find_all("link") == []
    policy = next(m for m in page.find_all("meta") if m.attrs.get("http-equiv"))
    assert "default-src 'none'" in (policy.attrs["content"] or "")


def test_a_report_from_another_folder_draws_the_graph_from_the_run_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_id = run_flow(tmp_path)
    (tmp_path / "flow.yaml").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    graph = report_of(run_id).find("section", id="graph")
    edges = {p.find("title").text for p in graph.find_all("path", "edge")}
    assert edges == {"reviews needs answer", "extra needs answer", "final needs reviews"}
    kinds = {g.attrs["data-node"]: g.attrs["data-kind"] for g in graph.find_all("g", "node")}
    assert kinds == {"answer": "llm", "reviews": "fanout", "extra": "llm", "final": "llm"}
    assert graph.find_all("p", "note") == []


def test_a_record_from_before_graphs_were_kept_reads_the_unchanged_workflow_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_id = run_flow(tmp_path)
    with sqlite3.connect(os.environ["FLOWENGINE_DB"]) as db:
        db.execute("DELETE FROM graphs")
    graph = report_of(run_id).find("section", id="graph")
    assert len(graph.find_all("path", "edge")) == 3
    assert {g.attrs.get("data-kind") for g in graph.find_all("g", "node")} == {None}
    (tmp_path / "flow.yaml").write_text(FLOW.replace("name: review", "name: changed"))
    graph = report_of(run_id).find("section", id="graph")
    assert graph.find_all("path", "edge") == []
    assert "has changed since" in graph.find("p", "note").text
    assert len(graph.find_all("g", "node")) == 4


def test_report_writes_a_file_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_id = run_flow(tmp_path)
    code, out, err = invoke("report", run_id[:6])
    assert (code, out) == (0, "")
    assert err == f"wrote report-{run_id}.html\n"
    assert "<h1>review" in (tmp_path / f"report-{run_id}.html").read_text()
    code, _, err = invoke("report", run_id, "-o", "sub/r.html")
    assert code == 0, err
    assert (tmp_path / "sub" / "r.html").exists()


def test_report_errors_name_the_problem_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_flow(tmp_path)
    code, _, err = invoke("report", "zzzz")
    assert code == 2
    assert err.startswith("flowengine: error: no stored run 'zzzz' in ")
    assert "flowengine runs list" in err
    assert invoke("report")[0] == 2
    code, _, err = invoke("report", "--batch", "missing.jsonl")
    assert code == 2
    assert "missing.jsonl: cannot read the batch output (No such file or directory)" in err


# -- batch output --------------------------------------------------------------------------------


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_batch_report_shows_rows_by_node_failures_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flow.yaml").write_text(FLOW)
    write_rows(tmp_path / "rows.jsonl", [{"prompt": "first"}, {"nope": 1}, {"prompt": HOSTILE}])
    code, _, err = invoke("batch", "flow.yaml", "--input", "rows.jsonl", "--output", "out.jsonl")
    assert code == 1, err
    code, out, err = invoke("report", "--batch", "out.jsonl", "-o", "-")
    assert code == 0, err
    page = parse(out)
    heads = [th.text for th in page.find("section", id="rows").find_all("th")]
    assert heads[3:7] == ["answer", "extra", "reviews", "final"]  # in the order they finished
    rows = page.find("section", id="rows").find_all("tr")[1:]
    assert [r.classes for r in rows] == [{"row-partial"}, {"row-invalid"}, {"row-partial"}]
    cells = [td.text for td in rows[0].find_all("td")]
    assert cells[:7] == ["1", "1", "partial", "succeeded", "skipped", "succeeded", "succeeded"]
    assert "line 2: missing column 'prompt'" in rows[1].find("span", "error").text
    assert '{"prompt": "<script>pwned=1</script>\\"><img src=x' in rows[2].text
    assert page.find_all("script") == [] and page.find_all("img") == []
    facts = page.find("header", id="summary").text
    assert "rows3" in facts.replace(" ", "") and "invalid" in facts


def test_a_batch_report_reads_a_bounded_part_of_a_huge_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_view, "MAX_ROWS", 3)
    monkeypatch.setattr(batch_view, "MAX_LINE", 200)
    rows = [{"row": n, "status": "failed" if n % 4 == 0 else "succeeded"} for n in range(20)]
    path = tmp_path / "out.jsonl"
    write_rows(path, rows)
    with path.open("a") as handle:
        handle.write(json.dumps({"row": 99, "status": "failed", "output": "x" * 1000}) + "\n")
        handle.write("not json\n")
    view = batch_view.read_batch(path)
    assert (view.total, view.unreadable, view.left_out) == (20, 2, 14)
    assert [r.row for r in view.rows] == [0, 4, 8, 1, 2, 3]
    assert view.counts == {"failed": 5, "succeeded": 15}
    code, out, _ = invoke("report", "--batch", str(path), "-o", "-")
    assert code == 0
    assert "14 rows not shown" in parse(out).find("p", id="left-out").text


def test_rows_written_before_node_states_show_their_skipped_nodes(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    write_rows(path, [{"row": 0, "status": "succeeded", "skipped": {"extra": "condition"}}])
    assert batch_view.read_batch(path).rows[0].nodes == {"extra": "skipped"}


# -- the graph's layout -------------------------------------------------------------------------


def test_a_node_sits_one_column_right_of_its_deepest_need() -> None:
    needs = {"a": [], "b": ["a"], "c": ["a", "b"], "d": [], "e": ["d", "ghost"]}
    assert depths(list(needs), needs) == {"a": 0, "b": 1, "c": 2, "d": 0, "e": 1}
    drawn = layout(list(needs), needs)
    assert [(e.need, e.node) for e in drawn.edges] == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("d", "e"),
    ]
    xs = {b.node: b.x for b in drawn.boxes}
    assert xs["a"] == xs["d"] < xs["b"] == xs["e"] < xs["c"]


def test_a_cycle_in_needs_does_not_hang_the_layout() -> None:
    assert depths(["a", "b"], {"a": ["b"], "b": ["a"]}) == {"a": 1, "b": 0}


def test_the_rounds_of_a_loop_follow_each_other_and_the_loop_follows_its_last() -> None:
    needs = {"draft": (), "refine": ("draft",), "refine.revise": (), "refine.critique": ("revise",)}
    ran = [
        "draft",
        "refine[1].revise",
        "refine[1].critique",
        "refine[2].revise",
        "refine[2].critique",
        "refine",
    ]
    assert run_needs(ran, needs) == {
        "draft": [],
        "refine[1].revise": ["draft"],
        "refine[1].critique": ["refine[1].revise"],
        "refine[2].revise": ["refine[1].critique"],
        "refine[2].critique": ["refine[2].revise"],
        "refine": ["draft", "refine[2].critique"],
    }


def test_a_loops_rounds_are_drawn_in_order(in_repo_root: Path) -> None:
    code, out, err = invoke("run", "workflows/refine.yaml", "--offline", "--prompt", "Why?", "-q")
    assert code == 0, err
    page = report_of(json.loads(out)["run_id"])
    edges = {
        p.find("title").text for p in page.find("section", id="graph").find_all("path", "edge")
    }
    assert {
        "refine[1].revise needs draft",
        "refine[1].critique needs refine[1].revise",
        "refine[2].revise needs refine[1].critique",
        "refine needs refine[2].critique",
    } <= edges
