"""Static INT8 on the real demo task: accuracy, graph structure, kernel fusion, determinism."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgequant as eq
from edgequant.exporter.select import FEW_CHANNELS_REASON
from edgequant.runtime.session import Optimization, make_session


def op_counts(proto: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in proto.graph.node)


def fused_ops(model: eq.Model) -> collections.Counter[str]:
    """Operators ONNX Runtime really runs after its graph optimisation."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(model.serialize(), opts, providers=["CPUExecutionProvider"])
        return op_counts(onnx.load(opts.optimized_model_filepath))


def test_default_int8_keeps_accuracy(int8_model, test_data, fp32_model, fp32_eval) -> None:
    res = eq.evaluate(int8_model, test_data, reference=fp32_model)
    assert res.reference_top1 == fp32_eval.top1
    assert fp32_eval.top1 - res.top1 <= 0.003  # at most 0.3 points on 10,000 images
    assert res.agreement >= 0.99
    assert res.output_sqnr_db > 25.0


def test_graph_structure(int8_model, fp32_model) -> None:
    fp32_ops = op_counts(eq.load(fp32_model).proto)
    ops = op_counts(int8_model.proto)
    weights = {i.name: i for i in int8_model.proto.graph.initializer}
    # every Conv/Gemm weight is int8 behind a per-channel DequantizeLinear; the Gemm bias is
    # int32 (QGemm needs it), Conv biases stay float32 (ORT puts them on the same int32 grid)
    dq = [
        n
        for n in int8_model.proto.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in weights
    ]
    dtypes = collections.Counter(weights[n.input[0]].data_type for n in dq)
    # every layer but the first conv, over the 1-channel image (float by choice: select.py)
    n_weighted = fp32_ops["Conv"] + fp32_ops["Gemm"] - 1
    assert dtypes[onnx.TensorProto.INT8] == n_weighted
    assert dtypes[onnx.TensorProto.INT32] == fp32_ops["Gemm"] == 1
    conv_biases = [n.input[2] for n in int8_model.proto.graph.node if n.op_type == "Conv"]
    assert len(conv_biases) == fp32_ops["Conv"]
    assert all(weights[b].data_type == onnx.TensorProto.FLOAT for b in conv_biases)
    stem = next(n for n in int8_model.proto.graph.node if n.op_type == "Conv")
    assert weights[stem.input[1]].data_type == onnx.TensorProto.FLOAT
    assert all(numpy_helper.to_array(weights[n.input[1]]).ndim == 1 for n in dq)  # per-channel
    biases = [n for n in dq if weights[n.input[0]].data_type == onnx.TensorProto.INT32]
    assert all(len(n.input) == 2 for n in biases)  # zero-point omitted: 0 by the ONNX spec
    # all Relus folded into the quantizers before them but the float stem's; activations uint8
    assert ops["Relu"] == 1 and fp32_ops["Relu"] == 20
    acts = [n for n in int8_model.proto.graph.node if n.op_type == "QuantizeLinear"]
    assert acts and all(weights[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in acts)
    assert ops["QuantizeLinear"] + len(dq) == ops["DequantizeLinear"]
    floats = int8_model.provenance.float_nodes
    assert floats.pop(stem.name) == FEW_CHANNELS_REASON
    assert list(floats.values()) == ["Relu after a float node: nothing to fold it into"]


def test_onnx_runtime_runs_integer_kernels(int8_model, fp32_model) -> None:
    """After ORT's optimiser no float Add/Gemm remains and one float conv, the first (on the
    1-channel image, float by choice): everything else fused to QLinear*."""
    fused = fused_ops(int8_model)
    fp32_ops = op_counts(fp32_model.proto)
    assert fused["QLinearConv"] == fp32_ops["Conv"] - 1
    assert fused["QLinearAdd"] == fp32_ops["Add"]
    assert fused["QGemm"] == 1
    assert fused["Add"] == fused["Gemm"] == 0 and fused["Conv"] + fused["FusedConv"] == 1
    assert fused["QuantizeLinear"] == 1 and fused["DequantizeLinear"] == 0


@pytest.mark.slow
def test_integer_kernels_agree_with_qdq_simulation(int8_model, test_data) -> None:
    """Differential: ORT's fused integer kernels vs the same QDQ graph run node by node in float."""
    fused = make_session(int8_model)
    simulated = make_session(int8_model, optimization=Optimization.NONE)
    agree = total = 0
    worst = 0.0
    for x, _ in test_data:
        a, b = fused.run(None, {"input": x})[0], simulated.run(None, {"input": x})[0]
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        total += len(x)
        worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
    assert agree / total >= 0.995
    assert worst < 0.1


def test_same_inputs_give_byte_identical_models(fp32_model, calibration, int8_model) -> None:
    again = eq.quantize(fp32_model, eq.PTQConfig.int8(), calibration=calibration)
    assert again.serialize() == int8_model.serialize()


@pytest.mark.parametrize("calibrator", list(eq.Calibrator))
def test_every_calibrator_keeps_accuracy(
    calibrator, fp32_model, calibration, test_data, fp32_eval
) -> None:
    """Within a point for every calibrator (the 0.3-point bar is the default's, tested above):
    KL calibration deliberately clips the rare large activations after depthwise convolutions
    and measurably loses more on this model; the demo report shows by how much."""
    q = eq.quantize(fp32_model, eq.PTQConfig.int8(calibrator=calibrator), calibration=calibration)
    res = eq.evaluate(q, test_data)
    assert fp32_eval.top1 - res.top1 <= 0.01


def test_per_tensor_weights_have_scalar_scales(
    fp32_model, calibration, test_data, fp32_eval
) -> None:
    q = eq.quantize(fp32_model, eq.PTQConfig.int8(per_channel=False), calibration=calibration)
    inits = {i.name: numpy_helper.to_array(i) for i in q.proto.graph.initializer}
    weight_dq = [
        n
        for n in q.proto.graph.node
        if n.op_type == "DequantizeLinear"
        and inits.get(n.input[0]) is not None
        and inits[n.input[0]].dtype == np.int8
    ]
    assert weight_dq and all(inits[n.input[1]].ndim == 0 for n in weight_dq)
    assert fp32_eval.top1 - eq.evaluate(q, test_data).top1 <= 0.01


@pytest.mark.slow
def test_layer_sqnr_names_a_damaged_layer(int8_model, fp32_model, test_data) -> None:
    """Spoil one activation's scale; the largest per-layer loss must point at that tensor."""
    from edgequant.graph.preprocess import optimize

    reference = optimize(fp32_model)
    clean = eq.layer_sqnr(int8_model, reference, test_data, max_batches=1)
    assert len(clean) > 20 and min(r.sqnr_db for r in clean) > 15.0
    broken = eq.Model(onnx.ModelProto(), "broken")
    broken.proto.CopyFrom(int8_model.proto)
    q_nodes = [n for n in broken.proto.graph.node if n.op_type == "QuantizeLinear"]
    victim = q_nodes[len(q_nodes) // 2]
    scale = next(i for i in broken.proto.graph.initializer if i.name == victim.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 40, scale.name))
    layers = eq.layer_sqnr(broken, reference, test_data, max_batches=1)
    culprit = min(layers, key=lambda r: r.own_sqnr_db)
    assert culprit.tensor == victim.input[0]
    assert culprit.own_sqnr_db < min(r.own_sqnr_db for r in clean) - 10.0


def test_calibration_respects_the_sample_limit(fp32_model, fmnist) -> None:
    from edgequant.graph.preprocess import optimize
    from edgequant.ptq.calibrate import calibrate

    train, _ = fmnist
    model = optimize(fp32_model)
    data = eq.ArrayDataset(train.images[:1000], None, batch_size=64)
    result = calibrate(model, ["input"], data, num_bins=256, max_samples=300)
    assert result.samples == 300
    assert result.observers["input"].counts.sum() == int((train.images[:300] != 0).sum())


def test_calibration_runs_within_a_memory_budget(fp32_model, fmnist, monkeypatch) -> None:
    """A batch whose observed tensors exceed the budget runs in sub-batches (here one sample
    each, after a one-sample measuring run); the min-max ranges are the same as in one run,
    and within the budget the batch runs whole (its statistics unchanged)."""
    from edgequant.graph.preprocess import optimize
    from edgequant.ptq import calibrate as module

    train, _ = fmnist
    model = optimize(fp32_model)
    tensors = [n.output[0] for n in model.proto.graph.node if n.op_type == "Conv"][:6]
    data = eq.ArrayDataset(train.images[:96], None, batch_size=48)
    runs: list[int] = []
    real = module.run_session

    def counted(session, outputs, feed):
        runs.append(len(feed["input"]))
        return real(session, outputs, feed)

    monkeypatch.setattr(module, "run_session", counted)
    whole = module.calibrate(model, tensors, data, num_bins=64, max_samples=96, histogram=False)
    assert runs == [1, 48, 48]  # the measuring run, then each batch whole
    runs.clear()
    small = module.calibrate(model, tensors, data, num_bins=64, max_samples=96, histogram=False,
                             memory_budget=1)  # fmt: skip
    assert runs == [1] + [1] * 96 and small.samples == 96
    for t in tensors:
        assert (small.observers[t].min_val, small.observers[t].max_val) == (
            whole.observers[t].min_val,
            whole.observers[t].max_val,
        )


def test_models_with_a_fixed_batch_of_one(fp32_model, calibration, test_data, fp32_eval) -> None:
    """Many exported models fix the batch at 1: calibration and evaluation split batches for them,
    and the benchmark refuses to mislabel a batch it cannot run."""
    fixed = eq.Model(onnx.ModelProto(), "fixed")
    fixed.proto.CopyFrom(fp32_model.proto)
    for value in (*fixed.proto.graph.input, *fixed.proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    q = eq.quantize(fixed, eq.PTQConfig.int8(), calibration=calibration.take(200))
    res = eq.evaluate(q, test_data.take(2000), reference=fixed)
    assert res.samples == 2000 and res.agreement >= 0.99
    with pytest.raises(eq.EdgeQuantError, match="fixed batch size of 1"):
        eq.benchmark(q, batch_sizes=(32,), threads=(1,), rounds=1, memory=False)


def test_division_by_a_constant_becomes_a_product() -> None:
    """Div by a constant -> Mul by its reciprocal (ONNX Runtime has no integer Div): outputs
    within an ulp of the Div's, node names kept, the divisor's initializer gone when nothing
    else reads it; a divisor holding a zero is left alone."""
    from onnx import TensorProto, helper

    from edgequant.graph.rewrite import divisions_as_products

    six = numpy_helper.from_array(np.array(6.0, np.float32), "six")
    mixed = numpy_helper.from_array(np.array([3.0, 0.0, 7.0], np.float32), "mixed")
    graph = helper.make_graph(
        [helper.make_node("Div", ["x", "six"], ["y"], name="hswish_div"),
         helper.make_node("Div", ["y", "mixed"], ["z"], name="by_zero")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, [2, 3]) for t in "yz"], [six, mixed],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32) * 50
    before = make_session(eq.Model(proto)).run(["y"], {"x": x})[0]
    assert divisions_as_products(proto) == 1
    nodes = {n.name: n.op_type for n in proto.graph.node}
    assert nodes == {"hswish_div": "Mul", "by_zero": "Div"}
    assert "six" not in {i.name for i in proto.graph.initializer}
    onnx.checker.check_model(proto)
    after = make_session(eq.Model(proto)).run(["y"], {"x": x})[0]
    assert np.allclose(after, before, rtol=2**-23, atol=0)  # at most one float32 ulp apart


def test_constant_operands_of_add_and_mul_are_quantized_unless_sentinels() -> None:
    """Add/Mul with one constant float operand are selected, the constant noted for a per-tensor
    quantizer of its own (not calibrated as an activation); a mask-like constant (-1e30) keeps
    its Add float with the reason; Sub has no integer kernel and stays float."""
    from onnx import TensorProto, helper

    from edgequant.exporter.select import select
    from edgequant.graph.index import GraphIndex

    consts = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in [("three", 3.0), ("mask", -1e30), ("half", 0.5)]]  # fmt: skip
    consts.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), "w"))
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Add", ["r", "three"], ["a"], name="add3"),
         helper.make_node("Add", ["a", "mask"], ["m"], name="masked"),
         helper.make_node("Mul", ["half", "a"], ["h"], name="halve"),
         helper.make_node("Sub", ["h", "three"], ["s"], name="sub"),
         helper.make_node("MatMul", ["s", "w"], ["y"], name="layer")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, 4]) for t in "my"], consts,
    )  # fmt: skip
    sel = select(graph, GraphIndex.of(graph))
    assert [n.name for n in sel.nodes] == ["add3", "halve", "layer"]
    assert sel.constants == {"three": "r", "half": "a"}
    assert "three" not in sel.observed_tensors() and "half" not in sel.observed_tensors()
    assert "sentinel" in sel.float_nodes["masked"]
    assert "no integer kernel" in sel.float_nodes["sub"]


