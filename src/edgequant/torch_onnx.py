"""Export a torch module to ONNX with the TorchScript exporter.

We use `dynamo=False` on purpose (measured in ../shared/PEER-FINDINGS.md): the dynamo exporter
writes weights to a side `.onnx.data` file even for tiny models and turns global average pooling
into ReduceMean, which ONNX Runtime leaves in float. The TorchScript path emits
GlobalAveragePool, folds constants, and is deterministic.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import onnx

from edgequant.model import Model

OPSET = 17


def to_onnx(module: Any, example_input: Any, name: str = "model") -> Model:
    """FP32 ONNX of `module` (run in eval mode), with a dynamic batch dimension."""
    proto = export_proto(module, example_input)
    proto.producer_name, proto.producer_version = "edgequant", ""
    return Model(proto, name)


def export_proto(
    module: Any,
    example_input: Any,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("logits",),
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> onnx.ModelProto:
    """torch.onnx.export in eval mode, no gradients; the module's train/eval state is restored.
    `example_input`: one tensor, or a tuple of them (one per name in `input_names`);
    `dynamic_axes`: by default axis 0 of every input and output is the batch."""
    import torch

    args = example_input if isinstance(example_input, tuple) else (example_input,)
    axes = dynamic_axes or {name: {0: "batch"} for name in (*input_names, *output_names)}
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module,
                args,
                buf,  # type: ignore[arg-type]  # a file object works; the stub names only paths
                dynamo=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in axes.items()},
                do_constant_folding=True,
            )
    finally:
        module.train(was_training)
    return onnx.load_from_string(buf.getvalue())
