"""`flowengine report`: one self-contained HTML page of a stored run, or of a batch output."""

from __future__ import annotations

import re
from pathlib import Path

import click

from flowengine.cli.base import err, handle_errors
from flowengine.cli.logs import verbose_option
from flowengine.cli.store_cmds import checked, db_option
from flowengine.errors import UsageError


@click.command()
@click.argument("run_id", required=False)
@click.option(
    "--batch",
    "batch_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report on a batch output file (JSON lines) instead of a stored run.",
)
@click.option(
    "-o",
    "--output",
    help="Where to write the page; `-` for stdout. Default: report-<run id>.html, or "
    "report-<batch file name>.html, in the current directory.",
)
@db_option
@verbose_option
@handle_errors
def report(run_id: str | None, batch_file: Path | None, output: str | None, db: str | None) -> None:
    """One HTML page of a stored run (RUN_ID or a unique prefix): its graph, timeline, responses,
    comparison, per-model metrics, prompts and result. It has no script and needs no network.

    With --batch OUT.jsonl, a page of a batch's rows instead, those that did not succeed first.
    """
    from flowengine.web.report import batch_report, run_report

    if (run_id is None) == (batch_file is None):
        raise UsageError("name one run id, or --batch with an output file", "not both")
    if batch_file is not None:
        page = batch_report(batch_file)
        default = f"report-{_safe(batch_file.stem)}.html"
    else:
        from flowengine.store.records import load_run

        record = checked(db, lambda store: load_run(store, str(run_id)))
        page = run_report(record)
        default = f"report-{record.result.run_id}.html"
    _write(page, output or default)


def _write(page: str, output: str) -> None:
    if output == "-":
        click.echo(page, nl=False)
        return
    path = Path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"{path}: cannot write the report ({exc.strerror or exc})", "choose another -o"
        ) from exc
    err(f"wrote {path}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name) or "batch"
