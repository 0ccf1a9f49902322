"""The one tree of flowengine errors.

::

    FlowEngineError
     ├── WorkflowError (ValueError)   a workflow file is invalid; carries every Problem found
     ├── UsageError (ValueError)      bad command-line or API arguments (inputs, overrides, flags)
     ├── ConfigError                  the environment is missing something (an API key variable)
     ├── PluginError                  a plugin cannot be loaded, or is not what it must be
     └── RunError                     a run could not complete
          └── CallError               one model or selector call failed (type, status, message)

User errors carry where the problem is (file, line, column) and how to fix it. Only the CLI
prints them; the library raises.
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass

#: did_you_mean compares the word with this many choices at most, the nearest in length:
#: difflib over 100,000 model names takes a third of a second for each unknown name.
MOST_CHOICES = 1000


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """Return "did you mean 'x'?" for the closest choice, or None when none is close."""
    candidates = list(choices)
    if len(candidates) > MOST_CHOICES:
        candidates = heapq.nsmallest(
            MOST_CHOICES, candidates, key=lambda choice: abs(len(choice) - len(word))
        )
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


@dataclass(frozen=True)
class Location:
    """A place in a source: a file with 1-based line and column, or a command-line override."""

    file: str
    line: int | None = None
    column: int | None = None
    source_line: str | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"


#: The most of a source line an error shows; a longer line is cut around the column.
LINE_SHOWN = 120


def excerpt(line: str, column: int) -> tuple[str, int]:
    """At most :data:`LINE_SHOWN` characters of ``line`` around ``column``, and the column's
    place in them: a 10 MB line makes a one-line error, not a 10 MB one."""
    if len(line) <= LINE_SHOWN:
        return line, column
    start = max(0, min(column - 1 - LINE_SHOWN // 2, len(line) - LINE_SHOWN))
    text = line[start : start + LINE_SHOWN]
    head = "…" if start > 0 else ""
    tail = "…" if start + LINE_SHOWN < len(line) else ""
    return head + text + tail, column - start + len(head)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow: where, what, and how to fix it.

    ``code`` names the kind of problem (``cycle``, ``unknown-key``, ``undefined-name``,
    ``unknown-field``...) for programs, which must decide by it and never by the message: the
    message is for people, and a name in it (a node called ``bicycle``) may contain any word.
    """

    location: Location
    message: str
    fix: str | None = None
    code: str = "error"

    def render(self) -> str:
        """``file:line:col: error: message``, the offending line with a caret, then the fix."""
        lines = [f"{self.location}: error: {self.message}"]
        loc = self.location
        if loc.source_line is not None and loc.line is not None:
            gutter = f"{loc.line:>5} | "
            text, caret = excerpt(loc.source_line.rstrip(), loc.column or 1)
            lines.append(gutter + text)
            lines.append(" " * (len(gutter) - 2) + "| " + " " * (caret - 1) + "^")
        if self.fix:
            lines.append(f"      = fix: {self.fix}")
        return "\n".join(lines)

    def sort_key(self) -> tuple[str, int, int]:
        return (self.location.file, self.location.line or 0, self.location.column or 0)


class FlowEngineError(Exception):
    """Base of every error flowengine raises on purpose."""


class WorkflowError(FlowEngineError, ValueError):
    """A workflow file is invalid. ``problems`` holds every problem found, sorted by place."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=Problem.sort_key)
        super().__init__(self.render())

    def render(self) -> str:
        body = "\n".join(p.render() for p in self.problems)
        n = len(self.problems)
        files = sorted({p.location.file for p in self.problems})
        where = files[0] if len(files) == 1 else f"{len(files)} files"
        return f"{body}\n{n} error{'s' if n != 1 else ''} in {where}"


class UsageError(FlowEngineError, ValueError):
    """Bad arguments: an unknown input, a malformed override, a flag that does not apply."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class ConfigError(FlowEngineError):
    """The environment lacks what a run needs, such as an API key variable."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class PluginError(FlowEngineError):
    """A plugin (an entry point, or an object registered from code) could not be used.

    The message names the plugin and the distribution it comes from; ``fix`` says what to do.
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class RunError(FlowEngineError):
    """A run could not complete."""


class CallError(RunError):
    """One model or selector call failed.

    ``type`` names the kind of failure (``timeout``, ``connection``, ``http``, ``api``,
    ``malformed``, ``length``, ``content_filter``, ...); ``status`` is the HTTP status or the API's
    error code; ``retryable`` says whether trying again may help; ``retry_after`` is the delay in
    seconds the server asked for, if any; ``attempts`` is how many attempts were made in all
    (set by the retry loop when it gives up).
    """

    attempts: int = 1

    def __init__(
        self,
        type: str,
        message: str,
        *,
        status: int | str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.type = type
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"{type}{f' {status}' if status is not None else ''}: {message}")

    def as_dict(self) -> dict[str, object]:
        return {"type": self.type, "status": self.status, "message": self.message}
