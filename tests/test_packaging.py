"""Packaging: `pip install edgequant` (no extras) runs the ONNX workflow without torch, and a
command that needs an extra says which one, in one line.

The slow test builds the wheel and installs it with pip into a fresh virtual environment, as a
user would; the fast ones hide torch from a subprocess of this environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgequant.errors import DependencyError, missing_extra
from tests.test_cli import assert_user_error

ROOT = Path(__file__).resolve().parents[1]

# the CLI with every import of torch failing as it does where torch is not installed
WITHOUT_TORCH = """
import importlib.machinery
import sys


class _PathFinderWithoutTorch(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            return None  # not found: `import torch` fails, importlib.util.find_spec says None
        return importlib.machinery.PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [
    _PathFinderWithoutTorch if f is importlib.machinery.PathFinder else f for f in sys.meta_path
]
sys.argv = ["edgequant", *sys.argv[1:]]
from edgequant.cli import main
main()
"""


def without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_a_missing_optional_package_names_its_extra() -> None:
    err = missing_extra(ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn"))
    assert isinstance(err, DependencyError)
    assert "pip install 'edgequant[torch]'" in str(err) and "whl/cpu" in str(err)
    err = missing_extra(ModuleNotFoundError("No module named 'pycocotools'", name="pycocotools"))
    assert err is not None and "pip install 'edgequant[detection]'" in str(err)
    # anything else missing (a user's own module, a module of edgequant) is not an extra
    assert missing_extra(ModuleNotFoundError("No module named 'mine'", name="mine")) is None
    assert (
        missing_extra(ModuleNotFoundError("No module named 'edgequant.x'", name="edgequant.x"))
        is None
    )
    assert missing_extra(ValueError("torch")) is None


def test_commands_that_need_torch_say_which_extra_without_torch(tmp_path) -> None:
    for args in (
        ["demo", "-o", str(tmp_path / "demo")],
        ["qat", "--task", "edgequant.zoo.tasks:fashion_mnist", "-o", str(tmp_path / "q.onnx")],
    ):
        proc = without_torch(*args, cwd=tmp_path)
        assert_user_error(proc, "this needs torch, which is not installed", "edgequant[torch]")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_the_onnx_workflow_runs_without_torch(model_path, calib_npz, tmp_path) -> None:
    out = tmp_path / "q.onnx"
    proc = without_torch(
        "quantize", str(model_path), "--calib", str(calib_npz), "-o", str(out), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    proc = without_torch(
        "eval", str(out), "--data", str(calib_npz), "--reference", str(model_path), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "agreement" in proc.stdout


@pytest.fixture(scope="module")
def calib_npz(tmp_path_factory, fmnist) -> Path:
    train, _ = fmnist
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    np.savez(path, input=train.images[:200], labels=train.labels[:200])
    return path


@pytest.fixture(scope="module")
def mnistnet(tmp_path_factory) -> tuple[Path, Path, Path]:
    """ccexam's pretrained MNIST CNN (not the demo's model) as ONNX, calibration and labelled
    test digits as .npz, made here with torch for the torch-free environment to use."""
    from tests.test_second_model import load_mnistnet

    fp32, x, y = load_mnistnet()
    folder = tmp_path_factory.mktemp("mnistnet")
    fp32.save(folder / "mnistnet.onnx")
    np.savez(folder / "calib.npz", input=x[:256])
    np.savez(folder / "test.npz", input=x[256:1256], labels=y[256:1256])
    return folder / "mnistnet.onnx", folder / "calib.npz", folder / "test.npz"


@pytest.mark.slow
def test_the_wheel_runs_the_onnx_workflow_in_a_fresh_venv_without_torch(mnistnet, tmp_path) -> None:
    model, calib, test = mnistnet
    # build from a copy of the sources, so the checkout gets no build/ or egg-info
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    # with setuptools here, no build environment needs fetching
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation]
    subprocess.run([*pip, "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("edgequant-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(bin_ / "pip"), "install", "-q", str(wheel)], check=True, capture_output=True, env=env
    )
    probe = subprocess.run(
        [str(bin_ / "python"), "-c", "import torch"], capture_output=True, env=env
    )
    assert probe.returncode != 0  # the environment really has no torch

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_ / "edgequant"), *args], capture_output=True, text=True, cwd=tmp_path, env=env
        )

    q = tmp_path / "mnistnet.int8.onnx"
    for args in (
        ["quantize", str(model), "--calib", str(calib), "-o", str(q)],
        ["quantize", str(model), "--method", "fp16", "-o", str(tmp_path / "mnistnet.fp16.onnx")],
        ["check", str(q)],
        ["bench", str(model), str(q), "--batch", "1", "--threads", "1"],
        [
            "analyze",
            str(model),
            "--calib",
            str(calib),
            "--data",
            str(test),
            "--output",
            str(tmp_path / "analyze"),
        ],
        ["targets"],
    ):
        proc = run(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = run("eval", str(q), "--data", str(test), "--reference", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["agreement"] >= 0.99 and result["top1"] >= 0.98  # pretrained: ~99.8% here
    assert_user_error(run("demo", "-o", str(tmp_path / "demo")), "edgequant[torch]")
    version = subprocess.run(
        [str(bin_ / "python"), "-m", "edgequant", "--version"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert version.returncode == 0 and "0.1.0" in version.stdout
    typed = subprocess.run(
        [str(bin_ / "python"), "-c", "import edgequant, pathlib; print((pathlib.Path(edgequant.__file__).parent / 'py.typed').is_file())"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert typed.stdout.strip() == "True"
