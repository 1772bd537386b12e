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
from edgequant.outputs import note_input

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

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {self.batch_size}")
        arrays = self.inputs if isinstance(self.inputs, Mapping) else {"inputs": self.inputs}
        sizes = {name: len(a) if np.ndim(a) else 0 for name, a in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise DataError(
                f"input arrays hold different numbers of samples {sizes}: give every input the "
                "same first (sample) axis"
            )
        if self.labels is not None and len(self.labels) != len(self):
            raise DataError(
                f"{len(self.labels)} labels for {len(self)} samples: give one label per sample"
            )

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
    batch_multiple: int = 1,
) -> ArrayDataset:
    """Data named on the command line: a built-in name, an .npy/.npz file, or a folder of images.

    Images are scaled to [0, 1]; `mean`/`std` (one value, or one per channel) then normalise them
    as the model was trained, e.g. mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225).
    `limit` keeps the first samples (at least 1). `batch_multiple` (a model whose batch axis is
    fixed at that size) drops the samples beyond the last whole multiple of it.
    """
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1 sample, got {limit}")
    if spec in BUILTINS:
        from edgequant.zoo import fashion_mnist

        split = fashion_mnist.load("train" if spec.endswith(":train") else "test")
        data = ArrayDataset(split.images, split.labels, batch_size)
    else:
        path = Path(spec)
        note_input(path)
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
    data = data.take(limit) if limit else data
    if batch_multiple > 1:
        if len(data) < batch_multiple:
            raise DataError(
                f"the model takes batches of exactly {batch_multiple} samples and {spec} gives "
                f"{len(data)}: give at least {batch_multiple}"
            )
        data = data.take(len(data) - len(data) % batch_multiple)
    return data


def _load_array_file(path: Path, batch_size: int) -> ArrayDataset:
    if path.suffix not in {".npy", ".npz"}:
        raise DataError(f"{path}: unsupported data file; use .npy, .npz or a folder of images")
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle untrusted data
        if isinstance(loaded, np.ndarray):
            return ArrayDataset(_numeric(loaded, path.name), None, batch_size)
        arrays = {k: _numeric(loaded[k], f"{path.name}:{k}") for k in loaded.files}
    except DataError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "allow_pickle" in reason:
            reason = "it holds Python objects, which edgequant never unpickles; save numeric arrays"
        raise DataError(f"{path} is not a readable {path.suffix} file: {reason}") from None
    labels = next((arrays.pop(k) for k in ("labels", "y") if k in arrays), None)
    if not arrays:
        raise DataError(
            f"{path} holds only labels: add the input arrays, named after the model's inputs"
        )
    inputs: Any = arrays if len(arrays) > 1 or "x" not in arrays else arrays["x"]
    return ArrayDataset(inputs, labels, batch_size)


def _numeric(array: NDArray[Any], where: str) -> NDArray[Any]:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where} holds {array.dtype} values: save numeric arrays (float32 inputs)")
    if array.ndim == 0:
        raise DataError(f"{where} is a single number: save arrays with a first (sample) axis")
    return array


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
