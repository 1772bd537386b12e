"""Post-training quantization of ONNX models: static, dynamic, FP16 and INT4 weight-only."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgequant.config import Method, PTQConfig
from edgequant.errors import ConfigError
from edgequant.model import Model
from edgequant.progress import ProgressFn, silent


def quantize_onnx(
    model: Model,
    config: PTQConfig,
    *,
    calibration: Iterable[Any] | None = None,
    progress: ProgressFn = silent,
) -> Model:
    """Dispatch on `config.method`; only static quantization needs calibration data."""
    if config.method is Method.STATIC:
        if calibration is None:
            raise ConfigError(
                "static quantization needs calibration data: pass calibration=... (a few hundred samples)"
            )
        from edgequant.ptq.static import quantize_static

        return quantize_static(model, config, calibration, progress)
    if config.method is Method.DYNAMIC:
        from edgequant.ptq.dynamic import quantize_dynamic

        return quantize_dynamic(model, config)
    if config.method is Method.FP16:
        from edgequant.ptq.fp16 import convert_fp16

        return convert_fp16(model, config)
    from edgequant.ptq.int4 import quantize_int4

    return quantize_int4(model, config, calibration, progress)
