"""Graph clean-up before quantization, done by ONNX Runtime's own optimiser.

Folding BatchNorm into Conv, constant folding and removing Identity/Dropout is what lets every
Conv get a fused integer kernel: ORT's peer measurement (../shared/PEER-FINDINGS.md) shows the same
depthwise CNN at 1.05x FP32 latency without this step and 0.43-0.58x with it. We use ORT's
basic-level optimiser (semantics-preserving ONNX rewrites only, no contrib ops) instead of
writing our own fusions, and skip `quant_pre_process`'s symbolic shape inference, which fails on
exported transformers and leaves temporary files behind.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
from onnx import version_converter

from edgequant.errors import ModelError
from edgequant.model import Model

MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear


def optimize(model: Model, min_opset: int = MIN_OPSET) -> Model:
    """ORT basic optimisations, opset >= `min_opset`, and a unique name on every node."""
    optimized = ort_optimized(upgrade_opset(model.proto, min_opset))
    name_nodes(optimized.graph)
    return Model(optimized, model.name, model.provenance)


def ort_optimized(proto: onnx.ModelProto, *, extended: bool = False) -> onnx.ModelProto:
    """The graph as ONNX Runtime's CPU provider rewrites it: basic optimisations (constant
    folding, BatchNorm into Conv), or `extended` ones too (its QDQ -> QLinear* kernel fusions)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    level = ort.GraphOptimizationLevel
    opts.graph_optimization_level = (
        level.ORT_ENABLE_EXTENDED if extended else level.ORT_ENABLE_BASIC
    )
    with tempfile.TemporaryDirectory(prefix="edgequant-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts.optimized_model_filepath = str(out)
        try:
            ort.InferenceSession(
                proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(
                f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0][:300]}"
            ) from None
        return onnx.load(str(out))


def upgrade_opset(proto: onnx.ModelProto, minimum: int) -> onnx.ModelProto:
    """The model converted to opset `minimum` if it is older (ONNX's own version converter)."""
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), minimum)
    if version >= minimum:
        return proto
    try:
        return version_converter.convert_version(proto, minimum)
    except Exception as exc:
        raise ModelError(
            f"model uses opset {version}; converting it to opset {minimum} failed: {exc}"
        ) from None


def name_nodes(graph: onnx.GraphProto) -> None:
    taken: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in taken:
            node.name = f"{node.op_type}_{i}"
        taken.add(node.name)
