"""Dynamic INT8, FP16 and INT4 weight-only on the demo model: structure, fusion, accuracy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgequant as eq
from edgequant.errors import NothingToQuantizeError
from tests.test_static import fused_ops, op_counts


def test_dynamic_quantizes_gemm_only_and_fuses(fp32_model, test_data, fp32_eval) -> None:
    q = eq.quantize(fp32_model, eq.PTQConfig.dynamic())
    ops = op_counts(q.proto)
    assert ops["MatMulInteger"] == 1 and ops["DynamicQuantizeLinear"] == 1
    assert ops["Conv"] == op_counts(fp32_model.proto)["Conv"]  # convs deliberately stay float
    assert fused_ops(q)["DynamicQuantizeMatMul"] == 1
    res = eq.evaluate(q, test_data, reference=fp32_model)
    assert res.agreement >= 0.995 and fp32_eval.top1 - res.top1 <= 0.002


def test_fp16_halves_weights_and_keeps_float32_io(fp32_model, test_data, fp32_eval) -> None:
    q = eq.quantize(fp32_model, eq.PTQConfig.fp16())
    assert q.size_bytes < 0.55 * fp32_model.size_bytes
    big = [i for i in q.proto.graph.initializer if numpy_helper.to_array(i).size > 100]
    assert big and all(i.data_type == onnx.TensorProto.FLOAT16 for i in big)
    assert q.proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    res = eq.evaluate(q, test_data, reference=fp32_model)
    assert res.agreement >= 0.998 and abs(fp32_eval.top1 - res.top1) <= 0.002


def test_int4_writes_blocked_int4_and_fuses_to_matmulnbits(
    fp32_model, test_data, fp32_eval
) -> None:
    q = eq.quantize(fp32_model, eq.PTQConfig.int4(block_size=32))
    dq = [n for n in q.proto.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 1
    attrs = {a.name: a.i for a in dq[0].attribute}
    assert attrs == {"axis": 0, "block_size": 32}
    weight = next(i for i in q.proto.graph.initializer if i.name == dq[0].input[0])
    assert weight.data_type == onnx.TensorProto.INT4
    assert fused_ops(q)["MatMulNBits"] == 1
    res = eq.evaluate(q, test_data, reference=fp32_model)
    assert res.agreement >= 0.98 and fp32_eval.top1 - res.top1 <= 0.005


def test_int4_block_size_changes_scales(fp32_model) -> None:
    small = eq.quantize(fp32_model, eq.PTQConfig.int4(block_size=16))
    large = eq.quantize(fp32_model, eq.PTQConfig.int4(block_size=64))

    def scale_shape(m: eq.Model) -> tuple[int, ...]:
        dq = next(n for n in m.proto.graph.node if n.op_type == "DequantizeLinear")
        return numpy_helper.to_array(
            next(i for i in m.proto.graph.initializer if i.name == dq.input[1])
        ).shape

    k = 512  # the demo classifier: K = 512 features, N = 10 classes
    assert scale_shape(small) == (k // 16, 10) and scale_shape(large) == (k // 64, 10)


def conv_only_model() -> eq.Model:
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((4, 8, 3, 3)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 6, 6])],
        [w],
    )
    return eq.Model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "conv")


@pytest.mark.parametrize("config", [eq.PTQConfig.dynamic(), eq.PTQConfig.int4()])
def test_nothing_to_quantize_is_a_clear_error(config) -> None:
    with pytest.raises(NothingToQuantizeError, match="MatMul/Gemm"):
        eq.quantize(conv_only_model(), config)


def test_unsupported_ops_stay_float_and_are_listed() -> None:
    """A Softmax after the Conv has no integer kernel: it stays float, named with its reason."""
    from onnx import TensorProto, helper

    base = conv_only_model().proto
    base.graph.node.append(helper.make_node("Softmax", ["y"], ["z"], name="softmax", axis=1))
    base.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4, 6, 6])
    )
    data = eq.ArrayDataset(
        np.random.default_rng(0).standard_normal((16, 8, 8, 8)).astype(np.float32), None, 8
    )
    q = eq.quantize(eq.Model(base, "m"), eq.PTQConfig.int8(), calibration=data)
    assert q.provenance.float_nodes == {
        "softmax": "Softmax has no integer kernel among ONNX Runtime's QDQ fusions"
    }
    assert op_counts(q.proto)["QuantizeLinear"] == 2  # conv input and conv output


def test_static_with_nothing_quantizable_is_a_clear_error() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], name="softmax", axis=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    model = eq.Model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "softmax"
    )
    data = eq.ArrayDataset(np.zeros((4, 4), np.float32))
    with pytest.raises(NothingToQuantizeError, match="Softmax has no integer kernel"):
        eq.quantize(model, eq.PTQConfig.int8(), calibration=data)
