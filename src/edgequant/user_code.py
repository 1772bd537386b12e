"""Importing a user's module named on the command line (`--task mytrain:make_task`,
`--metric my_metrics:f1`): from the current folder if it is there, else from the installed
packages, after edgequant's own dependencies, so that a file in the folder named like one of them
(onnxruntime.py, numpy.py) is never run in their place."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from edgequant.errors import ConfigError
from edgequant.outputs import note_input


def import_own_dependencies(names: tuple[str, ...]) -> None:
    """What edgequant itself imports, first: nothing in the user's folder can stand in for it."""
    for name in names:
        importlib.import_module(name)


@contextmanager
def user_folder_importable() -> Iterator[None]:
    """The current folder on sys.path (last: installed packages win) while the block runs."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def import_user_module(module_name: str, option: str) -> ModuleType:
    """The named module: from the current folder if it is there, else from the installed ones.
    ImportError becomes a ConfigError naming `option`; errors the module's own code raises
    propagate."""
    top = module_name.partition(".")[0]
    local = [Path.cwd() / f"{top}.py", Path.cwd() / top / "__init__.py"]
    try:
        found = next((p for p in local if p.is_file()), None)
        if found is not None and top not in sys.modules:
            note_input(found)
            spec = importlib.util.spec_from_file_location(
                top,
                found,
                submodule_search_locations=[str(found.parent)]
                if found.name == "__init__.py"
                else None,
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[top] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[top]
                raise
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for {option} ({exc}); run from the folder that holds "
            "it or install it"
        ) from None
