"""Jinja's immutable sandbox with bounds: on what a template makes, and on how deep it nests.

- Checking a template must not run it. Jinja folds constant expressions while compiling, so
  ``{{ 'a' * 3000000000 }}`` would allocate 3 GB in ``validate``. Operators in
  ``intercepted_binops`` are never folded (``jinja2.nodes.BinExpr.as_const``) and at run time
  go through :meth:`BoundedSandbox.call_binop`, which refuses results past :data:`MAX_ITEMS`;
  filters are marked as needing the render context, which Jinja never folds either
  (``_FilterTestCommon.as_const``).
- Jinja's parser and code generator recurse once per level of nesting, and Python's compiler
  has limits of its own (20 nested loops, 100 levels of indentation): past them a template
  raises :class:`TemplateTooDeep`, a TemplateSyntaxError at the line where it nests deepest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from jinja2 import TemplateSyntaxError, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: The most characters or items a template operation may make (a prompt far past any model's
#: context), and the most digits a power may have.
MAX_ITEMS = 1_000_000
MAX_DIGITS = 100_000
#: The deepest syntax tree a template may have (prompts have 4 to 10 levels; Jinja's code
#: generator exceeds Python's recursion limit at about 400).
MAX_TREE_DEPTH = 100

_TREES_KEPT = 8
_BLOCK_TAGS = frozenset({"if", "for", "macro", "call", "filter", "with", "block", "autoescape"})
_OPENING, _CLOSING = frozenset("([{"), frozenset(")]}")
# A printf-style conversion's width and precision: `%-3000000000s`, `%.*f`.
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


class TemplateTooDeep(TemplateSyntaxError):
    """A template nested past what Jinja's parser or Python's compiler can take."""

    def __init__(self, line: int, name: str | None, filename: str | None) -> None:
        super().__init__("template nested too deeply", line, name, filename)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox that never evaluates while compiling, and bounds results."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _unfolded(func) for name, func in self.filters.items()}
        # The checks parse each template three times in a row (names, includes, fields): the
        # last few trees are kept (checking a 5000-node chain: 2.8 s without, 1.5 s with).
        self._trees: dict[str, nodes.Template] = {}

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        """Make ``func`` the filter ``name``, called only while rendering, like the others."""
        self.filters[name] = _unfolded(func)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        problem = binop_problem(operator, left, right)
        if problem is not None:
            raise SecurityError(problem)
        return super().call_binop(context, operator, left, right)

    def parse(self, source: str, name: str | None = None, filename: str | None = None) -> Any:
        if name is None and filename is None and source in self._trees:
            return self._trees[source]
        try:
            tree = super().parse(source, name, filename)
        except RecursionError:
            raise self.too_deep(source, name, filename) from None
        # `a + b + ... ` parses without recursing, into a tree as deep as its terms: every
        # later walk over the tree (Jinja's code generator too) recurses, so refuse it here.
        depth, line = tree_depth(tree)
        if depth > MAX_TREE_DEPTH:
            raise TemplateTooDeep(line, name, filename)
        if name is None and filename is None:
            if len(self._trees) >= _TREES_KEPT:
                self._trees.pop(next(iter(self._trees), ""), None)  # the oldest
            self._trees[source] = tree
        return tree

    def compile(
        self,
        source: str | nodes.Template,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        try:
            return super().compile(source, name, filename, raw, defer_init)  # type: ignore[call-overload]
        except (RecursionError, SyntaxError):  # Python's own nesting limits: SyntaxError
            text = source if isinstance(source, str) else ""
            raise self.too_deep(text, name, filename) from None

    def compile_expression(self, source: str, undefined_to_none: bool = True) -> Any:
        try:
            return super().compile_expression(source, undefined_to_none)
        except (RecursionError, SyntaxError):
            raise self.too_deep(source, None, None) from None

    def too_deep(self, source: str, name: str | None, filename: str | None) -> TemplateTooDeep:
        return TemplateTooDeep(_deepest_line(self, source), name, filename)


def binop_problem(operator: str, left: Any, right: Any) -> str | None:
    """Why ``left operator right`` would make too much, or None."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                items = len(seq) * times
                if items > MAX_ITEMS:
                    return f"'*' would make {items:,} items; the most is {MAX_ITEMS:,}"
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            digits = int(right * math.log10(abs(left))) + 1
            if digits > MAX_DIGITS:
                return (
                    f"'**' would make a number of about {digits:,} digits; "
                    f"the most is {MAX_DIGITS:,}"
                )
    elif operator == "%" and isinstance(left, str):
        width = _printf_width(left, right if isinstance(right, tuple) else (right,))
        if width > MAX_ITEMS:
            return f"'%' would pad to {width:,} characters; the most is {MAX_ITEMS:,}"
    return None


def _printf_width(template: str, values: tuple[Any, ...]) -> int:
    """The widest field ``template % values`` pads to; a ``*`` width counts the widest int."""
    star = max((v for v in values if isinstance(v, int)), default=0)
    widest = 0
    for found in _PRINTF.finditer(template):
        for size in found.groups():
            if size is not None:
                widest = max(widest, star if size == "*" else int(size))
    return widest


def _unfolded(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a filter that Jinja calls only while rendering, never while compiling."""
    kind = getattr(getattr(func, "jinja_pass_arg", None), "name", None)

    @pass_context
    def call(context: Context, *args: Any, **kwargs: Any) -> Any:
        if kind == "context":
            return func(context, *args, **kwargs)
        if kind == "eval_context":
            return func(context.eval_ctx, *args, **kwargs)
        if kind == "environment":
            return func(context.environment, *args, **kwargs)
        return func(*args, **kwargs)

    call.__name__ = getattr(func, "__name__", "filter")
    call.__doc__ = func.__doc__
    return call


def tree_depth(tree: nodes.Node) -> tuple[int, int]:
    """How deep a syntax tree is, and the template line of its deepest node (no recursion)."""
    deepest, line = 0, 1
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest, line = depth, getattr(node, "lineno", line)
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return deepest, line


def _deepest_line(env: BoundedSandbox, source: str) -> int:
    """The line where brackets and blocks nest deepest, by a scan that does not recurse."""
    depth = deepest = 0
    line = 1
    after_block_begin = False
    try:
        for lineno, kind, value in env.lexer.tokeniter(source, None):
            if kind == "whitespace":
                continue
            step = 0
            if kind == "operator":
                step = 1 if value in _OPENING else -1 if value in _CLOSING else 0
            elif kind == "name" and after_block_begin:
                step = 1 if value in _BLOCK_TAGS else -1 if value.startswith("end") else 0
            after_block_begin = kind == "block_begin"
            depth += step
            if depth > deepest:
                deepest, line = depth, lineno
    except TemplateSyntaxError:
        pass
    return line
