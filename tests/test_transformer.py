"""The transformer path on the real model and data: all-MiniLM-L6-v2 sentence embeddings with a
logistic-regression head on Rotten Tomatoes (2,000 train / 1,000 test reviews): static INT8
(attention-aware coverage, SmoothQuant) and INT4 weight-only with GPTQ, run in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgequant as eq
from edgequant.algorithms.gptq import gptq_quantize, hessian
from edgequant.algorithms.smoothquant import smooth_weight, smoothing_scales
from edgequant.primitives import fake_quantize, reduce_range, scale_zero_point, sqnr_db
from edgequant.spec import PerGroup, QType, QuantSpec, Symmetry

INT4_G32 = QuantSpec(QType.INT4, Symmetry.SYMMETRIC, PerGroup(32, 0))


# Math unit tests (synthetic tensors) --------------------------------------------------------
pytestmark = pytest.mark.slow  # minutes in all: not in the fast lane


def test_smoothing_scales_balance_activation_and_weight_ranges() -> None:
    rng = np.random.default_rng(0)
    act = rng.uniform(0.1, 50.0, 64)
    w = rng.uniform(0.01, 1.0, 64)
    s = smoothing_scales(act, w, alpha=0.5)
    np.testing.assert_allclose(act / s, w * s, rtol=1e-5)  # alpha 0.5: both sqrt(a * w)
    np.testing.assert_allclose(smoothing_scales(act, w, alpha=0.0), 1.0 / w, rtol=1e-5)
    assert smoothing_scales(np.zeros(4), np.ones(4)).tolist() == [1.0] * 4  # dead channels
    x = rng.normal(size=(10, 64)) * act
    weight = rng.normal(size=(64, 8))
    np.testing.assert_allclose((x / s) @ smooth_weight(weight, s), x @ weight, rtol=1e-4)


def _rtn(weight: np.ndarray) -> np.ndarray:
    lo, hi = reduce_range(weight, INT4_G32)
    scale, zp = scale_zero_point(lo, hi, INT4_G32)
    return fake_quantize(weight, scale, zp, INT4_G32)


def _gptq_values(weight: np.ndarray, h: np.ndarray) -> np.ndarray:
    codes, scale, zp = gptq_quantize(weight, h, INT4_G32, 32)
    assert codes.min() >= -8 and codes.max() <= 7 and scale.shape == (weight.shape[0] // 32, 8)
    return (codes - np.repeat(zp, 32, 0)) * np.repeat(scale, 32, 0)


def test_gptq_equals_round_to_nearest_when_inputs_are_uncorrelated() -> None:
    """With H = I there is no error to feed forward: GPTQ must be round-to-nearest exactly."""
    w = np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32)
    np.testing.assert_allclose(_gptq_values(w, 2 * np.eye(64)), _rtn(w), atol=1e-6)


def test_gptq_reconstructs_outputs_better_than_rounding_on_correlated_inputs() -> None:
    """Correlated inputs with a few outlier channels, as transformer activations have."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 256)) @ (rng.normal(size=(256, 256)) / 16.0)
    x[:, :4] *= 10.0
    w = (rng.normal(size=(256, 8)) * 0.05).astype(np.float32)
    ref = x @ w
    rtn = sqnr_db(ref, x @ _rtn(w))
    gptq = sqnr_db(ref, x @ _gptq_values(w, hessian(x)))
    assert gptq > rtn + 3.0


# The real model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task():
    from edgequant.zoo import minilm

    fp32 = minilm.minilm_model()
    train, test = minilm.load_reviews()
    head = minilm.train_head(minilm.embed(fp32, train), train.labels)
    reference = minilm.embed(fp32, test)
    calib = eq.ArrayDataset({k: v[:256] for k, v in train.tokens.items()}, None, 32)
    return minilm, fp32, test, head, reference, calib


def _score(task, model):
    minilm, _, test, head, reference, _ = task
    emb = minilm.embed(model, test)
    accuracy = float((head.predict(emb) == test.labels).mean())
    return accuracy, minilm.cosine(emb, reference)


def test_fp32_task_is_what_the_issue_measured(task) -> None:
    fp32_acc, cos = _score(task, task[1])
    assert abs(fp32_acc - 0.768) < 0.02 and cos > 0.99999


