"""Results out: the output file, the rows it already holds, and the lock that keeps it one batch's.

Each finished row is appended as one complete JSON line, written by one ``os.write`` loop: after
Ctrl-C or ``kill -9`` the file is valid JSONL. A write that fails (a full disk) is cut back to
the last whole line. While a batch runs it holds an exclusive lock on the file, so that a
second batch on the same output stops at once instead of running every row again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowengine.errors import RunError, UsageError
from flowengine.text import without_lone_surrogates

if sys.platform != "win32":
    import fcntl

log = logging.getLogger("flowengine.batch")

NAMED_TWICE = 5  # rows named in the warning about rows written more than once


class Output:
    """The output file of one batch: locked while it runs, appended one whole line at a time.

    Opening it creates its directory, takes the lock and, with ``resume``, reads the rows it
    already holds (``done``); without ``resume`` it must be empty.
    """

    def __init__(self, path: Path, resume: bool = False) -> None:
        self.path = path
        self.fd = _open(path)
        try:
            _lock(self.fd, path)
            # Read only now, under the lock: another batch may have written it until just now.
            self.done = done_rows(path) if resume else {}
            self.end = os.fstat(self.fd).st_size  # where the last whole line ends
            if self.end and not resume:
                raise _has_results(path)
        except BaseException:
            os.close(self.fd)
            raise

    def write(self, line: bytes) -> None:
        """Append one line; RunError if the file cannot take it, with no part of it left."""
        data = memoryview(line)
        try:
            while data:  # os.write may take less than asked (a signal, a nearly full disk)
                data = data[os.write(self.fd, data) :]
        except OSError as exc:
            # A torn line would make the file invalid JSONL. Some files (/dev/full) cannot
            # be cut; the error below says what happened all the same.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.end)
            raise RunError(
                f"{self.path}: cannot write the results ({exc.strerror or exc}); "
                "the rows written so far are kept: fix that, then run the same command "
                "with --resume"
            ) from exc
        self.end += len(line)

    def close(self) -> None:
        os.close(self.fd)  # releases the lock too


def encode(record: Mapping[str, Any]) -> bytes:
    """One output line. A lone surrogate (from a JSON escape such as ``\\ud800`` in the rows)
    has no UTF-8 form; it becomes U+FFFD, so that the file stays valid UTF-8."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError:
        return without_lone_surrogates(line).encode("utf-8")


def check_output(path: Path, resume: bool) -> None:
    """Raise UsageError now if the batch could not take ``path``: another batch is writing it,
    it cannot be written, or it holds results and ``resume`` is off. A new file is left alone."""
    if not path.exists():
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the results ({exc.strerror})") from exc
    try:
        _lock(fd, path)  # released at once by closing; the batch takes it again to run
        if os.fstat(fd).st_size and not resume:
            raise _has_results(path)
    finally:
        os.close(fd)


def _has_results(path: Path) -> UsageError:
    return UsageError(
        f"{path} already has results", "pass --resume to continue it, or choose another --output"
    )


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # "File exists" would not say that a directory is needed
        reason = f"{exc.filename} is not a directory"
        raise UsageError(f"{path}: cannot write the results ({reason})") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the results ({exc.strerror})") from exc
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the results ({exc.strerror})") from exc


def _lock(fd: int, path: Path) -> None:
    """Hold ``fd``'s file for this batch alone: two batches appending to one file would each
    run every row, and a later resume would count each row twice."""
    if sys.platform == "win32":  # no flock: there, two batches on one output are not stopped
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise UsageError(
            f"{path} is being written by another flowengine batch{_holder(fd)}",
            "wait for it to finish, or choose another --output",
        ) from exc
    except OSError:
        pass  # a file system without locks (some network mounts): run unguarded, as before


def _holder(fd: int) -> str:
    """`` (pid N)`` of the process that holds ``fd``'s file locked, where Linux tells
    (``/proc/locks``); else the empty string."""
    stat = os.fstat(fd)
    # 3: FLOCK  ADVISORY  WRITE 4242 fe:00:2171861 0 EOF  (device in hex, then the inode)
    file_id = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as locks:
            for line in locks:
                fields = line.split()
                if fields[1:2] == ["FLOCK"] and fields[5:6] == [file_id]:
                    pid = fields[4]
                    return f" (pid {pid})" if pid.isdigit() and pid != "0" else ""
    except (OSError, ValueError):
        pass
    return ""


def done_rows(path: Path) -> dict[int, str]:
    """The rows already in an output file, with their status.

    A torn last line (no newline: the machine lost power mid-write) is cut off, so that its row
    runs again. Any other line that is not a batch result is an error: cutting there would lose
    results, or another file's lines. A row written more than once (two batches at once, before
    outputs were locked) counts once, with a warning.
    """
    if not path.exists():
        return {}
    done: dict[int, str] = {}
    twice: dict[int, None] = {}  # in the order found
    keep = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                break  # only the last line can lack its newline
            found = _record_row(raw)
            if found is None:
                raise UsageError(
                    f"{path}:{line_no}: not a batch result line",
                    "choose another --output, or remove that line",
                )
            if found[0] in done:
                twice[found[0]] = None
            done[found[0]] = found[1]
            keep += len(raw)
    if keep != path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(keep)
    if twice:
        log.warning(_twice_message(path, list(twice)))
    return done


def _twice_message(path: Path, rows: list[int]) -> str:
    named = ", ".join(str(row) for row in rows[:NAMED_TWICE])
    more = ", ..." if len(rows) > NAMED_TWICE else ""
    return (
        f"{path} holds {len(rows)} rows more than once (rows {named}{more}), "
        "as when two batches write it at once; each row counts once"
    )


def _record_row(raw: bytes) -> tuple[int, str] | None:
    """(row, status) of one output line; None for a line that is not a batch result."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    row, status = record.get("row"), record.get("status")
    if not isinstance(row, int) or isinstance(row, bool) or not isinstance(status, str):
        return None
    return row, status
