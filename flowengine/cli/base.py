"""What every command shares: the group, error handling, exit codes, common options.

Start-up is part of the interface: ``flowengine --help`` and ``flowengine validate`` must not
wait for the engine and its HTTP client to load. So the group imports a command's module only
when that command runs or help is shown (``COMMANDS``), and the command modules import the
engine, the store and rich inside the functions that use them.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from flowengine import __version__
from flowengine.cli.logs import verbose_option
from flowengine.cli.starter import resolve_workflow
from flowengine.errors import ConfigError, FlowEngineError, PluginError, UsageError, WorkflowError

if TYPE_CHECKING:
    from flowengine.language.workflow import Workflow

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C

# Every command: its name, then the module and attribute that define it.
COMMANDS = {
    "init": "flowengine.cli.init_cmd:init",
    "run": "flowengine.cli.run_cmd:run",
    "validate": "flowengine.cli.workflow_cmds:validate",
    "graph": "flowengine.cli.workflow_cmds:graph",
    "schema": "flowengine.cli.workflow_cmds:schema",
    "models": "flowengine.cli.workflow_cmds:models",
    "batch": "flowengine.cli.batch_cmd:batch",
    "serve": "flowengine.cli.serve_cmd:serve",
    "runs": "flowengine.cli.store_cmds:runs",
    "compare": "flowengine.cli.store_cmds:compare",
    "report": "flowengine.cli.report_cmd:report",
    "cache": "flowengine.cli.store_cmds:cache",
}


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
        except (UsageError, ConfigError, PluginError) as exc:
            err(f"flowengine: error: {exc}")
            sys.exit(EXIT_INVALID)
        except FlowEngineError as exc:
            err(f"flowengine: error: {exc}")
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            err("flowengine: interrupted")
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def overrides_from(sets: tuple[str, ...]) -> dict[str, Any]:
    """``--set PATH=VALUE`` items as overrides; text that is not UTF-8 is refused first."""
    from flowengine.language.inputs import check_text
    from flowengine.language.loader import parse_override

    for item in sets:
        path, _, value = item.partition("=")
        check_text("the path in --set PATH=VALUE", path)
        check_text(f"--set {path.strip()}", value)
    return dict(parse_override(item) for item in sets)


def load(argument: str, overrides: dict[str, Any]) -> Workflow:
    """The workflow a WORKFLOW argument names: a file, else the name of a shipped workflow."""
    from flowengine.language.workflow import Workflow

    # A python node's `function:` is found as `python -m` finds a module: in the current
    # directory too (after everything else on the path, so that nothing there hides a library).
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    return Workflow.load(resolve_workflow(argument), overrides)


workflow_argument = click.argument("workflow", type=click.Path(dir_okay=True))

set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a value of the file by its dotted path, e.g. models.llama.weight=4.",
)


def format_option(default: str | None = "text", help: str | None = None) -> Callable[[F], F]:
    """``--format text|json``, given to the command as ``fmt``: text for people, JSON for
    scripts."""
    return click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default=default, help=help
    )


class LazyGroup(click.Group):
    """A group that imports a command's module only when the command is looked up."""

    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        added = [name for name in super().list_commands(ctx) if name not in self.lazy]
        return [*self.lazy, *added]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attr = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="flowengine")
@verbose_option
def cli() -> None:
    """Declarative workflows for multi-model LLM pipelines.

    Try `flowengine init` for a starter project, or `flowengine run critique --offline
    --prompt "..."` for a shipped workflow with no key and no network.
    """
