"""Data loaders: image folders, .npz files and built-in names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgequant as eq
from edgequant.errors import DataError
from edgequant.zoo import fashion_mnist


def test_image_folder_by_class(tmp_path: Path) -> None:
    from PIL import Image

    raw = np.frombuffer(  # the first 12 test images as uint8, straight from the IDX file
        __import__("gzip").open(fashion_mnist.data_dir() / "t10k-images-idx3-ubyte.gz").read(),
        np.uint8,
        offset=16,
    ).reshape(-1, 28, 28)[:12]
    labels = fashion_mnist.load("test").labels[:12]
    for i, (img, label) in enumerate(zip(raw, labels, strict=True)):
        folder = tmp_path / f"class_{label}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    data = eq.load_data(str(tmp_path), batch_size=5)
    x, y = data.inputs, data.labels
    assert x.shape == (12, 1, 28, 28) and x.dtype == np.float32
    classes = sorted({f"class_{label}" for label in labels})
    order = sorted(range(12), key=lambda i: (f"class_{labels[i]}", f"{i:03d}"))
    np.testing.assert_allclose(x[:, 0], raw[order] / 255.0, atol=1e-6)
    assert [classes[c] for c in y] == [f"class_{labels[i]}" for i in order]
    assert [len(b[1]) for b in data] == [5, 5, 2]


def test_image_folder_normalisation(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (4, 4), (255, 0, 51)).save(tmp_path / "a.png")
    x = eq.load_data(str(tmp_path), mean=(0.5, 0.5, 0.0), std=(0.5, 0.25, 0.2)).inputs
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, -2.0, 1.0], atol=1e-6)
    with pytest.raises(DataError, match="normalisation values"):
        eq.load_data(str(tmp_path), mean=(0.1, 0.2))


def test_npz_with_labels_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((10, 3), np.float32), labels=np.arange(10))
    data = eq.load_data(str(path), batch_size=4, limit=6)
    assert [len(y) for _, y in data] == [4, 2]


def test_builtin_name() -> None:
    data = eq.load_data("fashion-mnist", limit=100)
    assert len(data) == 100 and data.labels is not None


def test_folder_of_mixed_sizes_is_a_clear_error(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    Image.new("L", (9, 8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="differ in size"):
        eq.load_data(str(tmp_path))


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(DataError, match="unsupported data file"):
        eq.load_data(str(path))
