"""Commands about workflow files: validate, graph, schema, models.

The language layer is imported inside each command, so that ``flowengine --help`` (which
reads every command's help) does not load it.
"""

from __future__ import annotations

import json
import sys

import click

from flowengine.cli.base import (
    EXIT_INVALID,
    err,
    handle_errors,
    load,
    overrides_from,
    set_option,
    workflow_argument,
)
from flowengine.cli.logs import verbose_option
from flowengine.errors import WorkflowError


@click.command()
@click.argument("workflows", nargs=-1, required=True, type=click.Path(dir_okay=True))
@set_option
@verbose_option
@handle_errors
def validate(workflows: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Check workflow files without calling anything: every problem, with file:line:col."""
    overrides = overrides_from(sets)
    problems: list[WorkflowError] = []
    for path in workflows:
        try:
            wf = load(path, overrides)
        except WorkflowError as exc:
            problems.append(exc)
            continue
        err(f"{path}: ok ({len(wf.spec.nodes)} nodes: {' -> '.join(wf.order)})")
    if problems:
        for problem in problems:
            err(problem.render())
        sys.exit(EXIT_INVALID)


@click.command()
@workflow_argument
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid")
@set_option
@verbose_option
@handle_errors
def graph(workflow: str, fmt: str, sets: tuple[str, ...]) -> None:
    """Print the workflow's DAG as Mermaid (default) or Graphviz DOT."""
    wf = load(workflow, overrides_from(sets))
    click.echo(wf.to_mermaid() if fmt == "mermaid" else wf.to_dot(), nl=False)


@click.command()
@verbose_option
def schema() -> None:
    """Print the JSON Schema of the workflow format, for editors."""
    from flowengine.spec import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@click.command()
@workflow_argument
@set_option
@verbose_option
@handle_errors
def models(workflow: str, sets: tuple[str, ...]) -> None:
    """List the workflow's models in priority order (highest weight first)."""
    spec = load(workflow, overrides_from(sets)).spec
    rows = [("alias", "weight", "provider", "model id")]
    rows += [
        (alias, f"{spec.models[alias].weight:g}", spec.provider_of(alias), spec.models[alias].id)
        for alias in spec.model_sorted()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
