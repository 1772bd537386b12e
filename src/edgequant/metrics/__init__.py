"""Task metrics and fidelity to a reference model (`edgequant.metrics`).

`Metric` is the contract `evaluate` measures by (`metrics.base`); built-ins in `metrics.tasks`
(top-k, detection mAP by pycocotools, mean IoU, MSE, PSNR); per-output fidelity to FP32 in
`metrics.fidelity`.
"""

from edgequant.metrics.base import FunctionMetric, Metric, MetricValue, as_metric, load_metric
from edgequant.metrics.fidelity import OutputFidelity
from edgequant.metrics.tasks import BUILT_IN, PSNR, MeanAP, MeanIoU, MeanSquaredError, TopK

__all__ = [
    "BUILT_IN",
    "PSNR",
    "FunctionMetric",
    "MeanAP",
    "MeanIoU",
    "MeanSquaredError",
    "Metric",
    "MetricValue",
    "OutputFidelity",
    "TopK",
    "as_metric",
    "load_metric",
]
