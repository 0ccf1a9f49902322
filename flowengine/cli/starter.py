"""The starter project shipped inside the package, and workflow arguments that name its files.

``flowengine/starter/`` holds the shipped workflows, their prompts, the JSON Schema and a
README: exactly what ``flowengine init`` writes. The repository's ``workflows/``, ``prompts/``
and ``flowengine.schema.json`` are links into it, so each file has one copy.
"""

from __future__ import annotations

from pathlib import Path

from flowengine.errors import Location, Problem, WorkflowError, did_you_mean
from flowengine.shipped import shipped_workflows, starter_dir


def starter_files() -> list[Path]:
    """Every file of the starter project, relative to its folder."""
    root = starter_dir()
    return sorted(
        path.relative_to(root)
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


def resolve_workflow(argument: str) -> str:
    """The file a WORKFLOW argument means: a path that exists, else a shipped workflow's name.

    Raise WorkflowError ("no such file", listing the shipped names) when it is neither.
    """
    if Path(argument).exists():
        return argument
    shipped = shipped_workflows()
    if argument in shipped:
        return str(shipped[argument])
    names = ", ".join(shipped)
    close = did_you_mean(argument, shipped)
    if close:
        fix = f"{close} (shipped workflows: {names})"
    else:
        fix = f"check the path, or name a shipped workflow: {names}"
    raise WorkflowError([Problem(Location(argument), "no such file", fix)])
