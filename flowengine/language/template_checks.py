"""Template checks: syntax, prompt files inside prompts/, and the names each template reads.

Every template (inline, in a prompt file, or included by one) is parsed without running it; each
name it reads must be one its :class:`Names` allows, else the problem points at the template's
own line and word, in the workflow file or the prompt file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from jinja2 import TemplateNotFound, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.errors import Location, Problem, did_you_mean
from flowengine.language.fields import Shape, field_issues, optional_read
from flowengine.language.guards import NameUse, guarded_reads
from flowengine.language.prompt_files import PromptFileError
from flowengine.language.source import Source, YamlPath
from flowengine.language.templates import analyse, references

# Where a problem is, from the template's 1-based line and the word to point at (if any).
Where = Callable[[int, str | None], Location]


@dataclass(frozen=True)
class Names:
    """The names a template may read, and what to say about the ones it may not."""

    allowed: frozenset[str]
    nodes: frozenset[str]
    owner: str | None  # the node the template belongs to; None for the output mapping
    needs: tuple[str, ...] = ()  # the owner's needs, to write the fix
    unknown_ok: bool = False  # part of the file could not be read: unknown names may be there
    upstream: Collection[str] = frozenset()  # the owner's ancestors, readable by name
    hidden: frozenset[str] = frozenset()  # names this template may not read after all
    # What names hold where their fields are known (node outputs, `models`...), to check the
    # fields templates read; names the node sets itself (`vars`) hold what it computes.
    shapes: Mapping[str, Shape] = field(default_factory=dict)
    own: frozenset[str] = frozenset()
    what: str = "template"  # what messages call the text: a template, or a condition
    # Names this template may not read for a reason of their own (a node inside a loop...):
    # the rest of the message after "template", the fix and the code; None for other names.
    explain: Callable[[str], tuple[str, str, str] | None] | None = None
    optional: frozenset[str] = frozenset()  # inputs a run may leave undefined: no default

    def allows(self, name: str) -> bool:
        return name not in self.hidden and (name in self.allowed or name in self.upstream)

    def shape(self, name: str) -> Shape | None:
        return None if name in self.hidden or name in self.own else self.shapes.get(name)

    def problem(self, use: NameUse) -> tuple[int, str, str | None, str] | None:
        """What is wrong with how a template reads a name: the template line, message, fix
        and code; None if nothing.

        A name that may be missing is fine where Jinja's idioms guard it (``is defined``,
        ``default``); an optional input, also where only its truth is tested (``{% if x %}``).
        A node's output is no such name: whether it is there would depend on timing.
        """
        name = use.name
        if self.allows(name):
            if name in self.optional and use.untested is not None:
                return use.untested, *optional_read(name, name)
            return None
        what = self.what
        explained = self.explain(name) if self.explain is not None else None
        if explained is not None:
            rest, fix, code = explained
            return use.line, f"{what} {rest}", fix, code
        if name == self.owner:
            return (
                use.line,
                f"{what} uses '{name}', the output of its own node",
                "read an upstream node instead",
                "own-output",
            )
        if name in self.nodes:
            needs = ", ".join([*self.needs, name])
            return (
                use.line,
                f"{what} uses node '{name}', which is not among the needs of node '{self.owner}'",
                f"add '{name}' to the needs of '{self.owner}': `needs: [{needs}]`",
                "not-a-need",
            )
        if use.unguarded is None:
            return None
        if name == "model" and what == "condition":
            return (
                use.unguarded,
                "condition uses 'model': a condition is evaluated once, before any model is called",
                "test the node's inputs or the outputs of its needs instead",
                "fanout-only-name",
            )
        if name == "model":
            return (
                use.unguarded,
                "template uses 'model', which exists only in fanout nodes",
                "use the node's `model:` value instead",
                "fanout-only-name",
            )
        if self.unknown_ok:
            return None
        known = sorted({*self.allowed, *self.upstream} - self.hidden)
        fix = did_you_mean(name, known) or (
            f"read it only where `{{% if {name} is defined %}}` holds, or as "
            f"`{{{{ {name} | default('') }}}}`"
            if use.guarded
            else f"names known here: {', '.join(known)}; declare an input under `inputs:`"
        )
        return use.unguarded, f"{what} uses undefined name '{name}'", fix, "undefined-name"

    def with_names(self, names: Iterable[str], *, drop: Iterable[str] = ()) -> Names:
        """These names (set by the node itself) and ``names``, less ``drop``."""
        return replace(
            self,
            allowed=self.allowed | set(names),
            hidden=(self.hidden - set(names)) | set(drop),
            own=self.own | set(names),
            optional=self.optional - set(names),
        )


class TemplateChecks:
    """The template half of the workflow checker (mixed into ``checks.Checker``)."""

    source: Source
    env: ImmutableSandboxedEnvironment
    prompts_dir: Path | None
    problems: list[Problem]

    def add(
        self, path: YamlPath, message: str, fix: str | None, *, code: str, key: bool = False
    ) -> None:
        self.problems.append(Problem(self.source.locate(path, key=key), message, fix, code))

    def check_inline(self, path: YamlPath, text: str, names: Names, *, bare: bool = False) -> None:
        """An inline template; ``bare``: the file holds it without its ``{{ }}`` (a condition)."""
        base = self.source.locate(path)
        block = self.source.is_block_scalar(path)

        def where(line: int, word: str | None) -> Location:
            if base.line is None:
                return base
            if block:
                # A block scalar's text starts on the line after its `|` or `>` indicator.
                file_line = base.line + line
                text_line = self.source.at(file_line).source_line or ""
                start = len(text_line) - len(text_line.lstrip()) + 1
            elif line == 1:
                file_line, start = base.line, base.column or 1
            else:
                # A quoted string folded over several lines: the template's lines do not map
                # to the file's, so point at the start of the string.
                return base
            column = _column_of(self.source.at(file_line).source_line, word, start, bare)
            return self.source.at(file_line, column or start)

        self.check_template(text, names, where)

    def check_prompt_file(self, path: YamlPath, name: str, names: Names) -> None:
        if self.prompts_dir is None:
            self.add(
                path,
                f"prompt file '{name}': there is no prompts/ folder beside the workflow "
                "or above it",
                "create prompts/ next to the workflow, or write the prompt inline with `template:`",
                code="no-prompts-folder",
            )
            return
        self.check_prompt(path, name, names, seen=set())

    def check_prompt(self, path: YamlPath, name: str, names: Names, seen: set[str]) -> None:
        self.check_loaded(name, names, self.source.locate(path), (), seen)

    def check_loaded(
        self, name: str, names: Names, at: Location, chain: tuple[str, ...], seen: set[str]
    ) -> None:
        """The prompt file ``name``, loaded as a run loads it; a load problem is put ``at``."""
        seen.add(name)
        if self.prompts_dir is None or self.env.loader is None:
            message = f"template includes '{name}', but there is no prompts/ folder"
            fix = "create prompts/ next to the workflow, or write the included text inline"
            self.problems.append(Problem(at, message, fix, "no-prompts-folder"))
            return
        try:
            text, file, _ = self.env.loader.get_source(self.env, name)
        except PromptFileError as exc:
            self.problems.append(Problem(at, str(exc), exc.fix, exc.code))
            return
        except TemplateNotFound:
            existing = sorted(
                str(p.relative_to(self.prompts_dir)) for p in self.prompts_dir.rglob("*.j2")
            )
            fix = (
                did_you_mean(name, existing)
                or f"files in prompts/: {', '.join(existing) or 'none'}"
            )
            message = f"prompt file '{name}' not found in {_display(self.prompts_dir)}/"
            self.problems.append(Problem(at, message, fix, "prompt-not-found"))
            return
        file_source = Source(_display(Path(file or name)), text)

        def where(line: int, word: str | None) -> Location:
            return file_source.at(line, _column_of(file_source.at(line).source_line, word, 1))

        self.check_template(text, names, where, (*chain, name), seen)

    def check_includes(
        self, text: str, names: Names, where: Where, chain: tuple[str, ...], seen: set[str]
    ) -> None:
        """What a template includes, imports or extends, each at the line of its tag."""
        for reference in references(self.env, text):
            at = where(reference.line, reference.name)
            if reference.name in chain:
                cycle = " -> ".join([*chain[chain.index(reference.name) :], reference.name])
                message = f"cycle in includes: {cycle}"
                fix = "remove one of these includes: rendering them would never end"
                self.problems.append(Problem(at, message, fix, "include-cycle"))
            elif reference.name not in seen and not (
                reference.optional and not self.loadable(reference.name)
            ):
                self.check_loaded(reference.name, names, at, chain, seen)

    def loadable(self, name: str) -> bool:
        try:
            return self.env.loader is not None and bool(self.env.loader.get_source(self.env, name))
        except PromptFileError:
            return True  # there, but refused: `ignore missing` does not excuse that
        except TemplateNotFound:
            return False

    def check_template(
        self,
        text: str,
        names: Names,
        where: Where,
        chain: tuple[str, ...] = (),
        seen: set[str] | None = None,
    ) -> None:
        """A template's own problems, then those of the prompt files it includes.

        ``chain`` is the prompt files that include this one, to tell a cycle; ``seen`` the ones
        already checked for this template.
        """
        self.check_includes(text, names, where, chain, set() if seen is None else seen)
        try:
            uses, issues = analyse(self.env, text)
        except TemplateNotFound as exc:  # pragma: no cover - analyse does not load files
            self.problems.append(
                Problem(where(1, None), f"template not found: {exc}", None, "template")
            )
            return
        for issue in issues:
            at = where(issue.line, issue.word)
            self.problems.append(Problem(at, issue.message, issue.fix, "template"))
        for use in uses:
            found = names.problem(use)
            if found:
                line, message, fix, code = found
                self.problems.append(Problem(where(line, use.name), message, fix, code))
        self.check_fields(text, names, where)

    def check_fields(self, text: str, names: Names, where: Where) -> None:
        """The fields the template reads of node outputs, models and metadata exist."""
        try:
            # Parsed again: analyse() keeps its syntax tree to itself.
            ast = self.env.parse(text)
        except TemplateSyntaxError:
            return  # analyse() reported it
        for issue in field_issues(ast, names.shape, guarded_reads(ast)):
            at = where(issue.line, issue.word)
            self.problems.append(Problem(at, issue.message, issue.fix, issue.code))


_TAG = re.compile(r"\{\{.*?(?:\}\}|$)|\{%.*?(?:%\}|$)")


def _column_of(line: str | None, word: str | None, start: int, bare: bool = False) -> int | None:
    """The 1-based column of ``word`` inside a {{ }} or {% %} tag of ``line``, from ``start``;
    anywhere from ``start`` when the line holds a ``bare`` expression."""
    if not line or not word:
        return None
    name = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)")
    if bare:
        found = name.search(line, start - 1)
        return found.start() + 1 if found else None
    for tag in _TAG.finditer(line, start - 1):
        found = name.search(line, tag.start(), tag.end())
        if found:
            return found.start() + 1
    return None


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