def test_arithmetic_after_the_last_layer_stays_float_unless_full_integer() -> None:
    """A detector's head: Conv, then box arithmetic (Mul by a stride, Concat with scores) that no
    layer with weights reads. The arithmetic stays float with the reason; the Add between the
    two convs (a layer reads it) and the last Conv are quantized; a full-integer target
    quantizes everything."""
    from onnx import TensorProto, helper

    from edgequant.exporter.select import TAIL_REASON, select
    from edgequant.graph.index import GraphIndex

    rng = np.random.default_rng(0)
    consts = [
        numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array(8.0, np.float32), "stride"),
    ]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
         helper.make_node("Add", ["c1", "x"], ["r"], name="residual"),
         helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2"),
         helper.make_node("Mul", ["c2", "stride"], ["px"], name="to_pixels"),
         helper.make_node("Sigmoid", ["c1"], ["p"], name="scores"),
         helper.make_node("Concat", ["px", "p"], ["y"], name="join", axis=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2, 2])], consts,
    )  # fmt: skip
    index = GraphIndex.of(graph)
    sel = select(graph, index)
    assert [n.name for n in sel.nodes] == ["conv1", "residual", "conv2"]
    assert sel.float_nodes["to_pixels"] == TAIL_REASON == sel.float_nodes["join"]
    assert "c2" in sel.activations  # the Conv's own output stays quantized (QLinearConv)
    full = select(graph, index, quantize_outputs=True)
    assert {"to_pixels", "join"} <= {n.name for n in full.nodes}


