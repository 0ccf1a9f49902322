"""Fuzzing the loader: any text yields a workflow or a WorkflowError, never a crash.

Inputs are random YAML documents, random text, and random mutations of the shipped workflows.
Every problem's line, when it has one, must be a line of the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from flowengine.errors import UsageError, WorkflowError
from flowengine.language.workflow import Workflow

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "prompts"
SHIPPED = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "workflows").glob("*.yaml"))]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.sampled_from(
    ["version", "name", "nodes", "models", "providers", "selectors", "inputs", "defaults",
     "output", "type", "needs", "model", "template", "prompt", "weight", "id", "timeout",
     "min_success", "vars", "include", "exclude", "top", "llm", "fanout", "select", "x"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["{{ prompt }}", "{{ x.__class__ }}", "{% if %}", "5s", "llm", "1", ""]),
    st.text(max_size=12),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=6)), children, max_size=5),
    ),
    max_leaves=25,
)


def check(text: str, overrides: dict[str, Any] | None = None) -> None:
    try:
        Workflow.from_string(text, prompts_dir=PROMPTS, overrides=overrides)
    except WorkflowError as exc:
        assert exc.problems
        lines = max(len(text.splitlines()), 1)
        for problem in exc.problems:
            line = problem.location.line
            assert line is None or 1 <= line <= lines, (problem.render(), text)
            assert problem.render()
    except UsageError:
        assert overrides


def dump(data: Any) -> str:
    import io

    out = io.StringIO()
    YAML(typ="safe").dump(data, out)
    return out.getvalue()


@FUZZ
@given(DOCUMENTS)
def test_random_yaml_documents(data: Any) -> None:
    check(dump(data))


@FUZZ
@given(DOCUMENTS)
def test_random_documents_under_a_valid_header(data: Any) -> None:
    check(dump({"version": 1, "name": "fuzz", "nodes": data}))


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}#&*!|>'\"%@`,? \t\n1{}")), max_size=80))
def test_random_text(text: str) -> None:
    check(text)


def mutate(text: str, data: st.DataObject) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 3))):
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        j = data.draw(st.integers(0, len(lines) - 1))
        kind = data.draw(
            st.sampled_from(["delete", "retype", "rename", "duplicate", "swap", "truncate"])
        )
        line = lines[i]
        key, sep, value = line.partition(":")
        if kind == "delete":
            del lines[i]
        elif kind == "retype" and sep:
            new = data.draw(st.sampled_from(["5", "[1, 2]", "{a: 1}", "true", "null", "x y", "-1"]))
            lines[i] = f"{key}: {new}\n"
        elif kind == "rename" and sep:
            new = data.draw(st.sampled_from(["nodes", "needs", "typo", "model", "type", "end"]))
            lines[i] = f"{key[: len(key) - len(key.lstrip())]}{new}:{value}"
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "truncate":
            cut = data.draw(st.integers(0, len(text)))
            return "".join(lines)[:cut]
    return "".join(lines)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SHIPPED), st.data())
def test_mutated_shipped_workflows(text: str, data: st.DataObject) -> None:
    check(mutate(text, data))


OVERRIDE_PATHS = st.sampled_from(
    ["models.llama.weight", "models.nope.weight", "nodes.primary.model", "nodes", "version",
     "providers.openrouter.base_url", "nodes.critiques.models", "name.x", "defaults.provider"]
)  # fmt: skip


@FUZZ
@given(OVERRIDE_PATHS, SCALARS)
def test_random_overrides(path: str, value: Any) -> None:
    check(SHIPPED[-1], {path: value})
