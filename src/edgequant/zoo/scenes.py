"""Object-detection scenes composed from real Fashion-MNIST garments (the built-in detection task).

Each scene is a dark 64x64 canvas holding one to three garments, each resized to 16-44 pixels and
placed at random, with its tight box and its class. Training scenes use the training split's
images, test scenes the test split's, so a detector is evaluated on garments it never saw. Pure
numpy and Pillow (no torch): the same scenes feed calibration files and evaluation anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from edgequant.zoo import fashion_mnist

SIZE = 64  # canvas side, pixels
MIN_SIDE, MAX_SIDE = 16, 44  # garment side after resizing, pixels
MAX_OBJECTS = 3


@dataclass(frozen=True)
class Scenes:
    """Images (N, 1, SIZE, SIZE) float32 normalised as the classifier's; per scene, boxes
    (K, 4) as x1, y1, x2, y2 in pixels and classes (K,)."""

    images: NDArray[np.float32]
    boxes: list[NDArray[np.float32]]
    classes: list[NDArray[np.int64]]

    def __len__(self) -> int:
        return len(self.images)

    def targets(self) -> NDArray[np.float32]:
        """Boxes and classes as one padded array (N, MAX_OBJECTS, 5): x1, y1, x2, y2, class;
        rows of -1 pad scenes with fewer objects (the `.npz` targets of a detection set)."""
        out = np.full((len(self), MAX_OBJECTS, 5), -1.0, np.float32)
        for i, (b, c) in enumerate(zip(self.boxes, self.classes, strict=True)):
            out[i, : len(c), :4] = b
            out[i, : len(c), 4] = c
        return out


def compose(split: str = "train", count: int = 1000, seed: int = 0) -> Scenes:
    """`count` scenes from the Fashion-MNIST `split`, the same for the same arguments."""
    raw = fashion_mnist.load_raw(split)
    rng = np.random.default_rng(seed)
    canvases = np.zeros((count, SIZE, SIZE), np.uint8)
    boxes, classes = [], []
    for i in range(count):
        scene_boxes: list[list[float]] = []
        scene_classes: list[int] = []
        for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
            pick = int(rng.integers(len(raw.labels)))
            side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
            placed = _place(canvases[i], raw.images[pick], side, scene_boxes, rng)
            if placed is not None:
                scene_boxes.append(placed)
                scene_classes.append(int(raw.labels[pick]))
        boxes.append(np.asarray(scene_boxes, np.float32).reshape(-1, 4))
        classes.append(np.asarray(scene_classes, np.int64))
    return Scenes(fashion_mnist.normalise(canvases[:, None]), boxes, classes)


def _place(
    canvas: NDArray[np.uint8],
    garment: NDArray[np.uint8],
    side: int,
    taken: list[list[float]],
    rng: np.random.Generator,
) -> list[float] | None:
    """Paste `garment` resized to `side` where it overlaps no earlier box by more than a
    quarter of its area (ten tries); its tight box, or None when no place was found."""
    resized = np.asarray(Image.fromarray(garment).resize((side, side), Image.Resampling.BILINEAR))
    rows, cols = np.nonzero(resized > 24)
    if len(rows) == 0:
        return None
    for _ in range(10):
        y, x = (int(v) for v in rng.integers(0, SIZE - side + 1, size=2))
        box = [x + cols.min(), y + rows.min(), x + cols.max() + 1.0, y + rows.max() + 1.0]
        if all(_overlap(box, other) <= 0.25 for other in taken):
            region = canvas[y : y + side, x : x + side]
            np.maximum(region, resized, out=region)
            return [float(v) for v in box]
    return None


def _overlap(a: list[float], b: list[float]) -> float:
    """Intersection of `a` and `b` over the smaller one's area."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller
