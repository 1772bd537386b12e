"""edgequant: make trained networks small and fast for edge devices, with proof.

`import edgequant as eq` gives the whole public API. Heavy dependencies (onnxruntime, torch) are
imported only when a function that needs them runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "QuantSpec": "edgequant.spec",
    "QType": "edgequant.spec",
    "Symmetry": "edgequant.spec",
    "PerTensor": "edgequant.spec",
    "PerChannel": "edgequant.spec",
    "PerGroup": "edgequant.spec",
    "PTQConfig": "edgequant.config",
    "Method": "edgequant.config",
    "Calibrator": "edgequant.config",
    "Target": "edgequant.config",
    "Equalization": "edgequant.config",
    "BiasCorrection": "edgequant.config",
    "Rounding": "edgequant.config",
    "Precision": "edgequant.config",
    "Scheme": "edgequant.choices",
    "Smoothing": "edgequant.config",
    "Coverage": "edgequant.config",
    "Embeddings": "edgequant.config",
    "Model": "edgequant.model",
    "load": "edgequant.model",
    "Dataset": "edgequant.data",
    "ArrayDataset": "edgequant.data",
    "load_data": "edgequant.data",
    "ImageOptions": "edgequant.images",
    "quantize": "edgequant.ptq",
    "evaluate": "edgequant.runtime.evaluate",
    "EvalResult": "edgequant.runtime.evaluate",
    "layer_sqnr": "edgequant.runtime.evaluate",
    "LayerError": "edgequant.runtime.evaluate",
    "benchmark": "edgequant.runtime.benchmark",
    "BenchResult": "edgequant.runtime.benchmark",
    "EdgeQuantError": "edgequant.errors",
    "QATConfig": "edgequant.qat.config",
    "prepare_qat": "edgequant.qat.prepare",
    "finetune": "edgequant.qat.train",
    "export": "edgequant.qat.export",
    "compare": "edgequant.workflows.compare",
    "analyze": "edgequant.analysis.sensitivity",
    "tune": "edgequant.analysis.autotune",
    "TuneConfig": "edgequant.analysis.autotune",
    "TuneResult": "edgequant.analysis.autotune",
    "Backend": "edgequant.analysis.trials",
    "SensitivityReport": "edgequant.analysis.sensitivity",
    "LayerSensitivity": "edgequant.analysis.sensitivity",
    "TrainingTask": "edgequant.task",
    "load_task": "edgequant.task",
    "RangeLearning": "edgequant.qat.config",
    "qat_state": "edgequant.qat.state",
    "QATState": "edgequant.qat.state",
    "preset": "edgequant.targets",
    "TargetPreset": "edgequant.targets",
    "Runtime": "edgequant.targets",
    "check_support": "edgequant.analysis.support",
    "require_integer": "edgequant.analysis.support",
    "SupportReport": "edgequant.analysis.support",
    "NodeSupport": "edgequant.analysis.support",
    "to_tflite": "edgequant.tflite.convert",
    "quantize_tflite": "edgequant.tflite.convert",
    "load_tflite": "edgequant.tflite.convert",
    "TFLiteMode": "edgequant.tflite.convert",
    "TFLiteModel": "edgequant.tflite.convert",
    "evaluate_tflite": "edgequant.tflite.runtime",
    "benchmark_tflite": "edgequant.tflite.runtime",
    "check_tflite": "edgequant.tflite.runtime",
    "predict_tflite": "edgequant.tflite.runtime",
    "quantize_checked": "edgequant.workflows.quantize",
    "CheckedQuantization": "edgequant.workflows.quantize",
    "run_qat": "edgequant.workflows.qat_run",
    "QATRunConfig": "edgequant.workflows.qat_run",
    "QATRun": "edgequant.workflows.qat_run",
    "fp32_source": "edgequant.workflows.quantize",
    "convert_checked": "edgequant.workflows.quantize",
    "Provenance": "edgequant.provenance",
    "read_provenance": "edgequant.provenance",
    "FidelityBrief": "edgequant.provenance",
    "FidelityGuard": "edgequant.analysis.fidelity",
    "Metric": "edgequant.metrics",
    "MetricValue": "edgequant.metrics",
    "OutputFidelity": "edgequant.metrics",
    "TopK": "edgequant.metrics",
    "MeanAP": "edgequant.metrics",
    "MeanIoU": "edgequant.metrics",
    "MeanSquaredError": "edgequant.metrics",
    "PSNR": "edgequant.metrics",
    "load_metric": "edgequant.metrics",
}
__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # resolved once; later lookups skip this hook
        return value
    raise AttributeError(f"module 'edgequant' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from edgequant.analysis.autotune import TuneConfig, TuneResult, tune
    from edgequant.analysis.fidelity import FidelityGuard
    from edgequant.analysis.sensitivity import LayerSensitivity, SensitivityReport, analyze
    from edgequant.analysis.support import (
        NodeSupport,
        SupportReport,
        check_support,
        require_integer,
    )
    from edgequant.analysis.trials import Backend
    from edgequant.choices import Scheme
    from edgequant.config import (
        BiasCorrection,
        Calibrator,
        Coverage,
        Embeddings,
        Equalization,
        Method,
        Precision,
        PTQConfig,
        Rounding,
        Smoothing,
        Target,
    )
    from edgequant.data import ArrayDataset, Dataset, load_data
    from edgequant.errors import EdgeQuantError
    from edgequant.images import ImageOptions
    from edgequant.metrics import (
        PSNR,
        MeanAP,
        MeanIoU,
        MeanSquaredError,
        Metric,
        MetricValue,
        OutputFidelity,
        TopK,
        load_metric,
    )
    from edgequant.model import Model, load
    from edgequant.provenance import FidelityBrief, Provenance, read_provenance
    from edgequant.ptq import quantize
    from edgequant.qat.config import QATConfig, RangeLearning
    from edgequant.qat.export import export
    from edgequant.qat.prepare import prepare_qat
    from edgequant.qat.state import QATState, qat_state
    from edgequant.qat.train import finetune
    from edgequant.runtime.benchmark import BenchResult, benchmark
    from edgequant.runtime.evaluate import EvalResult, LayerError, evaluate, layer_sqnr
    from edgequant.spec import PerChannel, PerGroup, PerTensor, QType, QuantSpec, Symmetry
    from edgequant.targets import Runtime, TargetPreset, preset
    from edgequant.task import TrainingTask, load_task
    from edgequant.tflite.convert import (
        TFLiteMode,
        TFLiteModel,
        load_tflite,
        quantize_tflite,
        to_tflite,
    )
    from edgequant.tflite.runtime import (
        benchmark_tflite,
        check_tflite,
        evaluate_tflite,
        predict_tflite,
    )
    from edgequant.workflows.compare import compare
    from edgequant.workflows.qat_run import QATRun, QATRunConfig, run_qat
    from edgequant.workflows.quantize import (
        CheckedQuantization,
        convert_checked,
        fp32_source,
        quantize_checked,
    )
