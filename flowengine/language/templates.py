"""Sandboxed Jinja templates: loading from prompts/, static checks, rendering.

Templates run in Jinja's immutable sandbox with StrictUndefined, so a typo is an error and a
template cannot reach Python internals. Values passed in (model answers included) are data: they
are never rendered as templates themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
    meta,
    nodes,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
TEMPLATE_MARKERS = ("{{", "{%", "{#")


def is_template(text: str) -> bool:
    return any(marker in text for marker in TEMPLATE_MARKERS)


def single_expression(text: str) -> str | None:
    """The expression of a string that is exactly one ``{{ expr }}``, else None."""
    match = _SINGLE_EXPR.match(text)
    if not match:
        return None
    expr = match.group("expr")
    return None if any(m in expr for m in ("{{", "}}", "{%", "%}")) else expr.strip()


class PromptPathError(ValueError):
    """A prompt path that is absolute or climbs out of the prompts directory."""


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, whose templates hold their globals in a plain dict.

    Jinja's default, a ChainMap over the environment's globals, is copied key by key on every
    render; a workflow never changes its globals after loading, and a dict copies in one step
    (about a tenth of a render's cost in the engine benchmark).
    """

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}


def make_environment(prompts_dir: Path | None) -> ImmutableSandboxedEnvironment:
    loader = FileSystemLoader(str(prompts_dir)) if prompts_dir is not None else None
    return PromptEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def find_prompts_dir(workflow_path: Path) -> Path | None:
    """``prompts/`` next to the workflow file, else in an ancestor folder (the project root)."""
    for folder in [workflow_path.resolve().parent, *workflow_path.resolve().parents]:
        candidate = folder / "prompts"
        if candidate.is_dir():
            return candidate
    return None


def prompt_file(prompts_dir: Path, name: str) -> Path:
    """The file for ``prompt: name``; raise PromptPathError if it would escape prompts/."""
    if Path(name).is_absolute() or "\\" in name:
        raise PromptPathError(f"prompt path {name!r} must be relative to prompts/")
    root = prompts_dir.resolve()
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        raise PromptPathError(f"prompt path {name!r} leads outside prompts/")
    return target


@dataclass(frozen=True)
class NameUse:
    """A variable a template reads, and the template line where it first does."""

    name: str
    line: int


@dataclass(frozen=True)
class TemplateIssue:
    message: str
    line: int
    fix: str | None = None
    word: str | None = None  # what to point at on the line, if known


def analyse(
    env: ImmutableSandboxedEnvironment, source: str
) -> tuple[list[NameUse], list[TemplateIssue]]:
    """Parse a template: the undeclared variables it reads, and syntax or safety problems."""
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return [], [
            TemplateIssue(f"template syntax: {exc.message}", exc.lineno or 1, _syntax_fix(exc))
        ]
    undeclared = meta.find_undeclared_variables(ast) - set(env.globals)
    first_line: dict[str, int] = {}
    for name_node in ast.find_all(nodes.Name):
        if name_node.name in undeclared and name_node.ctx == "load":
            first_line.setdefault(name_node.name, name_node.lineno)
    uses = [NameUse(name, first_line.get(name, 1)) for name in sorted(undeclared)]
    return sorted(uses, key=lambda u: (u.line, u.name)), list(_unsafe(ast))


def _unsafe(ast: nodes.Template) -> Iterator[TemplateIssue]:
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            attr: Any = node.attr
        else:
            assert isinstance(node, nodes.Getitem)
            attr = _const(node.arg)
        if isinstance(attr, str) and attr.startswith("_"):
            yield TemplateIssue(
                f"template reads '{attr}': names starting with '_' are not accessible",
                node.lineno,
                "use only public fields such as .content, .model or .confidence",
                attr,
            )


def _const(node: nodes.Node) -> Any:
    return node.value if isinstance(node, nodes.Const) else None


def _syntax_fix(exc: TemplateSyntaxError) -> str:
    text = exc.message or ""
    if "end of template" in text or "endfor" in text or "endif" in text:
        return "close every {% for %} / {% if %} block with {% endfor %} / {% endif %}"
    return "check the {{ ... }} and {% ... %} delimiters on this line"


def included_templates(env: ImmutableSandboxedEnvironment, source: str) -> list[str]:
    try:
        return [n for n in meta.find_referenced_templates(env.parse(source)) if n is not None]
    except TemplateSyntaxError:
        return []


class CompiledTemplate:
    """A template ready to use: one native expression, or a text template.

    A string that is exactly one ``{{ expr }}`` keeps the expression's own value (a list stays a
    list); anything else renders to text.
    """

    def __init__(self, env: ImmutableSandboxedEnvironment, source: str, name: str = "<template>"):
        self.source = source
        self.name = name
        expr = single_expression(source)
        self._expr = env.compile_expression(expr, undefined_to_none=False) if expr else None
        self._template = None if expr else env.from_string(source)
        self._names = _names_read(env, source)

    @classmethod
    def from_file(cls, env: ImmutableSandboxedEnvironment, name: str) -> CompiledTemplate:
        """The prompt file ``name`` from the environment's prompts/ folder, as a text template."""
        if env.loader is None:
            raise TemplateNotFound(name)
        self = cls.__new__(cls)
        self.source = ""
        self.name = name
        self._expr = None
        self._template = env.get_template(name)
        self._names = _names_read(env, env.loader.get_source(env, name)[0])
        return self

    def may_read(self, name: str) -> bool:
        """Whether rendering may read the variable ``name`` (always, when it includes others)."""
        return self._names is None or name in self._names

    @property
    def is_native(self) -> bool:
        return self._expr is not None

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The native value for ``{{ expr }}``; the rendered string for anything else."""
        if self._expr is None:
            return self.render(context)
        value = self._expr(context)
        if isinstance(value, Undefined):
            # An expression's value is not printed, so StrictUndefined (and the sandbox, which
            # answers an unsafe read with an Undefined) would not raise by itself.
            str(value)
        return value

    def render(self, context: Mapping[str, Any]) -> str:
        if self._template is None:
            return str(self.evaluate(context))
        return self._template.render(context)


def _names_read(env: ImmutableSandboxedEnvironment, source: str) -> frozenset[str] | None:
    """The variables a template reads; None when it includes or imports other templates."""
    ast = env.parse(source)
    if any(True for _ in meta.find_referenced_templates(ast)):
        return None
    return frozenset(meta.find_undeclared_variables(ast))


def compile_value(env: ImmutableSandboxedEnvironment, value: Any) -> Any:
    """Compile every template string inside a value (a mapping, list or scalar)."""
    if isinstance(value, str):
        return CompiledTemplate(env, value) if is_template(value) else value
    if isinstance(value, dict):
        return {k: compile_value(env, v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(env, v) for v in value]
    return value


def evaluate_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Evaluate a value produced by :func:`compile_value`."""
    if isinstance(value, CompiledTemplate):
        return value.evaluate(context)
    if isinstance(value, dict):
        return {k: evaluate_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate_value(v, context) for v in value]
    return value
