"""PyTorch -> .tflite with litert-torch: FP32, full-integer INT8, dynamic-range INT8 and FP16.

Full integer follows TFLite's int8 spec through litert-torch's PT2E quantizer: s8 per-channel
symmetric weights in [-127, 127], s8 asymmetric per-tensor activations (histogram observer),
int32 biases; the converter lowers the Q/DQ graph to integer kernels and gives the model int8
inputs and outputs. Dynamic range (int8 weights, activations quantized per batch inside the
kernels) and FP16 (half-precision weights) are ai-edge-quantizer recipes applied to the FP32
.tflite, the post-conversion path LiteRT documents for them.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.data import split_item
from edgequant.errors import ConfigError, DataError, DependencyError, ModelError
from edgequant.outputs import note_input, resolve_output, write_files
from edgequant.progress import ProgressFn, silent
from edgequant.provenance import Provenance, read_provenance

CALIBRATION_SAMPLES = 500


class TFLiteMode(enum.Enum):
    """Which .tflite model to make."""

    FP32 = "fp32"
    FULL_INTEGER = "int8"  # int8 weights, activations, inputs and outputs
    DYNAMIC_RANGE = "dynamic"  # int8 weights; activations quantized on the fly in the kernels
    FP16 = "fp16"  # half-precision weights, dequantized to float32 at load


@dataclass
class TFLiteModel:
    """A .tflite flatbuffer held in memory, plus how it was made (written as a sidecar)."""

    content: bytes
    name: str
    mode: TFLiteMode
    provenance: Provenance | None = None

    @property
    def size_bytes(self) -> int:
        return len(self.content)

    def save(self, path: str | Path) -> Path:
        """Write the model and `<stem>.tflite.quant.json` atomically, together
        (`edgequant.outputs`)."""
        path = resolve_output(path)  # a symlink: the file it points to, sidecar beside it
        files = {path: self.content}
        if self.provenance is not None:
            files[tflite_sidecar(path)] = self.provenance.to_json().encode()
        write_files(files)
        return path


def tflite_sidecar(path: Path) -> Path:
    """model.int8.tflite -> model.int8.tflite.quant.json: never the sidecar of model.int8.onnx
    in the same folder."""
    return path.with_name(path.stem + ".tflite.quant.json")


def load_tflite(path: str | Path) -> TFLiteModel:
    """A .tflite file from disk, checked to be a TFLite flatbuffer (identifier "TFL3")."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    note_input(path)
    content = path.read_bytes()
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ModelError(f"{path} is not a TFLite model (no TFL3 flatbuffer identifier)")
    mode, provenance = TFLiteMode.FP32, None
    if tflite_sidecar(path).is_file():  # the mode it was converted in; none: taken as FP32
        provenance = read_provenance(tflite_sidecar(path))
        mode = TFLiteMode(provenance.method)
    return TFLiteModel(content, path.stem, mode, provenance)


def to_tflite(
    module: Any,
    example_input: Any,
    *,
    mode: TFLiteMode = TFLiteMode.FULL_INTEGER,
    calibration: Iterable[Any] | None = None,
    max_samples: int = CALIBRATION_SAMPLES,
    name: str = "model",
    progress: ProgressFn = silent,
) -> TFLiteModel:
    """Convert the FP32 torch `module` (called as `module(example_input)`, batch 1) to a
    .tflite model. FULL_INTEGER calibrates on up to `max_samples` samples of `calibration`."""
    torch = _require_torch(module)
    example = torch.as_tensor(np.asarray(example_input, dtype=np.float32))
    if example.ndim == 0 or example.shape[0] != 1:
        raise ConfigError(
            f"example_input must be one sample (batch 1), got shape {tuple(example.shape)}"
        )
    if not isinstance(mode, TFLiteMode):
        raise ConfigError(f"mode must be a TFLiteMode, got {mode!r}")
    samples = None
    if mode is TFLiteMode.FULL_INTEGER:
        if calibration is None:
            raise ConfigError("full-integer TFLite needs calibration data (a few hundred inputs)")
        samples = _samples(calibration, tuple(example.shape[1:]), max_samples)
    litert = _import_litert()
    module = module.eval()
    with native_output_captured() as log:
        try:
            if mode is TFLiteMode.FULL_INTEGER:
                assert samples is not None
                content = _full_integer(litert, module, example, samples, progress)
            else:
                progress("converting to TFLite", 0, 1)
                content = bytes(litert.convert(module, (example,)).model_content())
                if mode is not TFLiteMode.FP32:
                    content = _post_quantize(content, mode)
        except Exception as exc:  # the converter's own errors: one line, with its last log line
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise ModelError(
                f"litert-torch could not convert the model to TFLite ({type(exc).__name__}: "
                f"{detail or log.last_line()}); simplify the unsupported operator or export ONNX"
            ) from None
    progress("converting to TFLite", 1, 1)
    provenance = Provenance(
        method=mode.value,
        format="tflite",
        converter=f"litert-torch {_version('litert-torch')}",
        calibration_samples=0 if samples is None else len(samples),
    )
    return TFLiteModel(content, f"{name}.{mode.value}", mode, provenance)


