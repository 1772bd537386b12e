"""Property tests of the one quantize/dequantize module (synthetic tensors: this is math)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgequant.primitives import (
    fake_quantize,
    quantize,
    reduce_range,
    scale_zero_point,
    sqnr_db,
)
from edgequant.spec import PerChannel, PerGroup, PerTensor, QType, QuantSpec, Symmetry

QTYPES = list(QType)
finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
F32_EPS = float(np.finfo(np.float32).eps)


def specs() -> st.SearchStrategy[QuantSpec]:
    return st.builds(
        lambda q, sym, narrow: QuantSpec(q, sym, PerTensor(), narrow and q.signed),
        st.sampled_from(QTYPES),
        st.sampled_from(list(Symmetry)),
        st.booleans(),
    )


@settings(max_examples=200, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 64), elements=finite), spec=specs())
def test_round_trip_error_within_half_a_step_inside_the_range(
    x: np.ndarray, spec: QuantSpec
) -> None:
    scale, zp = scale_zero_point(x.min(), x.max(), spec)
    lo, hi = (float(spec.qmin) - zp) * scale, (float(spec.qmax) - zp) * scale
    inside = (x >= lo) & (x <= hi)
    err = np.abs(fake_quantize(x, scale, zp, spec) - x)
    # half a step, plus float32 rounding of x / scale at an exact tie (ONNX arithmetic is float32)
    assert np.all(err[inside] <= scale / 2 + 4 * F32_EPS * np.abs(x[inside]) + 1e-7)


@settings(max_examples=200, deadline=None)
@given(lo=finite, hi=finite, spec=specs())
def test_zero_is_exactly_representable(lo: float, hi: float, spec: QuantSpec) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    scale, zp = scale_zero_point(lo, hi, spec)
    assert fake_quantize(np.zeros(3, np.float32), scale, zp, spec).tolist() == [0.0, 0.0, 0.0]


@settings(max_examples=100, deadline=None)
@given(spec=specs(), big=st.floats(1e5, 1e30))
def test_saturates_at_the_bounds(spec: QuantSpec, big: float) -> None:
    scale, zp = scale_zero_point(-1.0, 1.0, spec)
    q = quantize(np.array([-big, big], np.float32), scale, zp, spec)
    assert q.tolist() == [spec.qmin, spec.qmax]


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("symmetry", list(Symmetry))
def test_degenerate_constant_tensors_get_finite_scales(
    value: float, qtype: QType, symmetry: Symmetry
) -> None:
    spec = QuantSpec(qtype, symmetry)
    x = np.full((4, 4), value, np.float32)
    scale, zp = scale_zero_point(x.min(), x.max(), spec)
    assert np.isfinite(scale) and scale > 0 and spec.qmin <= zp <= spec.qmax
    assert np.allclose(fake_quantize(x, scale, zp, spec), x, atol=float(scale) / 2 + 1e-7)


def test_matches_onnx_runtime_quantize_linear() -> None:
    """Our arithmetic is ORT's: QuantizeLinear on the same tensor gives the same codes (ties included)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = np.concatenate(
        [
            np.linspace(-3, 3, 997, dtype=np.float32),
            np.array([0.5, 1.5, 2.5, -0.5], np.float32) * 0.02,
        ]
    )
    spec = QuantSpec(QType.UINT8, Symmetry.AFFINE)
    scale, zp = scale_zero_point(-2.0, 2.5, spec)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
        "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [x.size])],
        [
            helper.make_tensor("s", TensorProto.FLOAT, [], [float(scale)]),
            helper.make_tensor("z", TensorProto.UINT8, [], [int(zp)]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    np.testing.assert_array_equal(got, quantize(x, scale, zp, spec))
    del onnx


def test_per_channel_scales_follow_the_axis() -> None:
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, (8, 3, 3, 3)).astype(np.float32)
    w[:, 0, 0, 0] = 1.0  # max |w| of channel c is exactly c + 1 after scaling
    w *= np.arange(1, 9, dtype=np.float32)[:, None, None, None]
    spec = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerChannel(0))
    lo, hi = reduce_range(w, spec)
    scale, zp = scale_zero_point(lo, hi, spec)
    assert scale.shape == (8,) and np.all(zp == 0)
    assert np.all(np.diff(scale) > 0)  # channel c has magnitude ~c
    per_tensor = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerTensor())
    s_t, z_t = scale_zero_point(*reduce_range(w, per_tensor), per_tensor)
    assert (
        sqnr_db(w, fake_quantize(w, scale, zp, spec))
        > sqnr_db(w, fake_quantize(w, s_t, z_t, per_tensor)) + 1.0
    )


def test_per_group_blocks_along_the_axis() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 5)).astype(np.float32)
    w[:32] *= 100.0  # first block much larger
    spec = QuantSpec(QType.INT4, Symmetry.SYMMETRIC, PerGroup(32, 0))
    lo, hi = reduce_range(w, spec)
    scale, zp = scale_zero_point(lo, hi, spec)
    assert scale.shape == (2, 5)
    assert np.all(scale[0] > 10 * scale[1])
    fq = fake_quantize(w, scale, zp, spec)
    assert np.all(
        np.abs(fq - w) <= np.repeat(scale, 32, axis=0) / 2 + 4 * F32_EPS * np.abs(w) + 1e-6
    )


def test_sqnr_of_identical_signals_is_infinite() -> None:
    x = np.ones(4)
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, x * 0.9) == pytest.approx(20.0)
