"""The one verb: `quantize(model, config, calibration=...)`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import onnx

from edgequant import __version__
from edgequant.config import PTQConfig
from edgequant.model import Model, load
from edgequant.progress import ProgressFn, silent


def quantize(
    model: Model | onnx.ModelProto | str | Path,
    config: PTQConfig | None = None,
    *,
    calibration: Iterable[Any] | None = None,
    progress: ProgressFn = silent,
) -> Model:
    """Quantize an ONNX model (in memory or a path) as `config` says; static INT8 by default.

    Returns a new in-memory `Model`; call `.save(path)` to write it with its `.quant.json`.
    """
    from edgequant.ptq import quantize_onnx

    source = load(model)
    config = config or PTQConfig.int8()
    out = quantize_onnx(source, config, calibration=calibration, progress=progress)
    out.provenance.setdefault("edgequant", __version__)
    out.provenance["source_sha256"] = hashlib.sha256(source.serialize()).hexdigest()
    return out
