"""`flowengine init`: a starter project that validates and runs --offline at once."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from flowengine.cli.base import err, handle_errors
from flowengine.cli.logs import verbose_option
from flowengine.cli.starter import starter_files
from flowengine.errors import UsageError
from flowengine.shipped import starter_dir


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@verbose_option
@handle_errors
def init(directory: str) -> None:
    """Write a starter project that validates and runs --offline at once.

    DIRECTORY (default: the current one) gets workflows/, prompts/, the JSON Schema and a
    README. It is created if missing; a file already there is never overwritten.
    """
    source, target = starter_dir(), Path(directory)
    files = starter_files()
    taken = [target / name for name in files if (target / name).exists()]
    if taken:
        more = f", and {len(taken) - 1} more of the starter's files" if len(taken) > 1 else ""
        raise UsageError(
            f"{taken[0]} already exists{more}; init never overwrites a file",
            f"move {'them' if more else 'it'} away, or name a new or empty directory: "
            "flowengine init DIR",
        )
    for name in files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        with (target / name).open("xb") as out:  # "x": never over a file made meanwhile
            out.write((source / name).read_bytes())
    err(f"wrote a starter project in {target}/: {', '.join(_summary(files))}")
    err("next:")
    if target.resolve() != Path.cwd().resolve():
        err(f"  cd {shlex.quote(directory)}")
    err("  flowengine validate workflows/*.yaml")
    err('  flowengine run workflows/critique.yaml --offline --prompt "Explain quantum computing"')


def _summary(files: list[Path]) -> list[str]:
    """``README.md, workflows/ (3 files)``: top-level files, then folders with their counts."""
    tops = sorted({name.parts[0] for name in files})
    counts = {top: sum(1 for name in files if name.parts[0] == top) for top in tops}
    return [
        top if counts[top] == 1 and Path(top) in files else f"{top}/ ({counts[top]} files)"
        for top in tops
    ]
