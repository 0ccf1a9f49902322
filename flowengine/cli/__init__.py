"""The command line: the only place that prints, formats errors and exits.

Exit codes: 0 success, 1 the run failed, 2 usage or validation error.
"""

from flowengine.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="flowengine")
