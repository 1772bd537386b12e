"""Per-layer (mixed) precision from the config: structure of the exported graph and its numerics
on the real demo model, config round trips, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgequant as eq
from edgequant.config import Precision as P
from edgequant.errors import ConfigError
from edgequant.ptq.static import calibrate_static, quantize_calibrated


@pytest.fixture(scope="module")
def calibrated(fp32_model, calibration):
    return calibrate_static(fp32_model, eq.PTQConfig.int8(), calibration)


@pytest.fixture(scope="module")
def layers(calibrated):
    """Every layer with weights, the first conv too (float by default: it reads one channel;
    a precision given by name quantizes it)."""
    stem = next(n.name for n in calibrated.fp32.proto.graph.node if n.op_type == "Conv")
    return [stem, *(n.name for n in calibrated.weighted_nodes())]


@pytest.fixture(scope="module")
def small_test(fmnist):
    _, test = fmnist
    return eq.ArrayDataset(test.images[:1000], test.labels[:1000], batch_size=500)


def _inits(model: eq.Model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.proto.graph.initializer}


def _node(model: eq.Model, name: str) -> onnx.NodeProto:
    return next(n for n in model.proto.graph.node if n.name == name)


def _producer(model: eq.Model, tensor: str) -> onnx.NodeProto:
    return next(n for n in model.proto.graph.node if tensor in n.output)


def test_each_precision_writes_its_own_graph(calibrated, layers, small_test) -> None:
    stem, mid, head = layers[0], layers[5], layers[-1]
    q = quantize_calibrated(calibrated, precisions={stem: P.INT16, mid: P.INT4, head: P.FP16})
    inits = _inits(q)
    float_w = _inits(calibrated.fp32)
    assert q.proto.opset_import[0].version >= 21  # int4 / int16 Q/DQ
    # INT4: the weight is stored as int4 behind a DequantizeLinear
    dq = _producer(q, _node(q, mid).input[1])
    assert dq.op_type == "DequantizeLinear"
    assert (
        q.proto.graph.initializer[
            [i.name for i in q.proto.graph.initializer].index(dq.input[0])
        ].data_type
        == onnx.TensorProto.INT4
    )
    # INT16: the stem's input and output go through uint16 Q/DQ, its weight stays int8
    stem_node = _node(q, stem)
    for tensor in (stem_node.input[0],):
        dq_in = _producer(q, tensor)
        assert dq_in.op_type == "DequantizeLinear" and inits[dq_in.input[2]].dtype == np.uint16
    assert inits[_producer(q, stem_node.input[1]).input[0]].dtype == np.int8
    # FP16: the head's weight is float16 (the FP32 weight rounded), Casts at its borders
    head_node = _node(q, head)
    w16 = inits[head_node.input[1]]
    assert w16.dtype == np.float16
    np.testing.assert_array_equal(w16, float_w[head_node.input[1]].astype(np.float16))
    assert _producer(q, head_node.input[0]).op_type == "Cast"
    assert sum(n.op_type == "Cast" for n in q.proto.graph.node) == 2
    # and ONNX Runtime runs it, close to FP32
    assert eq.evaluate(q, small_test, reference=calibrated.fp32).agreement > 0.97


def test_precision_alone_orders_output_noise(calibrated, layers, small_test) -> None:
    """One layer at each precision, the other weighted layers FP32: 4-bit weights add far more
    noise than 8-bit, 16-bit activations no more than 8-bit, FP16 nothing measurable."""
    fp32 = calibrated.fp32
    sqnr = {}
    for p in (P.INT4, P.INT8, P.INT16, P.FP16, P.FP32):
        prec = dict.fromkeys(layers, P.FP32) | {layers[0]: p}
        q = quantize_calibrated(calibrated, precisions=prec)
        sqnr[p] = eq.evaluate(q, small_test, reference=fp32).output_sqnr_db
    assert sqnr[P.INT8] > sqnr[P.INT4] + 5.0
    assert sqnr[P.INT16] >= sqnr[P.INT8]
    assert abs(sqnr[P.FP16] - sqnr[P.FP32]) < 0.1


def test_fp32_layer_keeps_its_float_weight(calibrated, layers) -> None:
    q = quantize_calibrated(calibrated, precisions={layers[3]: P.FP32})
    node = _node(q, layers[3])
    assert node.input[1] in _inits(q) and _inits(q)[node.input[1]].dtype == np.float32
    assert q.provenance.config.precisions == {layers[3]: eq.Precision.FP32}


def test_config_round_trip_and_errors(layers) -> None:
    config = eq.PTQConfig.int8(layer_precisions={layers[1]: "int4", layers[0]: P.FP16})
    assert config.layer_precisions == tuple(sorted([(layers[1], P.INT4), (layers[0], P.FP16)]))
    again = eq.PTQConfig.from_dict(config.to_dict())
    assert again.layer_precisions == config.layer_precisions
    assert again.to_dict() == config.to_dict()
    with pytest.raises(ConfigError, match="Precision"):
        eq.PTQConfig.int8(layer_precisions={layers[0]: "int3"})
    with pytest.raises(ConfigError, match="static"):
        eq.PTQConfig.dynamic(layer_precisions={layers[0]: "int8"})


def test_unknown_layer_or_fp16_on_a_non_weighted_node_is_a_clear_error(
    fp32_model, calibration, calibrated
) -> None:
    with pytest.raises(ConfigError, match="does not have"):
        eq.quantize(fp32_model, eq.PTQConfig.int8(layer_precisions={"nope": P.INT4}),
                    calibration=calibration)  # fmt: skip
    add = next(n.name for n in calibrated.fp32.proto.graph.node if n.op_type == "Add")
    with pytest.raises(ConfigError, match="FP16 per layer"):
        quantize_calibrated(calibrated, precisions={add: P.FP16})


def test_cli_layer_option_and_config_file(model_path, layers, tmp_path) -> None:
    out = tmp_path / "mixed.onnx"
    cmd = [sys.executable, "-m", "edgequant", "quantize", str(model_path), "--calib",
           "fashion-mnist:train", "--samples", "200", "-o"]  # fmt: skip
    run = subprocess.run(
        [*cmd, str(out), "--layer", f"{layers[0]}=int16", "--layer", f"{layers[-1]}=fp32"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    sidecar = out.with_suffix(".quant.json")
    again = tmp_path / "again.onnx"
    run = subprocess.run(
        [*cmd, str(again), "--config", str(sidecar)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert again.read_bytes() == out.read_bytes()  # the .quant.json rebuilds the model exactly
    bad = subprocess.run([*cmd, str(tmp_path / "x.onnx"), "--layer", "conv"], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 2 and "NODE=PRECISION" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_int16_reaches_through_data_movement(calibrated, layers) -> None:
    """The head Gemm reads Flatten(GlobalAveragePool(x)); Flatten shares its input's Q/DQ, so
    16-bit activations for the Gemm must widen the pair before Flatten too."""
    q = quantize_calibrated(calibrated, precisions={layers[-1]: P.INT16})
    inits = _inits(q)
    gemm = _node(q, layers[-1])
    dq = _producer(q, gemm.input[0])
    assert dq.op_type == "DequantizeLinear" and inits[dq.input[2]].dtype == np.uint16
    flatten = _producer(q, _producer(q, dq.input[0]).input[0])
    assert flatten.op_type == "Flatten"
    before = _producer(q, flatten.input[0])
    assert before.op_type == "DequantizeLinear" and inits[before.input[2]].dtype == np.uint16
    # elsewhere activations stay 8-bit (layers[0], the first conv, is float by default)
    conv_in = _producer(q, _node(q, layers[1]).input[0])
    assert inits[conv_in.input[2]].dtype == np.uint8
