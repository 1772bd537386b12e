"""Built-in task metrics: classification top-k, detection mAP (pycocotools), segmentation mean
IoU, regression MSE and PSNR. Each reads one output (`output=None`: the model's first) and the
targets the data carries; each is a `metrics.base.Metric`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import DataError
from edgequant.metrics.base import Outputs, need_targets, pick_output
from edgequant.metrics.detection import NmsConfig, coco_map, decode


@dataclass
class TopK:
    """Share of samples whose target class id is among the output's k highest scores, in %.
    Scores over the last axis; targets: class ids, shape of the output without its last axis."""

    k: int = 1
    output: str | None = None
    units: str = "%"
    higher_is_better: bool = True
    _hits: int = 0
    _count: int = 0

    @property
    def name(self) -> str:
        return f"top-{self.k}"

    def reset(self) -> None:
        self._hits = self._count = 0

    def update(self, outputs: Outputs, targets: Any) -> None:
        from edgequant.runtime.evaluate import check_labels

        scores, labels = pick_output(outputs, self.output), need_targets(targets, self.name)
        check_labels(labels, scores)
        k = min(self.k, scores.shape[-1])
        top = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
        self._hits += int((top == labels[..., None]).any(-1).sum())
        self._count += labels.size

    def result(self) -> float:
        return 100.0 * self._hits / self._count if self._count else float("nan")


@dataclass
class MeanAP:
    """COCO mean average precision of detections, in points (0-100): IoU 0.50:0.95 (`iou50`
    False) or 0.50, by pycocotools over the whole set. `decode` turns a batch's outputs into
    per-image (K, 6) arrays (x1, y1, x2, y2, score, class); the default reads a YOLOv8-style
    (N, 4 + classes, anchors) output of centre-xywh boxes and class scores and runs per-class
    NMS (`metrics.detection`). Targets: (N, M, 5) x1, y1, x2, y2, class, rows of -1 padding."""

    iou50: bool = False
    output: str | None = None
    nms: NmsConfig = field(default_factory=NmsConfig)
    decode: Callable[[Outputs], list[NDArray[np.float32]]] | None = None
    units: str = "mAP points"
    higher_is_better: bool = True
    _detections: list[NDArray[np.float32]] = field(default_factory=list, repr=False)
    _targets: list[NDArray[np.float32]] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return "mAP50" if self.iou50 else "mAP50-95"

    def reset(self) -> None:
        self._detections, self._targets = [], []

    def update(self, outputs: Outputs, targets: Any) -> None:
        boxes = need_targets(targets, self.name).astype(np.float32)
        if boxes.ndim != 3 or boxes.shape[-1] != 5:
            raise DataError(
                f"{self.name} targets are (N, M, 5): x1, y1, x2, y2, class per object, rows of "
                f"-1 padding; got shape {boxes.shape}"
            )
        found = (
            self.decode(outputs)
            if self.decode is not None
            else decode(pick_output(outputs, self.output), self.nms)
        )
        if len(found) != len(boxes):
            raise DataError(f"{len(found)} images decoded for {len(boxes)} targets")
        self._detections.extend(found)
        self._targets.extend(boxes)

    def result(self) -> float:
        if not self._targets:
            return float("nan")
        width = max(len(t) for t in self._targets)
        padded = np.full((len(self._targets), width, 5), -1.0, np.float32)
        for i, t in enumerate(self._targets):
            padded[i, : len(t)] = t
        map5095, map50 = coco_map(self._detections, padded)
        return 100.0 * (map50 if self.iou50 else map5095)


@dataclass
class MeanIoU:
    """Segmentation mean intersection over union over the classes present, in %: the output's
    arg-max over axis 1 (N, C, ...) against class-id masks (N, ...), from one confusion matrix
    over the set (classes absent from both prediction and target do not count)."""

    output: str | None = None
    ignore_index: int = -1
    name: str = "mIoU"
    units: str = "%"
    higher_is_better: bool = True
    _confusion: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def reset(self) -> None:
        self._confusion = np.zeros((0, 0), np.int64)

    def update(self, outputs: Outputs, targets: Any) -> None:
        scores, masks = (
            pick_output(outputs, self.output),
            need_targets(targets, self.name).astype(np.int64),
        )
        pred = scores.argmax(1)
        if pred.shape != masks.shape:
            raise DataError(f"masks {masks.shape} do not match predictions {pred.shape}")
        classes = scores.shape[1]
        if self._confusion.size == 0:
            self._confusion = np.zeros((classes, classes), np.int64)
        keep = masks != self.ignore_index
        pairs = masks[keep] * classes + pred[keep]
        self._confusion += np.bincount(pairs, minlength=classes * classes).reshape(classes, -1)

    def result(self) -> float:
        c = self._confusion
        union = c.sum(0) + c.sum(1) - np.diag(c)
        present = union > 0
        return (
            100.0 * float(np.mean(np.diag(c)[present] / union[present])) if present.any() else 0.0
        )


@dataclass
class MeanSquaredError:
    """Mean squared error of the output against targets of its shape (regression, denoising)."""

    output: str | None = None
    name: str = "MSE"
    units: str = ""
    higher_is_better: bool = False
    _sum: float = 0.0
    _count: int = 0

    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    def update(self, outputs: Outputs, targets: Any) -> None:
        out, want = pick_output(outputs, self.output), need_targets(targets, self.name)
        if out.shape != want.shape:
            raise DataError(f"targets {want.shape} do not match the output {out.shape}")
        self._sum += float(np.sum((out.astype(np.float64) - want) ** 2))
        self._count += out.size

    def result(self) -> float:
        return self._sum / self._count if self._count else float("nan")


@dataclass
class PSNR(MeanSquaredError):
    """Peak signal-to-noise ratio 10 log10(peak^2 / MSE) in dB, over the whole set."""

    peak: float = 1.0
    name: str = "PSNR"
    units: str = "dB"
    higher_is_better: bool = True

    def result(self) -> float:
        mse = super().result()
        return float("inf") if mse == 0 else 10.0 * float(np.log10(self.peak**2 / mse))
