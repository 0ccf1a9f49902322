"""The layer rule: a module imports only from its own layer or the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "flowengine"

#: Bottom to top. A module's layer is its first subpackage, or the bottom for top-level modules.
#: "api" is the package's own ``__init__`` (the public names); the command line uses it. "web" is
#: the server and the HTML views; "clients" are the facades of the original clients, over the API.
LAYERS = [
    "bottom",
    "language",
    "providers",
    "store",
    "run",
    "batch",
    "web",
    "api",
    "clients",
    "cli",
]
BOTTOM = {"errors", "spec", "results", "events", "compare", "text", "plugins", "rubric", "shipped"}

#: The documented exceptions: (importing module, imported module).
ALLOWED_UPWARD = {
    # Workflow.run is a convenience that runs the workflow on a private Engine.
    ("flowengine.language.workflow", "flowengine.run.engine"),
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts == ["flowengine"]:
        return "api"
    if parts[1] == "__main__":
        return "cli"
    if parts[1] in BOTTOM:
        return "bottom"
    return parts[1]


def imports(path: Path) -> set[str]:
    """Every flowengine module ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "flowengine":
                # `from flowengine import x`: the submodule x, or a name of the public API
                found |= {
                    f"flowengine.{a.name}" if _is_module(a.name) else "flowengine"
                    for a in node.names
                }
            elif node.module.startswith("flowengine."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("flowengine.")}
    return found


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_belongs_to_a_known_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert layer_of(module_name(path)) in LAYERS, path


def test_imports_go_only_downward() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        rank = LAYERS.index(layer_of(name))
        for target in sorted(imports(path)):
            if LAYERS.index(layer_of(target)) > rank and (name, target) not in ALLOWED_UPWARD:
                upward.append(f"{name} imports {target}")
    assert upward == []


def test_the_rule_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from flowengine.cli.base import cli\n")
    assert imports(bad) == {"flowengine.cli.base"}
    assert LAYERS.index(layer_of("flowengine.cli.base")) > LAYERS.index(
        layer_of("flowengine.language.loader")
    )
