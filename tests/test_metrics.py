"""Task metrics (issue 15): built-ins against library-computed values on real outputs, a user's
metric through the API and the CLI, and per-output fidelity where there is no task metric."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from sklearn.metrics import jaccard_score, top_k_accuracy_score

import edgequant as eq
from edgequant.metrics import PSNR, MeanIoU, MeanSquaredError, TopK, load_metric
from edgequant.runtime.session import make_session
from tests.test_cli import assert_user_error
from tests.test_cli import edgequant as run_cli


@pytest.fixture(scope="module")
def scored(fp32_model, fmnist):
    """The demo CNN's scores on 2,000 real test images, and their labels."""
    _, test = fmnist
    images, labels = test.images[:2000], test.labels[:2000]
    return make_session(fp32_model).run(None, {"input": images})[0], labels


def test_top_k_matches_scikit_learn_on_real_scores(scored) -> None:
    scores, labels = scored
    for k in (1, 5):
        metric = TopK(k=k)
        for i in range(0, len(labels), 500):  # streamed in batches
            metric.update({"logits": scores[i : i + 500]}, labels[i : i + 500])
        want = 100 * top_k_accuracy_score(labels, scores, k=k, labels=range(10))
        assert metric.result() == pytest.approx(want, abs=1e-9)
        assert metric.units == "%" and metric.higher_is_better


def test_mean_iou_matches_scikit_learn_on_masks_from_real_images(fmnist) -> None:
    """Three-class 'segmentations' of real garments (background, body, bright parts): scores
    from pixel intensities, masks from thresholds the scores only approximate."""
    _, test = fmnist
    x = (test.images[:64, 0] - test.images.min()) / np.ptp(test.images)  # (64, 28, 28) in [0, 1]
    scores = np.stack([0.3 - x, 0.5 - np.abs(x - 0.45), x - 0.6], axis=1)
    masks = np.digitize(x, [0.2, 0.7])  # classes 0, 1, 2
    metric = MeanIoU()
    for i in range(0, 64, 16):
        metric.update({"seg": scores[i : i + 16]}, masks[i : i + 16])
    pred = scores.argmax(1)
    want = 100 * jaccard_score(masks.ravel(), pred.ravel(), average="macro")
    assert metric.result() == pytest.approx(want, abs=1e-9)
    assert 20 < metric.result() < 95  # neither trivial nor perfect


def test_mse_and_psnr_are_the_textbook_formulas(fmnist) -> None:
    _, test = fmnist
    clean = test.images[:32]
    noisy = clean + np.random.default_rng(0).normal(0, 0.1, clean.shape).astype(np.float32)
    mse, psnr = MeanSquaredError(), PSNR(peak=float(np.ptp(clean)))
    for metric in (mse, psnr):
        metric.update({"out": noisy[:16]}, clean[:16])
        metric.update({"out": noisy[16:]}, clean[16:])
    want = float(np.mean((noisy.astype(np.float64) - clean) ** 2))
    assert mse.result() == pytest.approx(want, rel=1e-12) and not mse.higher_is_better
    assert psnr.result() == pytest.approx(
        10 * np.log10(float(np.ptp(clean)) ** 2 / want), rel=1e-12
    )


