"""The function of a python node, ``function: package.module:name``.

Validation finds the module without running it (:func:`module_problem`, which may import its
parent packages). A run looks the function up when it starts, before any model call
(:func:`check_functions`): importing the module runs its code, which validation never does.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from flowengine.errors import Problem, WorkflowError
from flowengine.language.placement import placed_nodes
from flowengine.language.source import Source
from flowengine.spec import PythonNode, WorkflowSpec

_IMPORTABLE = (
    "install it, or put it on the import path: the current directory of a flowengine command, "
    "or PYTHONPATH"
)


class FunctionError(Exception):
    """A python node's function cannot be had: what is wrong, and the fix."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def module_problem(path: str) -> tuple[str, str] | None:
    """Why the module of ``path`` cannot be found, and the fix; None if it can."""
    module = path.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError as exc:  # a parent package is missing
        return f"no module named '{exc.name or module}'", _IMPORTABLE
    except Exception as exc:  # importing a parent package failed
        return f"cannot look for module '{module}': {type(exc).__name__}: {exc}", _IMPORTABLE
    if found is None:
        return f"no module named '{module}'", _IMPORTABLE
    return None


def load_function(path: str) -> Callable[..., Any]:
    """The callable ``package.module:name`` names, importing its module; FunctionError if none."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise FunctionError(
            f"importing '{module_name}' failed: {type(exc).__name__}: {exc}",
            "fix the module so that it imports" if module_problem(path) is None else _IMPORTABLE,
        ) from exc
    found = getattr(module, attribute, None)
    if found is None:
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        fix = f"functions in {module_name}: {', '.join(public[:20])}" if public else "define it"
        raise FunctionError(f"module '{module_name}' has no '{attribute}'", fix)
    if not callable(found):
        kind = type(found).__name__
        raise FunctionError(f"'{path}' is a {kind}, not a function", "name a function")
    return found  # type: ignore[no-any-return]


def check_functions(spec: WorkflowSpec, source: Source, node_ids: Iterable[str]) -> None:
    """Load the function of each python node among ``node_ids`` and check that it takes the
    arguments the node gives it; raise WorkflowError with every problem, located."""
    problems = []
    placed = placed_nodes(spec)
    for node_id in node_ids:
        node = placed[node_id].node
        if not isinstance(node, PythonNode):
            continue
        path = (*placed[node_id].path, "function")
        try:
            function = load_function(node.function)
            signature_fits(function, node)
        except FunctionError as exc:
            message = f"{'.'.join(map(str, path))}: {exc.message}"
            problems.append(Problem(source.locate(path), message, exc.fix, "python-function"))
    if problems:
        raise WorkflowError(problems)


def keywords(node: PythonNode) -> list[str]:
    """The names of the keyword arguments the node gives its function."""
    return list(node.args) if node.args is not None else list(dict.fromkeys(node.needs))


def signature_fits(function: Callable[..., Any], node: PythonNode) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: the call will tell
        return
    names = keywords(node)
    try:
        signature.bind(**dict.fromkeys(names))
    except TypeError as exc:
        given = ", ".join(names) or "none"
        source = "`args:`" if node.args is not None else "the node's needs"
        raise FunctionError(
            f"{node.function}({_parameters(signature)}) cannot be called with the keyword "
            f"arguments it gets ({given}): {exc}",
            f"the function gets one keyword argument per name in {source}; change its "
            "parameters (or add **kwargs), or name the arguments with `args:`",
        ) from None


def _parameters(signature: inspect.Signature) -> str:
    """The parameters as written (``text, times=1``), without their annotations."""
    return str(
        signature.replace(
            parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
            return_annotation=inspect.Signature.empty,
        )
    ).strip("()")
