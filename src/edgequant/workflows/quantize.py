"""`edgequant quantize` as a library function: operator support planned before any work (and
`strict` failing there), quantization, support on the runtime after, provenance recorded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgequant.analysis.support import SupportReport, check_support, require_integer
from edgequant.config import Method, PTQConfig
from edgequant.model import Model
from edgequant.progress import ProgressFn, silent


@dataclass(frozen=True)
class CheckedQuantization:
    """The quantized model (its provenance holds both support reports), the FP32 model it came
    from, and the operator support planned before quantization (static only) and found after."""

    model: Model
    fp32: Model
    planned: SupportReport | None
    support: SupportReport

    def summary(self) -> dict[str, Any]:
        """What `edgequant quantize --json` prints (beside the output path)."""
        prov = self.model.provenance
        assert prov is not None
        return {
            "size_bytes": self.model.size_bytes,
            "fp32_size_bytes": self.fp32.size_bytes,
            "quantized_nodes": prov.quantized_nodes,
            "float_nodes": prov.float_nodes,
            "support": self.support.brief().to_dict(),
            "support_planned": None if self.planned is None else self.planned.brief().to_dict(),
        }


def quantize_checked(
    model: Model,
    config: PTQConfig,
    *,
    calibration: Iterable[Any] | None = None,
    strict: bool = False,
    source: str | None = None,
    progress: ProgressFn = silent,
) -> CheckedQuantization:
    """Quantize `model` as `config` says, checking operator support on the config's target
    before (static: what will run in integer, asked of ONNX Runtime where it runs here) and
    after. `strict` raises `UnsupportedOperatorError` as soon as a node would stay float,
    before any calibration when the plan already shows it. `source` (e.g. the model's path)
    is recorded in the provenance."""
    from edgequant.ptq import quantize

    planned = check_support(model, config) if config.method is Method.STATIC else None
    if strict and planned is not None:
        require_integer(planned)  # before any work
    q = quantize(model, config, calibration=calibration, progress=progress)
    support = check_support(q, config)
    if strict:
        require_integer(support)
    assert q.provenance is not None
    if source is not None:
        q.provenance.source_model = source
    q.provenance.support = support.brief()
    if planned is not None:
        q.provenance.support_planned = planned.brief()
    return CheckedQuantization(q, model, planned, support)
