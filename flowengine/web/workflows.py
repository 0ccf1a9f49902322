"""The workflows a server serves: read from files and folders, each checked, named uniquely."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flowengine.errors import Problem, UsageError, WorkflowError
from flowengine.language.workflow import Workflow

#: What a folder's workflow files are called.
PATTERNS = ("*.yaml", "*.yml")


def workflow_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files named, and the workflow files in the folders named (not their subfolders)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            inside = sorted({f for pattern in PATTERNS for f in path.glob(pattern) if f.is_file()})
            if not inside:
                raise UsageError(f"{path}: no workflow files (*.yaml) in this folder")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder", "give workflow files or folders")
    return list(dict.fromkeys(found))


def load_workflows(
    paths: Iterable[str | Path], overrides: Mapping[str, Any] | None = None
) -> dict[str, Workflow]:
    """Every workflow under ``paths`` by name, each fully checked.

    Raises WorkflowError with the problems of every invalid file at once, and UsageError when
    two files give their workflows one name (a client names a workflow to run it).
    """
    loaded: dict[str, Workflow] = {}
    problems: list[Problem] = []
    for path in workflow_files(paths):
        try:
            workflow = Workflow.load(path, overrides)
        except WorkflowError as exc:
            problems.extend(exc.problems)
            continue
        other = loaded.get(workflow.name)
        if other is not None:
            raise UsageError(
                f"{other.source.file} and {workflow.source.file} both name their workflow "
                f"'{workflow.name}'",
                "give one of them another `name:`, or serve only one of them",
            )
        loaded[workflow.name] = workflow
    if problems:
        raise WorkflowError(problems)
    return loaded


def describe(workflow: Workflow) -> dict[str, Any]:
    """What ``GET /api/workflows`` says of a workflow: its inputs and its nodes."""
    spec = workflow.spec
    return {
        "name": workflow.name,
        "file": workflow.source.file,
        "description": spec.description,
        "inputs": [
            {
                "name": name,
                "type": given.type,
                "required": given.is_required,
                "default": given.default,
                "description": given.description,
            }
            for name, given in spec.inputs.items()
        ],
        "nodes": [
            {
                "id": node_id,
                "type": spec.nodes[node_id].type,
                "needs": list(spec.nodes[node_id].needs),
            }
            for node_id in workflow.order
        ],
    }