def test_a_concat_of_very_different_ranges_keeps_each_part_on_its_own_scale() -> None:
    """Boxes in pixels (0-640) beside 0-1 scores, concatenated before a layer: one 8-bit scale
    would leave the scores 2.5 of their 255 steps. The Concat's output stays float with the
    reason (so does the layer reading it); each part keeps its producer's quantized output.
    Parts within 16x of each other share a scale as before."""
    from onnx import TensorProto, helper

    from edgequant.exporter.select import mismatched_concats, select
    from edgequant.graph.index import GraphIndex

    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), w)
              for w in ("w1", "w2", "w3")]  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["boxes"], name="box_conv"),
         helper.make_node("Conv", ["x", "w2"], ["scores"], name="score_conv"),
         helper.make_node("Concat", ["boxes", "scores"], ["joined"], name="join", axis=1),
         helper.make_node("Conv", ["joined", "w3"], ["y"], name="after")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])], consts,
    )  # fmt: skip
    ranges = {"x": (-1.0, 1.0), "boxes": (0.0, 640.0), "scores": (0.0, 1.0),
              "joined": (0.0, 640.0)}  # fmt: skip
    bad = mismatched_concats(graph, ranges)
    assert list(bad) == ["joined"] and "640x apart" in bad["joined"]
    sel = select(graph, GraphIndex.of(graph), bad_tensors=bad)
    assert sel.float_nodes["join"] == bad["joined"] == sel.float_nodes["after"]
    assert {"boxes", "scores"} <= set(sel.activations) and "joined" not in sel.activations
    assert mismatched_concats(graph, {**ranges, "boxes": (0.0, 12.0)}) == {}


