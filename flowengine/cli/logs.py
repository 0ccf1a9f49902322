"""The library's log records on stderr, as ``flowengine: <level>: <message>``.

The library logs to the ``flowengine`` logger and its children (``flowengine.run``,
``flowengine.store``, ...). Warnings always show; ``-v`` adds INFO (retries, fallbacks),
``-vv`` DEBUG. ``-v`` is accepted before the command and after it, and the two add up:
``flowengine -v run ... -v`` is ``-vv``.

Without ``-v``, the run layer's records (``flowengine.run``) are left to the commands' own
views: ``run`` prints each node and failed call as progress lines, ``batch`` records each row
and sums them up, so its warnings would only say the same thing twice.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_VERBOSITY = "flowengine.verbosity"
_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)


class _ToStderr(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        # sys.stderr as it is at each call: a test runner's capture, or the proxy of a live
        # display, which prints the line above the display (click's err=True would reach past
        # that proxy to the terminal's own buffer, and the display would draw over the line).
        message = f"flowengine: {record.levelname.lower()}: {record.getMessage()}"
        click.echo(message, file=sys.stderr)


def log_to_stderr(verbosity: int = 0) -> None:
    """Show the ``flowengine`` logger's records on stderr: warnings, and more with verbosity."""
    level = _LEVELS[min(max(verbosity, 0), len(_LEVELS) - 1)]
    log = logging.getLogger("flowengine")
    handler = next((h for h in log.handlers if isinstance(h, _ToStderr)), None)
    if handler is None:
        handler = _ToStderr()
        log.addHandler(handler)
        log.propagate = False
    handler.setLevel(level)
    log.setLevel(level)
    logging.getLogger("flowengine.run").setLevel(
        logging.ERROR if verbosity <= 0 else logging.NOTSET
    )


def verbosity() -> int:
    """How many ``-v`` the current command was given."""
    ctx = click.get_current_context(silent=True)
    return int(ctx.meta.get(_VERBOSITY, 0)) if ctx is not None else 0


def _add_verbosity(ctx: click.Context, _param: click.Parameter, count: int) -> None:
    # ctx.meta is shared by the group's context and the command's, so the counts add up.
    total = ctx.meta.get(_VERBOSITY, 0) + count
    ctx.meta[_VERBOSITY] = total
    log_to_stderr(total)


def verbose_option(func: F) -> F:
    """``-v/--verbose``, on the group and on every command."""
    option = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_add_verbosity,
        help="Log more on stderr: -v retries and fallbacks (INFO), -vv everything (DEBUG).",
    )
    return option(func)
