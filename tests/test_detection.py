"""A YOLO-style detector (decoded boxes in pixels concatenated with 0-1 class scores in one
output) trained on real Fashion-MNIST scenes, quantized through the CLI: detections kept, box
decoding left in float for the stated reason. mAP by pycocotools against the scenes' boxes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgequant.metrics.detection import NmsConfig, _nms, coco_map, decode
from edgequant.zoo import scenes
from tests.test_cli import edgequant as run_cli


def test_scenes_hold_real_garments_with_tight_boxes() -> None:
    """Every box lies on the canvas and frames bright pixels at its edges (a tight box); the
    same arguments give the same scenes; test scenes come from the test split's garments."""
    a, b = scenes.compose("test", 50, seed=3), scenes.compose("test", 50, seed=3)
    assert np.array_equal(a.images, b.images)
    raw = (a.images * 0.3530 + 0.2860) * 255  # undo the normalisation
    for image, boxes in zip(raw[:, 0], a.boxes, strict=True):
        assert 1 <= len(boxes) <= scenes.MAX_OBJECTS
        for x1, y1, x2, y2 in boxes.astype(int):
            assert 0 <= x1 < x2 <= scenes.SIZE and 0 <= y1 < y2 <= scenes.SIZE
            crop = image[y1:y2, x1:x2]
            assert crop[0].max() > 24 or crop[:, 0].max() > 24  # a garment touches the box
    targets = a.targets()
    assert targets.shape == (50, scenes.MAX_OBJECTS, 5)
    assert (targets[:, :, 4] >= -1).all() and (targets[:, :, 4] < 10).all()


def test_map_is_one_for_the_truth_and_drops_for_shifted_boxes() -> None:
    """pycocotools' mAP of the ground truth as detections is 1; boxes shifted by a quarter of
    their size keep mAP50 (IoU 0.6 > 0.5) and lose the strict thresholds."""
    data = scenes.compose("test", 40, seed=5)
    targets = data.targets()
    truth = [
        np.concatenate([b, np.ones((len(b), 1)), c[:, None]], 1).astype(np.float32)
        for b, c in zip(data.boxes, data.classes, strict=True)
    ]
    assert coco_map(truth, targets) == pytest.approx((1.0, 1.0))
    shifted = []
    for d in truth:
        d = d.copy()
        width = d[:, 2] - d[:, 0]
        d[:, [0, 2]] += width[:, None] / 8  # IoU (7/8) / (9/8) = 0.78
        shifted.append(d)
    strict, loose = coco_map(shifted, targets)
    assert loose == pytest.approx(1.0) and 0.2 < strict < 0.8


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    assert _nms(boxes, scores, classes, 0.5).tolist() == [0, 2, 3]
    output = np.zeros((1, 6, 2), np.float32)  # two anchors, two classes: centre-xywh + scores
    output[0, :4, 0] = [5, 5, 10, 10]
    output[0, 4:, 0] = [0.9, 0.0005]
    (found,) = decode(output, NmsConfig(score=0.001))
    assert found.tolist() == [[0.0, 0.0, 10.0, 10.0, pytest.approx(0.9), 0.0]]


@pytest.mark.slow  # trains the detector (~70 s, cached), then quantizes through the CLI
def test_detector_keeps_its_detections_and_decodes_boxes_in_float(tmp_path) -> None:
    """Default INT8 of the YOLO-style detector: within 1.5 mAP50-95 points of FP32 on 500
    unseen scenes (ONNX Runtime's quantizer loses about 10: `benchmarks/bench_real_models.py`),
    the box decoding after the last conv (anchor offsets, strides, the concat with the scores)
    left float with its reason, 28% of the FP32 size at most."""
    import torch

    import edgequant as eq
    from edgequant.runtime.session import make_session
    from edgequant.torch_onnx import to_onnx
    from edgequant.zoo.detector_train import detector_model

    fp32 = to_onnx(detector_model(), torch.zeros(1, 1, scenes.SIZE, scenes.SIZE), "detector")
    src = fp32.save(tmp_path / "detector.onnx")
    name = fp32.proto.graph.input[0].name
    np.savez(tmp_path / "calib.npz", **{name: scenes.compose("train", 300, seed=7).images})
    out = tmp_path / "detector.int8.onnx"
    proc = run_cli("quantize", str(src), "--calib", str(tmp_path / "calib.npz"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size <= 0.28 * src.stat().st_size
    test = scenes.compose("test", 500, seed=1)

    def mean_ap(path) -> float:
        output = make_session(eq.load(path)).run(None, {name: test.images})[0]
        return coco_map(decode(output), test.targets())[0]

    reference, quantized = mean_ap(src), mean_ap(out)
    assert reference > 0.45  # the detector learned the task
    assert reference - quantized <= 0.015, (reference, quantized)
    # the same numbers through `edgequant eval --metric map` on a .npz carrying the boxes, and
    # the one output's fidelity (boxes in pixels beside scores: no class-score agreement)
    np.savez(tmp_path / "test.npz", **{name: test.images, "targets": test.targets()})
    proc = run_cli(
        "eval", str(out), "--data", str(tmp_path / "test.npz"), "--metric", "map",
        "--reference", str(src), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["metric"]["name"] == "mAP50-95" and result["metric"]["units"] == "mAP points"
    assert result["metric"]["value"] == pytest.approx(100 * quantized, abs=1e-6)
    assert result["reference_metric"]["value"] == pytest.approx(100 * reference, abs=1e-6)
    (fidelity,) = result["outputs"]
    assert fidelity["agreement"] is None and result["agreement"] is None
    proto = onnx.load(str(out))
    final = next(n for n in proto.graph.node if n.output[0] == proto.graph.output[0].name)
    assert final.op_type == "Concat"  # boxes and scores joined in float, each at full precision
    producer = {o: n for n in proto.graph.node for o in n.output}
    assert all(producer[t].op_type != "DequantizeLinear" for t in final.input)
    reasons = eq.read_provenance(out).float_nodes
    assert any("after the last layer with weights" in r for r in reasons.values())
