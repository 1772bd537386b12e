"""In-memory ONNX models: loading with clear errors, atomic saving with a provenance sidecar."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgequant.errors import ModelError, OutputError


@dataclass
class Model:
    """An ONNX model held in memory, plus how it was made (`provenance`, written as a sidecar)."""

    proto: onnx.ModelProto
    name: str = "model"
    provenance: dict[str, Any] = field(default_factory=dict)

    def serialize(self) -> bytes:
        """Deterministic bytes of the model (same model, same bytes)."""
        return self.proto.SerializeToString(deterministic=True)

    @property
    def size_bytes(self) -> int:
        return len(self.serialize())

    @property
    def input_names(self) -> list[str]:
        inits = {i.name for i in self.proto.graph.initializer}
        return [i.name for i in self.proto.graph.input if i.name not in inits]

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
        """Write the model and `<stem>.quant.json` atomically (temporary file, then rename)."""
        path = Path(path)
        check_writable_dir(path.parent)
        write_atomic(path, self.serialize())
        if self.provenance:
            sidecar = sidecar_path(path)
            text = json.dumps(self.provenance, indent=2, sort_keys=True) + "\n"
            write_atomic(sidecar, text.encode())
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
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(
            f"{path} is not a readable ONNX model (corrupt or truncated?): {type(exc).__name__}"
        ) from None
    _check(proto, str(path))
    return Model(proto, path.name.removesuffix(".onnx"))


def _check(proto: onnx.ModelProto, where: str) -> None:
    if proto.ir_version <= 0 or not proto.graph.node or not proto.graph.output:
        raise ModelError(f"{where} does not hold an ONNX model graph (empty or not an ONNX file)")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{where} is not a valid ONNX model: {first}") from None


def check_writable_dir(folder: Path) -> None:
    """Fail early, before any work, if `folder` cannot receive output."""
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist: create it first")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable: choose another location")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write to {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are shared like any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
