"""Ctrl-C and SIGTERM at any moment: exit 130 / 143 with temporary files removed.

Python's default Ctrl-C raises KeyboardInterrupt wherever the main thread is. Inside the import
of a C extension (onnxruntime, onnx and torch initialise through pybind11) that exception is
thrown through C++: it surfaces as `ImportError: initialization failed` (exit 1), or aborts the
process outright (`terminate called after throwing an instance of 'pybind11::error_already_set'`,
SIGABRT). So while the main thread is importing, a signal is only recorded, and raised the moment
the outermost import statement returns; everywhere else it is raised at once, and `finally`
blocks (temporary folders, atomic writes) run as for any exception.
"""

from __future__ import annotations

import builtins
import signal
import threading
from typing import Any


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks remove temporary files."""


_MAIN = threading.main_thread().ident
_real_import = builtins.__import__
_depth = 0  # import statements the main thread is inside
_pending: BaseException | None = None
interrupted = False  # a Ctrl-C arrived (whatever exception it turned into)


def _guarded_import(*args: Any, **kwargs: Any) -> Any:
    global _depth, _pending
    if threading.get_ident() != _MAIN:
        return _real_import(*args, **kwargs)
    _depth += 1
    try:
        return _real_import(*args, **kwargs)
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            exc, _pending = _pending, None
            raise exc


def _deliver(exc: BaseException) -> None:
    global _pending
    if _depth:
        _pending = _pending or exc  # raised when the import statement returns
        return
    raise exc


def _on_sigint(signum: int, frame: Any) -> None:
    global interrupted
    interrupted = True
    _deliver(KeyboardInterrupt())


def _on_sigterm(signum: int, frame: Any) -> None:
    _deliver(Terminated())


def install() -> None:
    """Handle SIGINT/SIGTERM as above for the rest of the process (a CLI process exits after)."""
    global interrupted, _pending
    interrupted, _pending = False, None
    builtins.__import__ = _guarded_import
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigterm)


def ignore() -> None:
    """The work is done (or failed): nothing may change the exit code from here on."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    builtins.__import__ = _real_import
