"""Target presets and the operator-support check, on the real demo model and Fashion-MNIST.

Every ONNX preset must give a model that ONNX Runtime loads and runs within a point of FP32,
with the types its rules promise (structural checks of the exported graph) and no float node on
its own runtime; the support check must find real float islands (ONNX Runtime's own fused graph
is the oracle) and flag an operator no target has an integer kernel for.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgequant as eq
from edgequant.spec import Symmetry
from tests.test_cli import assert_user_error, edgequant

ONNX_TARGETS = [t for t in eq.Target if eq.preset(t).format == "onnx"]


@pytest.fixture(scope="module")
def test_2k(fmnist):
    _, test = fmnist
    return eq.ArrayDataset(test.images[:2000], test.labels[:2000], batch_size=500)


@pytest.fixture(scope="module")
def fp32_2k(fp32_model, test_2k):
    return eq.evaluate(fp32_model, test_2k).top1


@pytest.fixture(scope="module")
def preset_models(fp32_model, calibration):
    return {
        t: eq.quantize(fp32_model, eq.PTQConfig.for_target(t), calibration=calibration)
        for t in ONNX_TARGETS
    }


def _inits(model: eq.Model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.proto.graph.initializer}


def _weights(model: eq.Model) -> list[np.ndarray]:
    """Integer weights: DequantizeLinear inputs stored as 8-bit constants with 2+ dimensions."""
    inits = _inits(model)
    return [
        inits[n.input[0]]
        for n in model.proto.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].ndim > 1
        and inits[n.input[0]].dtype.itemsize == 1
    ]


def _activation_zero_points(model: eq.Model) -> list[np.ndarray]:
    inits = _inits(model)
    return [inits[n.input[2]] for n in model.proto.graph.node if n.op_type == "QuantizeLinear"]


# the demo CNN's first conv: over the 1-channel image, float by choice on ONNX Runtime's CPU
STEM = "/features/features.0/features.0.0/Conv"


@pytest.mark.parametrize("target", ONNX_TARGETS, ids=lambda t: t.value)
def test_every_onnx_preset_runs_in_onnx_runtime_within_a_point(
    target, preset_models, test_2k, fp32_2k
) -> None:
    q = preset_models[target]
    top1 = eq.evaluate(q, test_2k).top1  # ONNX Runtime CPU loads and runs it
    assert top1 >= fp32_2k - 0.01, (target, top1, fp32_2k)
    report = eq.check_support(q, target)
    assert not report.fallbacks, report.summary()
    if q.provenance.config.raw_signal_float:  # ONNX Runtime's CPU: the first conv, by choice
        assert [n.name for n in report.float_nodes] == [STEM], report.summary()
        assert 0.99 < report.integer_fraction < 1.0
    else:
        assert report.fully_integer and report.integer_fraction == 1.0, report.summary()
    assert q.provenance.config.target is target


def test_preset_graphs_have_the_types_their_rules_promise(preset_models) -> None:
    for target, q in preset_models.items():
        p = eq.preset(target)
        zps = _activation_zero_points(q)
        assert zps and all(z.dtype == p.activations.qtype.numpy_dtype for z in zps), target
        if p.activations.symmetry is Symmetry.SYMMETRIC:
            assert all(int(z) == 0 for z in zps), target  # TensorRT: zero-point 0 only
        weights = _weights(q)
        assert weights, target
        low = min(int(w.min()) for w in weights)
        high = max(int(w.max()) for w in weights)
        assert p.weights.qmin <= low and high <= p.weights.qmax, (target, low, high)
        graph = q.proto.graph
        producers = {o: n.op_type for n in graph.node for o in n.output}
        int32_biases = [
            n for n in graph.node
            if n.op_type == "DequantizeLinear" and _inits(q).get(n.input[0], np.zeros(1)).dtype == np.int32
        ]  # fmt: skip
        layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
        if p.full_integer:  # the NPU reads no float: outputs dequantized, every bias int32
            assert all(producers[o.name] == "DequantizeLinear" for o in graph.output), target
            assert len(int32_biases) == len(layers), target
        else:
            assert all(producers[o.name] != "DequantizeLinear" for o in graph.output), target
    x86 = max(int(np.abs(w).max()) for w in _weights(preset_models[eq.Target.X86]))
    vnni = max(int(np.abs(w).max()) for w in _weights(preset_models[eq.Target.X86_VNNI]))
    assert x86 == 64 and vnni == 127  # 7 bits without VNNI, the full 8 with it
    a16 = preset_models[eq.Target.NPU_A16].proto
    assert next(o.version for o in a16.opset_import if o.domain in ("", "ai.onnx")) >= 21


def test_support_check_finds_the_float_islands_onnx_runtime_leaves(preset_models) -> None:
    """s8 symmetric activations (TensorRT's rule) on ORT's x86 CPU: ORT's optimizer leaves
    depthwise Convs and residual Adds unfused; on TensorRT the same graph is all node units."""
    trt = preset_models[eq.Target.TENSORRT]
    on_cpu = eq.check_support(trt, eq.Target.X86_VNNI)
    kinds = {n.op_type for n in on_cpu.float_nodes}
    assert {"Conv", "Add"} <= kinds, on_cpu.summary()
    assert 0.0 < on_cpu.integer_fraction < 1.0
    depthwise = [n for n in on_cpu.float_nodes if n.op_type == "Conv"]
    assert all(n.macs > 0 for n in depthwise)
    assert eq.check_support(trt, eq.Target.TENSORRT).fully_integer


@pytest.fixture(scope="module")
def elu_model(fp32_model):
    """The demo model with its first Relu turned into ELU, an activation that no ONNX Runtime
    QDQ fusion and no preset here has an integer kernel for. (HardSwish would do too, but ORT
    inlines it as HardSigmoid x Mul, so the float node would have another name.)"""
    proto = onnx.ModelProto()
    proto.CopyFrom(fp32_model.proto)
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    relu.op_type = "Elu"
    relu.name = "/stem/Elu"
    return eq.Model(proto, "edgecnn-elu")


def test_planned_check_follows_the_config(fp32_model) -> None:
    """Before calibration, ONNX Runtime is asked about the model quantized with placeholder
    ranges: a layer the config keeps float is float for that reason; an INT16 layer is float
    too on this CPU (ORT has no 16-bit kernels), and so is the layer reading its output."""
    names = [n.name for n in eq.check_support(fp32_model).nodes if "Conv" in n.op_type]
    config = eq.PTQConfig.int8(
        layer_precisions={names[0]: eq.Precision.FP32, names[1]: eq.Precision.INT16}
    )
    report = eq.check_support(fp32_model, config)
    assert report.stage == "planned"
    planned = {n.name: n for n in report.float_nodes}
    assert planned[names[0]].reason == "excluded by the configuration"
    assert "no fused integer kernel" in planned[names[1]].reason
    assert names[2] in planned and names[3] not in planned


def test_unsupported_operator_is_flagged_before_and_after_quantization(
    elu_model, calibration
) -> None:
    planned = eq.check_support(elu_model, eq.Target.X86_VNNI)
    assert planned.stage == "planned"
    flagged = {n.name: n for n in planned.float_nodes}
    assert "/stem/Elu" in flagged and "Elu" in flagged["/stem/Elu"].reason
    q = eq.quantize(elu_model, eq.PTQConfig.int8(), calibration=calibration)
    after = eq.check_support(q)
    assert [n.name for n in after.fallbacks] == ["/stem/Elu"], after.summary()
    assert [n.name for n in after.float_nodes] == [STEM, "/stem/Elu"]  # the first: by choice
    # ELU has no MACs: the Convs around it stay integer, all but the first (1 channel)
    assert after.integer_fraction == 1.0 - next(
        n.macs for n in after.nodes if n.name == STEM
    ) / sum(n.macs for n in after.nodes)
    with pytest.raises(eq.EdgeQuantError, match="Elu"):
        eq.require_integer(after)


def test_strict_quantize_fails_clearly_and_writes_nothing(elu_model, calib_npz, tmp_path) -> None:
    model = tmp_path / "elu.onnx"
    elu_model.save(model)
    out = tmp_path / "out" / "q.onnx"
    out.parent.mkdir()
    proc = edgequant(
        "quantize", str(model), "--calib", str(calib_npz), "--target", "x86-vnni", "--strict",
        "-o", str(out),
    )  # fmt: skip
    assert_user_error(proc, "--strict", "/stem/Elu", "Elu")
    assert not any(out.parent.iterdir())
    proc = edgequant("check", str(model), "--target", "npu", "--strict")
    assert_user_error(proc, "/stem/Elu")
    proc = edgequant(
        "quantize", str(model), "--calib", str(calib_npz), "--target", "x86-vnni", "-o",
        str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert list(summary["support"]["float_nodes"]) == [STEM, "/stem/Elu"]
    assert list(summary["support_planned"]["float_nodes"]) == [STEM, "/stem/Elu"]
    sidecar = json.loads(out.with_name("q.quant.json").read_text())
    assert sidecar["support"]["float_nodes"] == summary["support"]["float_nodes"]


@pytest.fixture(scope="module")
def calib_npz(tmp_path_factory, fmnist):
    train, _ = fmnist
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    np.savez(path, input=train.images[:200])
    return path


def test_tflite_rules_on_an_onnx_model(fp32_model, calibration) -> None:
    """The tflite preset applied to ONNX gives a full-integer QDQ model (int8 activations,
    quantized outputs) that ONNX Runtime runs; it is checked as node units, as converted."""
    q = eq.quantize(fp32_model, eq.PTQConfig.for_target(eq.Target.TFLITE), calibration=calibration)
    assert all(z.dtype == np.int8 for z in _activation_zero_points(q))
    report = eq.check_support(q, eq.Target.TFLITE)
    assert report.fully_integer and report.method.startswith("QDQ node units")
    assert eq.evaluate(q, calibration).samples == 500  # ONNX Runtime runs it


def test_targets_command_lists_every_preset_with_reasons() -> None:
    proc = edgequant("targets", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["targets"]
    assert [r["target"] for r in rows] == [t.value for t in eq.Target]
    assert all(r["rules"] for r in rows)


def test_reduce_range_halves_the_grid() -> None:
    spec = eq.QuantSpec(eq.QType.INT8, reduce_range=True)
    assert (spec.qmin, spec.qmax) == (-64, 63)
    assert eq.QuantSpec(eq.QType.UINT8, eq.Symmetry.AFFINE, reduce_range=True).qmax == 127
    with pytest.raises(eq.EdgeQuantError, match="8-bit"):
        eq.QuantSpec(eq.QType.INT4, reduce_range=True)
    assert eq.QuantSpec.from_dict(spec.to_dict()) == spec


def test_support_of_dynamic_int8_names_the_fused_matmul(fp32_model) -> None:
    """ORT fuses the dynamic Gemm into an unnamed DynamicQuantizeMatMul: the check still finds
    it, with its MACs (512 x 10), and says why the Convs stay float."""
    report = eq.check_support(eq.quantize(fp32_model, eq.PTQConfig.dynamic()))
    integer = [n for n in report.nodes if n.integer]
    assert [(n.op_type, n.macs) for n in integer] == [("DynamicQuantizeMatMul", 512 * 10)]
    convs = [n for n in report.float_nodes if "Conv" in n.op_type]
    assert len(convs) == 29 and all("only MatMul/Gemm" in n.reason for n in convs)