def test_static_int8_keeps_accuracy_and_embeddings(task) -> None:
    """Issue 4: static INT8 within 0.5 points of FP32 with embedding cosine >= 0.98 (ORT's
    quantize_static defaults: 64.3%, cosine 0.30)."""
    fp32_acc, _ = _score(task, task[1])
    q = eq.quantize(task[1], eq.PTQConfig.int8(), calibration=task[5])
    accuracy, cos = _score(task, q)
    assert accuracy >= fp32_acc - 0.005 and cos >= 0.98
    assert q.provenance.coverage == "weighted"  # AUTO saw attention
    assert q.provenance.int8_embeddings == []  # float tables by default
    graph = q.proto.graph
    producers = {o: n for n in graph.node for o in n.output}
    linear = [
        n
        for n in graph.node
        if n.op_type == "MatMul" and producers[n.input[1]].op_type == "DequantizeLinear"
    ]
    assert len(linear) == 36  # 6 layers x (Q, K, V, output, FFN up, FFN down)
    inits = {i.name: i for i in graph.initializer}
    for node in linear:
        assert producers[node.input[0]].op_type == "DequantizeLinear"
        weight_q = producers[node.input[1]].input[0]
        assert inits[weight_q].data_type == onnx.TensorProto.INT8
    for node in graph.node:  # LayerNorm, Softmax and residual Adds read float, never a DQ
        if node.op_type in ("LayerNormalization", "Softmax", "Add"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear"
                       for i in node.input)  # fmt: skip
    # operator support: the check before calibration (ONNX Runtime asked about a probe model)
    # predicts what the calibrated model runs: the 36 linear layers in integer, 97% of the MACs
    planned, after = eq.check_support(task[1]), eq.check_support(q)
    assert planned.stage == "planned" and after.stage == "quantized"
    for report in (planned, after):
        integer = [n for n in report.nodes if n.integer and n.macs]
        assert len(integer) == 36 and 0.95 < report.integer_fraction < 1.0
        assert {"LayerNormalization", "Softmax"} <= {n.op_type for n in report.float_nodes}
    assert planned.integer_fraction == pytest.approx(after.integer_fraction)


def test_smoothquant_keeps_the_function_and_flattens_outliers(task) -> None:
    from edgequant.graph.preprocess import optimize
    from edgequant.ptq.smoothquant import smooth_model

    fp32 = optimize(task[1])
    smoothed, count = smooth_model(fp32, task[5], alpha=0.5, max_samples=256)
    assert count == 36
    _, cos = _score(task, smoothed)
    assert cos > 0.9999  # same float function
    # an input the smoothing Mul divides feature-wise: outlier features come closer to the rest
    from edgequant.runtime.session import make_session

    muls = [n for n in smoothed.proto.graph.node if n.name.endswith("_SmoothQuant")]
    src, dst = muls[1].input[0], muls[1].output[0]
    sess = make_session(smoothed.with_outputs([src, dst]))
    runs = [sess.run([src, dst], batch) for batch in task[5]]  # the calibration data
    before = np.concatenate([b for b, _ in runs]).reshape(-1, runs[0][0].shape[-1])
    after = np.concatenate([a for _, a in runs]).reshape(before.shape)
    inv = numpy_helper.to_array(
        next(i for i in smoothed.proto.graph.initializer if i.name == muls[1].input[1])
    )
    np.testing.assert_allclose(after, before * inv, rtol=1e-5, atol=1e-6)
    # alpha 0.5 balances each feature: max |x_j / s_j| = max_n |w_jn s_j| = sqrt(a_j w_j)
    index = {i.name: i for i in smoothed.proto.graph.initializer}
    readers = [n for n in smoothed.proto.graph.node if dst in n.input]
    w_max = np.max(
        [np.abs(numpy_helper.to_array(index[n.input[1]])).max(axis=1) for n in readers], 0
    )
    np.testing.assert_allclose(np.abs(after).max(axis=0), w_max, rtol=1e-3)


def test_int4_gptq_beats_round_to_nearest_and_ort(task) -> None:
    """Issue 4: INT4 weight-only with GPTQ within 1.0 point of FP32 and embedding cosine above
    ORT MatMulNBits' 0.965 (measured here: round-to-nearest 0.956, GPTQ 0.984)."""
    fp32_acc, _ = _score(task, task[1])
    rtn = eq.quantize(task[1], eq.PTQConfig.int4(block_size=32))
    gptq = eq.quantize(task[1], eq.PTQConfig.int4(block_size=32, rounding=eq.Rounding.GPTQ),
                       calibration=task[5])  # fmt: skip
    (_, rtn_cos), (gptq_acc, gptq_cos) = _score(task, rtn), _score(task, gptq)
    assert gptq_acc >= fp32_acc - 0.010 and gptq_cos > 0.965 and gptq_cos > rtn_cos
    assert gptq.provenance.gptq_weights == 36
    with pytest.raises(eq.EdgeQuantError, match="GPTQ needs calibration"):
        eq.quantize(task[1], eq.PTQConfig.int4(rounding=eq.Rounding.GPTQ))


