"""INT4 weight-only, group-wise: 4-bit weights with one scale per block along the reduction axis.

Written as standard ONNX (opset 21): DequantizeLinear(int4 weight, block_size) -> MatMul. ONNX
Runtime's optimiser fuses that pair into its MatMulNBits kernel. Gemm is rewritten as MatMul (+Add)
first: torch exports Linear as Gemm, which ORT's own MatMulNBitsQuantizer skips silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx

from edgequant.algorithms.gptq import gptq_quantize
from edgequant.config import PTQConfig, Rounding
from edgequant.errors import ConfigError, NothingToQuantizeError
from edgequant.exporter.plan import TensorQuant
from edgequant.exporter.planner import plan_tables, plan_weight_only
from edgequant.exporter.write import write
from edgequant.graph.index import GraphIndex
from edgequant.graph.preprocess import optimize
from edgequant.graph.rewrite import LinearNode, linear_nodes, linears_as_matmul
from edgequant.model import Model
from edgequant.observers import FeatureGram
from edgequant.progress import ProgressFn, silent
from edgequant.provenance import Provenance
from edgequant.ptq.calibrate import calibrate
from edgequant.spec import PerGroup, QuantSpec

INT4_OPSET = 21  # int4 tensors and blocked DequantizeLinear


def quantize_int4(
    model: Model,
    config: PTQConfig,
    calibration: Iterable[Any] | None = None,
    progress: ProgressFn = silent,
) -> Model:
    """Every MatMul/Gemm with a constant weight as DequantizeLinear(int4) -> MatMul; weights
    rounded to nearest, or by GPTQ (`Rounding.GPTQ`) from Hessians of `calibration` inputs."""
    fp32 = optimize(model, INT4_OPSET)
    proto = onnx.ModelProto()
    proto.CopyFrom(fp32.proto)
    index = GraphIndex.of(proto.graph)
    float_nodes: dict[str, str] = {}
    template = config.weights
    assert isinstance(template.granularity, PerGroup)  # PTQConfig checks INT4 is group-wise
    block = template.granularity.size
    spec = QuantSpec(template.qtype, template.symmetry, PerGroup(block, 0), template.narrow_range)
    linears: list[LinearNode] = []
    for lin in linear_nodes(proto.graph, index, frozenset(config.exclude_nodes), float_nodes):
        k = lin.weight_kn.shape[0]
        if k % block:
            float_nodes[lin.node.name] = (
                f"reduction size {k} is not a multiple of the block size {block}"
            )
            continue
        linears.append(lin)
    if not linears:
        raise NothingToQuantizeError(
            "INT4 weight-only found no MatMul/Gemm with a constant weight to quantize"
        )
    rounded: dict[str, tuple[np.ndarray, TensorQuant]] = {}
    matmuls = linears_as_matmul(proto.graph, linears)
    if config.rounding is Rounding.GPTQ:
        rounded = _gptq(fp32, config, proto, matmuls, spec, calibration, progress)
    plan = plan_weight_only(GraphIndex.of(proto.graph), matmuls, spec, rounded)
    plan.embeddings = plan_tables(proto.graph, config)
    out_model = Model(write(proto, plan), f"{model.name}.int4")
    out_model.provenance = Provenance(
        method=config.method.value,
        config=config,
        quantized_nodes=len(matmuls),
        int8_embeddings=list(plan.embeddings),
        gptq_weights=len(rounded),
        float_nodes=float_nodes,
    )
    return out_model


def _gptq(
    fp32: Model,
    config: PTQConfig,
    proto: onnx.ModelProto,
    matmuls: list[onnx.NodeProto],
    spec: QuantSpec,
    calibration: Iterable[Any] | None,
    progress: ProgressFn,
) -> dict[str, tuple[np.ndarray, TensorQuant]]:
    """Weight -> (codes, quantization) by GPTQ from H = 2 X^T X of each MatMul's input,
    streamed over the calibration data through the FP32 model."""
    if calibration is None:
        raise ConfigError(
            "GPTQ needs calibration data: pass calibration=... (or --calib; a few hundred samples)"
        )
    grams = {t: FeatureGram() for t in dict.fromkeys(n.input[0] for n in matmuls)}
    calibrate(fp32, [], calibration, num_bins=128, max_samples=config.max_calibration_samples,
              histogram=False, statistics=grams, progress=progress)  # fmt: skip
    hessians = {t: g.hessian() for t, g in grams.items()}
    index = GraphIndex.of(proto.graph)
    assert isinstance(spec.granularity, PerGroup)
    rounded: dict[str, tuple[np.ndarray, TensorQuant]] = {}
    for i, node in enumerate(matmuls):
        weight = node.input[1]
        if weight not in rounded:
            values = index.array(weight).astype(np.float32)
            codes, scale, zp = gptq_quantize(
                values, hessians[node.input[0]], spec, spec.granularity.size
            )
            rounded[weight] = (codes.astype(spec.qtype.numpy_dtype), TensorQuant(spec, scale, zp))
        progress("GPTQ", i + 1, len(matmuls))
    return rounded
