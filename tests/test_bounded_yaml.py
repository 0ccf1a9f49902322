"""Reading YAML: libyaml's C parser and the pure-Python one give the same values, places, errors
and bounds; the values are typed as ruamel.yaml types them.

Every test that reads runs with both parsers (the ``reader`` fixture); the C one is skipped
where ruamel.yaml.clib is not installed.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, reject
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from flowengine.cli import cli
from flowengine.language import bounded_yaml
from flowengine.language.bounded_yaml import YamlLimit, YamlList, YamlMap, YamlRefused, read_yaml
from tests.test_invalid import CASES, command, expected

ROOT = Path(__file__).resolve().parent.parent
C_PARSER = bounded_yaml.CParser
needs_c = pytest.mark.skipif(C_PARSER is None, reason="ruamel.yaml.clib is not installed")


@pytest.fixture(params=[pytest.param("c", marks=needs_c), "pure"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pure":
        monkeypatch.setattr(bounded_yaml, "CParser", None)
    return str(request.param)


def places(value: Any) -> Any:
    """The value with the place of every item beside it, to compare two readings."""
    if isinstance(value, YamlMap):
        return {k: (value.at[k], places(v)) for k, v in value.items()}
    if isinstance(value, YamlList):
        return [(at, places(v)) for at, v in zip(value.at, value, strict=True)]
    return value


def pure(text: str) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bounded_yaml, "CParser", None)
        return read_yaml(text)


# -- values and places ------------------------------------------------------------------------

TEXT = """\
name: demo   # a comment
nodes:
  a: {type: llm, needs: [x, 'y']}
  b:
    template: |
      line one
    list:
      - 1
      - &anchor {k: v}
    again: *anchor
