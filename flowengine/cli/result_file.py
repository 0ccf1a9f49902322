"""`run --out FILE`: checked before the first call; a failed write loses nothing paid for."""

from __future__ import annotations

import os
from pathlib import Path

import click

from flowengine.cli.base import err
from flowengine.errors import UsageError


def prepare(path: str) -> None:
    """Make sure a result can be written to ``path`` before any call is made.

    Missing parent directories are created, as ``batch --output`` does; a place that cannot
    take the file is a UsageError. An existing file is opened for appending, so it is left as is.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _probe(target)
    except OSError as exc:
        raise UsageError(
            f"cannot write --out {path}: {_reason(exc, target)}",
            "create the directory or choose another path",
        ) from exc


def _probe(target: Path) -> None:
    """Open ``target`` for writing without changing it; a new file is removed again."""
    if target.exists() and not target.is_file():
        return  # a pipe or a device (/dev/stdout): opening it could wait for a reader
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        os.close(os.open(target, os.O_WRONLY | os.O_APPEND))
        return
    os.close(fd)
    target.unlink()  # written after the run: until then, nothing is left behind


def _reason(exc: OSError, target: Path) -> str:
    if isinstance(exc, FileExistsError | NotADirectoryError):
        # A file where a directory belongs: "File exists" would not say which, or that.
        blocking = [p for p in reversed(target.parents) if p.exists() and not p.is_dir()]
        if blocking:
            return f"{blocking[0]} is not a directory"
    return exc.strerror or str(exc)


def write(path: str, text: str, run_id: str, db: str | None) -> bool:
    """Write the result to ``path``; if that fails, say where the result is and return False.

    The run record keeps the result; where there is none (the database was unusable), the
    result goes to stdout instead, so that it is never lost.
    """
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        reason = _reason(exc, Path(path))
        problem = f"flowengine: error: could not write the result to {path} ({reason})"
        if _recorded(run_id, db):
            err(f"{problem}; the run is recorded: flowengine runs show {run_id}")
        else:
            err(f"{problem}; the result follows on stdout")
            click.echo(text, nl=False)
        return False
    err(f"result written to {path}")
    return True


def _recorded(run_id: str, db: str | None) -> bool:
    from flowengine.store.db import Store
    from flowengine.store.records import load_run

    store = Store(db, warn=False)
    try:
        load_run(store, run_id)
    except UsageError:
        return False
    finally:
        store.close()
    return True