def test_ctc_error_rates_by_hand() -> None:
    """Best-path decoding collapses repeats and drops blanks (class 0); CER is the summed edit
    distance over the targets' length, WER the same over words split at the space id."""
    from edgequant.metrics import ErrorRate
    from edgequant.metrics.sequences import ctc_greedy

    steps = [[1, 1, 0, 1, 2, 2, 3], [0, 2, 0, 0, 4, 3, 3]]  # arg-max class per time step
    scores = np.eye(5, dtype=np.float32)[steps]  # (N=2, T=7, C=5)
    assert ctc_greedy(scores) == [[1, 1, 2, 3], [2, 4, 3]]
    assert ctc_greedy(scores.transpose(1, 0, 2), time_axis=0) == [[1, 1, 2, 3], [2, 4, 3]]
    targets = np.array([[1, 2, 3, -1], [2, 4, 4, 3]])  # padded with -1
    cer = ErrorRate()
    cer.update({"logits": scores}, targets)
    # [1,1,2,3] vs [1,2,3]: one insertion; [2,4,3] vs [2,4,4,3]: one deletion -> 2 of 7
    assert cer.result() == pytest.approx(100 * 2 / 7) and not cer.higher_is_better
    wer = ErrorRate(words=True, space=4)
    wer.update({"logits": scores}, targets)
    # words: [(1,1,2,3)] vs [(1,2,3)] -> 1 of 1; [(2,),(3,)] vs [(2,),(3,)] (empty word dropped) -> 0 of 2
    assert wer.name == "WER" and wer.result() == pytest.approx(100 * 1 / 3)


def test_perplexity_is_torchs_cross_entropy_exponentiated() -> None:
    import torch

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4, 12, 50)).astype(np.float32)
    ids = rng.integers(0, 50, (4, 12))
    ids[1, 8:] = -100  # padding
    metric = eq.load_metric("perplexity")
    metric.reset()
    metric.update({"logits": logits[:2]}, ids[:2])
    metric.update({"logits": logits[2:]}, ids[2:])
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits).double().reshape(-1, 50), torch.from_numpy(ids).reshape(-1),
        ignore_index=-100,
    ).exp()  # fmt: skip
    assert metric.result() == pytest.approx(float(want), rel=1e-9)


def test_retrieval_recall_matches_scikit_learn_nearest_neighbours(scored) -> None:
    """The demo CNN's scores as 10-d embeddings of 2,000 real images: recall@1 is the
    leave-one-out 1-nearest-neighbour accuracy under cosine distance."""
    from sklearn.neighbors import NearestNeighbors

    scores, labels = scored
    metric = eq.load_metric("recall1")
    metric.reset()
    for i in range(0, 2000, 500):
        metric.update({"emb": scores[i : i + 500]}, labels[i : i + 500])
    neighbours = NearestNeighbors(n_neighbors=2, metric="cosine").fit(scores)
    index = neighbours.kneighbors(scores, return_distance=False)
    others = np.where(index[:, 0] == np.arange(2000), index[:, 1], index[:, 0])
    # within one sample of 2,000: equally near neighbours may be taken in another order
    assert metric.result() == pytest.approx(100 * np.mean(labels[others] == labels), abs=0.051)
    assert 80 < metric.result() < 100


def test_evaluate_takes_a_metric_object_a_function_or_a_name(
    fp32_model, int8_model, test_data, scored
) -> None:
    """The same number whichever way the metric is given; the reference is measured too, and
    the classifier's default top-1 steps aside for the task metric."""

    def correct_share(outputs, targets) -> float:
        return float((next(iter(outputs.values())).argmax(-1) == targets).mean())

    by_object = eq.evaluate(int8_model, test_data, reference=fp32_model, metric=TopK())
    by_name = eq.evaluate(int8_model, test_data, metric="top1")
    by_function = eq.evaluate(int8_model, test_data, metric=correct_share)
    default = eq.evaluate(int8_model, test_data)
    assert by_object.metric.value == by_name.metric.value == pytest.approx(100 * default.top1)
    assert by_function.metric.value == pytest.approx(default.top1)
    assert by_function.metric.name == "correct_share"
    assert by_object.top1 is None and by_object.reference_metric.name == "top-1"
    fp32_top1 = 100 * top_k_accuracy_score(
        test_data.labels, np.concatenate([scored[0], _scores(fp32_model, test_data, 2000)]),
        k=1, labels=range(10),
    )  # fmt: skip
    assert by_object.reference_metric.value == pytest.approx(fp32_top1)
    (logits,) = by_object.outputs  # the one output, compared with FP32
    assert logits.agreement == by_object.agreement and logits.sqnr_db > 20


