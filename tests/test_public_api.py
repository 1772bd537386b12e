"""The public surface: __all__ is exact, and `import edgequant` stays light."""

from __future__ import annotations

import subprocess
import sys

import edgequant as eq


def test_all_lists_exactly_the_public_names() -> None:
    for name in eq.__all__:
        assert getattr(eq, name) is not None
    public = {n for n in dir(eq) if not n.startswith("_")} | {"__version__"}
    assert public == set(eq.__all__)


def test_public_names_stay_what_they_are_on_every_access() -> None:
    """A function exported from a module of the same name would turn into the module once
    that module is imported; every name must resolve to the same object twice, never a module."""
    import types

    for name in eq.__all__:
        first = getattr(eq, name)
        assert getattr(eq, name) is first, name
        assert not isinstance(first, types.ModuleType), name


def test_import_is_light() -> None:
    code = "import sys, edgequant; print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
