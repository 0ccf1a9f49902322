"""Optional inputs given and not given: the same prompt from `run`, `batch` and the Python API.

tests/data/cli/idioms.yaml reads its optional inputs with `is defined`, `default`, a truth test
and `inputs.x is defined`; the offline provider echoes the prompt it was sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from flowengine.language.workflow import Workflow
from tests.clirunner import invoke

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = "tests/data/cli/idioms.yaml"
BARE = "hi for anyone in 3 lines!"
FULL = "hi in a warm tone for kids about a+b in 2 lines"


@pytest.fixture(autouse=True)
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)


def asked(output: dict[str, Any]) -> str:
    """The prompt the offline provider was sent, from its answer."""
    found = re.search(r'You asked: "(.*)" \(ref', output["text"])
    assert found, output
    return found.group(1)


def test_validate_accepts_the_idioms() -> None:
    assert invoke("validate", WORKFLOW) == (0, "", f"{WORKFLOW}: ok (1 nodes: answer)\n")


def test_run_without_the_optional_inputs_and_with_them() -> None:
    code, out, err = invoke("run", WORKFLOW, "--prompt", "hi", "--offline", "-q")
    assert code == 0, err
    result = json.loads(out)
    assert asked(result["output"]) == BARE
    assert result["output"]["tone"] is None and result["output"]["audience"] is None
    assert result["inputs"] == {"prompt": "hi", "length": 3}  # what was given, and defaults
    code, out, err = invoke(
        "run", WORKFLOW, "--prompt", "hi", "--offline", "-q",
        "--input", "tone=warm", "--input", "audience=kids", "--input", "tags=[a, b]",
        "--input", "length=2",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert asked(result["output"]) == FULL
    assert (result["output"]["tone"], result["output"]["audience"]) == ("warm", "kids")


def test_batch_rows_leave_inputs_out_by_a_missing_key_null_or_an_empty_cell(
    tmp_path: Path,
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"prompt": "hi"}\n'
        '{"prompt": "hi", "tone": null, "audience": null, "tags": null, "length": null}\n'
        '{"prompt": "hi", "tone": "warm", "audience": "kids", "tags": ["a", "b"], "length": 2}\n'
    )
    cells = tmp_path / "rows.csv"
    cells.write_text('prompt,tone,audience,tags,length\nhi,,,,\nhi,warm,kids,"[""a"", ""b""]",2\n')
    for source, expected in ((rows, [BARE, BARE, FULL]), (cells, [BARE, FULL])):
        out = tmp_path / f"{source.suffix[1:]}.jsonl"
        code, _, err = invoke(
            "batch", WORKFLOW, "--input", str(source), "--output", str(out), "--offline"
        )
        assert code == 0, err
        results = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["status"] for r in results] == ["succeeded"] * len(expected)
        assert [asked(r["output"]) for r in results] == expected
        assert results[0]["inputs"] == {"prompt": "hi", "length": 3}


async def test_the_python_api_sends_the_same_prompts() -> None:
    wf = Workflow.load(ROOT / WORKFLOW)
    bare = await wf.run(prompt="hi", tone=None, offline=True)
    full = await wf.run(
        prompt="hi", tone="warm", audience="kids", tags=["a", "b"], length=2, offline=True
    )
    assert (asked(bare.output), asked(full.output)) == (BARE, FULL)
