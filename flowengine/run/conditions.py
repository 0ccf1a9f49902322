"""Evaluating conditions (compiled by :mod:`flowengine.language.conditions`) during a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowengine.language.conditions import Condition
from flowengine.results import ErrorInfo
from flowengine.run.context import TEMPLATE_ERRORS, NodeFailure


def holds(condition: Condition, scope: Mapping[str, Any], where: str) -> bool:
    """Whether ``condition`` is true in ``scope``, as ``{% if %}`` would take it.

    An error while evaluating it (an undefined field, a failed comparison) is a NodeFailure
    whose message starts with ``where``, the key that holds the condition.
    """
    try:
        # bool() of an Undefined (a name or field that is not there) raises: it is strict.
        return bool(condition.expression(scope))
    except TEMPLATE_ERRORS as exc:
        raise NodeFailure(ErrorInfo(type="condition", message=f"{where}: {exc}")) from None


def skip_reason(condition: Condition) -> str:
    """Why a node whose condition is false was skipped."""
    return f"condition is false: {condition.source}"
