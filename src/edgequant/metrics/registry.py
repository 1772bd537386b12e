"""The built-in metrics by the names the CLI takes (`--metric NAME`)."""

from __future__ import annotations

from collections.abc import Callable

from edgequant.metrics.base import Metric
from edgequant.metrics.sequences import ErrorRate, Perplexity, RetrievalRecall
from edgequant.metrics.tasks import PSNR, MeanAP, MeanIoU, MeanSquaredError, TopK

BUILT_IN: dict[str, Callable[[], Metric]] = {
    "top1": TopK,
    "top5": lambda: TopK(k=5),
    "map": MeanAP,
    "map50": lambda: MeanAP(iou50=True),
    "miou": MeanIoU,
    "mse": MeanSquaredError,
    "psnr": PSNR,
    "cer": ErrorRate,
    "perplexity": Perplexity,
    "recall1": RetrievalRecall,
}
