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


def test_import_is_light() -> None:
    code = "import sys, edgequant; print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
