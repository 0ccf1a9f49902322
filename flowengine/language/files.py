"""Bounded reads of the files a workflow names: regular files only, never more than a limit.

A FIFO or a device given as a workflow or prompt file would block the read or never end
(``/dev/zero``), and a huge file would be read whole into memory: each is refused before its
content is read, with a message that says which limit it broke.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: The largest workflow file read, in bytes.
MAX_WORKFLOW_BYTES = 10 * 1024 * 1024
#: The largest prompt file read, in bytes (a prompt far past any model's context already).
MAX_PROMPT_BYTES = 1024 * 1024

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileRefused(OSError):
    """A file that is not read: not a regular file, or larger than the limit."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def read_bytes(path: str | Path, limit: int, what: str) -> bytes:
    """The content of the regular file ``path``, refused (FileRefused) if over ``limit`` bytes.

    ``what`` names the file in messages ("a workflow file"). Raises the usual OSErrors for a
    missing file, a directory or a path that cannot be read.
    """
    _check(os.stat(path), limit, what)
    # O_NONBLOCK: if the path was swapped for a FIFO after the check, opening it must not
    # wait for a writer; the check below then refuses it.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as file:
        _check(os.fstat(file.fileno()), limit, what)
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew after the check
        raise _too_large(limit, what)
    return data


def _check(info: os.stat_result, limit: int, what: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(what)
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "a special file")
        raise FileRefused(
            f"is {kind}, not a regular file", f"name {what} saved on disk, not a pipe or device"
        )
    if info.st_size > limit:
        raise _too_large(limit, what)


TOO_LARGE_FIX = "make it smaller: keep long texts in prompt files, and data in inputs"


def _too_large(limit: int, what: str) -> FileRefused:
    return FileRefused(
        f"is larger than {size_text(limit)}, the most flowengine reads of {what}", TOO_LARGE_FIX
    )


def size_text(size: int) -> str:
    """``10485760`` -> ``"10 MB"`` (binary megabytes, as the limits are set)."""
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MB"
    return f"{size // 1024} KB" if size % 1024 == 0 else f"{size} bytes"
