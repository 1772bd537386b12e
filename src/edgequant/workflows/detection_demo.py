"""The demo's detection task: the built-in YOLO-style detector on Fashion-MNIST scenes.

Scenes of real Fashion-MNIST garments (`zoo.scenes`, boxes known) -> the anchor-free detector
(`zoo.detector`: DFL boxes decoded in the graph and concatenated with the class scores in one
output) trained in FP32 (or from the cache) -> FP32, a naive all-INT8 model, edgequant's default
INT8 and FP16 -> COCO mAP50-95 (pycocotools) on held-out scenes, latency and size in ONNX
Runtime, side by side -> a picture of FP32's and INT8's detections on a few test scenes.
`edgequant demo --task detection` runs it alone; the default demo adds it as a section.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgequant.analysis.fidelity import FidelityGuard
from edgequant.config import PTQConfig
from edgequant.data import ArrayDataset
from edgequant.metrics.base import MetricValue
from edgequant.model import Model
from edgequant.outputs import check_report_dir, resolve_output_dir
from edgequant.progress import ProgressFn, silent
from edgequant.ptq import quantize
from edgequant.report import Row, Section, markdown_table, write_report
from edgequant.report.figure import save_figure
from edgequant.report.table import timing
from edgequant.runtime.benchmark import benchmark
from edgequant.runtime.scoring import Scorer

CALIBRATION_SCENES = 300  # training scenes, unlabelled
TEST_SCENES = 500
PICTURED = 4  # test scenes drawn with their detections
SHOWN_SCORE = 0.3  # detections drawn from this class score up


@dataclass(frozen=True)
class DetectionVariant:
    name: str
    config: PTQConfig
    guarded: bool
    note: str


def detection_variants() -> list[DetectionVariant]:
    """The naive recipe first (every operator INT8, the output too), then edgequant's default
    (as `edgequant quantize` runs it, fidelity guard included) and FP16."""
    return [
        DetectionVariant(
            "int8-naive",
            PTQConfig.int8(full_integer=True),
            False,
            "every operator INT8, the output included: one 8-bit scale over pixel boxes and "
            "0-1 scores, box decoding rounded at every step",
        ),
        DetectionVariant(
            "int8", PTQConfig.int8(), True, "edgequant's default, as `edgequant quantize` runs it"
        ),
        DetectionVariant("fp16", PTQConfig.fp16(), False, "weights and activations in float16"),
    ]


@dataclass
class DetectionDemo:
    """The detection rows (FP32 first), FP32's mAP50-95 and the report section (with the
    picture, written into the report folder)."""

    rows: list[Row]
    reference: MetricValue
    section: Section


def run_detection(
    out_dir: Path, *, progress: ProgressFn = silent, bench_rounds: int = 3
) -> DetectionDemo:
    """Train (or load) the detector, quantize it each way, measure and draw into `out_dir`
    (its models into `out_dir/models`; both folders must exist)."""
    import torch

    from edgequant.torch_onnx import to_onnx
    from edgequant.zoo import scenes
    from edgequant.zoo.detector_train import detector_model

    module = detector_model(progress=lambda d, t: progress("training FP32 detector", d, t))
    fp32 = to_onnx(module, torch.zeros(1, 1, scenes.SIZE, scenes.SIZE), "detector.fp32")
    fp32.save(out_dir / "models" / "detector.fp32.onnx")
    calibration = ArrayDataset(
        scenes.compose("train", CALIBRATION_SCENES, seed=7).images, None, batch_size=100
    )
    test = scenes.compose("test", TEST_SCENES, seed=1)
    test_data = ArrayDataset(test.images, test.targets(), batch_size=100)
    built: list[tuple[DetectionVariant, Model, float]] = []
    for i, v in enumerate(detection_variants()):
        progress("quantizing the detector", i, len(detection_variants()))
        t0 = time.perf_counter()
        guard = FidelityGuard() if v.guarded else None
        q = quantize(fp32, v.config, calibration=calibration, guard=guard)
        q.name = f"detector.{v.name}"
        q.save(out_dir / "models" / f"{q.name}.onnx")
        built.append((v, q, time.perf_counter() - t0))
    scorer = Scorer(fp32, test_data, metric="map")  # FP32 outputs once, every variant against them
    scores = [scorer.score(q) for _, q, _ in built]
    reference = scorer.reference_metric
    assert reference is not None
    bench = benchmark(
        [fp32, *(q for _, q, _ in built)], batch_sizes=(1,), threads=(1, 2), rounds=bench_rounds,
        memory=False, progress=progress,
    )  # fmt: skip
    base = bench[0]

    rows = [
        Row("fp32", "fp32", None, None, None, fp32.size_bytes, 1.0, quantize_s=None,
            note="reference", metric=reference.value, **timing(base, base)),
    ]  # fmt: skip
    for (v, q, seconds), ev, b in zip(built, scores, bench[1:], strict=True):
        rows.append(
            Row(v.name, v.config.method.value, None, ev.agreement, ev.sqnr_db, q.size_bytes,
                q.size_bytes / fp32.size_bytes, quantize_s=seconds, note=v.note, metric=ev.metric,
                **timing(b, base))
        )  # fmt: skip
    default = next(q for v, q, _ in built if v.name == "int8")
    picture = draw_detections(fp32, default, test, out_dir / "detections.png")
    notes = [
        f"{TEST_SCENES} held-out 64x64 scenes of 1-3 real Fashion-MNIST garments (test split), "
        f"COCO mAP50-95 by pycocotools after per-class NMS; calibration: {CALIBRATION_SCENES} "
        "training scenes.",
        *(f"{v.name}: {v.note}." for v, _, _ in built),
        "Latency × is p50 / FP32 p50 in the same run at batch 1 (t = threads).",
        f"The picture: FP32's detections (top) and edgequant INT8's (bottom) on {PICTURED} test "
        f"scenes, class score >= {SHOWN_SCORE}.",
    ]
    section = Section(
        "Object detection: the built-in YOLO-style detector",
        markdown_table(rows, None, reference),
        notes,
        data=[asdict(r) for r in rows],
        images=[(picture, "detections, FP32 (top) and INT8 (bottom)")],
    )
    return DetectionDemo(rows, reference, section)


def run_detection_demo(
    out_dir: Path, *, progress: ProgressFn = silent, bench_rounds: int = 3
) -> tuple[DetectionDemo, dict[str, Path]]:
    """`edgequant demo --task detection`: the detection task alone, into its own report
    folder (report.md/.html/.json with the trade-off plot and the detections picture)."""
    out_dir = Path(out_dir)
    check_report_dir(out_dir)
    resolve_output_dir(out_dir)
    resolve_output_dir(out_dir / "models")
    demo = run_detection(out_dir, progress=progress, bench_rounds=bench_rounds)
    report = write_report(
        out_dir, "edgequant demo: a YOLO-style detector on Fashion-MNIST scenes", demo.rows,
        None, demo.section.notes, metric=demo.reference, images=demo.section.images,
    )  # fmt: skip
    return demo, report


def draw_detections(fp32: Model, quantized: Model, test: Any, path: Path) -> Path:
    """FP32's detections (top row) and the quantized model's (bottom row) on the first
    PICTURED test scenes, each box with its class name and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgequant.metrics.detection import decode
    from edgequant.runtime.session import make_session
    from edgequant.zoo.fashion_mnist import CLASSES

    images = test.images[:PICTURED]
    fig, axes = plt.subplots(2, PICTURED, figsize=(2.4 * PICTURED, 5.2), dpi=100)
    for row, (label, model) in enumerate((("FP32", fp32), ("INT8", quantized))):
        name = model.proto.graph.input[0].name
        found = decode(make_session(model).run(None, {name: images})[0])
        for col in range(PICTURED):
            ax = axes[row, col]
            ax.imshow(images[col, 0], cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            for x1, y1, x2, y2, score, cls in found[col]:
                if score < SHOWN_SCORE:
                    continue
                color = plt.get_cmap("tab10")(int(cls))
                ax.add_patch(
                    plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, lw=1.2)
                )
                ax.text(x1, y1 - 1, f"{CLASSES[int(cls)]} {score:.2f}", color=color, fontsize=6)
            if col == 0:
                ax.set_ylabel(label)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def detection_sentence(rows: list[Row], reference: MetricValue) -> str:
    """One line for the terminal: FP32's mAP and each variant's drop."""
    drops = ", ".join(
        f"{r.name} {r.metric:.1f} ({r.metric_drop(reference):+.1f})"
        for r in rows[1:]
        if r.metric is not None
    )
    return f"Detector mAP50-95: FP32 {reference.value:.1f}; {drops} (drop in points)."


__all__ = [
    "DetectionDemo",
    "detection_variants",
    "draw_detections",
    "run_detection",
    "run_detection_demo",
]
