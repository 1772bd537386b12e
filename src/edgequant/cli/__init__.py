"""The `edgequant` command: a thin layer over the public API (parsing, progress, exit codes).

Exit codes: 0 success, 1 `tune` found no model within its budgets, 2 user error (one line on
stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import sys

import click

from edgequant.cli import analysis, measure, quantize, targets, training, tuning  # noqa: F401  (commands register on import)
from edgequant.cli.group import cli
from edgequant.errors import EdgeQuantError

__all__ = ["cli", "main"]


def main() -> None:
    """Entry point: user errors become one line and exit code 2; Ctrl-C exits 130."""
    try:
        cli.main(standalone_mode=False)
    except EdgeQuantError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
