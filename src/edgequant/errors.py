"""One exception hierarchy: the CLI turns every `EdgeQuantError` into a one-line message.

Each message says what is wrong and what to do about it; nothing else in the package raises a
bare ValueError at a user.
"""

from __future__ import annotations

import errno
import re


class EdgeQuantError(Exception):
    """Base class of every user-facing error (bad input, bad config, unwritable output).

    `details` (optional) is printed before the one-line message, e.g. the user's own traceback
    when their `--task` function fails."""

    exit_code = 2

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


class ConfigError(EdgeQuantError):
    """A configuration value is invalid or inconsistent."""


class ModelError(EdgeQuantError):
    """A model file is missing, corrupt, truncated, or not something edgequant can handle."""


class DataError(EdgeQuantError):
    """Calibration or evaluation data is empty, mismatched with the model, or not finite."""


class OutputError(EdgeQuantError):
    """An output location does not exist or cannot be written."""


class NothingToQuantizeError(EdgeQuantError):
    """The model holds no operator the chosen method can quantize."""


class DependencyError(EdgeQuantError):
    """An optional dependency (torch, a dataset package) is missing."""


class UnsupportedOperatorError(EdgeQuantError):
    """A node would run in float on a target where `--strict` asks for integer only."""


class ResourceError(EdgeQuantError):
    """The machine ran out of memory or disk space for what was asked."""


class TaskError(EdgeQuantError):
    """The user's `--task` function failed, or its model does not run on its own data."""


class FidelityError(EdgeQuantError):
    """Under `--strict`, the quantized model stays below the fidelity guard's thresholds."""


class EdgeQuantWarning(UserWarning):
    """Something the user should know, that does not stop the work (the CLI prints one line)."""


class CalibrationWarning(EdgeQuantWarning):
    """The calibration data looks unrepresentative (e.g. constant), so ranges are degenerate."""


class FidelityWarning(EdgeQuantWarning):
    """The quantized model stays below the fidelity guard's thresholds (it was written)."""


class SpeedWarning(EdgeQuantWarning):
    """The quantized model runs slower than FP32 on this machine's runtime."""


# optional packages and the extra that installs each: `pip install edgequant` alone runs the ONNX
# workflow (quantize, eval, bench, check, analyze, tune, targets); what needs more says which
EXTRAS = {
    "torch": "torch",
    "onnxscript": "torch",
    "litert_torch": "tflite",
    "ai_edge_litert": "tflite",
    "pycocotools": "detection",
    "rapidfuzz": "text",
    "ray": "ray",
    "transformers": "transformers",
    "sklearn": "transformers",
    "openvino": "openvino",
}


def missing_extra(exc: BaseException) -> DependencyError | None:
    """A `ModuleNotFoundError` for one of the optional packages, as the line that says which
    extra installs it; None for any other exception (a missing module of edgequant's own is a
    bug and keeps its traceback)."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    package = exc.name.split(".")[0]
    extra = EXTRAS.get(package)
    if extra is None:
        return None
    hint = (
        " (on a machine without a GPU, install the CPU build of torch first: pip install torch "
        "--index-url https://download.pytorch.org/whl/cpu)"
        if extra == "torch"
        else ""
    )
    return DependencyError(
        f"this needs {package}, which is not installed: pip install 'edgequant[{extra}]'{hint}"
    )


def user_error(exc: BaseException) -> EdgeQuantError | None:
    """The user-facing error behind an exception raised outside edgequant's own checks (an
    optional package not installed, out of memory in ONNX Runtime or numpy, a full disk), or
    None when it is a bug."""
    missing = missing_extra(exc)
    if missing is not None:
        return missing
    text = str(exc)
    if isinstance(exc, MemoryError) or "Failed to allocate memory" in text or "bad_alloc" in text:
        size = re.search(r"buffer of size (\d+)", text)
        asked = (
            f" (ONNX Runtime asked for {int(size.group(1)) / 2**30:,.1f} GiB at once)"
            if size
            else ""
        )
        return ResourceError(
            f"out of memory{asked}: use fewer or smaller samples (--samples, --limit; smaller "
            "images), or a machine with more memory"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return ResourceError(f"no space left on the device{where}: free space or write elsewhere")
    return None
