"""Where a model runs: ONNX Runtime with any execution provider installed, or OpenVINO.

Every measurement (`evaluate`, `benchmark`, `edgequant eval/bench --runtime`) names its runtime.
OpenVINO is a second real runtime for x86 CPUs: its `openvino` package reads ONNX, QDQ models
included, and runs Q/DQ pairs as its own low-precision kernels. It is used directly, not through
ONNX Runtime's OpenVINO execution provider: that provider ships only in a separate ONNX Runtime
build (`onnxruntime-openvino`) that replaces the CPU package rather than living beside it, while
`openvino` installs next to `onnxruntime`.

A session from `open_session` has the part of ONNX Runtime's `InferenceSession` interface the
rest of edgequant calls: `get_inputs()`, `get_outputs()` (objects with `name`, `shape`, `type`)
and `run(output_names, feed)`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import ConfigError, DependencyError, ModelError

_SHORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
}
_OV_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "f64": "tensor(double)",
             "i64": "tensor(int64)", "i32": "tensor(int32)", "i8": "tensor(int8)",
             "u8": "tensor(uint8)", "boolean": "tensor(bool)"}  # fmt: skip


class Engine(enum.Enum):
    ORT = "ort"
    OPENVINO = "openvino"


@dataclass(frozen=True)
class Runtime:
    """An engine and where in it: an ONNX Runtime execution provider, or an OpenVINO device."""

    engine: Engine = Engine.ORT
    target: str = "CPUExecutionProvider"  # the ORT provider, or the OpenVINO device

    @property
    def label(self) -> str:
        """How figures and tables name it: "ONNX Runtime CPU", "OpenVINO CPU"."""
        if self.engine is Engine.OPENVINO:
            return f"OpenVINO {self.target}"
        return f"ONNX Runtime {self.target.removesuffix('ExecutionProvider')}"

    @property
    def is_default(self) -> bool:
        return self == Runtime()

    @classmethod
    def parse(cls, text: str) -> Runtime:
        """`ort` (CPU), `ort:cuda` or any provider name (`ort:TensorrtExecutionProvider`),
        `openvino` (CPU) or `openvino:GPU`; checked against what is installed here."""
        engine, _, where = text.strip().partition(":")
        if engine.lower() in ("ort", "onnxruntime"):
            import onnxruntime as ort

            provider = (
                _SHORT_PROVIDERS.get(where.lower(), where) if where else "CPUExecutionProvider"
            )
            available = ort.get_available_providers()
            if provider not in available:
                raise ConfigError(
                    f"--runtime {text}: ONNX Runtime has no {provider} here (installed: "
                    f"{', '.join(available)}); a GPU provider needs onnxruntime-gpu and a GPU"
                )
            return cls(Engine.ORT, provider)
        if engine.lower() == "openvino":
            core = _openvino_core()
            device = where.upper() or "CPU"
            if device not in core.available_devices:
                raise ConfigError(
                    f"--runtime {text}: OpenVINO sees no {device} here (it sees: "
                    f"{', '.join(core.available_devices)})"
                )
            return cls(Engine.OPENVINO, device)
        raise ConfigError(
            f"--runtime {text}: give ort, ort:PROVIDER (e.g. ort:cuda) or openvino[:DEVICE]"
        )


def open_session(
    model_bytes: bytes,
    runtime: Runtime,
    threads: int | None,
    options: Any,
    input_shapes: dict[str, tuple[int | str | None, ...]] | None = None,
) -> Any:
    """A session of `runtime` on the serialized model; `options`: ORT's SessionOptions (ONNX
    Runtime only); `input_shapes`: the model's own (symbolic names, which OpenVINO drops and
    edgequant reads batch axes from)."""
    if runtime.engine is Engine.ORT:
        import onnxruntime as ort

        providers = [runtime.target] + (
            ["CPUExecutionProvider"] if runtime.target != "CPUExecutionProvider" else []
        )
        return ort.InferenceSession(model_bytes, options, providers=providers)
    return OpenVINOSession(model_bytes, runtime.target, threads, input_shapes or {})


@dataclass(frozen=True)
class _Port:
    name: str
    shape: list[int | str | None]
    type: str


class OpenVINOSession:
    """An OpenVINO compiled model behind ONNX Runtime's session interface (see module doc)."""

    def __init__(
        self,
        model_bytes: bytes,
        device: str,
        threads: int | None,
        input_shapes: dict[str, tuple[int | str | None, ...]],
    ) -> None:
        import openvino as ov

        core = _openvino_core()
        try:
            model = core.read_model(model_bytes, ov.Tensor(np.empty(0, np.uint8)))
            config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
            if threads is not None:
                config["INFERENCE_NUM_THREADS"] = threads
            self._compiled = core.compile_model(model, device, config)
        except Exception as exc:
            first = (
                str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            )
            raise ModelError(f"OpenVINO cannot load the model: {first}") from None
        self._request = self._compiled.create_infer_request()
        self._inputs = [
            _Port(p.name, list(input_shapes.get(p.name, p.shape)), p.type)
            for p in (_port(port) for port in self._compiled.inputs)
        ]
        self._outputs = [_port(p) for p in self._compiled.outputs]

    def get_inputs(self) -> list[_Port]:
        return self._inputs

    def get_outputs(self) -> list[_Port]:
        return self._outputs

    def run(
        self, output_names: list[str] | None, feed: dict[str, NDArray[Any]]
    ) -> list[NDArray[Any]]:
        result = self._request.infer(feed)
        by_name = {port.get_any_name(): np.array(value) for port, value in result.items()}
        names = output_names or [o.name for o in self._outputs]
        return [by_name[n] for n in names]


def _port(port: Any) -> _Port:
    shape: list[int | str | None] = [
        d.get_length() if d.is_static else None for d in port.get_partial_shape()
    ]
    kind = _OV_TYPES.get(port.get_element_type().get_type_name(), "tensor(float)")
    return _Port(port.get_any_name(), shape, kind)


def _openvino_core() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise DependencyError(
            "the OpenVINO runtime is not installed: pip install 'edgequant[openvino]'"
        ) from None
    return ov.Core()
