"""The starter project inside the installed package, and its workflows by name.

``flowengine/starter/`` holds the shipped workflows, their prompts, the JSON Schema and a
README: what ``flowengine init`` writes, what ``run critique`` finds by name, and what the
facades of :mod:`flowengine.clients` run.
"""

from __future__ import annotations

from pathlib import Path


def starter_dir() -> Path:
    """The starter project's folder inside the installed package."""
    from importlib.resources import files  # here: a command given a path never needs it

    folder = files("flowengine") / "starter"
    if not isinstance(folder, Path):  # a zipped install; not a layout pip produces
        raise RuntimeError(f"flowengine's starter files are not on the file system: {folder}")
    return folder


def shipped_workflows() -> dict[str, Path]:
    """The shipped workflows by name: ``critique`` -> ``.../starter/workflows/critique.yaml``."""
    return {path.stem: path for path in sorted((starter_dir() / "workflows").glob("*.yaml"))}
