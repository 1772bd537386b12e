"""Run .tflite models in the LiteRT interpreter: predictions, accuracy, latency, op support.

Batch 1, as on the devices these models are for (and as the converted graph is shaped). Integer
inputs are quantized with the model's own input scale and zero-point, integer outputs
dequantized, so accuracy compares like with like across FP32, INT8 and FP16 models.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgequant.analysis.support import NodeSupport, SupportReport
from edgequant.data import split_item
from edgequant.errors import DataError, DependencyError
from edgequant.runtime.evaluate import check_labels
from edgequant.tflite.convert import TFLiteModel, native_output_captured

_BOUNDARY = frozenset({"QUANTIZE", "DEQUANTIZE"})


def _interpreter(model: TFLiteModel, threads: int, delegates: bool = True) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise DependencyError(
            "running .tflite models needs ai-edge-litert: pip install 'edgequant[tflite]'"
        ) from None
    kind = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with native_output_captured():  # LiteRT logs its delegate choice on stderr
        it = Interpreter(
            model_content=model.content, num_threads=threads, experimental_op_resolver_type=kind
        )
        it.allocate_tensors()
    return it


def predict_tflite(model: TFLiteModel, inputs: np.ndarray, *, threads: int = 2) -> np.ndarray:
    """Float outputs for a batch of `inputs` (N, ...), one invoke per sample."""
    return _predict(_interpreter(model, threads), inputs)


def evaluate_tflite(model: TFLiteModel, data: Iterable[Any], *, threads: int = 2) -> float:
    """Top-1 accuracy on labelled batches (one interpreter for all of them)."""
    it = _interpreter(model, threads)
    hits = n = 0
    for item in data:
        x, labels = split_item(item)
        if labels is None:
            raise DataError("accuracy needs labelled data: (inputs, labels) batches")
        logits = _predict(it, np.asarray(x))
        check_labels(labels, logits)
        hits += int((logits.argmax(-1) == labels).sum())
        n += len(labels)
    if n == 0:
        raise DataError("the evaluation data is empty")
    return hits / n


def _predict(it: Any, inputs: np.ndarray) -> np.ndarray:
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    expected = tuple(inp["shape"][1:])
    if tuple(inputs.shape[1:]) != expected:
        raise DataError(
            f"inputs have shape {inputs.shape[1:]} per sample, the model takes {expected}"
        )
    rows = []
    for sample in np.asarray(inputs, dtype=np.float32):
        it.set_tensor(inp["index"], _to_input(sample[None], inp))
        it.invoke()
        rows.append(_from_output(it.get_tensor(out["index"]), out))
    return np.concatenate(rows)


def benchmark_tflite(
    model: TFLiteModel, sample: np.ndarray, *, threads: int = 1, rounds: int = 5, iters: int = 200
) -> float:
    """Median over `rounds` of the mean batch-1 latency (ms) of `iters` invokes, after warm-up."""
    it = _interpreter(model, threads)
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], _to_input(np.asarray(sample, np.float32)[None], inp))
    for _ in range(20):
        it.invoke()
    means = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iters):
            it.invoke()
        means.append((time.perf_counter() - start) / iters * 1e3)
    return float(np.median(means))


def check_tflite(model: TFLiteModel) -> SupportReport:
    """Per operator: integer when every tensor it reads is an integer type, else float (with
    why); decided on the model's own operators, before any delegate takes them."""
    it = _interpreter(model, 1, delegates=False)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    nodes = []
    for op in it._get_ops_details():  # the public API has no per-op listing
        if op["op_name"] in _BOUNDARY:
            continue
        reads = [tensors[i] for i in op["inputs"] if i >= 0]
        kinds = {np.dtype(t["dtype"]) for t in reads}
        floats = any(np.issubdtype(k, np.floating) for k in kinds)
        reason = ""
        if floats:
            reason = (
                "dynamic range: int8 weights, float activations"
                if np.dtype(np.int8) in kinds
                else "float tensors in and out"
            )
        name = f"{op['index']}:{op['op_name']}"
        nodes.append(NodeSupport(name, op["op_name"], not floats, reason, _macs(op, tensors)))
    return SupportReport(
        "tflite", "litert", "tflite", "the .tflite operators' tensor types", tuple(nodes)
    )


def _macs(op: dict[str, Any], tensors: dict[int, dict[str, Any]]) -> int:
    kind = op["op_name"]
    if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
        return 0
    ins = [i for i in op["inputs"] if i >= 0]
    if len(ins) < 2 or not op["outputs"]:
        return 0
    out = int(np.prod(tensors[op["outputs"][0]]["shape"]))
    w = tensors[ins[1]]["shape"]
    if kind == "CONV_2D":  # weights (O, kh, kw, I)
        return out * int(np.prod(w[1:]))
    if kind == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, C)
        return out * int(w[1] * w[2])
    return out * int(w[-1] if kind == "FULLY_CONNECTED" else w[-2])


def _to_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _from_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.issubdtype(np.dtype(detail["dtype"]), np.floating):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale
