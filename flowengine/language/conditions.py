"""Conditions: one Jinja expression that decides whether something runs (a node's ``when:``).

A condition is written bare, as Ansible's ``when:`` and GitHub Actions' ``if:`` are
(``when: not quick``), or as one ``{{ expr }}``. It is checked as templates are (syntax, the
names it may read with close matches, the fields it reads) and compiled once, in the same
sandbox; the run layer evaluates it (:mod:`flowengine.run.conditions`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from jinja2 import TemplateAssertionError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.language.source import YamlPath
from flowengine.language.template_checks import Names, TemplateChecks
from flowengine.language.templates import is_template, single_expression

_EXAMPLE = "such as `not quick` or `answers | length > 1`"


@dataclass(frozen=True)
class Condition:
    """A compiled condition; ``source`` is its expression as written, for messages."""

    source: str
    #: Called with the names it may read; its value, which may be a (strict) Undefined.
    expression: Callable[[Mapping[str, Any]], Any]


def expression_of(text: str) -> str | None:
    """The expression of a condition written bare or as one ``{{ expr }}``; None if neither."""
    if not is_template(text):
        return text.strip()
    return single_expression(text)


def compile_condition(env: ImmutableSandboxedEnvironment, text: str) -> Condition:
    """A checked condition, compiled once for every run."""
    expression = expression_of(text)
    assert expression, "conditions are checked before they are compiled"
    return Condition(expression, env.compile_expression(expression, undefined_to_none=False))


def condition_names(names: Names) -> Names:
    """What a condition of a node may read: what its templates may, but no ``model`` (nor
    ``vars``): it is evaluated once, before the node does anything."""
    return replace(names.with_names((), drop={"model"}), what="condition")


def check_condition(checks: TemplateChecks, path: YamlPath, text: str, names: Names) -> None:
    """Every problem of the condition ``text`` at ``path``, added to ``checks.problems``."""
    expression = expression_of(text)
    if expression is None:
        message = "a condition is one expression: no {% %} tags and no text around {{ }}"
        checks.add(path, message, _one_expression_fix(text), code="condition-syntax")
        return
    if not expression:
        fix = f"write an expression, {_EXAMPLE}, or remove the key"
        checks.add(path, "the condition is empty", fix, code="condition-syntax")
        return
    try:
        checks.env.compile_expression(expression, undefined_to_none=False)
    except TemplateAssertionError:
        pass  # an unknown filter or test: the template checks name it, with a close match
    except TemplateSyntaxError as exc:
        checks.add(path, *_syntax_problem(exc.message or ""), code="condition-syntax")
        return
    bare = not is_template(text)
    checks.check_inline(path, f"{{{{ {expression} }}}}" if bare else text, names, bare=bare)


def _syntax_problem(message: str) -> tuple[str, str]:
    """Jinja's syntax message, said of a condition rather than a template, and the fix."""
    if message == "template nested too deeply":
        return (
            "condition nested too deeply",
            "nest fewer brackets and chain fewer operators; a node before this one can "
            "compute part of it",
        )
    if message == "chunk after expression":
        return (
            "condition syntax: more text after the end of the expression",
            "join the parts with `and` or `or`, and quote text: `answer.content == 'yes'`",
        )
    message = message.replace("'end of template'", "end of the condition")
    message = message.replace("end of template", "end of the condition")
    return f"condition syntax: {message}", f"write one Jinja expression, {_EXAMPLE}"


def _one_expression_fix(text: str) -> str:
    """``{{ a }} and {{ b }}`` is meant as ``a and b``: say so; else show the form."""
    if "{%" in text or "{#" in text:
        return f"write the expression alone, {_EXAMPLE}"
    joined = " ".join(re.sub(r"\{\{|\}\}", " ", text).split())
    return f"write it as one expression: `{joined}`"