"""


def test_each_item_knows_where_its_key_and_value_are(reader: str) -> None:
    root = read_yaml(TEXT)
    assert root == {
        "name": "demo",
        "nodes": {
            "a": {"type": "llm", "needs": ["x", "y"]},
            "b": {"template": "line one\n", "list": [1, {"k": "v"}], "again": {"k": "v"}},
        },
    }
    assert root.at["name"] == (0, 0, 0, 6, False)
    a, b = root["nodes"]["a"], root["nodes"]["b"]
    assert root["nodes"].at["a"] == (2, 2, 2, 5, False)
    assert a["needs"].at == [(2, 25, 2, 25, False), (2, 28, 2, 28, False)]
    assert b.at["template"] == (4, 4, 4, 14, True)  # a block scalar: its text starts below
    assert b["list"].at[1] == (8, 8, 8, 8, False)
    # An alias is the value it names, which knows where it is written.
    assert b["again"] is b["list"][1]
    assert b["again"].at["k"] == (8, 17, 8, 20, False)


def test_scalars_are_typed_as_yaml_1_2(reader: str) -> None:
    text = (
        "a: 7\nb: -0x1f\nc: 0o17\nd: 1_000\ne: 2.5\nf: .inf\ng: true\nh: yes\ni: ~\nj:\n"
        "k: '7'\nl: 2024-05-01\nm: !!str 3\nn: 007\no: '<<'\n"
    )
    value, theirs = read_yaml(text), YAML(typ="safe", pure=True).load(text)
    assert value == theirs
    assert [type(v) for v in value.values()] == [type(v) for v in theirs.values()]
    assert (value["d"], value["h"], value["n"]) == (1000, "yes", 7)


def test_a_tag_types_a_scalar_or_is_a_yaml_error(reader: str) -> None:
    assert read_yaml("a: !!str 3\nb: !!float 1\nc: !!binary aGk=\n") == {
        "a": "3",
        "b": 1.0,
        "c": b"hi",
    }
    with pytest.raises(MarkedYAMLError, match="could not determine a constructor for the tag"):
        read_yaml("a: !mine x\n")
    with pytest.raises(MarkedYAMLError, match="expected a mapping node, but found scalar"):
        read_yaml("a: !!map x\n")


def test_merge_keys_take_the_items_not_set_here(reader: str) -> None:
    text = "base: &base {a: 1, b: 2}\nnode:\n  <<: *base\n  b: 3\n"
    node = read_yaml(text)["node"]
    assert node == {"a": 1, "b": 3}
    assert node.at["a"] == (0, 13, 0, 16, False)  # where the merged item is written
    assert node.at["b"] == (3, 2, 3, 5, False)


def test_no_document_is_none(reader: str) -> None:
    assert read_yaml("# only a comment\n") is None
    assert read_yaml("") is None


# libyaml counts U+0085, U+2028 and U+2029 as line breaks where ruamel's scanner does not always
# (an empty value after one is a line further down): the texts leave them out.
WORDS = st.text(st.characters(exclude_characters="\x85\u2028\u2029"), max_size=12)
DOCUMENTS = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        WORDS,
        st.sampled_from(["1_000", "0x1F", "0o7", "yes", "2001-12-14", "~", "<<", "- a", "#"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(WORDS, children, max_size=4)
    ),
    max_leaves=20,
)


@given(DOCUMENTS, st.booleans())
def test_both_parsers_read_the_same_values_at_the_same_places(data: Any, flow: bool) -> None:
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = flow
    yaml.dump(data, out)
    text = out.getvalue()
    try:
        theirs = yaml.load(text)
    except YAMLError:
        reject()  # ruamel writes a few texts that it cannot read back (`{:0: null}`)
    value = read_yaml(text)
    assert value == theirs
    if C_PARSER is not None:
        assert places(value) == places(pure(text))


@pytest.mark.parametrize("path", sorted((ROOT / "workflows").glob("*.yaml")), ids=lambda p: p.stem)
def test_both_parsers_read_the_shipped_workflows_alike(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert places(read_yaml(text)) == places(pure(text))


# -- what is refused --------------------------------------------------------------------------


def refused(text: str) -> YamlRefused:
    with pytest.raises(YamlRefused) as raised:
        read_yaml(text)
    return raised.value


def test_a_duplicate_key_is_refused_where_it_repeats(reader: str) -> None:
    problem = refused("a: 1\nb:\n  c: 2\n  c: 3\n")
    assert (problem.message, problem.fix) == (
        "duplicate key 'c' (first defined on line 3)",
        "remove or rename one of the keys",
    )
    assert (problem.mark.line, problem.mark.column) == (3, 2)


def test_a_key_that_is_a_collection_is_refused(reader: str) -> None:
    problem = refused("? [a, b]\n: 1\n")
    assert problem.message == "a key must be a single value, not a list or a mapping"
    assert (problem.mark.line, problem.mark.column) == (0, 2)


def test_merging_something_else_than_a_mapping_is_refused(reader: str) -> None:
    problem = refused("a:\n  <<: [1]\n")
    assert problem.message == "`<<` merges mappings, and this is not one"
    assert (problem.mark.line, problem.mark.column) == (1, 6)


def test_an_undefined_alias_and_a_second_document_are_yaml_errors(reader: str) -> None:
    with pytest.raises(MarkedYAMLError, match="found undefined alias 'nope'"):
        read_yaml("a: *nope\n")
    with pytest.raises(MarkedYAMLError, match="but found another document"):
        read_yaml("a: 1\n---\nb: 2\n")


def test_a_syntax_error_is_said_in_the_pure_parsers_words(reader: str) -> None:
    # libyaml's own message would be "found character that cannot start any token".
    with pytest.raises(MarkedYAMLError) as raised:
        read_yaml("a:\n\tb: 1\n")
    assert raised.value.problem == "found character '\\t' that cannot start any token"
    assert (raised.value.problem_mark.line, raised.value.problem_mark.column) == (1, 0)


@pytest.mark.parametrize("name", CASES)
def test_every_invalid_case_reads_the_same_without_the_c_parser(
    name: str, in_repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bounded_yaml, "CParser", None)
    result = CliRunner().invoke(cli, command(name))
    assert result.stderr == expected(name)


# -- bounds, with either parser ---------------------------------------------------------------


@pytest.fixture
def quickly() -> Iterator[None]:
    """The body must take under 5 s of CPU: time quadratic in the input would take hours."""
    started = time.process_time()
    yield
    assert time.process_time() - started < 5


def limit(text: str) -> tuple[str, int, int]:
    with pytest.raises(YamlLimit) as raised:
        read_yaml(text)
    return raised.value.message, raised.value.mark.line, raised.value.mark.column


DEEP = "values nest deeper than 100 levels"


@pytest.mark.usefixtures("quickly")
def test_deep_flow_nesting_on_one_line_is_refused_at_level_101(reader: str) -> None:
    # 10 MB on one line: the 101st level (the mapping is the first) is the 100th bracket.
    assert limit("x: " + "[" * 5_000_000 + "]" * 5_000_000) == (DEEP, 0, 3 + 99)
    # A key counts as a level too: the key of the 99th mapping is at level 101.
    assert limit("x: " + "{a: " * 2_500_000) == (DEEP, 0, 3 + 4 * 98 + 1)


@pytest.mark.usefixtures("quickly")
def test_deep_nesting_over_many_lines_is_refused_at_level_101(reader: str) -> None:
    assert limit("x: " + "[\n" * 5_000_000) == (DEEP, 99, 0)
    assert limit("- " * 5_000_000 + "x\n") == (DEEP, 0, 2 * 100)
    assert limit("".join(" " * i + "a:\n" for i in range(4000))) == (DEEP, 99, 99)


@pytest.mark.usefixtures("quickly")
def test_a_billion_laughs_is_refused_where_the_count_passes_the_bound(reader: str) -> None:
    text = (ROOT / "tests/data/invalid/yaml_alias_bomb.yaml").read_text(encoding="utf-8")
    assert limit(text) == ("aliases expand to more than 100,000 values", 7, 9)


def test_an_alias_inside_the_value_it_names_is_refused(reader: str) -> None:
    message, line, column = limit("a: &a\n  b: *a\n")
    assert message == "alias *a is used inside the value it names, which would never end"
    assert (line, column) == (1, 5)