def _scores(model, data, start: int) -> np.ndarray:
    images = data.inputs[start:]
    return make_session(model).run(None, {"input": images})[0]


def test_user_metric_as_module_function_through_the_cli(model_path, fmnist, tmp_path) -> None:
    """`--metric module:function` (looked up from the working directory) and `module:Class`
    (a streaming Metric) give the numbers the same code gives in the API."""
    _, test = fmnist
    np.savez(tmp_path / "val.npz", input=test.images[:600], targets=test.labels[:600])
    (tmp_path / "my_metrics.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def wrong_share(outputs, targets):
                return float((outputs["logits"].argmax(-1) != targets).mean())

            wrong_share.higher_is_better = False

            class Confident:
                name, units, higher_is_better = "confident", "%", True

                def reset(self):
                    self.hits = self.n = 0

                def update(self, outputs, targets):
                    p = np.exp(outputs["logits"] - outputs["logits"].max(-1, keepdims=True))
                    self.hits += int(((p / p.sum(-1, keepdims=True)).max(-1) > 0.9).sum())
                    self.n += len(p)

                def result(self):
                    return 100.0 * self.hits / self.n
            """
        )
    )
    model = eq.load(model_path)
    for spec, name, better in (
        ("my_metrics:wrong_share", "wrong_share", False),
        ("my_metrics:Confident", "confident", True),
    ):
        proc = run_cli(
            "eval", str(model_path), "--data", "val.npz", "--metric", spec, "--json", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)["metric"]
        assert got["name"] == name and got["higher_is_better"] is better
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(tmp_path)
            want = eq.evaluate(
                model, eq.load_data(str(tmp_path / "val.npz")), metric=load_metric(spec)
            )
        assert got["value"] == pytest.approx(want.metric.value)
    proc = run_cli("eval", str(model_path), "--data", "val.npz", "--metric", "f2", cwd=tmp_path)
    assert_user_error(proc, "unknown metric 'f2'", "map")
    proc = run_cli("eval", str(model_path), "--data", "val.npz", "--metric", "nope:f", cwd=tmp_path)
    assert_user_error(proc, "cannot import 'nope' for --metric")


def test_unlabelled_eval_measures_every_output_against_the_reference(tmp_path) -> None:
    """A two-output stateful model (speech probability and LSTM state) on real speech, no
    labels: each output named with its own SQNR and cosine, no agreement (neither output holds
    class scores), and the output says fidelity is the measure."""
    import subprocess
    import sys

    from tests.structures import speech_chunks

    # exported in a process of its own: a second torch.jit export of the same scripted module
    # in one process names its nodes differently, and other tests read the names
    script = "import sys; from pathlib import Path; from tests.structures import export_voice_activity; export_voice_activity(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "vad.onnx")], check=True)
    fp32 = eq.load(tmp_path / "vad.onnx")
    chunks = speech_chunks(96, samples=512) / 32768.0
    arrays = {
        "input": chunks, "state": np.zeros((2, 96, 32), np.float32),
        "sr": np.array(16000, np.int64),
    }  # fmt: skip
    np.savez(tmp_path / "speech.npz", **arrays)
    axes = {"input": 0, "state": 1, "sr": None}
    q = eq.quantize(fp32, calibration=eq.ArrayDataset(arrays, batch_size=32, axes=axes))
    q.save(tmp_path / "vad.int8.onnx")
    args = ("eval", str(tmp_path / "vad.int8.onnx"), "--data", str(tmp_path / "speech.npz"))
    proc = run_cli(*args, "--reference", str(tmp_path / "vad.onnx"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    outputs = {o["output"]: o for o in result["outputs"]}
    assert set(outputs) == {"prob", "stateN"}
    assert all(o["agreement"] is None and o["sqnr_db"] > 15 for o in outputs.values())
    assert all(0.99 < o["cosine"] <= 1.0 and o["max_abs_error"] > 0 for o in outputs.values())
    assert any("fidelity to the reference is the measure" in m for m in result["not_measured"])
    human = run_cli(*args, "--reference", str(tmp_path / "vad.onnx"))
    assert "prob: SQNR" in human.stdout and "stateN: SQNR" in human.stdout


def detector_files(folder, scenes: int):
    """The built-in detector as `detector.onnx` in `folder`, `calib.npz` of `scenes` training
    scenes and `scenes.npz` of as many test scenes with their boxes as `targets`; returns the
    model's path, its input name and the test scenes."""
    import torch

    from edgequant.torch_onnx import to_onnx
    from edgequant.zoo import scenes as scene_set
    from edgequant.zoo.detector_train import detector_model

    size = scene_set.SIZE
    fp32 = to_onnx(detector_model(), torch.zeros(1, 1, size, size), "detector")
    src = fp32.save(folder / "detector.onnx")
    name = fp32.proto.graph.input[0].name
    np.savez(folder / "calib.npz", **{name: scene_set.compose("train", scenes, seed=7).images})
    test = scene_set.compose("test", scenes, seed=1)
    np.savez(folder / "scenes.npz", **{name: test.images, "targets": test.targets()})
    return src, name, test


@pytest.mark.slow  # trains the detector if it is not cached (~70 s), then ~25 tuning trials
def test_tune_keeps_the_detector_within_a_budget_in_map_points(tmp_path) -> None:
    """`edgequant tune --metric map --max-drop 1.2 --precisions int4,int8`: the budget is in
    mAP50-95 points (4-bit layers cost mAP: the budget binds), every trial says its mAP, and
    the saved best model measures what its trial says (measured: 1.06 points down at 19% of
    FP32's size; all INT8 1.08 at 27%)."""
    src, name, test = detector_files(tmp_path, scenes=300)
    proc = run_cli(
        "tune", str(src), "--calib", str(tmp_path / "calib.npz"),
        "--data", str(tmp_path / "scenes.npz"), "--metric", "map", "--max-drop", "1.2",
        "--precisions", "int4,int8", "--backend", "local", "-o", str(tmp_path / "tuned"),
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    reference = result["reference_metric"]
    assert reference["name"] == "mAP50-95" and reference["value"] > 45
    best = result["best"]
    assert best is not None and best["drop_points"] <= 1.2
    assert best["drop_points"] == pytest.approx(reference["value"] - best["metric"])
    assert best["size_bytes"] < 0.25 * src.stat().st_size  # some layers int4
    assert any(not t["accurate"] for t in result["trials"])  # the budget did bind
    # boxes beside scores are no class scores: no top-1 agreement (it read 14x the samples)
    assert all(t["agreement"] is None for t in result["trials"])
    again = eq.evaluate(
        eq.load(tmp_path / "tuned" / "model.tuned.onnx"),
        eq.ArrayDataset({name: test.images}, test.targets(), batch_size=100),
        metric="map",
    )
    assert again.metric.value == pytest.approx(best["metric"], abs=1e-9)
    assert "mAP50-95 (mAP points)" in (tmp_path / "tuned" / "tune.md").read_text()


@pytest.mark.slow  # about a dozen tuning trials of the demo CNN
def test_tune_takes_a_user_metric_where_lower_is_better(model_path, fmnist, tmp_path) -> None:
    """A user's error rate (module:function, `higher_is_better = False`): the drop is how far
    it rises above FP32's, and the budget holds in those units."""
    train, test = fmnist
    np.savez(tmp_path / "calib.npz", input=train.images[:300])
    np.savez(tmp_path / "val.npz", input=test.images[:1000], targets=test.labels[:1000])
    (tmp_path / "errors.py").write_text(
        "def error_pct(outputs, targets):\n"
        "    return 100.0 * float((outputs['logits'].argmax(-1) != targets).mean())\n\n\n"
        "error_pct.higher_is_better = False\n"
    )
    proc = run_cli(
        "tune", str(model_path), "--calib", "calib.npz", "--data", "val.npz",
        "--metric", "errors:error_pct", "--max-drop", "0.5", "--precisions", "int4,int8",
        "--backend", "local", "-o", "tuned", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    reference = result["reference_metric"]
    assert reference["name"] == "error_pct" and reference["higher_is_better"] is False
    for trial in result["trials"]:
        assert trial["drop_points"] == pytest.approx(trial["metric"] - reference["value"])
        assert trial["accurate"] == (trial["drop_points"] <= 0.5 + 1e-9)
    assert result["best"] is not None and result["best"]["drop_points"] <= 0.5 + 1e-9
    assert all(t["top1"] is None for t in result["trials"])  # no top-1 claimed for a task metric


@pytest.mark.slow  # 31 builds of the detector, each measured by mAP on 200 scenes
def test_analyze_ranks_the_detectors_layers_by_map(tmp_path) -> None:
    """`edgequant analyze --metric map`: each layer quantized alone is measured in mAP points
    and the ranking follows the mAP it costs; the report's table is in mAP."""
    detector_files(tmp_path, scenes=200)
    src = tmp_path / "detector.onnx"
    proc = run_cli(
        "analyze", str(src), "--calib", str(tmp_path / "calib.npz"),
        "--data", str(tmp_path / "scenes.npz"), "--metric", "map",
        "-o", str(tmp_path / "analysis"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    reference = report["reference_metric"]["value"]
    costs = [reference - layer["alone_metric"] for layer in report["layers"]]
    # 14 of its 15 layers: the first conv reads the 1-channel scene, float by default
    assert len(costs) == 14 and costs == sorted(costs, reverse=True)
    assert costs[0] > 0.5 and costs[0] > 2 * costs[-1]  # some layers cost far more than others
    assert report["quantized_metric"] < reference and report["quantized_top1"] is None
    assert report["quantized_agreement"] is None  # the output holds boxes, not class scores
    assert "mAP50-95 mAP points" in (tmp_path / "analysis" / "sensitivity.md").read_text()


def test_report_tables_read_the_task_metric_in_its_direction(tmp_path) -> None:
    """A report by a task metric: the column is named with its units, the drop is the loss
    in the metric's own direction (a lower-is-better CER that rises is a positive drop), and
    the JSON keeps the reference; pictures given to a section travel into both pages."""
    from edgequant.metrics import MetricValue
    from edgequant.report import Row, Section, markdown_table, write_report

    ref = MetricValue("CER", 0.0200, "fraction", higher_is_better=False)
    rows = [
        Row("fp32", "fp32", None, None, None, 1000, 1.0, {"b1/t1": 1.0}, metric=0.0200),
        Row("int8", "static", None, 0.99, 30.0, 260, 0.26, {"b1/t1": 0.5}, metric=0.0250),
    ]
    table = markdown_table(rows, None, ref)
    assert table.splitlines()[0].startswith("| variant | CER (fraction) | drop |")
    assert "| int8 | 0.025 | +0.01 | 99.00 | 30.0 | 0 | 0.260 | 0.50 |" in table
    assert rows[1].metric_drop(ref) == pytest.approx(0.005)
    higher = MetricValue("mAP50-95", 49.3, "mAP points", higher_is_better=True)
    assert Row("x", "static", None, None, None, 1, 1.0, metric=48.4).metric_drop(
        higher
    ) == pytest.approx(0.9)
    import matplotlib.pyplot as plt

    from edgequant.report.figure import save_figure

    fig = plt.figure()
    save_figure(fig, tmp_path / "pic.png")
    section = Section("Task", table, ["a note"], images=[(tmp_path / "pic.png", "a picture")])
    paths = write_report(tmp_path, "t", rows, None, ["n"], sections=[section], metric=ref)
    assert "![a picture](pic.png)" in paths["markdown"].read_text()
    assert paths["html"].read_text().count("<img") == 2
    assert json.loads(paths["json"].read_text())["reference_metric"]["name"] == "CER"
