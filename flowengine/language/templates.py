"""Sandboxed Jinja templates: loading from prompts/, static checks, rendering.

Templates run in Jinja's immutable sandbox with StrictUndefined, so a typo is an error and a
template cannot reach Python internals. Values passed in (model answers included) are data: they
are never rendered as templates themselves.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    StrictUndefined,
    TemplateNotFound,
    TemplateRuntimeError,
    TemplateSyntaxError,
    Undefined,
    meta,
    nodes,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

# PromptPathError and prompt_file are re-exported: they were defined here first.
from flowengine.errors import did_you_mean
from flowengine.language.guards import NameUse, name_uses
from flowengine.language.json_text import fromjson
from flowengine.language.prompt_files import PromptLoader
from flowengine.language.prompt_files import PromptPathError as PromptPathError
from flowengine.language.prompt_files import prompt_file as prompt_file
from flowengine.language.sandbox import (
    MAX_DIGITS,
    MAX_ITEMS,
    BoundedSandbox,
    TemplateTooDeep,
    binop_problem,
    tree_depth,
)
from flowengine.results import CallResult, ErrorInfo, SelectResult, Usage

_BUILTINS = "https://jinja.palletsprojects.com/en/stable/templates/#list-of-builtin-{what}s"
_SMALLER = (
    f"make a smaller value: a template makes at most {MAX_ITEMS:,} characters or items, "
    f"and numbers of at most {MAX_DIGITS:,} digits"
)
# Syntax trees this deep or deeper are compiled while checking. The shallowest that Python's
# compiler refuses is 21 nested {% for %} blocks, 23 levels deep; prompts are 4 to 10.
_COMPILE_DEPTH = 16
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


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as templates see it (``models.llama.weight``, ``model.id``); renders as its alias."""

    alias: str
    id: str
    weight: float
    provider: str

    def __str__(self) -> str:
        return self.alias


#: The fields of the plain data types templates read (results, model entries), by type.
DATA_FIELDS: dict[type, frozenset[str]] = {
    cls: frozenset(f.name for f in dataclasses.fields(cls))
    for cls in (CallResult, SelectResult, Usage, ErrorInfo, ModelInfo)
}


class PromptEnvironment(BoundedSandbox):
    """Jinja's immutable sandbox (with bounds), whose templates hold their globals in a plain dict.

    Jinja's default, a ChainMap over the environment's globals, is copied key by key on every
    render; a workflow never changes its globals after loading, and a dict copies in one step
    (about a tenth of a render's cost in the engine benchmark).
    """

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # A result's fields are plain data (strings, numbers, nested results), safe to read:
        # answering that at once spares the sandbox's general checks on most reads templates
        # make. Every other attribute of every object goes through those checks unchanged.
        fields = DATA_FIELDS.get(type(obj))
        if fields is not None and attr in fields:
            return True
        return super().is_safe_attribute(obj, attr, value)


def make_environment(prompts_dir: Path | None) -> ImmutableSandboxedEnvironment:
    loader = PromptLoader(prompts_dir) if prompts_dir is not None else None
    env = PromptEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_printed,
    )
    env.add_filter("fromjson", fromjson)
    return env


def _printed(value: Any) -> Any:
    """What ``{{ x }}`` prints: none (a skipped node, an absent optional input) prints nothing,
    not the word "None" in the middle of a prompt."""
    return "" if value is None else value


def find_prompts_dir(workflow_path: Path) -> Path | None:
    """``prompts/`` next to the workflow file, else in an ancestor folder (the project root)."""
    for folder in [workflow_path.resolve().parent, *workflow_path.resolve().parents]:
        candidate = folder / "prompts"
        if candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True)
class TemplateIssue:
    message: str
    line: int
    fix: str | None = None
    word: str | None = None  # what to point at on the line, if known


def analyse(
    env: ImmutableSandboxedEnvironment, source: str
) -> tuple[list[NameUse], list[TemplateIssue]]:
    """Parse a template: the undeclared variables it reads, and syntax or safety problems.

    A template nested deep enough is compiled too, so that whatever passes here also compiles
    when a run compiles it.
    """
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return [], [_syntax_issue(exc)]
    unknown = list(_unknown_filters(env, ast))
    if unknown:  # compiling would fail on the first of them, with less to say
        return [], [*unknown, *_unsafe(ast)]
    try:
        undeclared = meta.find_undeclared_variables(ast) - set(env.globals)
        _compile(env, source, ast)
    except TemplateSyntaxError as exc:  # from the code generator or Python's compiler
        return [], [_syntax_issue(exc)]
    uses = name_uses(ast, undeclared)
    return sorted(uses, key=lambda u: (u.line, u.name)), [*_unsafe(ast), *_too_large(ast)]


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


