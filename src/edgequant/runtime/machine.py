"""The machine and the software a measurement ran on, in one line (every report carries it)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def describe() -> str:
    """CPU (with AVX-512 VNNI when present: ONNX Runtime's int8 kernels use it), cores, OS;
    Python and the versions of ONNX Runtime and torch (when installed), read from the package
    metadata so that nothing heavy is imported."""
    cpu = platform.processor() or "unknown CPU"
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in info.splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
        cpu += " (AVX-512 VNNI)" if "avx512_vnni" in info else ""
    except OSError:
        pass
    versions = [f"Python {platform.python_version()}"]
    for package in ("onnxruntime", "torch"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; {', '.join(versions)}"
