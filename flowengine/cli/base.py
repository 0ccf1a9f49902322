"""What every command shares: the group, error handling, exit codes, common options."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from flowengine.errors import ConfigError, FlowEngineError, UsageError, WorkflowError
from flowengine.language.loader import parse_override

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
    _log_to_stderr()


class _Warnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        err(f"flowengine: {record.levelname.lower()}: {record.getMessage()}")


def _log_to_stderr() -> None:
    log = logging.getLogger("flowengine")
    if not any(isinstance(h, _Warnings) for h in log.handlers):
        log.addHandler(_Warnings(logging.WARNING))
        log.propagate = False