def test_excluding_the_layer_before_a_reshape_needs_no_second_calibration() -> None:
    """Conv -> Reshape -> Conv: the Reshape's output shares the first Conv's range while that
    Conv is quantized; excluded (by the user, or by the guard promoting it) the Reshape runs
    float and the second Conv quantizes the Reshape's output on its own range, which the one
    calibration pass measured too (it once failed with "no calibrated range")."""
    from onnx import TensorProto, helper

    from edgequant.ptq.static import calibrate_static, quantize_calibrated

    rng = np.random.default_rng(0)
    consts = [
        numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([1, 4, 2, 2], np.int64), "shape"),
    ]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], name="first"),
         helper.make_node("Reshape", ["c1", "shape"], ["r"], name="move"),
         helper.make_node("Conv", ["r", "w2"], ["y"], name="second")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])], consts,
    )  # fmt: skip
    model = eq.Model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    data = [rng.normal(size=(1, 4, 2, 2)).astype(np.float32) for _ in range(16)]
    cal = calibrate_static(model, eq.PTQConfig(), data)
    q = quantize_calibrated(cal, frozenset({"first"}))
    quantized = {n.input[0] for n in q.proto.graph.node if n.op_type == "QuantizeLinear"}
    assert "r" in quantized and "x" not in quantized
    x = data[0]
    ref = make_session(model).run(None, {"x": x})[0]
    got = make_session(q).run(None, {"x": x})[0]
    assert 10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum()) > 30


