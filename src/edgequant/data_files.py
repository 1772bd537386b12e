"""Calibration and evaluation `.npz` files from images, text or arrays, shaped for a model.

`edgequant data` is the step between "I have photos / sentences / arrays" and `--calib`: it reads
the source as the model takes it (the image size, channels and layout from its input shape; the
token arrays its inputs name, in their integer type), keeps a random subset when asked (the same
seed, the same samples), and writes one `.npz` whose arrays are named after the model's inputs.
Text goes through the model's own Hugging Face tokenizer (`transformers.AutoTokenizer` on a local
folder): the exact special tokens, padding and truncation the model was trained with.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from edgequant.batching import axes_of, count
from edgequant.errors import ConfigError, DataError
from edgequant.images import IMAGE_SUFFIXES, ImageOptions, load_image_folder
from edgequant.model import Model

TEXT_SUFFIXES = {".txt", ".csv"}


@dataclass(frozen=True)
class TextOptions:
    """How text becomes token arrays: a local Hugging Face tokenizer folder, the sequence length
    (padded and truncated to it; a model with a fixed sequence length overrides it), and for a
    `.csv` the column that holds the text and, optionally, the one that holds class labels."""

    tokenizer: Path
    max_length: int = 128
    column: str = "text"
    label_column: str | None = None


@dataclass(frozen=True)
class DataFile:
    """What `make_data` made: arrays by name (`labels` among them when the source has them),
    how many samples the source held, and which ones were kept."""

    arrays: dict[str, NDArray[Any]]
    source_samples: int
    samples: int

    def describe(self) -> list[str]:
        """One line per array: name, shape, dtype, and its range (or its classes)."""
        lines = []
        for name, a in self.arrays.items():
            if name == "labels":
                extra = f"{len(np.unique(a))} classes"
            elif a.size:
                extra = f"values {a.min():.4g} to {a.max():.4g}"
            else:
                extra = "empty"
            lines.append(f"{name} {tuple(a.shape)} {a.dtype}, {extra}")
        return lines


def make_data(
    source: str | Path,
    *,
    model: Model | None = None,
    images: ImageOptions | None = None,
    text: TextOptions | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> DataFile:
    """Read `source` (an image folder, a .txt/.csv of text, or an .npy/.npz) into arrays named
    after `model`'s inputs and in their types; `samples` keeps that many, picked at random
    with `seed` (in the source's order)."""
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"{source} does not exist: give an image folder, a .txt/.csv, or an .npy/.npz"
        )
    if samples is not None and samples < 1:
        raise DataError(f"--samples must be at least 1, got {samples}")
    inputs = model.input_shapes if model is not None else {}
    if path.is_dir():
        arrays = _images(path, images or ImageOptions(), inputs)
    elif path.suffix.lower() in TEXT_SUFFIXES:
        if text is None:
            raise ConfigError(
                f"{path.name} is text: give --tokenizer DIR (the model's Hugging Face tokenizer folder)"
            )
        arrays = _text(path, text, inputs)
    elif path.suffix.lower() in (".npy", ".npz"):
        arrays = _arrays(path, inputs)
    else:
        known = ", ".join(sorted(TEXT_SUFFIXES | {".npy", ".npz"}))
        raise DataError(f"{path.name}: unsupported source; give an image folder or a {known} file")
    if model is not None:
        arrays = _as_model_takes(arrays, model)
    axes = model.batch_axes() if model is not None else axes_of(arrays)
    axes = {**axes, "labels": 0}
    total = count(arrays, axes)
    if total == 0:
        raise DataError(f"{source} holds no samples")
    if samples is not None and samples < total:
        keep = np.sort(np.random.default_rng(seed).choice(total, samples, replace=False))
        arrays = {
            name: a if axes.get(name) is None else np.take(a, keep, axis=axes[name])
            for name, a in arrays.items()
        }
    return DataFile(arrays, total, count(arrays, axes))