def _unknown_filters(
    env: ImmutableSandboxedEnvironment, ast: nodes.Template
) -> Iterator[TemplateIssue]:
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        what, known = (
            ("filter", env.filters) if isinstance(node, nodes.Filter) else ("test", env.tests)
        )
        if node.name not in known:
            fix = did_you_mean(node.name, known) or f"see {_BUILTINS.format(what=what)}"
            yield TemplateIssue(f"unknown {what} '{node.name}'", node.lineno, fix, node.name)


def _too_large(ast: nodes.Template) -> Iterator[TemplateIssue]:
    """Operations on constants whose result a run would refuse (``'a' * 3000000000``)."""
    for node in ast.find_all((nodes.Mul, nodes.Pow, nodes.Mod)):
        assert isinstance(node, nodes.BinExpr)
        if isinstance(node.left, nodes.Const) and isinstance(node.right, nodes.Const):
            problem = binop_problem(node.operator, node.left.value, node.right.value)
            if problem is not None:
                word = node.operator if node.operator != "%" else None  # `{%` has one too
                yield TemplateIssue(f"template: {problem}", node.lineno, _SMALLER, word)


def _compile(env: ImmutableSandboxedEnvironment, source: str, ast: nodes.Template) -> None:
    """Compile a template that nests deep enough to reach Python's compiler limits (20 nested
    loops, 100 levels of indentation), as a run does: a lone ``{{ expr }}`` both ways.

    Shallower templates are not compiled: that would double the time checks take.
    """
    if tree_depth(ast)[0] < _COMPILE_DEPTH:
        return
    env.compile(source)
    expr = single_expression(source)
    if expr:
        env.compile_expression(expr, undefined_to_none=False)


def _syntax_issue(exc: TemplateSyntaxError) -> TemplateIssue:
    if isinstance(exc, TemplateTooDeep):
        return _too_deep_issue(exc.lineno)
    return TemplateIssue(f"template syntax: {exc.message}", exc.lineno or 1, _syntax_fix(exc))


def _too_deep_issue(line: int) -> TemplateIssue:
    return TemplateIssue(
        "template nested too deeply",
        line,
        "nest fewer {% if %} / {% for %} blocks and brackets, and chain fewer operators; an "
        "inner part can move to a prompt file that this one includes",
    )


def _syntax_fix(exc: TemplateSyntaxError) -> str:
    text = exc.message or ""
    if "end of template" in text or "endfor" in text or "endif" in text:
        return "close every {% for %} / {% if %} block with {% endfor %} / {% endif %}"
    return "check the {{ ... }} and {% ... %} delimiters on this line"


@dataclass(frozen=True)
class Reference:
    """A template that a template includes, imports or extends by name, and where."""

    name: str
    line: int
    optional: bool = False  # `{% include ... ignore missing %}`


def references(env: ImmutableSandboxedEnvironment, source: str) -> list[Reference]:
    """The templates ``source`` names in include, import, from-import and extends tags.

    Names computed while rendering (``{% include var %}``) are not known here; the loader
    still keeps every load inside prompts/.
    """
    try:
        ast = env.parse(source)
    except TemplateSyntaxError:
        return []
    found = []
    for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        assert isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport)
        target = node.template
        items = target.items if isinstance(target, nodes.Tuple | nodes.List) else [target]
        optional = isinstance(node, nodes.Include) and node.ignore_missing
        for item in items:
            name = _const(item)
            if isinstance(name, str):
                found.append(Reference(name, node.lineno, optional))
    return found


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
        # The loader reads each file once, so asking it for the text again costs no read.
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
        try:
            value = self._expr(context)
        except RecursionError:
            raise _recursed() from None
        if isinstance(value, Undefined):
            # An expression's value is not printed, so StrictUndefined (and the sandbox, which
            # answers an unsafe read with an Undefined) would not raise by itself. What does
            # not raise is the lenient Undefined of an inline if that is false and has no else
            # (`{{ tone if tone is defined }}`): it renders as nothing, so its value is none.
            str(value)
            return None
        return value

    def render(self, context: Mapping[str, Any]) -> str:
        if self._template is None:
            return str(_printed(self.evaluate(context)))
        try:
            return self._template.render(context)
        except RecursionError:
            raise _recursed() from None


def _recursed() -> TemplateRuntimeError:
    # A macro that calls itself, or an include whose name is computed while rendering: the
    # checks cannot see either, and the run must fail the node, not the process.
    return TemplateRuntimeError("template recursed too deeply (a macro or include calling itself?)")


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