def quantize_tflite(fp32: TFLiteModel, mode: TFLiteMode) -> TFLiteModel:
    """Dynamic-range or FP16 model from an FP32 .tflite (ai-edge-quantizer), without converting
    the torch model again."""
    if fp32.mode is not TFLiteMode.FP32 or mode not in (TFLiteMode.DYNAMIC_RANGE, TFLiteMode.FP16):
        raise ConfigError("quantize_tflite makes dynamic-range or FP16 models from an FP32 one")
    with native_output_captured():
        content = _post_quantize(fp32.content, mode)
    provenance = replace(
        fp32.provenance or Provenance(method="fp32", format="tflite"), method=mode.value
    )
    base = fp32.name.removesuffix(".fp32")
    return TFLiteModel(content, f"{base}.{mode.value}", mode, provenance)


def _full_integer(
    litert: Any, module: Any, example: Any, samples: np.ndarray, progress: ProgressFn
) -> bytes:
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    )
    graph = torch.export.export(module, (example,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i, sample in enumerate(samples):  # batch 1: the exported graph has a static batch
            prepared(torch.from_numpy(sample[None]))
            progress("calibrating for TFLite", i + 1, len(samples))
    converted = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    for sub in converted.modules():  # exported graphs refuse .eval(); the flag is all it sets
        sub.training = False
    progress("converting to TFLite", 0, 1)
    config = quant_config.QuantConfig(pt2e_quantizer=quantizer)
    return bytes(litert.convert(converted, (example,), quant_config=config).model_content())


def _post_quantize(content: bytes, mode: TFLiteMode) -> bytes:
    from ai_edge_quantizer import quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if mode is TFLiteMode.DYNAMIC_RANGE:
        q = quantizer.Quantizer(content, recipe.dynamic_wi8_afp32())
    else:
        q = quantizer.Quantizer(content)
        q.add_weight_only_config(
            regex=".*", operation_name="*", num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING
        )
    return bytes(q.quantize(enable_progress_report=False).quantized_model)


def _samples(data: Iterable[Any], shape: tuple[int, ...], limit: int) -> np.ndarray:
    """Up to `limit` single samples of `shape`, float32, checked finite."""
    taken: list[np.ndarray] = []
    count = 0
    for item in data:
        x, _ = split_item(item)
        arr = np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32)
        if arr.shape[1:] != shape:
            raise DataError(
                f"calibration batches have shape {arr.shape[1:]} per sample, the model takes {shape}"
            )
        if not np.isfinite(arr).all():
            raise DataError("calibration data holds NaN or infinite values: clean it first")
        taken.append(arr[: limit - count])
        count += len(taken[-1])
        if count >= limit:
            break
    if count == 0:
        raise DataError("the calibration data is empty: give a few hundred representative inputs")
    return np.concatenate(taken)


def _require_torch(module: Any) -> Any:
    try:
        import torch
    except ImportError:
        raise DependencyError(
            "TFLite export needs torch: pip install 'edgequant[tflite]'"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"TFLite export converts a torch.nn.Module, got a {type(module).__name__}"
        )
    return torch


def _import_litert() -> Any:
    """litert-torch, with its progress printing off (we report progress ourselves)."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    try:
        with native_output_captured():
            import litert_torch
    except ImportError:
        raise DependencyError(
            "TFLite export needs litert-torch: pip install 'edgequant[tflite]'"
        ) from None
    return litert_torch


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


class _Captured:
    def __init__(self, path: Path) -> None:
        self.path = path

    def last_line(self) -> str:
        try:
            lines = [ln for ln in self.path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""


@contextlib.contextmanager
def native_output_captured() -> Iterator[_Captured]:
    """Send the converter's native (C++) log lines to a temporary file instead of the
    terminal (the last one is quoted if conversion fails), and keep the deprecation warnings
    and log chatter of torch, torchao and litert-torch internals away from the user."""
    loggers = [logging.getLogger(n) for n in ("", "torchao", "torch", "absl", "litert_torch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _stderr_to_file() as captured:
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _stderr_to_file() -> Iterator[_Captured]:
    with tempfile.TemporaryDirectory(prefix="edgequant-tflite-") as tmp:
        path = Path(tmp) / "native.log"
        saved = os.dup(2)
        with open(path, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield _Captured(path)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
