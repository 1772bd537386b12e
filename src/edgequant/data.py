"""Calibration and evaluation data: any iterable of batches, plus loaders for files and built-ins.

A batch is an array (single-input models), a dict of arrays by input name, or a pair
(inputs, labels) where labels are integer class ids. `Dataset(source, transform)` wraps any
iterable, as NNCF does, instead of a reader object with a `get_next()` that returns None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import DataError

Batch = NDArray[Any] | Mapping[str, NDArray[Any]]
BUILTINS = ("fashion-mnist", "fashion-mnist:train", "fashion-mnist:test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """Any re-iterable source of items, each mapped by `transform` to a batch or (batch, labels)."""

    source: Iterable[Any]
    transform: Callable[[Any], Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        for item in self.source:
            yield self.transform(item) if self.transform else item


@dataclass(frozen=True)
class ArrayDataset:
    """In-memory arrays served in batches: inputs (N, ...) or a dict of them, labels (N,)."""

    inputs: NDArray[Any] | Mapping[str, NDArray[Any]]
    labels: NDArray[np.integer] | None = None
    batch_size: int = 64

    def __len__(self) -> int:
        first = (
            self.inputs
            if not isinstance(self.inputs, Mapping)
            else next(iter(self.inputs.values()))
        )
        return len(first)

    def __iter__(self) -> Iterator[Any]:
        for i in range(0, len(self), self.batch_size):
            part = slice(i, i + self.batch_size)
            x = (
                self.inputs[part]
                if not isinstance(self.inputs, Mapping)
                else {k: v[part] for k, v in self.inputs.items()}
            )
            yield x if self.labels is None else (x, self.labels[part])

    def take(self, n: int) -> ArrayDataset:
        """The first n samples."""
        x = (
            self.inputs[:n]
            if not isinstance(self.inputs, Mapping)
            else {k: v[:n] for k, v in self.inputs.items()}
        )
        return ArrayDataset(x, None if self.labels is None else self.labels[:n], self.batch_size)


def as_batches(data: Iterable[Any]) -> Iterator[Batch]:
    """The input part of each item (labels dropped)."""
    for item in data:
        yield split_item(item)[0]


def split_item(item: Any) -> tuple[Batch, NDArray[np.integer] | None]:
    """(inputs, labels) of one item; labels None when the item carries none."""
    if isinstance(item, tuple | list) and len(item) == 2:
        return item[0], np.asarray(item[1])
    if isinstance(item, np.ndarray | Mapping):
        return item, None
    raise DataError(
        f"a data item is a {type(item).__name__}: give arrays, dicts of arrays by input name, "
        "or (inputs, labels) pairs"
    )


def load_data(
    spec: str,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ArrayDataset:
    """Data named on the command line: a built-in name, an .npy/.npz file, or a folder of images.

    Images are scaled to [0, 1]; `mean`/`std` (one value, or one per channel) then normalise them
    as the model was trained, e.g. mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225).
    """
    if spec in BUILTINS:
        from edgequant.zoo import fashion_mnist

        split = fashion_mnist.load("train" if spec.endswith(":train") else "test")
        data = ArrayDataset(split.images, split.labels, batch_size)
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(
                f"data not found: {spec} (give an .npy/.npz file, an image folder, or one of {', '.join(BUILTINS)})"
            )
        data = (
            _load_folder(path, batch_size, mean, std)
            if path.is_dir()
            else _load_array_file(path, batch_size)
        )
    if len(data) == 0:
        raise DataError(f"{spec} holds no samples")
    return data.take(limit) if limit else data


def _load_array_file(path: Path, batch_size: int) -> ArrayDataset:
    if path.suffix not in {".npy", ".npz"}:
        raise DataError(f"{path}: unsupported data file; use .npy, .npz or a folder of images")
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle untrusted data
    except Exception as exc:
        raise DataError(
            f"{path} is not a readable {path.suffix} file: {type(exc).__name__}: {exc}"
        ) from None
    if isinstance(loaded, np.ndarray):
        return ArrayDataset(loaded, None, batch_size)
    arrays = {k: loaded[k] for k in loaded.files}
    labels = next((arrays.pop(k) for k in ("labels", "y") if k in arrays), None)
    if not arrays:
        raise DataError(
            f"{path} holds only labels: add the input arrays, named after the model's inputs"
        )
    inputs: Any = arrays if len(arrays) > 1 or "x" not in arrays else arrays["x"]
    return ArrayDataset(inputs, labels, batch_size)


def _load_folder(
    path: Path,
    batch_size: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ArrayDataset:
    """Images scaled to [0, 1], (N, C, H, W) float32; subfolder names become class labels when
    every image sits in one, sorted alphabetically (the ImageFolder convention)."""
    from PIL import Image

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for f in files:
        try:
            with Image.open(f) as img:
                arr = np.asarray(
                    img.convert("L") if img.mode in ("L", "1", "P") else img.convert("RGB"),
                    np.float32,
                )
        except Exception as exc:
            raise DataError(f"{f} is not a readable image: {exc}") from None
        images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))  # HWC -> CHW
    if len({im.shape for im in images}) != 1:
        raise DataError(
            f"images in {path} differ in size or channels: resize them to one shape first"
        )
    x = np.stack(images) / 255.0  # (N, C, H, W)
    if mean is not None or std is not None:
        x = (x - _per_channel(mean or (0.0,), x.shape[1])) / _per_channel(std or (1.0,), x.shape[1])
    classes = (
        sorted({f.parent.name for f in files}) if all(f.parent != path for f in files) else None
    )
    labels = (
        None
        if classes is None
        else np.array([classes.index(f.parent.name) for f in files], np.int64)
    )
    return ArrayDataset(x.astype(np.float32), labels, batch_size)


def _per_channel(values: tuple[float, ...], channels: int) -> NDArray[np.float64]:
    if len(values) not in (1, channels):
        raise DataError(
            f"give 1 or {channels} normalisation values for {channels}-channel images, got {len(values)}"
        )
    return np.asarray(values, np.float64).reshape(1, -1, 1, 1)
