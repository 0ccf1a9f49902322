"""Template checks: syntax, prompt files inside prompts/, and the names each template reads.

Every template (inline, in a prompt file, or included by one) is parsed without running it; each
name it reads must be one its :class:`Names` allows, else the problem points at the template's
own line and word, in the workflow file or the prompt file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from jinja2 import TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from flowengine.errors import Location, Problem, did_you_mean
from flowengine.language.source import Source, YamlPath
from flowengine.language.templates import PromptPathError, analyse, included_templates, prompt_file

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

    def allows(self, name: str) -> bool:
        return name not in self.hidden and (name in self.allowed or name in self.upstream)

    def problem(self, name: str) -> tuple[str, str | None] | None:
        if self.allows(name):
            return None
        if name == self.owner:
            return (
                f"template uses '{name}', the output of its own node",
                "read an upstream node instead",
            )
        if name in self.nodes:
            needs = ", ".join([*self.needs, name])
            return (
                f"template uses node '{name}', which is not among the needs of node '{self.owner}'",
                f"add '{name}' to the needs of '{self.owner}': `needs: [{needs}]`",
            )
        if name == "model":
            return (
                "template uses 'model', which exists only in fanout nodes",
                "use the node's `model:` value instead",
            )
        if self.unknown_ok:
            return None
        known = sorted({*self.allowed, *self.upstream} - self.hidden)
        fix = did_you_mean(name, known) or (
            f"names known here: {', '.join(known)}; declare an input under `inputs:`"
        )
        return f"template uses undefined name '{name}'", fix

    def with_names(self, names: Iterable[str], *, drop: Iterable[str] = ()) -> Names:
        """These names and ``names``, less ``drop``."""
        return replace(
            self,
            allowed=self.allowed | set(names),
            hidden=(self.hidden - set(names)) | set(drop),
        )


class TemplateChecks:
    """The template half of the workflow checker (mixed into ``checks.Checker``)."""

    source: Source
    env: ImmutableSandboxedEnvironment
    prompts_dir: Path | None
    problems: list[Problem]
    partial: bool

    def add(
        self, path: YamlPath, message: str, fix: str | None = None, *, key: bool = False
    ) -> None:
        self.problems.append(Problem(self.source.locate(path, key=key), message, fix))

    def check_inline(self, path: YamlPath, text: str, names: Names) -> None:
        base = self.source.locate(path)
        raw = _value_at(self.source.root, path)
        block = isinstance(raw, LiteralScalarString | FoldedScalarString)

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
            column = _column_of(self.source.at(file_line).source_line, word, start)
            return self.source.at(file_line, column or start)

        self.check_template(text, names, where)

    def check_prompt_file(self, path: YamlPath, name: str, names: Names) -> None:
        if self.partial:
            return
        if self.prompts_dir is None:
            self.add(
                path,
                f"prompt file '{name}': there is no prompts/ folder beside the workflow "
                "or above it",
                "create prompts/ next to the workflow, or write the prompt inline with `template:`",
            )
            return
        self.check_prompt(path, name, names, seen=set())

    def check_prompt(self, path: YamlPath, name: str, names: Names, seen: set[str]) -> None:
        assert self.prompts_dir is not None
        try:
            file = prompt_file(self.prompts_dir, name)
        except PromptPathError as exc:
            self.add(path, str(exc), "name a file inside prompts/, such as critique.j2")
            return
        if name in seen:
            return
        seen.add(name)
        try:
            text = file.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            existing = sorted(
                str(p.relative_to(self.prompts_dir)) for p in self.prompts_dir.rglob("*.j2")
            )
            fix = (
                did_you_mean(name, existing)
                or f"files in prompts/: {', '.join(existing) or 'none'}"
            )
            self.add(path, f"prompt file '{name}' not found in {_display(self.prompts_dir)}/", fix)
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.add(path, f"cannot read prompt file '{name}': {exc}")
            return
        display = _display(file)
        file_source = Source(display, text)

        def where(line: int, word: str | None) -> Location:
            return file_source.at(line, _column_of(file_source.at(line).source_line, word, 1))

        self.check_template(text, names, where)
        for child in included_templates(self.env, text):
            self.check_prompt(path, child, names, seen)

    def check_template(self, text: str, names: Names, where: Where) -> None:
        try:
            uses, issues = analyse(self.env, text)
        except TemplateNotFound as exc:  # pragma: no cover - analyse does not load files
            self.problems.append(Problem(where(1, None), f"template not found: {exc}"))
            return
        for issue in issues:
            self.problems.append(Problem(where(issue.line, issue.word), issue.message, issue.fix))
        for use in uses:
            found = names.problem(use.name)
            if found:
                message, fix = found
                self.problems.append(Problem(where(use.line, use.name), message, fix))


_TAG = re.compile(r"\{\{.*?(?:\}\}|$)|\{%.*?(?:%\}|$)")


def _column_of(line: str | None, word: str | None, start: int) -> int | None:
    """The 1-based column of ``word`` inside a {{ }} or {% %} tag of ``line``, from ``start``."""
    if not line or not word:
        return None
    name = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)")
    for tag in _TAG.finditer(line, start - 1):
        found = name.search(line, tag.start(), tag.end())
        if found:
            return found.start() + 1
    return None


def _value_at(root: object, path: YamlPath) -> object:
    node = root
    for part in path:
        try:
            node = node[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
