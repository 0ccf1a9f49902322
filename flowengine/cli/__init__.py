"""The command line: the only place that prints, formats errors and exits.

Exit codes: 0 success, 1 the run failed, 2 usage or validation error.
"""

from flowengine.cli import batch_cmd, run_cmd, store_cmds, workflow_cmds
from flowengine.cli.base import cli

__all__ = ["cli", "main"]
# Imported for the side effect of their @cli.command decorators.
_COMMANDS = (batch_cmd, run_cmd, store_cmds, workflow_cmds)


def main() -> None:
    cli(prog_name="flowengine")
