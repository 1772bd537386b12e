"""In-memory ONNX models: loading with clear errors, atomic saving with a provenance sidecar."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgequant.batching import BatchAxes, infer_batch_axes
from edgequant.errors import ModelError
from edgequant.outputs import (
    check_writable_dir,
    note_input,
    resolve_output,
    write_atomic,
    write_files,
)
from edgequant.provenance import Provenance

__all__ = ["Model", "check_writable_dir", "load", "sidecar_path", "write_atomic"]


@dataclass
class Model:
    """An ONNX model held in memory, plus how it was made (`provenance`, written as a sidecar)."""

    proto: onnx.ModelProto
    name: str = "model"
    provenance: Provenance | None = None

    def serialize(self) -> bytes:
        """Deterministic bytes of the model (same model, same bytes)."""
        data: bytes = self.proto.SerializeToString(deterministic=True)
        return data

    @property
    def size_bytes(self) -> int:
        return len(self.serialize())

    @property
    def input_names(self) -> list[str]:
        inits = {i.name for i in self.proto.graph.initializer}
        return [i.name for i in self.proto.graph.input if i.name not in inits]

    @property
    def input_shapes(self) -> dict[str, tuple[int | str | None, ...]]:
        """Each graph input's shape: numbers, symbolic names, or None where unknown."""
        inits = {i.name for i in self.proto.graph.initializer}
        shapes: dict[str, tuple[int | str | None, ...]] = {}
        for value in self.proto.graph.input:
            if value.name in inits:
                continue
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims
            )
        return shapes

    def batch_axes(self, overrides: BatchAxes | None = None) -> dict[str, int | None]:
        """Input name -> its batch axis, from the symbolic dimensions (`edgequant.batching`)."""
        return infer_batch_axes(self.input_shapes, overrides)

    def fixed_batch(self, overrides: BatchAxes | None = None) -> int | None:
        """The batch size the inputs are fixed at (an input whose batch axis is a number B
        fixes the whole model at B, e.g. a recurrent state exported for one stream), or None
        when every batch axis is dynamic or the numbers disagree."""
        shapes, sizes = self.input_shapes, set()
        for name, axis in self.batch_axes(overrides).items():
            size = shapes[name][axis] if axis is not None else None
            if isinstance(size, int) and size > 0:
                sizes.add(size)
        return sizes.pop() if len(sizes) == 1 else None

    def with_outputs(self, names: list[str]) -> Model:
        """A copy whose graph also outputs the tensors `names` (to observe intermediate values)."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        present = {o.name for o in proto.graph.output}
        proto.graph.output.extend(
            onnx.helper.make_empty_tensor_value_info(t) for t in names if t not in present
        )
        return Model(proto, self.name)

    def save(self, path: str | Path) -> Path:
        """Write the model and `<stem>.quant.json` atomically, together (`edgequant.outputs`)."""
        path = resolve_output(path)  # a symlink: the file it points to, sidecar beside it
        files = {path: self.serialize()}
        if self.provenance is not None:
            files[sidecar_path(path)] = self.provenance.to_json().encode()
        write_files(files)  # both or neither
        return path


def sidecar_path(model_path: Path) -> Path:
    """model.int8.onnx -> model.int8.quant.json"""
    return model_path.with_name(model_path.stem + ".quant.json")


def load(source: str | Path | onnx.ModelProto | Model) -> Model:
    """Load an ONNX model from a path, checking that it is a complete, valid model."""
    if isinstance(source, Model):
        return source
    if isinstance(source, onnx.ModelProto):
        _check(source, "<in-memory model>")
        return Model(source, source.graph.name or "model")
    path = Path(source)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"{path} is not a file: pass the path of an .onnx model")
    note_input(path)
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise _load_error(path, exc) from None
    _check(proto, str(path))
    return Model(proto, path.name.removesuffix(".onnx"))


def _load_error(path: Path, exc: Exception) -> ModelError:
    """Say which part of the model could not be read: an external-data file or the model."""
    text = str(exc)
    missing = re.search(r"tensor name: (.*?)\) should be stored in (.*?), but it is not", text)
    if missing:
        return ModelError(
            f"{path}: tensor {missing.group(1)!r} keeps its data in {missing.group(2)}, which is "
            "missing: copy that file beside the model"
        )
    outside = re.search(r"tensor name: (.*?)\) should be file inside .*?, but '(.*?)' points", text)
    if outside:
        return ModelError(
            f"{path}: refused: tensor {outside.group(1)!r} names its external data file "
            f"{outside.group(2)!r}, a path that leaves the model's folder"
        )
    return ModelError(
        f"{path} is not a readable ONNX model (corrupt or truncated?): {type(exc).__name__}"
    )


def _check(proto: onnx.ModelProto, where: str) -> None:
    if proto.ir_version <= 0 or not proto.graph.node or not proto.graph.output:
        raise ModelError(f"{where} does not hold an ONNX model graph (empty or not an ONNX file)")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{where} is not a valid ONNX model: {first}") from None