def test_cli_smoothquant_and_gptq_flags(task, tmp_path) -> None:
    import subprocess
    import sys

    src = tmp_path / "minilm.onnx"
    task[1].save(src)
    np.savez(tmp_path / "calib.npz", **{k: v[:64] for k, v in task[2].tokens.items()})
    base = [
        sys.executable,
        "-m",
        "edgequant",
        "quantize",
        str(src),
        "--calib",
        str(tmp_path / "calib.npz"),
    ]
    run = subprocess.run([*base, "--smoothquant", "-o", str(tmp_path / "sq.onnx"), "--json"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    sidecar = eq.load(tmp_path / "sq.onnx") and (tmp_path / "sq.quant.json").read_text()
    assert '"smoothed_matmuls": 36' in sidecar and '"coverage": "weighted"' in sidecar
    run = subprocess.run([*base, "--method", "dynamic", "--int8-embeddings", "-o",
                          str(tmp_path / "d.onnx")], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "d.onnx").stat().st_size < 0.3 * src.stat().st_size
    bad = subprocess.run([*base, "--gptq", "-o", str(tmp_path / "x.onnx")], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 2 and "--gptq is for --method int4" in bad.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_embedding_tables_are_int8_per_row_and_exact() -> None:
    """A Gather on a float table becomes Gather(int8) -> Cast -> Mul(row scale): the looked-up
    rows equal codes x scale of each row, computed in ONNX Runtime."""
    from onnx import TensorProto, helper

    from edgequant.exporter.plan import QuantPlan
    from edgequant.exporter.planner import ROW_SPEC, plan_embeddings
    from edgequant.exporter.write import write
    from edgequant.runtime.session import make_session

    rng = np.random.default_rng(3)
    table = (rng.normal(size=(1000, 80)) * rng.uniform(0.01, 3.0, size=(1000, 1))).astype(
        np.float32
    )
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], name="lookup", axis=0)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5, 80])],
        [numpy_helper.from_array(table, "table")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plan = QuantPlan(embeddings=plan_embeddings(proto.graph, frozenset()))
    assert list(plan.embeddings) == ["table"]
    proto = write(proto, plan)
    ids = rng.integers(0, 1000, size=(4, 5)).astype(np.int64)
    out = make_session(eq.Model(proto, "emb")).run(None, {"ids": ids})[0]
    scale, _ = scale_zero_point(*reduce_range(table, ROW_SPEC), ROW_SPEC)
    codes = np.clip(np.rint(table / scale[:, None]), -128, 127)
    np.testing.assert_allclose(out, (codes * scale[:, None])[ids], rtol=1e-6)
    assert sqnr_db(table[ids], out) > 40.0
    stored = {i.name: i for i in proto.graph.initializer}["table"]
    assert stored.data_type == TensorProto.INT8


def test_int8_embedding_tables_shrink_minilm_to_a_quarter(task) -> None:
    """Embeddings.INT8: the word table (over half of MiniLM) per-row int8; the embeddings the
    model produces stay as close to FP32 as without it (measured: cosine 0.992 both)."""
    config = eq.PTQConfig.int8(embeddings=eq.Embeddings.INT8)
    q = eq.quantize(task[1], config, calibration=task[5])
    _, cos = _score(task, q)
    assert "encoder.embeddings.word_embeddings.weight" in q.provenance.int8_embeddings
    assert cos >= 0.98
    assert q.size_bytes < 0.3 * task[1].size_bytes  # ORT quantize_dynamic: 25.4%


def test_smoothquant_refuses_one_shot_calibration(fp32_model, fmnist) -> None:
    """SmoothQuant reads the data twice; a generator would be empty the second time and end in
    a misleading "calibration data is empty": say what to pass instead, before any work."""
    train, _ = fmnist
    batches = (train.images[i : i + 50] for i in range(0, 200, 50))
    config = eq.PTQConfig.int8(smoothing=eq.Smoothing.SMOOTHQUANT)
    with pytest.raises(eq.EdgeQuantError, match="reads the calibration data twice"):
        eq.quantize(fp32_model, config, calibration=batches)