def write_npz(arrays: Mapping[str, NDArray[Any]]) -> bytes:
    """The bytes of an `.npz` of `arrays`, the same bytes for the same arrays: numpy's own
    `savez` stamps each member with the current time, so the zip is written here with a fixed
    one (the members are numpy's `.npy` format, written by numpy)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, a in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def _images(
    path: Path, options: ImageOptions, inputs: Mapping[str, tuple[int | str | None, ...]]
) -> dict[str, NDArray[Any]]:
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
        raise DataError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    shapes = list(inputs.values())
    if len(shapes) > 1:
        raise DataError(
            f"the model takes {len(shapes)} inputs ({', '.join(inputs)}): images fill one; "
            "make the arrays yourself (np.savez with one array per input name)"
        )
    x, labels = load_image_folder(path, options.for_input(shapes[0] if shapes else None))
    name = next(iter(inputs), "input")
    return {name: x, **({"labels": labels} if labels is not None else {})}


def _text(
    path: Path, options: TextOptions, inputs: Mapping[str, tuple[int | str | None, ...]]
) -> dict[str, NDArray[Any]]:
    texts, labels = _read_text(path, options)
    lengths = {s[1] for s in inputs.values() if len(s) >= 2 and isinstance(s[1], int) and s[1] > 0}
    max_length = lengths.pop() if len(lengths) == 1 else options.max_length  # a fixed length wins
    tokenizer = _tokenizer(options.tokenizer)
    tokens = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    arrays: dict[str, NDArray[Any]] = {k: np.asarray(v) for k, v in tokens.items()}
    if inputs:
        missing = [name for name in inputs if name not in arrays]
        if missing:
            raise DataError(
                f"the model takes {', '.join(missing)}, which the tokenizer does not make "
                f"(it makes {', '.join(arrays)}): is {options.tokenizer} the model's tokenizer?"
            )
        arrays = {name: arrays[name] for name in inputs}
    if labels is not None:
        arrays["labels"] = labels
    return arrays


def _read_text(path: Path, options: TextOptions) -> tuple[list[str], NDArray[np.int64] | None]:
    """Samples from a .txt (one per non-empty line) or a .csv (a named column); labels from
    `label_column` (integers as they are, other values as their sorted index)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not readable UTF-8 text: {exc}") from None
    if path.suffix.lower() == ".txt":
        if options.label_column:
            raise ConfigError("--label-column is for a .csv; a .txt holds one text per line")
        return [line for line in raw.splitlines() if line.strip()], None
    rows = list(csv.DictReader(io.StringIO(raw)))
    columns = list(rows[0]) if rows else []
    for column in (options.column, options.label_column):
        if column is not None and column not in columns:
            raise DataError(
                f"{path.name} has no column {column!r} (it has {', '.join(columns) or 'none'}): give --column / --label-column"
            )
    texts = [row[options.column] for row in rows]
    if options.label_column is None:
        return texts, None
    values = [row[options.label_column] for row in rows]
    if all(v.strip().lstrip("-").isdigit() for v in values):
        return texts, np.array([int(v) for v in values], np.int64)
    classes = sorted(set(values))
    return texts, np.array([classes.index(v) for v in values], np.int64)


def _tokenizer(folder: Path) -> Any:
    from edgequant.importers import is_tokenizer_folder, load_tokenizer

    if not is_tokenizer_folder(folder):
        raise ConfigError(
            f"--tokenizer {folder}: not a Hugging Face tokenizer folder (no tokenizer.json or "
            "tokenizer_config.json)"
        )
    return load_tokenizer(folder)


def _arrays(
    path: Path, inputs: Mapping[str, tuple[int | str | None, ...]]
) -> dict[str, NDArray[Any]]:
    from edgequant.data import load_data

    # one array for a one-input model feeds it whatever its name (load_data's own rule)
    data = load_data(str(path), axes=dict.fromkeys(inputs, 0) if len(inputs) == 1 else None)
    plain = next(iter(inputs), "x")
    arrays = dict(data.inputs) if isinstance(data.inputs, Mapping) else {plain: data.inputs}
    if data.labels is not None:
        arrays["labels"] = data.labels
    return arrays


def _as_model_takes(arrays: dict[str, NDArray[Any]], model: Model) -> dict[str, NDArray[Any]]:
    """The arrays in the types of the model's inputs; a name the model lacks is an error."""
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in model.proto.graph.input
        if v.name in model.input_shapes
    }
    extra = [n for n in arrays if n != "labels" and n not in types]
    missing = [n for n in types if n not in arrays]
    if extra or missing:
        raise DataError(
            f"the arrays are named {', '.join(n for n in arrays if n != 'labels')} and the model "
            f"takes {', '.join(types)}: name each array after the input it feeds"
        )
    out = dict(arrays)
    for name, elem in types.items():
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else None
        if dtype is not None and out[name].dtype != dtype:
            out[name] = out[name].astype(dtype)
    return out
