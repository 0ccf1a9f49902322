"""Commands over the store: the response cache, stored runs, and comparing a run's responses."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import TypeVar

import click

from flowengine.cli.base import cli, err, handle_errors
from flowengine.cli.render import render_comparison, render_text
from flowengine.compare import compare as compare_run
from flowengine.errors import ConfigError, UsageError
from flowengine.store.cache import ResponseCache
from flowengine.store.db import Store
from flowengine.store.records import list_runs, load_run

T = TypeVar("T")

db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False),
    help="The database file (default: $FLOWENGINE_DB, else .flowengine/flowengine.db).",
)


def checked(db: str | None, read: Callable[[Store], T]) -> T:
    """``read(store)``; ConfigError naming the file and the fix when the database is unusable,
    so that a command never reports a bad file as an empty one."""
    store = Store(db, warn=False)
    try:
        value = read(store)
    except UsageError:
        _fail_if_unusable(store)  # "no stored run" is not the news when the file is unreadable
        raise
    finally:
        store.close()
    _fail_if_unusable(store)
    return value


def _fail_if_unusable(store: Store) -> None:
    if store.error is None:
        return
    if "corrupt" in store.error:
        fix = "delete it (its cache and run records are lost), or pass --db with another file"
    elif "locked" in store.error:
        fix = "try again when the other process is done with it"
    else:
        fix = "check the file and its directory, or pass --db with another file"
    raise ConfigError(f"{store.path}: {store.error}", fix)


@cli.group()
def cache() -> None:
    """The response cache."""


@cache.command("stats")
@db_option
@handle_errors
def cache_stats(db: str | None) -> None:
    """How many responses are cached, for which models, and the file's size."""
    stats = checked(db, lambda store: ResponseCache(store).stats())
    click.echo(f"cache: {stats.path}")
    click.echo(f"entries: {stats.entries}")
    click.echo(f"size: {stats.size_bytes / 1024:.1f} KiB")
    for model, count in sorted(stats.by_model.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {model}: {count}")


@cache.command("clear")
@db_option
@handle_errors
def cache_clear(db: str | None) -> None:
    """Delete every cached response (run records are kept)."""
    removed = checked(db, lambda store: ResponseCache(store).clear())
    err(f"removed {removed} cached response{'s' if removed != 1 else ''}")


@cli.group()
def runs() -> None:
    """Stored runs: every run is recorded with its result, prompts and call timeline."""


@runs.command("list")
@db_option
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@click.option("--workflow", help="Only runs of this workflow name.")
@handle_errors
def runs_list(db: str | None, limit: int, workflow: str | None) -> None:
    """The most recent runs."""
    found = checked(db, lambda store: list_runs(store, limit=limit, workflow=workflow))
    if not found:
        err("no stored runs")
        return
    for run in found:
        cost = f"${run.cost:.6f}" if run.cost is not None else "-"
        took = f"{run.total_time:.2f}s" if run.total_time is not None else "-"
        click.echo(
            f"{run.run_id}  {run.started_at[:19]}  {run.workflow:<12} {run.status:<9} "
            f"{took:>8}  {run.calls or 0:>3} calls  {cost}"
        )


@runs.command("show")
@click.argument("run_id")
@db_option
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json")
@handle_errors
def runs_show(run_id: str, db: str | None, fmt: str) -> None:
    """One stored run: its result, and with --format json its prompts and call timeline."""
    record = checked(db, lambda store: load_run(store, run_id))
    if fmt == "text":
        click.echo(render_text(record.result), nl=False)
        click.echo(f"file: {record.file}  sha256: {record.content_hash}")
        for call in record.timeline:
            click.echo(
                f"  {call.node}/{call.model}: {call.status}, {call.attempts} attempt(s), "
                f"{call.ended - call.started:.2f}s{' (cached)' if call.cached else ''}"
            )
        return
    data = {
        "result": record.result.model_dump(mode="json"),
        "file": record.file,
        "content_hash": record.content_hash,
        "timeline": [asdict(call) for call in record.timeline],
    }
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@cli.command()
@click.argument("run_id")
@db_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def compare(run_id: str, db: str | None, fmt: str) -> None:
    """A stored run's responses side by side, and the one recommended, saying why."""
    data = compare_run(checked(db, lambda store: load_run(store, run_id)).result)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(render_comparison(data), nl=False)
