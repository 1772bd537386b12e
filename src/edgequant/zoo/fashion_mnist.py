"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package (no download at run time)."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import DependencyError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Per-pixel statistics of the 60,000 training images (after scaling to [0, 1]).
MEAN, STD = 0.2860, 0.3530


@dataclass(frozen=True)
class Split:
    """Images (N, 1, 28, 28) float32, normalised; labels (N,) int64."""

    images: NDArray[np.float32]
    labels: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.labels)


def data_dir() -> Path:
    """Where the IDX files are: $EDGEQUANT_FASHION_MNIST or the Debian package's folder."""
    return Path(os.environ.get("EDGEQUANT_FASHION_MNIST", DEFAULT_DIR))


@dataclass(frozen=True)
class RawSplit:
    """Images (N, 28, 28) uint8 as stored; labels (N,) int64."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]


def load(split: str = "test") -> Split:
    """Load the 'train' (60,000) or 'test' (10,000) split, normalised for the demo models."""
    raw = load_raw(split)
    return Split(normalise(raw.images[:, None]), raw.labels)


def load_raw(split: str = "test") -> RawSplit:
    """The 'train' or 'test' split's pixels as stored (scenes are composed from these)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    root = data_dir()
    images_file = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_file = root / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_file.is_file() or not labels_file.is_file():
        raise DependencyError(
            f"Fashion-MNIST not found in {root}: install it with "
            "`sudo apt-get install dataset-fashion-mnist` or set EDGEQUANT_FASHION_MNIST to a folder "
            "holding the four *-ubyte.gz files"
        )
    with gzip.open(images_file) as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_file) as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8).astype(np.int64)
    return RawSplit(images, labels)


def normalise(images_uint8: NDArray[np.uint8]) -> NDArray[np.float32]:
    """uint8 pixels -> float32 with the training set's mean and std."""
    return ((images_uint8.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)
