"""Every file edgequant writes goes through here: checked before any work, written atomically,
never over something it was not asked to replace.

The rules (the README's "What edgequant promises" section, enforced by tests/test_bad_inputs.py):
- an output is written to a temporary file beside it, then renamed: a reader never sees half a
  file, and a failure or interrupt leaves neither a partial file nor the temporary one;
- files that belong together (a model and its `.quant.json`) are written as a group: every
  temporary file is complete before the first rename, so they appear together or not at all;
- an existing target that is not a regular file (a device such as /dev/null, a FIFO, a socket,
  a folder) is refused, never replaced: renaming over /dev/null as root would delete the device;
- a symlink is followed deliberately: the file it points to is replaced and the link stays; a
  link to something that is not a regular file is refused like the thing itself;
- a file this command reads (its model, data, config: see `protect_inputs`) is never an output.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from edgequant.errors import OutputError

# (device, inode) of every file read by the running command; None outside `protect_inputs`.
_INPUTS: ContextVar[dict[tuple[int, int], str] | None] = ContextVar("inputs", default=None)


@contextmanager
def protect_inputs() -> Iterator[None]:
    """Within this block, every file passed to `note_input` is refused as an output.

    The CLI wraps each command in it; `load`, `load_data`, config files and `--task` modules
    note what they read, so `-o` can never replace a command's own input, hard links and
    symlinks included (files are compared by device and inode, not by name)."""
    token = _INPUTS.set({})
    try:
        yield
    finally:
        _INPUTS.reset(token)


def note_input(path: str | Path) -> None:
    """Record `path` as an input of the running command (no-op outside `protect_inputs`)."""
    inputs = _INPUTS.get()
    if inputs is None:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        inputs[(st.st_dev, st.st_ino)] = str(path)


def resolve_output(path: str | Path, *, inputs: tuple[str | Path | None, ...] = ()) -> Path:
    """The real path a file output will be written to, checked before any work is done.

    Follows a symlink to its target (the link stays a link); refuses a target that exists and is
    not a regular file, a missing or unwritable folder, and any of `inputs` (or a file noted
    with `note_input`)."""
    for item in inputs:
        if item is not None:
            note_input(item)
    given = Path(path)
    real = Path(os.path.realpath(given))
    _refuse_special(given, real)
    _refuse_input(given, real)
    check_writable_dir(real.parent)
    return real


def resolve_output_dir(path: str | Path) -> Path:
    """A report folder: created if missing (its parent must exist); refused if it is a file."""
    folder = Path(path)
    check_report_dir(folder)
    if not folder.exists():
        try:
            folder.mkdir()
        except FileExistsError:
            pass
        except OSError as exc:
            raise OutputError(f"cannot create folder {folder}: {exc.strerror}") from None
    check_writable_dir(folder)
    return folder


def check_report_dir(path: str | Path) -> None:
    """Before any work: `path` can become a report folder (it is one, or its parent exists and
    is writable). `resolve_output_dir` creates it when the report is written."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"{folder} is a file, not a folder: -o/--out names the folder the report goes into"
        )
    check_writable_dir(folder if folder.exists() else folder.parent)


def check_writable_dir(folder: Path) -> None:
    """Fail early, before any work, if `folder` cannot receive output."""
    folder = folder if str(folder) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder: choose an output inside a folder")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist: create it first")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable: choose another location")


def write_atomic(path: Path, data: bytes) -> None:
    """Write one file: temporary file beside it, then rename."""
    write_files({path: data})


def write_files(files: Mapping[Path, bytes]) -> None:
    """Write files that belong together: all of them or none.

    Every target is checked first; every temporary file is written completely (a full disk fails
    here, before anything is renamed); then each is renamed over its target. Should a rename
    fail, the ones already made are undone (a replaced file comes back from a hard link kept
    for the purpose)."""
    targets = [(Path(p), resolve_output(p), data) for p, data in files.items()]
    written: list[tuple[str, Path]] = []
    renamed: list[tuple[Path, str | None]] = []  # target, hard link to the file it replaced
    try:
        for given, real, data in targets:
            written.append((_write_temp(given, real, data), real))
        for (_, real), (given, _, _) in zip(written, targets, strict=True):
            _refuse_special(given, real)  # again: it may have appeared meanwhile
        with _signals_deferred():  # a Ctrl-C between two renames would split the group
            for tmp, real in written:
                backup = _keep_old(real) if len(written) > 1 else None
                os.replace(tmp, real)
                renamed.append((real, backup))
    except BaseException:
        for real, backup in reversed(renamed):
            if backup is not None:
                os.replace(backup, real)
            else:
                real.unlink(missing_ok=True)
        renamed.clear()
        raise
    finally:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)
        for _, backup in renamed:
            if backup is not None:
                Path(backup).unlink(missing_ok=True)


def _keep_old(real: Path) -> str | None:
    """A hard link to the file at `real`, to restore it if the group fails; None if there is no
    file (or the filesystem has no hard links: then the old file cannot come back)."""
    if not real.is_file():
        return None
    backup = real.with_name(f".{real.name}.{os.getpid()}.old")
    try:
        os.link(real, backup)
    except OSError:
        return None
    return str(backup)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the few microseconds of the renames; delivered right after."""
    held = {signal.SIGINT, signal.SIGTERM}
    if (
        not hasattr(signal, "pthread_sigmask")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _write_temp(given: Path, real: Path, data: bytes) -> str:
    try:
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    except OSError as exc:
        raise _os_error(given, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are shared like any file
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _os_error(given, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _os_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(
            f"no space left on the device to write {path}: free space or write elsewhere"
        )
    if exc.errno == errno.EDQUOT:
        return OutputError(f"disk quota exceeded writing {path}: free space or write elsewhere")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def _refuse_special(given: Path, real: Path) -> None:
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot write {given}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return
    kind = (
        "a folder" if stat.S_ISDIR(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a FIFO" if stat.S_ISFIFO(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "not a regular file"
    )  # fmt: skip
    via = f" (through the link {given})" if real != Path(os.path.abspath(given)) else ""
    raise OutputError(
        f"{real} is {kind}{via}: edgequant replaces only regular files; give a file path"
    )


def _refuse_input(given: Path, real: Path) -> None:
    inputs = _INPUTS.get()
    if not inputs:
        return
    try:
        st = os.stat(real)
    except OSError:
        return
    source = inputs.get((st.st_dev, st.st_ino))
    if source is not None:
        raise OutputError(
            f"{given} is an input of this command ({source}): write the output to another file"
        )
