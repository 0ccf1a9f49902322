"""The command line: the only place that prints, formats errors and exits.

Exit codes: 0 success, 1 the run failed, 2 usage or validation error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from flowengine.errors import ConfigError, FlowEngineError, UsageError, WorkflowError
from flowengine.loader import parse_override
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
            err(f"flowengine: error: {exc.message}")
            if exc.fix:
                err(f"      = fix: {exc.fix}")
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
        for exc in problems:
            err(exc.render())
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


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the workflow format, for editors."""
    click.echo(json.dumps(json_schema(), indent=2))


def main() -> None:
    cli(prog_name="flowengine")
