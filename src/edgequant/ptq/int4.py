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
from onnx import helper, numpy_helper

from edgequant.algorithms.gptq import gptq_quantize
from edgequant.config import PTQConfig, Rounding
from edgequant.errors import ConfigError, NothingToQuantizeError
from edgequant.exporter.plan import TensorQuant
from edgequant.graph.index import GraphIndex
from edgequant.graph.preprocess import optimize
from edgequant.graph.rewrite import linear_nodes, replace_nodes
from edgequant.model import Model
from edgequant.observers import FeatureGram
from edgequant.primitives import quantize
from edgequant.progress import ProgressFn, silent
from edgequant.ptq.calibrate import calibrate
from edgequant.ptq.embeddings import embed_int8
from edgequant.ptq.static import weight_quant
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
    assert isinstance(template.granularity, PerGroup)
    spec = QuantSpec(
        template.qtype,
        template.symmetry,
        PerGroup(template.granularity.size, 0),
        template.narrow_range,
    )
    swaps: dict[str, list[onnx.NodeProto]] = {}
    inits: list[onnx.TensorProto] = []
    block = spec.granularity.size  # type: ignore[union-attr]
    linears = []
    for lin in linear_nodes(proto.graph, index, frozenset(config.exclude_nodes), float_nodes):
        k = lin.weight_kn.shape[0]
        if k % block:
            float_nodes[lin.node.name] = (
                f"reduction size {k} is not a multiple of the block size {block}"
            )
            continue
        linears.append(lin)
    hessians = {}
    if config.rounding is Rounding.GPTQ and linears:
        hessians = _hessians(
            fp32, config, [lin.node.input[0] for lin in linears], calibration, progress
        )
    for i, lin in enumerate(linears):
        if hessians:
            codes, scale, zp = gptq_quantize(
                lin.weight_kn, hessians[lin.node.input[0]], spec, block
            )
            tq = TensorQuant(spec, scale, zp)
            q = codes.astype(spec.qtype.numpy_dtype)
            progress("GPTQ", i + 1, len(linears))
        else:
            tq = weight_quant(lin.weight_kn, spec)  # scale (K / block, N)
            q = quantize(lin.weight_kn, tq.scale, tq.zero_point, spec).astype(
                spec.qtype.numpy_dtype
            )
        p = lin.node.name.replace("/", "_").strip("_") or lin.node.output[0]
        inits += [
            numpy_helper.from_array(q, f"{p}_W_q4"),
            numpy_helper.from_array(tq.scale.astype(np.float32), f"{p}_W_scale"),
            numpy_helper.from_array(tq.zero_point.astype(spec.qtype.numpy_dtype), f"{p}_W_zp"),
        ]
        out = lin.node.output[0]
        mm_out = f"{p}_mm" if lin.bias else out
        swaps[lin.node.name] = [
            helper.make_node(
                "DequantizeLinear",
                [f"{p}_W_q4", f"{p}_W_scale", f"{p}_W_zp"],
                [f"{p}_W"],
                axis=0,
                block_size=_block_size(spec),
            ),
            helper.make_node("MatMul", [lin.node.input[0], f"{p}_W"], [mm_out]),
            *([helper.make_node("Add", [mm_out, lin.bias], [out])] if lin.bias else []),
        ]
    if not swaps:
        raise NothingToQuantizeError(
            "INT4 weight-only found no MatMul/Gemm with a constant weight to quantize"
        )
    replace_nodes(proto.graph, swaps, inits)
    tables = embed_int8(proto, config, frozenset())
    out_model = Model(proto, f"{model.name}.int4")
    out_model.provenance = {
        "config": config.to_dict(),
        "quantized_nodes": len(swaps),
        "int8_embeddings": tables,
        "gptq_weights": len(linears) if hessians else 0,
        "float_nodes": float_nodes,
    }
    return out_model


def _hessians(
    fp32: Model,
    config: PTQConfig,
    inputs: list[str],
    calibration: Iterable[Any] | None,
    progress: ProgressFn,
) -> dict[str, np.ndarray]:
    """GPTQ's H = 2 X^T X per distinct MatMul input, streamed over the calibration data."""
    if calibration is None:
        raise ConfigError(
            "GPTQ needs calibration data: pass calibration=... (or --calib; a few hundred samples)"
        )
    grams = {t: FeatureGram() for t in dict.fromkeys(inputs)}
    calibrate(fp32, [], calibration, num_bins=128, max_samples=config.max_calibration_samples,
              histogram=False, statistics=grams, progress=progress)  # fmt: skip
    return {t: g.hessian() for t, g in grams.items()}


def _block_size(spec: QuantSpec) -> int:
    assert isinstance(spec.granularity, PerGroup)  # PTQConfig checks INT4 is group-wise
    return spec.granularity.size
