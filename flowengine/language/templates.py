"""Sandboxed Jinja templates: loading from prompts/, static checks, rendering.

Templates run in Jinja's immutable sandbox with StrictUndefined, so a typo is an error and a
template cannot reach Python internals. Values passed in (model answers included) are data: they
are never rendered as templates themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
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


#: Types whose listed fields templates may read without the sandbox's per-read checks: plain
#: data (results, model entries) whose fields are values, never callables or internals.
DATA_FIELDS: dict[type, frozenset[str]] = {}


def expose(cls: type, fields: Iterable[str]) -> None:
    """Let templates read ``fields`` of ``cls`` directly (they are data, so safe)."""
    DATA_FIELDS[cls] = frozenset(fields)


class PromptSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with a direct path for the fields of exposed data types.

    Every other read goes through the sandbox's checks unchanged.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        fields = DATA_FIELDS.get(type(obj))
        if fields is not None and attribute in fields:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)


class Scope(dict[str, Any]):
    """Template variables that already hold the environment's globals (``range``, ...).

    Rendering a Scope shares it with Jinja instead of copying it twice per render, which is
    what ``Template.render`` does with a plain dict.
    """

    @classmethod
    def of(cls, env: ImmutableSandboxedEnvironment, values: Mapping[str, Any]) -> Scope:
        scope = cls(env.globals)
        scope.update(values)
        return scope

    def child(self, **values: Any) -> Scope:
        scope = Scope(self)
        scope.update(values)
        return scope


def make_environment(prompts_dir: Path | None) -> ImmutableSandboxedEnvironment:
    loader = FileSystemLoader(str(prompts_dir)) if prompts_dir is not None else None
    return PromptSandbox(
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
    from jinja2 import meta

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
    from jinja2 import meta

    try:
        return [n for n in meta.find_referenced_templates(env.parse(source)) if n is not None]
    except TemplateSyntaxError:
        return []


class CompiledTemplate:
    """A template ready to render: one native expression, or a text template.

    The commonest templates take a direct path that gives exactly what Jinja gives: a single
    ``{{ name }}`` or ``{{ name.attr }}`` is read straight from the variables, and a text made
    only of literal text and such reads is joined from its parts. Anything else, and anything
    unusual on the way (an undefined name, an unsafe attribute), goes to compiled Jinja, which
    renders it or raises its own error.
    """

    def __init__(self, env: ImmutableSandboxedEnvironment, source: str, name: str = "<template>"):
        self.source = source
        self.name = name
        self._env = env
        expr = single_expression(source)
        self._expr = env.compile_expression(expr, undefined_to_none=False) if expr else None
        self._path = _attribute_path(env, expr) if expr else None
        self._template: Template | None = None
        self._parts: tuple[str | tuple[str, ...], ...] | None = None
        if self._expr is None:
            self._compile(source)

    @classmethod
    def from_file(cls, env: ImmutableSandboxedEnvironment, name: str) -> CompiledTemplate:
        if env.loader is None:
            raise TemplateNotFound(name)
        # Read once, then compiled and taken apart from the same text (Loader.load's steps,
        # without Jinja's cache: a plan compiles each prompt file once).
        source, filename, uptodate = env.loader.get_source(env, name)
        self = cls.__new__(cls)
        self.name = name
        self.source = ""
        self._env = env
        self._expr = None
        self._path = None
        self._compile(source, name, filename, uptodate)
        return self

    def _compile(
        self,
        source: str,
        name: str | None = None,
        filename: str | None = None,
        uptodate: Callable[[], bool] | None = None,
    ) -> None:
        """The Jinja template and its parts, from one parse of ``source``."""
        env = self._env
        ast = env.parse(source, name, filename)
        code = env.compile(ast, name, filename)
        template = env.template_class.from_code(env, code, env.make_globals(None), uptodate)
        self._template = _flat_globals(template)
        self._parts = _text_parts(ast)

    @property
    def is_native(self) -> bool:
        return self._expr is not None

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The native value for ``{{ expr }}``; the rendered string for anything else."""
        if self._expr is not None:
            value = self._read(self._path, context)
            if value is not _MISSING:
                return value
            value = self._expr(**context)
            if isinstance(value, Undefined):
                # An expression's value is not printed, so StrictUndefined (and the sandbox,
                # which answers an unsafe read with an Undefined) would not raise by itself.
                str(value)
            return value
        return self.render(context)

    def render(self, context: Mapping[str, Any]) -> str:
        if self._expr is not None:
            value = self._read(self._path, context)
            return str(self._expr(**context) if value is _MISSING else value)
        if self._parts is not None:
            text = self._join(context)
            if text is not None:
                return text
        template = self._template
        assert template is not None
        scope = context if type(context) is Scope else Scope.of(self._env, context)
        # Template.render would copy the variables twice; a shared context reads the Scope.
        ctx = template.new_context(scope, shared=True)
        try:
            return self._env.concat(template.root_render_func(ctx))
        except Exception:
            return self._env.handle_exception()

    def _join(self, context: Mapping[str, Any]) -> str | None:
        """The text from its parts as Jinja prints them (``str`` of each value), or None
        when a read is unusual and compiled Jinja must decide."""
        assert self._parts is not None
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = self._read(part, context)
            if value is _MISSING:
                return None
            try:
                out.append(value if type(value) is str else str(value))
            except Exception:
                return None  # Jinja raises it again, with the template's line
        return "".join(out)

    def _read(self, path: tuple[str, ...] | None, context: Mapping[str, Any]) -> Any:
        """``name`` or ``name.attr...`` read straight from ``context``, else _MISSING.

        A compiled template builds a whole Jinja context to read a value. Reads go through
        the sandbox's ``getattr`` as compiled code's do, and anything unusual (a name not in
        ``context``, an undefined attribute) returns _MISSING, so that Jinja reports it
        exactly as it always does.
        """
        if path is None or path[0] not in context:
            return _MISSING
        value = context[path[0]]
        for attr in path[1:]:
            if isinstance(value, Undefined):
                return _MISSING
            value = self._env.getattr(value, attr)
        return _MISSING if isinstance(value, Undefined) else value


