"""`flowengine run`: one run of a workflow, its result on stdout, progress on stderr.

With ``--stream``, stdout gets the answer's text as it is written instead, then a newline;
``--out`` still gets the result. The engine is imported inside the command, so that other
commands never load it.
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from flowengine.cli.base import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    err,
    format_option,
    handle_errors,
    load,
    overrides_from,
    set_option,
    workflow_argument,
)
from flowengine.cli.budget_flags import budget_options, merged
from flowengine.cli.logs import verbose_option, verbosity
from flowengine.errors import UsageError

if TYPE_CHECKING:
    from flowengine.cli.live import LiveView
    from flowengine.events import Event, Listener
    from flowengine.language.workflow import Workflow
    from flowengine.results import RunResult
    from flowengine.run.engine import Engine
    from flowengine.spec import Budget


def inputs_from(prompt: str | None, items: tuple[str, ...]) -> dict[str, Any]:
    """``--input k=v`` pairs as text (typed later by each input's declared type), and --prompt.

    Text that is not UTF-8 (bytes Python kept as lone surrogates) is refused here, before it
    could be parsed or sent anywhere.
    """
    from flowengine.language.inputs import check_text

    values: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        check_text("the name in --input NAME=VALUE", name)
        if not sep or not name.strip():
            raise UsageError(
                f"--input {item}: expected NAME=VALUE", "for example --input topic=physics"
            )
        check_text(f"input '{name.strip()}'", value)
        values[name.strip()] = value
    if prompt is not None:
        check_text("input 'prompt'", prompt)
        values["prompt"] = prompt
    return values


def progress_printer(calls: bool = True) -> Listener:
    """Progress lines on stderr; ``calls=False`` leaves retries, failed calls and selector
    fallbacks to the log."""
    from flowengine.cli.render import format_event

    def listen(event: Event) -> None:
        if not calls and event.kind in ("call_retried", "call_finished", "selector_fallback"):
            return
        line = format_event(event)
        if line:
            err(line)

    return listen


@click.command()
@workflow_argument
@click.option("--prompt", help="The `prompt` input.")
@click.option("--input", "input_items", multiple=True, metavar="NAME=VALUE", help="An input.")
@set_option
@click.option(
    "--offline", is_flag=True, help="Use the deterministic offline provider: no key, no network."
)
@click.option("--only", multiple=True, metavar="NODE", help="Run only this node and its ancestors.")
@click.option(
    "--skip", multiple=True, metavar="NODE", help="Skip this node; the nodes after it see none."
)
@click.option("--models", "models", metavar="A,B", help="Restrict the run to these model aliases.")
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True), help="Write the result here."
)
@format_option(
    default=None,
    help="Default: text cards on a terminal (and for --dry-run), json when piped or with --out.",
)
@click.option(
    "--stream",
    is_flag=True,
    help="Print only the answer on stdout, as it is written; --out still gets the result.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option(
    "--db", type=click.Path(dir_okay=False), help="The database for cache and run records."
)
@budget_options("the run")
@verbose_option
@handle_errors
def run(
    workflow: str,
    prompt: str | None,
    input_items: tuple[str, ...],
    sets: tuple[str, ...],
    offline: bool,
    only: tuple[str, ...],
    skip: tuple[str, ...],
    models: str | None,
    out: str | None,
    fmt: str | None,
    stream: bool,
    quiet: bool,
    no_cache: bool,
    db: str | None,
    dry_run: bool,
    max_cost: float | None,
    max_calls: int | None,
) -> None:
    """Run a workflow and print its result on stdout: text cards on a terminal, JSON piped.

    WORKFLOW is a file, or the name of a shipped workflow, such as critique (see the README).
    """
    from flowengine.cli import result_file
    from flowengine.cli.interrupt import Interrupted, run_interruptibly
    from flowengine.run.engine import Engine
    from flowengine.run.selection import select_nodes

    given = inputs_from(prompt, input_items)
    wf = load(workflow, overrides_from(sets))
    given = _typed_inputs(wf, given)
    wf.bind_inputs(given)  # every input problem now, before anything else; the run binds again
    selected, _ = select_nodes(wf, only or None, skip)  # and every --only and --skip problem
    model_list = [m.strip() for m in models.split(",") if m.strip()] if models else None
    options: dict[str, Any] = {"only": only or None, "skip": skip, "models": model_list}
    budget = merged(wf.spec.budget, max_cost, max_calls)
    if dry_run:
        if out:
            raise UsageError("--out takes a run's result, and a dry run has none", "drop --out")
        _print_estimate(wf, given, offline, db, budget, fmt or "text", options)
        return
    if out:
        result_file.prepare(out)
    fmt = fmt or _default_format(out)
    view = None if quiet else _live_view(wf.name, selected)
    ids = _RunId()
    listeners: list[Listener] = [ids]
    if view is not None:
        listeners.append(view)
    elif not quiet:
        # With -v the log tells of every retry, fallback and failed call; the lines keep nodes.
        listeners.append(progress_printer(calls=verbosity() == 0))
    engine = Engine(offline=offline, listeners=listeners, cache=not no_cache, db=db)
    run_options = {**options, "budget": budget}
    try:
        with view or contextlib.nullcontext():
            result = run_interruptibly(
                lambda: (
                    _stream(engine, wf, given, run_options, view)
                    if stream
                    else _run(engine, wf, given, run_options)
                )
            )
    except Interrupted:
        _stop_interrupted(ids.run_id, db, fmt, out, stream)
    written = _deliver(result, fmt, out, stream, db)
    _report(result)
    if result.status == "failed" or not written:
        sys.exit(EXIT_FAILED)


def _default_format(out: str | None) -> str:
    """Text cards for a person at a terminal; JSON for a pipe, a file or another program."""
    return "text" if out is None and sys.stdout.isatty() else "json"


def _deliver(result: RunResult, fmt: str, out: str | None, stream: bool, db: str | None) -> bool:
    """The result to --out, else to stdout (unless the answer was streamed there); False if
    --out could not be written."""
    from flowengine.cli import result_file
    from flowengine.cli.render import render_text

    text = render_text(result) if fmt == "text" else result.model_dump_json(indent=2) + "\n"
    if out:
        return result_file.write(out, text, result.run_id, db)
    if not stream:
        click.echo(text, nl=False)
    return True


def _stop_interrupted(
    run_id: str | None, db: str | None, fmt: str, out: str | None, stream: bool
) -> NoReturn:
    """After Ctrl-C: what finished, as recorded, goes where the result would have gone."""
    result = _recorded(run_id, db)
    if result is not None:
        _deliver(result, fmt, out, stream, db)
    if run_id is None:
        err("flowengine: interrupted before the run started")
    elif result is None:
        err(f"flowengine: interrupted; run {run_id} could not be recorded (see the warning above)")
    else:
        err(f"flowengine: interrupted; what finished is kept: flowengine runs show {run_id}")
    sys.exit(EXIT_INTERRUPTED)


def _live_view(workflow: str, nodes: list[str]) -> LiveView | None:
    """The live view when stderr is a terminal that can redraw; else None (progress lines)."""
    from rich.console import Console

    from flowengine.cli.live import LiveView

    console = Console(stderr=True)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveView(console, workflow, nodes)
    return None


class _RunId:
    """A listener that keeps the run's id, to find its record when the run is interrupted."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def __call__(self, event: Event) -> None:
        self.run_id = event.run_id


def _recorded(run_id: str | None, db: str | None) -> RunResult | None:
    """The stored result of an interrupted run: what finished, with status failed and error
    ``cancelled``; None if the run never started or could not be recorded."""
    from flowengine.errors import UsageError
    from flowengine.store.db import Store
    from flowengine.store.records import load_run

    if run_id is None:
        return None
    store = Store(db, warn=False)
    try:
        return load_run(store, run_id).result
    except UsageError:
        return None
    finally:
        store.close()


def _report(result: RunResult) -> None:
    """A line on stderr for a run that did not fully succeed."""
    if result.status == "failed":
        error = result.error
        err(f"flowengine: run failed: {error.message if error else 'see the result'}")
    elif result.status == "partial":
        err("flowengine: run finished with failures (status: partial)")


def _typed_inputs(wf: Workflow, values: dict[str, Any]) -> dict[str, Any]:
    """Command-line text converted to each input's declared type."""
    from flowengine.language.bounded_yaml import YamlLimit
    from flowengine.language.inputs import too_deep
    from flowengine.language.loader import parse_value

    typed = dict(values)
    for name, value in values.items():
        spec = wf.spec.inputs.get(name)
        if spec is not None and spec.type != "string" and isinstance(value, str):
            try:
                typed[name] = parse_value(value)
            except YamlLimit as exc:  # nested too deep, in flow or block style
                if exc.deep:
                    raise too_deep(name) from None
                raise UsageError(f"input '{name}': {exc.message}", exc.fix) from None
    return typed


async def _run(
    engine: Engine, wf: Workflow, inputs: dict[str, Any], options: dict[str, Any]
) -> RunResult:
    async with engine:
        return await engine.run(wf, inputs, **options)


async def _stream(
    engine: Engine,
    wf: Workflow,
    inputs: dict[str, Any],
    options: dict[str, Any],
    view: LiveView | None,
) -> RunResult:
    """Run, printing the answer's pieces on stdout as they come: those of the first answer
    node to stream (``answer:`` may name alternatives), then a newline.

    When stdout is the terminal the live view is drawn on, the view stops at the first piece:
    from there the answer has the screen, as redrawing the view would tear it apart.
    """
    from contextlib import aclosing

    from flowengine.events import TokenDelta
    from flowengine.results import RunResult

    shown: str | None = None
    terminal = sys.stdout.isatty()
    try:
        async with (
            engine,
            aclosing(engine.stream(wf, inputs, **options)) as items,
        ):
            async for item in items:
                if isinstance(item, TokenDelta) and shown in (None, item.node):
                    if shown is None and terminal and view is not None:
                        view.stop()
                    shown = item.node
                    click.echo(_for_terminal(item.text) if terminal else item.text, nl=False)
                elif isinstance(item, RunResult):
                    click.echo()
                    return item
    except BaseException:  # an error, or Ctrl-C: what was shown of the answer ends its line
        if shown is not None:
            click.echo()
        raise
    raise AssertionError("a stream ends with its result")


#: Control characters but newline and tab: on a terminal, model output could use them to move
#: the cursor, retitle the window or hide text. A model's answer is data, never markup.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _for_terminal(text: str) -> str:
    return _CONTROL.sub("\ufffd", text)


def _print_estimate(
    wf: Workflow,
    inputs: dict[str, Any],
    offline: bool,
    db: str | None,
    budget: Budget,
    fmt: str,
    options: dict[str, Any],
) -> None:
    """`run --dry-run`: walk the run with stand-in answers and print what it would take."""
    import asyncio

    from flowengine.cli.estimate import render_estimate
    from flowengine.run.dry_run import dry_run

    estimate = asyncio.run(dry_run(wf, inputs, offline=offline, db=db, budget=budget, **options))
    text = render_estimate(estimate) if fmt == "text" else estimate.model_dump_json(indent=2)
    click.echo(text)
