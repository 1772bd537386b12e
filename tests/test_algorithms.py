"""Cross-layer equalisation and bias correction: the math on its own (synthetic tensors), then on
the real demo model (function preserved, per-tensor INT8 repaired)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgequant as eq
from edgequant.algorithms.bias_correction import conv_output_shift, matmul_output_shift
from edgequant.algorithms.equalization import (
    equalize_pair,
    input_channel_ranges,
    output_channel_ranges,
)
from edgequant.primitives import fake_quantize, reduce_range, scale_zero_point, sqnr_db
from edgequant.spec import PerTensor, QType, QuantSpec, Symmetry

PER_TENSOR_INT8 = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerTensor())


def _uneven_conv(rng: np.random.Generator, c_out: int, c_in: int, k: int) -> np.ndarray:
    """Weights whose output channels differ in range by up to 1000x, as after BN folding."""
    w = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32)
    return w * np.logspace(-3, 0, c_out, dtype=np.float32).reshape(-1, 1, 1, 1)


def _two_layers(x, w1, b1, w2, depthwise: bool) -> torch.Tensor:
    t = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
    h = F.relu(F.conv2d(t(x), t(w1), t(b1), padding=1))
    return F.conv2d(h, t(w2), padding=1, groups=w2.shape[0] if depthwise else 1)


def _per_tensor(w: np.ndarray) -> np.ndarray:
    scale, zp = scale_zero_point(*reduce_range(w, PER_TENSOR_INT8), PER_TENSOR_INT8)
    return fake_quantize(w, scale, zp, PER_TENSOR_INT8)


@pytest.mark.parametrize("depthwise", [True, False])
def test_equalisation_keeps_the_function_and_equalises_ranges(depthwise: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w1, b1 = _uneven_conv(rng, 8, 3, 3), rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((8, 1, 3, 3) if depthwise else (5, 8, 3, 3)).astype(np.float32)
    new_w1, new_b1, new_w2, s = equalize_pair(w1, b1, w2, depthwise2=depthwise)
    before = _two_layers(x, w1, b1, w2, depthwise)
    after = _two_layers(x, new_w1, new_b1, new_w2, depthwise)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert s.min() < 0.1 < 10 < s.max() or s.max() / s.min() > 10  # it really rescaled
    np.testing.assert_allclose(
        output_channel_ranges(new_w1), input_channel_ranges(new_w2, depthwise), rtol=1e-5
    )


def test_equalisation_helps_per_tensor_quantization() -> None:
    """The point of it: after equalising, one int8 scale per tensor serves every channel."""
    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_normal((4, 3, 10, 10))).astype(np.float32)
    w1, b1 = _uneven_conv(rng, 16, 3, 3), np.zeros(16, np.float32)
    w2 = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    ref = _two_layers(x, w1, b1, w2, True).numpy()
    plain = _two_layers(x, _per_tensor(w1), b1, _per_tensor(w2), True).numpy()
    e1, eb1, e2, _ = equalize_pair(w1, b1, w2, depthwise2=True)
    equalised = _two_layers(x, _per_tensor(e1), eb1, _per_tensor(e2), True).numpy()
    channels = lambda y: [sqnr_db(ref[:, c], y[:, c]) for c in range(ref.shape[1])]  # noqa: E731
    # plain per-tensor rounds the small channels to zero (0 dB); equalised, every channel lives
    assert min(channels(plain)) == 0.0 and min(channels(equalised)) > 5
    assert np.median(channels(equalised)) > np.median(channels(plain)) + 10


def test_dead_channels_keep_unit_scale() -> None:
    w1 = np.ones((3, 2, 1, 1), np.float32)
    w1[1] = 0.0
    _, _, _, s = equalize_pair(w1, None, np.ones((3, 1, 3, 3), np.float32), depthwise2=True)
    assert s[1] == 1.0 and np.isfinite(s).all()


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_conv_shift_is_the_mean_output_error(groups: int) -> None:
    """With a spatially constant input (no padding) the shift is exact: E[conv(x, W~ - W)]."""
    rng = np.random.default_rng(2)
    c_in, c_out = 6, 12
    w = rng.standard_normal((c_out, c_in // groups, 3, 3)).astype(np.float32)
    error = _per_tensor(w) - w
    mean = rng.standard_normal(c_in).astype(np.float32)
    x = torch.from_numpy(np.broadcast_to(mean.reshape(1, -1, 1, 1), (1, c_in, 5, 5)).copy())
    expected = F.conv2d(x.double(), torch.from_numpy(error).double(), groups=groups)
    shift = conv_output_shift(error, mean, groups)
    np.testing.assert_allclose(shift, expected.mean(dim=(0, 2, 3)).numpy(), rtol=1e-4, atol=1e-6)


def test_matmul_shift_is_the_mean_output_error() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 7)).astype(np.float32) + 2.0
    w = rng.standard_normal((7, 4)).astype(np.float32)
    error = _per_tensor(w) - w
    shift = matmul_output_shift(error, x.mean(axis=0))
    np.testing.assert_allclose(shift, (x @ error).mean(axis=0), rtol=1e-4, atol=1e-6)


# On the real demo model -----------------------------------------------------------------------


def test_equalised_graph_computes_the_same_function(fp32_model, test_data) -> None:
    from edgequant.graph.preprocess import optimize
    from edgequant.ptq.equalization import equalize_model

    fp32 = optimize(fp32_model)
    equalised, pairs = equalize_model(fp32)
    assert pairs == 18  # (expand, depthwise) and (depthwise, project) in each of 9 blocks
    same = eq.evaluate(equalised, test_data, reference=fp32)
    assert same.agreement == 1.0 and same.output_sqnr_db > 80


def test_equalisation_improves_every_depthwise_layer_at_per_tensor(fp32_model) -> None:
    from edgequant.graph.index import GraphIndex
    from edgequant.graph.preprocess import optimize
    from edgequant.ptq.equalization import conv_pairs, equalize_model

    def depthwise_sqnr(model: eq.Model) -> list[float]:
        index = GraphIndex.of(model.proto.graph)
        pairs = conv_pairs(model.proto.graph, index)
        weights = [index.array(p.second.input[1]) for p in pairs if p.depthwise_second]
        return [sqnr_db(w, _per_tensor(w)) for w in weights]

    fp32 = optimize(fp32_model)
    before, after = depthwise_sqnr(fp32), depthwise_sqnr(equalize_model(fp32)[0])
    assert len(before) == 9 and all(a > b + 1.0 for a, b in zip(after, before, strict=True))


@pytest.fixture(scope="module")
def per_tensor_results(fp32_model, calibration, test_data):
    def run(equalization, bias_correction):
        config = eq.PTQConfig.int8(
            per_channel=False, equalization=equalization, bias_correction=bias_correction
        )
        q = eq.quantize(fp32_model, config, calibration=calibration, guard=None)  # as configured
        return q, eq.evaluate(q, test_data, reference=fp32_model)

    return {
        "plain": run(eq.Equalization.NONE, eq.BiasCorrection.NONE),
        "both": run(eq.Equalization.CROSS_LAYER, eq.BiasCorrection.EMPIRICAL),
    }


@pytest.mark.slow
def test_cle_and_bias_correction_improve_per_tensor_int8(per_tensor_results) -> None:
    """Measured on the 10,000 test images: 33.8 -> 34.7 dB output SQNR (the done-when of issue
    4 asks for an improvement; accuracy itself moves by noise on this model)."""
    (_, plain), (q, both) = per_tensor_results["plain"], per_tensor_results["both"]
    assert both.output_sqnr_db > plain.output_sqnr_db + 0.5
    assert both.agreement >= 0.995 and both.top1 >= both.reference_top1 - 0.003
    assert q.provenance.equalized_pairs == 18 and q.provenance.bias_corrected_nodes == 29
    assert q.provenance.config.equalization is eq.Equalization.CROSS_LAYER


def test_bias_correction_changes_only_biases(per_tensor_results) -> None:
    """Structural: same graph, same Q/DQ nodes; the int32 Gemm bias is where the shift lands."""
    import collections

    plain, both = per_tensor_results["plain"][0], per_tensor_results["both"][0]
    ops = lambda m: collections.Counter(n.op_type for n in m.proto.graph.node)  # noqa: E731
    assert ops(plain) == ops(both)
    assert both.provenance.config.bias_correction is (eq.BiasCorrection.EMPIRICAL)


def test_adaround_beats_round_to_nearest_on_the_layer_output() -> None:
    """4-bit weights of a linear layer: AdaRound's codes give a smaller output error than
    rounding to nearest, and every code is the floor or the floor + 1 of W / s."""
    from edgequant.algorithms.adaround import AdaRoundConfig, adaround

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 32, generator=gen)
    # correlated inputs, as real activations are (rank 8 + noise): where rounding matters
    mix = torch.randn(8, 32, generator=gen)
    x = torch.randn(512, 8, generator=gen) @ mix + 0.1 * torch.randn(512, 32, generator=gen)
    scale = w.abs().amax(dim=1, keepdim=True) / 7
    layer = lambda inp, weight: inp @ weight.T  # noqa: E731
    codes = adaround(w, scale, -8, 7, x, layer, AdaRoundConfig(iterations=400))
    nearest = torch.clamp(torch.round(w / scale), -8, 7)
    assert set(torch.unique(codes - torch.floor(w / scale)).tolist()) <= {0.0, 1.0}
    assert int(codes.min()) >= -8 and int(codes.max()) <= 7

    def error(c: torch.Tensor) -> float:
        return float((layer(x, c * scale) - layer(x, w)).pow(2).mean())

    assert error(codes) < 0.5 * error(nearest)  # measured: 0.34


@pytest.fixture(scope="module")
def w4a8_results(fp32_model, calibration, test_data):
    def run(rounding):
        config = eq.PTQConfig.w4a8(rounding=rounding)  # as configured: no fidelity guard
        q = eq.quantize(fp32_model, config, calibration=calibration, guard=None)
        return q, eq.evaluate(q, test_data, reference=fp32_model)

    return run(eq.Rounding.NEAREST), run(eq.Rounding.ADAROUND)


@pytest.mark.slow
def test_adaround_w4a8_on_the_demo_model(w4a8_results) -> None:
    """Issue 4's bar: W4A8 with AdaRound within 1.0 point of FP32 and better than round-to-nearest
    (measured on 10,000 test images: nearest 0.91 points down, 15.5 dB; AdaRound 0.15, 20.6 dB)."""
    (_, nearest), (q, ada) = w4a8_results
    assert ada.top1 >= ada.reference_top1 - 0.010
    assert ada.top1 > nearest.top1 and ada.agreement > nearest.agreement
    assert ada.output_sqnr_db > nearest.output_sqnr_db + 3.0
    assert q.provenance.adarounded_weights == 29  # every layer but the float first conv


@pytest.mark.slow  # AdaRound over all 30 layers (77 s); the fast lane keeps the layer-level tests
def test_adaround_export_stores_int4_codes_on_the_rtn_scale(w4a8_results) -> None:
    """Structural: same graph and same scales as round-to-nearest; only the codes differ."""
    import onnx
    from onnx import numpy_helper

    (plain, _), (ada, _) = w4a8_results
    inits = lambda m: {i.name: i for i in m.proto.graph.initializer}  # noqa: E731
    a, b = inits(plain), inits(ada)

    def int4_weights(m: eq.Model) -> list[str]:  # int4 DequantizeLinear inputs (not zero-points)
        init = inits(m)
        return [
            n.input[0]
            for n in m.proto.graph.node
            if n.op_type == "DequantizeLinear"
            and n.input[0] in init
            and init[n.input[0]].data_type == onnx.TensorProto.INT4
        ]

    int4 = int4_weights(ada)
    assert len(int4) == 29 and int4 == int4_weights(plain)  # the first conv is float
    scale_of = {
        n.input[0]: n.input[1] for n in ada.proto.graph.node if n.op_type == "DequantizeLinear"
    }
    for weight in int4:
        np.testing.assert_array_equal(
            numpy_helper.to_array(a[scale_of[weight]]), numpy_helper.to_array(b[scale_of[weight]])
        )
    changed = sum(
        not np.array_equal(numpy_helper.to_array(a[n]), numpy_helper.to_array(b[n])) for n in int4
    )
    assert changed == 29


def test_adaround_layer_function_matches_onnx_runtime() -> None:
    """The torch function AdaRound reconstructs is the ONNX Conv itself (strides, pads, groups)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgequant.ptq.adaround import layer_function

    node = helper.make_node(
        "Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1], group=2, name="c"
    )
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 9, 9]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [6, 2, 3, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": x, "w": w})[0]
    got = layer_function(node)(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    asymmetric = helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 1])
    assert layer_function(asymmetric) is None