def test_lstm_as_dynamic_quantize_lstm_matches_its_dequantized_weights() -> None:
    """The rewritten LSTM (int8 rows, stored transposed as ONNX Runtime's kernel reads them)
    computes what the float LSTM computes with the dequantized weights, up to the kernel's
    own 8-bit quantization of the input and hidden state: a wrong layout or scale shape would
    be noise. Codes are within half a step of the weights."""
    from onnx import TensorProto, helper

    from edgequant.exporter.recurrent import _row_quantized, dynamic_lstms
    from edgequant.primitives import sqnr_db

    rng = np.random.default_rng(0)
    seq, batch, inputs, hidden = 12, 3, 20, 16
    w = (rng.normal(size=(2, 4 * hidden, inputs)) * 0.3).astype(np.float32)
    r = (rng.normal(size=(2, 4 * hidden, hidden)) * 0.3).astype(np.float32)
    b = (rng.normal(size=(2, 8 * hidden)) * 0.1).astype(np.float32)
    x = rng.normal(size=(seq, batch, inputs)).astype(np.float32)

    def lstm(wn: np.ndarray, rn: np.ndarray) -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], name="bilstm",
                              hidden_size=hidden, direction="bidirectional")],
            "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, inputs])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(a, n) for a, n in [(wn, "W"), (rn, "R"), (b, "B")]],
        )  # fmt: skip
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    (wq, ws), (rq, rs) = _row_quantized(w), _row_quantized(r)
    assert wq.shape == (2, inputs, 4 * hidden) and ws.shape == (2, 4 * hidden)
    w_back = wq.transpose(0, 2, 1) * ws[:, :, None]
    assert np.abs(w_back - w).max() <= ws.max() / 2 + 1e-7
    reference = lstm(w_back, rq.transpose(0, 2, 1) * rs[:, :, None])
    quantized = lstm(w, r)
    assert dynamic_lstms(quantized) == ["bilstm"]
    assert [n.op_type for n in quantized.graph.node] == ["DynamicQuantizeLSTM"]
    assert {i.name for i in quantized.graph.initializer}.isdisjoint({"W", "R"})
    ref = make_session(eq.Model(reference)).run(None, {"x": x})[0]
    out = make_session(eq.Model(quantized)).run(None, {"x": x})[0]
    assert out.shape == ref.shape and sqnr_db(ref, out) > 30.0
