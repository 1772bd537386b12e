"""Task metrics and fidelity to a reference model (`edgequant.metrics`).

`Metric` is the contract `evaluate` measures by (`metrics.base`); built-ins in `metrics.tasks`
(top-k, detection mAP by pycocotools, mean IoU, MSE, PSNR) and `metrics.sequences` (CTC
error rates, perplexity, embedding recall@k); per-output fidelity to FP32 in
`metrics.fidelity`.
"""

from edgequant.metrics.base import FunctionMetric, Metric, MetricValue, as_metric, load_metric
from edgequant.metrics.fidelity import OutputFidelity
from edgequant.metrics.registry import BUILT_IN
from edgequant.metrics.sequences import ErrorRate, Perplexity, RetrievalRecall
from edgequant.metrics.tasks import PSNR, MeanAP, MeanIoU, MeanSquaredError, TopK

__all__ = [
    "BUILT_IN",
    "PSNR",
    "ErrorRate",
    "FunctionMetric",
    "MeanAP",
    "MeanIoU",
    "MeanSquaredError",
    "Metric",
    "MetricValue",
    "OutputFidelity",
    "Perplexity",
    "RetrievalRecall",
    "TopK",
    "as_metric",
    "load_metric",
]
