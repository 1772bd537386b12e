"""Calibration and evaluation data: any iterable of batches, plus loaders for files and built-ins.

A batch is an array (single-input models), a dict of arrays by input name, or a pair
(inputs, labels) where labels are integer class ids. `Dataset(source, transform)` wraps any
iterable, as NNCF does, instead of a reader object with a `get_next()` that returns None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.batching import axes_of, count, take
from edgequant.errors import DataError
from edgequant.images import ImageOptions, load_image_folder
from edgequant.outputs import note_input

Batch = NDArray[Any] | Mapping[str, NDArray[Any]]
BUILTINS = ("fashion-mnist", "fashion-mnist:train", "fashion-mnist:test")


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
    """In-memory arrays served in batches: inputs (N, ...) or a dict of them, labels (N,).

    `axes` (input name -> the axis its samples lie on, None for an input fed whole with every
    batch, such as a scalar sample rate) follows the model's own layout; by default axis 0, and
    none for 0-d arrays (`edgequant.batching`)."""

    inputs: NDArray[Any] | Mapping[str, NDArray[Any]]
    labels: NDArray[Any] | None = None  # class ids, or any targets (N, ...): boxes, masks
    batch_size: int = 64
    axes: Mapping[str, int | None] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {self.batch_size}")
        arrays = self._arrays()
        for name, axis in self._axes().items():
            if name in arrays and axis is not None and axis >= np.ndim(arrays[name]):
                shape = np.shape(arrays[name])
                raise DataError(
                    f"input {name!r} has shape {shape}, so it has no axis {axis} to hold samples "
                    "on: save it in the model's own layout, or say where its samples lie with "
                    "--batch-axis NAME=AXIS"
                )
        if all(self._axes().get(name) is None for name in arrays):
            raise DataError(
                "no input has a sample axis: give arrays with samples along one axis "
                "(0-d values are fed whole with every batch)"
            )
        count(arrays, self._axes())  # the batch axes agree
        if self.labels is not None and len(self.labels) != len(self):
            raise DataError(
                f"{len(self.labels)} labels for {len(self)} samples: give one label per sample"
            )

    def _arrays(self) -> dict[str, NDArray[Any]]:
        return dict(self.inputs) if isinstance(self.inputs, Mapping) else {"": self.inputs}

    def _axes(self) -> Mapping[str, int | None]:
        return self.axes if self.axes is not None else axes_of(self._arrays())

    def __len__(self) -> int:
        return count(self._arrays(), self._axes())

    def _part(self, start: int, stop: int) -> Any:
        part = take(self._arrays(), self._axes(), start, stop)
        return part if isinstance(self.inputs, Mapping) else part[""]

    def __iter__(self) -> Iterator[Any]:
        for i in range(0, len(self), self.batch_size):
            x = self._part(i, i + self.batch_size)
            yield x if self.labels is None else (x, self.labels[i : i + self.batch_size])

    def take(self, n: int) -> ArrayDataset:
        """The first n samples."""
        labels = None if self.labels is None else self.labels[:n]
        return ArrayDataset(self._part(0, n), labels, self.batch_size, self.axes)

    def with_axes(self, axes: Mapping[str, int | None]) -> ArrayDataset:
        """The same named arrays read along `axes` (input name -> sample axis or None); arrays
        `axes` does not name keep the default."""
        merged = _merged_axes(self._arrays(), axes)
        return ArrayDataset(self.inputs, self.labels, self.batch_size, merged)


def _merged_axes(
    arrays: Mapping[str, NDArray[Any]], axes: Mapping[str, int | None] | None
) -> dict[str, int | None]:
    """Default axes (0; none for 0-d arrays) with `axes` over them, where an array has them."""
    given = {k: v for k, v in (axes or {}).items() if k in arrays}
    return {**axes_of(arrays), **given}


@dataclass(frozen=True)
class Runs:
    """Feeds recorded from another model's runs, each fed whole (no sample axis: an `If`
    branch's inputs hold their samples wherever the outer graph put them)."""

    feeds: list[dict[str, NDArray[Any]]]

    def __iter__(self) -> Iterator[dict[str, NDArray[Any]]]:
        return iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)


def batch_axes_of(data: Any) -> dict[str, int | None] | None:
    """The batch axes a dataset of named arrays was given (`ArrayDataset.axes`; none for
    `Runs`), which a session takes over the model's symbolic dimensions; None for anything
    else."""
    if isinstance(data, Runs):
        return {name: None for name in (data.feeds[0] if data.feeds else {})}
    if (
        isinstance(data, ArrayDataset)
        and data.axes is not None
        and isinstance(data.inputs, Mapping)
    ):
        return dict(data.axes)
    return None


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
    axes: Mapping[str, int | None] | None = None,
    images: ImageOptions | None = None,
) -> ArrayDataset:
    """Data named on the command line: a built-in name, an .npy/.npz file, or a folder of images.

    Images are read as `images` says (`edgequant.images.ImageOptions`: size and crop, channels,
    layout), scaled to [0, 1]; `mean`/`std` (one value, or one per channel; they override the
    options' own) then normalise them as the model was trained, e.g. mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225).
    `limit` keeps the first samples (at least 1). `batch_multiple` (a model whose batch axis is
    fixed at that size) drops the samples beyond the last whole multiple of it. `axes` (input
    name -> batch axis, None for an input fed whole) reads arrays in the model's own layout.
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
        if path.is_dir():
            options = images or ImageOptions()
            if mean is not None or std is not None:
                options = replace(options, mean=mean, std=std)
            x, labels = load_image_folder(path, options, limit)
            data = ArrayDataset(x, labels, batch_size)
        else:
            data = _load_array_file(path, batch_size, axes)
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


def _load_array_file(
    path: Path, batch_size: int, axes: Mapping[str, int | None] | None = None
) -> ArrayDataset:
    if path.suffix not in {".npy", ".npz"}:
        raise DataError(f"{path}: unsupported data file; use .npy, .npz or a folder of images")
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle untrusted data
        if isinstance(loaded, np.ndarray):
            if loaded.ndim == 0:
                raise DataError(f"{path.name} is a single number: save arrays with a sample axis")
            return ArrayDataset(_numeric(loaded, path.name), None, batch_size)
        arrays = {k: _numeric(loaded[k], f"{path.name}:{k}") for k in loaded.files}
    except DataError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "allow_pickle" in reason:
            reason = "it holds Python objects, which edgequant never unpickles; save numeric arrays"
        raise DataError(f"{path} is not a readable {path.suffix} file: {reason}") from None
    labels = next((arrays.pop(k) for k in ("labels", "y", "targets") if k in arrays), None)
    if not arrays:
        raise DataError(
            f"{path} holds only labels: add the input arrays, named after the model's inputs"
        )
    if len(arrays) == 1 and "x" in arrays:
        return ArrayDataset(arrays["x"], labels, batch_size)
    if axes is not None and len(axes) == 1 and len(arrays) == 1 and set(arrays) != set(axes):
        # one array for a one-input model: it feeds that input whatever it is named (exports
        # name the same image input "input", "x", "images" or "pixel_values")
        arrays = {next(iter(axes)): next(iter(arrays.values()))}
    return ArrayDataset(arrays, labels, batch_size, _merged_axes(arrays, axes))


def _numeric(array: NDArray[Any], where: str) -> NDArray[Any]:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where} holds {array.dtype} values: save numeric arrays (float32 inputs)")
    return array
