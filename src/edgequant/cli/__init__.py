"""The `edgequant` command: a thin layer over the public API (parsing, progress, exit codes).

This module is the one place that turns what went wrong into an exit code and one line:
0 success; 1 `tune` found no model within its budgets; 2 a user error (one line on stderr, no
traceback; with `--json` also `{"error": ..., "exit": 2}` on stdout); 130 interrupted (Ctrl-C,
whenever it arrives, even inside a C extension's import); 143 terminated (SIGTERM: temporary
files are removed first). Anything else is a bug in edgequant and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["cli", "main"]


def main() -> None:
    """Entry point: run the command and exit with the code the module docstring promises."""
    from edgequant.cli import signals

    as_json = "--json" in sys.argv[1:]
    signals.install()
    try:
        code, message = _run()
    except KeyboardInterrupt:  # before _run's own handlers existed (while importing click)
        code, message = 130, "interrupted"
    except signals.Terminated:
        code, message = 143, "terminated"
    finally:
        signals.ignore()
    if message is not None:
        _report(message, code, as_json)
    if code in (130, 143):
        # A Ctrl-C inside Python code that an extension runs while it imports leaves CPython's
        # "unhandled KeyboardInterrupt" flag set, and it would then die by SIGINT (-2) whatever
        # exit code is asked for. Everything is cleaned up by now: leave with the promised code.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _run() -> tuple[int, str | None]:
    """(exit code, one-line message or None) of running the command line."""
    import click

    from edgequant.cli import signals
    from edgequant.cli.signals import Terminated
    from edgequant.errors import EdgeQuantError, user_error

    try:
        from edgequant.outputs import protect_inputs

        cli = _commands()
        with protect_inputs(), _one_line_warnings():
            cli.main(standalone_mode=False)
        return 0, None
    except Terminated:
        return 143, "terminated"
    except (KeyboardInterrupt, click.exceptions.Abort):
        return 130, "interrupted"
    except EdgeQuantError as exc:
        if exc.details:
            print(exc.details.rstrip(), file=sys.stderr)
        return exc.exit_code, str(exc)
    except click.exceptions.Exit as exc:
        return exc.exit_code, None
    except click.ClickException as exc:
        return 2, _click_message(exc)
    except SystemExit as exc:  # a command's own exit code (tune: 1 when nothing fits)
        return int(exc.code or 0), None
    except BaseException as exc:
        if signals.interrupted:  # e.g. ImportError "initialization failed" after a Ctrl-C
            return 130, "interrupted"
        mapped = user_error(exc)
        if mapped is None:
            raise
        return mapped.exit_code, str(mapped)


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """edgequant's own warnings (e.g. degenerate calibration ranges) as `warning: ...` lines."""
    import warnings

    from edgequant.errors import EdgeQuantWarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, EdgeQuantWarning):
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            original(message, category, *args, **kwargs)

    with warnings.catch_warnings():
        original = warnings.showwarning
        warnings.showwarning = show
        warnings.simplefilter("always", EdgeQuantWarning)
        yield


def _click_message(exc: Any) -> str:
    """Click's usage error in one line (no usage block, no "Try --help" line)."""
    import click

    text = exc.format_message()
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        text += f" (see `{exc.ctx.command_path} --help`)"
    return " ".join(text.split())


def _report(message: str, code: int, as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps({"error": message, "exit": code}), flush=True)
    print(f"error: {message}" if code == 2 else message, file=sys.stderr, flush=True)


def _commands() -> Any:
    from edgequant.cli import (  # noqa: F401  (commands register on import)
        analysis,
        inputs,
        measure,
        quantize,
        targets,
        training,
        tuning,
    )
    from edgequant.cli.group import cli

    return cli


def __getattr__(name: str) -> Any:
    if name == "cli":
        return _commands()
    raise AttributeError(name)
