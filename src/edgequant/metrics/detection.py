"""Detections from a YOLO-style output and their COCO mAP against the scenes' boxes.

mAP50-95 and mAP50 come from `pycocotools` (the COCO reference implementation, so the numbers
mean what papers mean). Non-maximum suppression runs outside the graph, as deployed detectors
run it: a greedy per-class NMS written here in numpy (twenty lines; torchvision's would pull a
second torch build onto CPU machines).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import DependencyError


@dataclass(frozen=True)
class NmsConfig:
    """Score threshold, IoU threshold and detections kept per image (COCO evaluation: low
    threshold, 100 detections)."""

    score: float = 0.001
    iou: float = 0.6
    max_detections: int = 100


def decode(output: NDArray[np.float32], nms: NmsConfig = NmsConfig()) -> list[NDArray[np.float32]]:
    """(N, 4 + C, A) centre-xywh boxes and class scores -> per image (K, 6): x1, y1, x2, y2,
    score, class, after per-class NMS."""
    results = []
    for image in output:
        xywh, scores = image[:4].T, image[4:].T  # (A, 4), (A, C)
        boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        anchor, cls = np.nonzero(scores > nms.score)
        conf = scores[anchor, cls]
        keep = _nms(boxes[anchor], conf, cls, nms.iou)[: nms.max_detections]
        results.append(
            np.concatenate(
                [boxes[anchor[keep]], conf[keep, None], cls[keep, None].astype(np.float32)], 1
            ).astype(np.float32)
        )
    return results


def _nms(boxes: NDArray, scores: NDArray, classes: NDArray, iou: float) -> NDArray[np.int64]:
    """Indices kept by greedy NMS within each class, best score first."""
    shifted = boxes + classes[:, None] * 1e4  # boxes of different classes never overlap
    order = np.argsort(-scores, kind="stable")
    area = (shifted[:, 2:] - shifted[:, :2]).prod(1)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        lt = np.maximum(shifted[best, :2], shifted[rest, :2])
        rb = np.minimum(shifted[best, 2:], shifted[rest, 2:])
        inter = np.clip(rb - lt, 0, None).prod(1)
        overlap = inter / (area[best] + area[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def coco_map(
    detections: list[NDArray[np.float32]], targets: NDArray[np.float32]
) -> tuple[float, float]:
    """(mAP50-95, mAP50) of `detections` (per image (K, 6) as `decode` gives) against `targets`
    (N, M, 5: x1, y1, x2, y2, class; rows of -1 are padding), by pycocotools."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise DependencyError("mAP needs pycocotools: pip install 'edgequant[detection]'") from None
    images: list[dict[str, int]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for i, (dets, objects) in enumerate(zip(detections, targets, strict=True)):
        images.append({"id": i})
        for box in objects[objects[:, 4] >= 0]:
            x1, y1, x2, y2, c = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
            })  # fmt: skip
        for x1, y1, x2, y2, score, c in dets.tolist():
            results.append({
                "image_id": i, "category_id": int(c), "score": score,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
            })  # fmt: skip
    if not results:
        return 0.0, 0.0
    categories = sorted(
        {int(a["category_id"]) for a in annotations} | {int(r["category_id"]) for r in results}
    )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {
            "images": images, "annotations": annotations,
            "categories": [{"id": c} for c in categories],
        }  # fmt: skip
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0]), float(evaluation.stats[1])