def _flat_globals(template: Template) -> Template:
    # Jinja keeps a template's globals as a ChainMap and copies its keys into a set on every
    # render; a plain dict of the same entries reads the same and copies far faster.
    template.globals = dict(template.globals)
    return template


#: What :meth:`CompiledTemplate._read` returns when compiled Jinja must decide.
_MISSING: Any = object()


def _text_parts(ast: nodes.Template) -> tuple[str | tuple[str, ...], ...] | None:
    """The literal texts and ``name.attr`` paths of a template made only of those, in order;
    None for any other template (blocks, filters, calls, ...)."""
    if not ast.body:
        return ()
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    parts: list[str | tuple[str, ...]] = []
    for node in ast.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
            continue
        path = _path_of(node)
        if path is None:
            return None
        parts.append(path)
    return tuple(parts)


def _path_of(node: nodes.Node) -> tuple[str, ...] | None:
    """``("select", "model")`` for the node of ``select.model``; None for anything but a name
    followed by zero or more ``.attr`` reads."""
    attrs: list[str] = []
    while isinstance(node, nodes.Getattr):
        attrs.append(node.attr)
        node = node.node
    if not isinstance(node, nodes.Name) or node.ctx != "load":
        return None
    return (node.name, *reversed(attrs))


def _attribute_path(env: ImmutableSandboxedEnvironment, expr: str) -> tuple[str, ...] | None:
    """The path of the expression ``expr`` (see :func:`_path_of`), or None."""
    try:
        body = env.parse(f"{{{{ {expr} }}}}").body
    except TemplateSyntaxError:
        return None
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    return _path_of(body[0].nodes[0])


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
