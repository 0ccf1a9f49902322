"""The command line: the only place that prints, formats errors and exits.

Exit codes: 0 success, 1 the run failed, 2 usage or validation error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from flowengine.engine import Engine
from flowengine.errors import ConfigError, FlowEngineError, UsageError, WorkflowError
from flowengine.events import Event, Listener
from flowengine.loader import parse_override
from flowengine.render import format_event, render_text
from flowengine.results import RunResult
from flowengine.spec import json_schema
from flowengine.workflow import Workflow

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def err(text: str) -> None:
    click.echo(text, err=True)


def handle_errors(func: F) -> F:
    """Turn the library's expected errors into one clear message and an exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except WorkflowError as exc:
            err(exc.render())
            sys.exit(EXIT_INVALID)
        except (UsageError, ConfigError) as exc:
            err(f"flowengine: error: {exc}")
            sys.exit(EXIT_INVALID)
        except FlowEngineError as exc:
            err(f"flowengine: error: {exc}")
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            err("flowengine: interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def overrides_from(sets: tuple[str, ...]) -> dict[str, Any]:
    return dict(parse_override(item) for item in sets)


set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a value of the file by its dotted path, e.g. models.llama.weight=4.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flowengine")
def cli() -> None:
    """Declarative workflows for multi-model LLM pipelines."""


@cli.command()
@click.argument("workflows", nargs=-1, required=True, type=click.Path(dir_okay=True))
@set_option
@handle_errors
def validate(workflows: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Check workflow files without calling anything: every problem, with file:line:col."""
    overrides = overrides_from(sets)
    problems: list[WorkflowError] = []
    for path in workflows:
        try:
            wf = Workflow.load(path, overrides)
        except WorkflowError as exc:
            problems.append(exc)
            continue
        err(f"{path}: ok ({len(wf.spec.nodes)} nodes: {' -> '.join(wf.order)})")
    if problems:
        for problem in problems:
            err(problem.render())
        sys.exit(EXIT_INVALID)


@cli.command()
@click.argument("workflow", type=click.Path(dir_okay=True))
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid")
@set_option
@handle_errors
def graph(workflow: str, fmt: str, sets: tuple[str, ...]) -> None:
    """Print the workflow's DAG as Mermaid (default) or Graphviz DOT."""
    wf = Workflow.load(workflow, overrides_from(sets))
    click.echo(wf.to_mermaid() if fmt == "mermaid" else wf.to_dot(), nl=False)


def inputs_from(prompt: str | None, items: tuple[str, ...]) -> dict[str, Any]:
    """``--input k=v`` pairs as text (typed later by each input's declared type), and --prompt."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(
                f"--input {item}: expected NAME=VALUE", "for example --input topic=physics"
            )
        values[name.strip()] = value
    if prompt is not None:
        values["prompt"] = prompt
    return values


def progress_printer() -> Listener:
    def listen(event: Event) -> None:
        line = format_event(event)
        if line:
            err(line)

    return listen


@cli.command()
@click.argument("workflow", type=click.Path(dir_okay=True))
@click.option("--prompt", help="The `prompt` input.")
@click.option("--input", "input_items", multiple=True, metavar="NAME=VALUE", help="An input.")
@set_option
@click.option(
    "--offline", is_flag=True, help="Use the deterministic offline provider: no key, no network."
)
@click.option("--only", multiple=True, metavar="NODE", help="Run only this node and its ancestors.")
@click.option("--models", "models", metavar="A,B", help="Restrict the run to these model aliases.")
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True), help="Write the result here."
)
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@handle_errors
def run(
    workflow: str,
    prompt: str | None,
    input_items: tuple[str, ...],
    sets: tuple[str, ...],
    offline: bool,
    only: tuple[str, ...],
    models: str | None,
    out: str | None,
    fmt: str,
    quiet: bool,
) -> None:
    """Run a workflow and print its result (JSON by default) on stdout."""
    wf = Workflow.load(workflow, overrides_from(sets))
    inputs = wf.bind_inputs(_typed_inputs(wf, inputs_from(prompt, input_items)))
    model_list = [m.strip() for m in models.split(",") if m.strip()] if models else None
    listeners = [] if quiet else [progress_printer()]
    result = asyncio.run(_run(wf, inputs, offline, only or None, model_list, listeners))
    text = render_text(result) if fmt == "text" else result.model_dump_json(indent=2) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
        err(f"result written to {out}")
    else:
        click.echo(text, nl=False)
    if result.status == "failed":
        error = result.error
        err(f"flowengine: run failed: {error.message if error else 'see the result'}")
        sys.exit(EXIT_FAILED)
    if result.status == "partial":
        err("flowengine: run finished with failures (status: partial)")


def _typed_inputs(wf: Workflow, values: dict[str, Any]) -> dict[str, Any]:
    """Command-line text converted to each input's declared type."""
    typed = dict(values)
    for name, value in values.items():
        spec = wf.spec.inputs.get(name)
        if spec is not None and spec.type != "string" and isinstance(value, str):
            typed[name] = parse_override(f"{name}={value}")[1]
    return typed


async def _run(
    wf: Workflow,
    inputs: dict[str, Any],
    offline: bool,
    only: tuple[str, ...] | None,
    models: list[str] | None,
    listeners: list[Listener],
) -> RunResult:
    async with Engine(offline=offline, listeners=listeners) as engine:
        return await engine.run(wf, inputs, only=only, models=models)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the workflow format, for editors."""
    click.echo(json.dumps(json_schema(), indent=2))


def main() -> None:
    cli(prog_name="flowengine")
