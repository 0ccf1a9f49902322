"""`flowengine serve`: the workflows of files and folders over HTTP, until SIGINT or SIGTERM.

Everything is checked before the server listens: every workflow file (all problems at once,
with file:line:col), the names they give their workflows, the API keys their providers need,
and the variable that holds the server's own key.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from flowengine.cli.base import err, handle_errors
from flowengine.cli.logs import verbose_option, verbosity
from flowengine.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from flowengine.language.workflow import Workflow
    from flowengine.run.engine import Engine

#: Hosts that only this machine reaches.
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=True))
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free."
)
@click.option(
    "--offline", is_flag=True, help="Use the deterministic offline provider: no key, no network."
)
@click.option(
    "--api-key-env",
    metavar="VAR",
    help="Require `Authorization: Bearer <key>`, the key being this variable's value.",
)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="Seconds runs in flight get to finish at shutdown before they are cancelled.",
)
@click.option(
    "--db", type=click.Path(dir_okay=False), help="The database for cache and run records."
)
@verbose_option
@handle_errors
def serve(
    paths: tuple[str, ...],
    host: str,
    port: int,
    offline: bool,
    api_key_env: str | None,
    grace: float,
    db: str | None,
) -> None:
    """Serve workflows over HTTP: an OpenAI-compatible endpoint and a REST API.

    PATHS are workflow files or folders of them, or names of shipped workflows (default:
    workflows/, or the shipped workflows where there is no such folder). Each workflow is a
    model of POST /v1/chat/completions; see the README's "Serving workflows".
    """
    from flowengine.cli.interrupt import Interrupted, run_interruptibly
    from flowengine.run.engine import Engine
    from flowengine.run.gc_settings import many_runs_gc
    from flowengine.web.workflows import load_workflows

    key = _api_key(api_key_env)
    # A python node's `function:` is found in the current directory too, as `run` finds it.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    workflows = load_workflows(_served(paths))
    engine = Engine(offline=offline, db=db)
    _check_keys(engine, workflows.values())
    if host not in LOOPBACK and key is None:
        err(
            f"flowengine: warning: serving on {host} without --api-key-env: anyone who reaches "
            "it can run the workflows, on your API keys"
        )
    try:
        access = logging.getLogger("flowengine.web.access") if verbosity() > 0 else None
        with many_runs_gc():
            run_interruptibly(lambda: _serve(engine, workflows, host, port, key, grace, access))
    except Interrupted:
        err("flowengine: stopped")


def _served(paths: tuple[str, ...]) -> list[str]:
    """The files and folders to serve: those given (a shipped workflow by its name, as `run`
    takes it), else workflows/ here, else every shipped workflow."""
    from flowengine.cli.starter import resolve_workflow
    from flowengine.shipped import starter_dir

    if paths:
        return [path if os.path.isdir(path) else resolve_workflow(path) for path in paths]
    if os.path.isdir("workflows"):
        return ["workflows"]
    err("flowengine: no workflows/ folder here: serving the shipped workflows")
    return [str(starter_dir() / "workflows")]


def _api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise ConfigError(
            f"--api-key-env {variable}: {variable} is not set, so no client could be let in",
            f"export {variable}=<the key clients will send>, or leave out --api-key-env",
        )
    return key


def _check_keys(engine: Engine, workflows: Iterable[Workflow]) -> None:
    """Every provider key every workflow needs, before the first request."""
    for workflow in workflows:
        engine.check_credentials(workflow, workflow.plan.by_weight)


async def _serve(
    engine: Engine,
    workflows: dict[str, Workflow],
    host: str,
    port: int,
    key: str | None,
    grace: float,
    access: logging.Logger | None,
) -> None:
    import asyncio

    from flowengine.web.app import Server, create_app

    server = Server(create_app(workflows, engine, api_key=key, grace=grace), access_log=access)
    try:
        address = await server.start(host, port)
    except OSError as exc:
        await server.stop()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "pick another --port (0 takes any free one), or stop what uses it",
        ) from None
    names = ", ".join(workflows)
    err(f"flowengine: serving {len(workflows)} workflow(s) on {address}: {names}")
    err(f"flowengine: OpenAI-compatible endpoint {address}/v1 (Ctrl-C stops)")
    try:
        await asyncio.Event().wait()
    finally:
        err(f"flowengine: stopping; runs in flight get {grace:g}s to finish")
        await server.stop()
