"""Prompt files: the only templates a workflow loads, each one inside prompts/.

Every load goes through :class:`PromptLoader`: a workflow's ``prompt:``, and a template's
``{% include %}``, ``{% import %}`` and ``{% extends %}``, while checking and while running.
A name must resolve inside prompts/ after following links (a link to ``/etc/passwd`` is
refused, so its content can never reach a model), to a regular file of at most
:data:`~.files.MAX_PROMPT_BYTES`. Each file is read once per workflow, so what was checked is
what runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from jinja2 import BaseLoader, Environment, TemplateNotFound

from flowengine.language.files import MAX_PROMPT_BYTES, FileRefused, read_bytes

_INSIDE = "name a file inside prompts/, such as critique.j2"


class PromptPathError(ValueError):
    """A prompt path that is absolute, climbs out of prompts/ or links outside it."""

    def __init__(self, message: str, fix: str = _INSIDE) -> None:
        super().__init__(message)
        self.fix = fix


class PromptFileError(TemplateNotFound):
    """A prompt file that may not be loaded: outside prompts/, not a regular file, too large,
    or not UTF-8. To Jinja it is a template that does not exist."""

    def __init__(self, name: str, message: str, fix: str | None, code: str) -> None:
        super().__init__(name, message)
        self.fix = fix
        self.code = code  # the checks' problem code: prompt-path or prompt-unreadable


def prompt_file(prompts_dir: Path, name: str) -> Path:
    """The file for ``prompt: name``; raise PromptPathError if it would escape prompts/."""
    if "\0" in name:
        raise PromptPathError(f"prompt path {name!r} contains a NUL character")
    if Path(name).is_absolute() or "\\" in name:
        raise PromptPathError(f"prompt path {name!r} must be relative to prompts/")
    root = prompts_dir.resolve()
    if not Path(os.path.normpath(root / name)).is_relative_to(root):
        raise PromptPathError(f"prompt path {name!r} leads outside prompts/")
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        raise PromptPathError(
            f"prompt path {name!r} leads outside prompts/ through a link",
            "copy the file into prompts/ instead of linking to it",
        )
    return target


class PromptLoader(BaseLoader):
    """Loads templates from one prompts/ folder only, each file read once and kept."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._loaded: dict[str, tuple[str, str]] = {}

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        loaded = self._loaded.get(template)
        if loaded is None:
            loaded = self._loaded[template] = self._read(template)
        text, filename = loaded
        return text, filename, _unchanged

    def _read(self, name: str) -> tuple[str, str]:
        try:
            file = prompt_file(self.folder, name)
        except PromptPathError as exc:
            raise PromptFileError(name, str(exc), exc.fix, "prompt-path") from None
        try:
            data = read_bytes(file, MAX_PROMPT_BYTES, "a prompt file")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise TemplateNotFound(name) from None
        except FileRefused as exc:
            message = f"prompt file '{name}' {exc.message}"
            raise PromptFileError(name, message, exc.fix, "prompt-unreadable") from None
        except OSError as exc:
            message = f"cannot read prompt file '{name}': {exc.strerror}"
            raise PromptFileError(name, message, None, "prompt-unreadable") from None
        try:
            return data.decode("utf-8"), str(file)
        except UnicodeDecodeError as exc:
            message = f"prompt file '{name}' is not UTF-8 text ({exc.reason})"
            raise PromptFileError(
                name, message, "save the file as UTF-8", "prompt-unreadable"
            ) from None


def _unchanged() -> bool:
    # A file is read once: what was checked is what runs, even if the file changes meanwhile.
    return True
