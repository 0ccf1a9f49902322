"""Commands over the store: the response cache, stored runs, and comparing a run's responses.

The store and the results are imported inside each command, so that ``flowengine --help``
does not load them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from flowengine.cli.base import err, format_option, handle_errors
from flowengine.cli.logs import verbose_option
from flowengine.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from flowengine.store.db import Store
    from flowengine.store.redis_cache import RedisCache

T = TypeVar("T")

db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False),
    help="The database file (default: $FLOWENGINE_DB, else .flowengine/flowengine.db).",
)


def checked(db: str | None, read: Callable[[Store], T]) -> T:
    """``read(store)``; ConfigError naming the file and the fix when the database is unusable,
    so that a command never reports a bad file as an empty one."""
    from flowengine.store.db import Store

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


def on_redis(use: Callable[[RedisCache], Awaitable[T]]) -> T | None:
    """``use(cache)`` on the cache in Redis when the environment shares it there; else None."""
    import asyncio
    import os

    from flowengine.run.sharing import Sharing

    async def go() -> T | None:
        sharing = Sharing(os.environ)
        cache = sharing.redis_cache()
        try:
            return None if cache is None else await use(cache)
        finally:
            await sharing.aclose()

    return asyncio.run(go())


@click.group()
def cache() -> None:
    """The response cache."""


@cache.command("stats")
@db_option
@verbose_option
@handle_errors
def cache_stats(db: str | None) -> None:
    """How many responses are cached, for which models, and the file's size (or, with
    FLOWENGINE_REDIS_URL, the shared cache's)."""
    from flowengine.store.cache import ResponseCache

    stats = on_redis(lambda cache: cache.stats())
    if stats is None:
        stats = checked(db, lambda store: ResponseCache(store).stats())
    click.echo(f"cache: {stats.path}")
    click.echo(f"entries: {stats.entries}")
    click.echo(f"size: {stats.size_bytes / 1024:.1f} KiB")
    for model, count in sorted(stats.by_model.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {model}: {count}")


@cache.command("clear")
@db_option
@verbose_option
@handle_errors
def cache_clear(db: str | None) -> None:
    """Delete every cached response (run records are kept); with FLOWENGINE_REDIS_URL, the
    shared cache's, for every process using it."""
    from flowengine.store.cache import ResponseCache

    removed = on_redis(lambda cache: cache.clear())
    if removed is None:
        removed = checked(db, lambda store: ResponseCache(store).clear())
    err(f"removed {removed} cached response{'s' if removed != 1 else ''}")


@click.group()
def runs() -> None:
    """Stored runs: every run is recorded with its result, prompts and call timeline."""


@runs.command("list")
@db_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many runs, newest first.",
)
@click.option("--workflow", help="Only runs of this workflow name.")
@format_option(
    help="json: a list of {run_id, workflow, status, started_at, total_time, calls, cost}."
)
@verbose_option
@handle_errors
def runs_list(db: str | None, limit: int, workflow: str | None, fmt: str) -> None:
    """The most recent runs."""
    from dataclasses import asdict

    from flowengine.store.records import list_runs

    found = checked(db, lambda store: list_runs(store, limit=limit, workflow=workflow))
    if fmt == "json":
        click.echo(json.dumps([asdict(run) for run in found], indent=2))
        return
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
@format_option(default="json")
@verbose_option
@handle_errors
def runs_show(run_id: str, db: str | None, fmt: str) -> None:
    """One stored run: its result, and with --format json its prompts and call timeline."""
    from flowengine.cli.render import render_text
    from flowengine.store.records import load_run

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
        "timeline": [call.as_dict() for call in record.timeline],
    }
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.command()
@click.argument("run_id")
@db_option
@format_option()
@verbose_option
@handle_errors
def compare(run_id: str, db: str | None, fmt: str) -> None:
    """A stored run's responses side by side, and the one recommended, saying why."""
    from flowengine.cli.render import render_comparison
    from flowengine.compare import compare as compare_run
    from flowengine.store.records import load_run

    data = compare_run(checked(db, lambda store: load_run(store, run_id)).result)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(render_comparison(data), nl=False)
