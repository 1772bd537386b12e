"""How a model was made: one typed, versioned record, written beside every model as
`<stem>.quant.json` (`Model.save`) and read back and checked by `read_provenance`.

Every method fills its own fields; workflows add what they measured (operator support, the tuning
trial, the training run). Unknown keys, wrong types and newer versions are errors, never guesses.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgequant.errors import ConfigError

if TYPE_CHECKING:
    from edgequant.config import PTQConfig
    from edgequant.qat.config import QATConfig

PROVENANCE_VERSION = 1


@dataclass(frozen=True)
class SupportBrief:
    """Operator support of a model on its target's runtime, as a sidecar keeps it."""

    target: str
    runtime: str
    kind: str  # "integer" or "fp16": what the report counts as supported
    summary: str
    integer_fraction: float
    integer_nodes: int
    float_nodes: dict[str, str]  # node -> why it runs in float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TuneTrial:
    """The accuracy-aware tuning trial a model came from (`edgequant tune`)."""

    trial: int
    drop_points: float


@dataclass(frozen=True)
class TrainingRun:
    """The QAT run a model came from (`edgequant qat`)."""

    task: str | None
    steps: int
    lr: float
    seed: int
    processes: int


@dataclass(frozen=True)
class FidelityBrief:
    """What the fidelity guard measured (`analysis.fidelity`): SQNR (dB, +-999 for identical
    or broken outputs) and top-1 agreement of every output against FP32, before and after the
    nodes it promoted (node -> precision), and whether the thresholds hold."""

    samples: int
    held_back: bool  # the samples were held back from calibration (else: its first ones)
    min_sqnr_db: float
    min_agreement: float
    sqnr_db: dict[str, float]
    sqnr_db_before: dict[str, float]
    agreement: dict[str, float]
    promoted: dict[str, str]
    met: bool
    stopped: str  # why the search ended before the thresholds held ("" when they hold)
    # cosine similarity of every output with FP32's (flattened), after the promotions
    cosine: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line: every output's fidelity and where the samples came from."""
        parts = []
        for name, db in self.sqnr_db.items():
            agree = self.agreement.get(name)
            text = (
                f"{name} {db:.1f} dB"
                if abs(db) < 999
                else f"{name} {'exact' if db > 0 else 'broken (NaN/Inf)'}"
            )
            parts.append(text + ("" if agree is None else f", top-1 agreement {agree:.1%}"))
        where = "held back from calibration" if self.held_back else "the first calibration samples"
        return f"{'; '.join(parts)} on {self.samples} samples ({where})"

    def shortfall(self) -> str:
        """What stays below the thresholds, and why the search stopped ("" when nothing)."""
        low = [
            name for name, db in self.sqnr_db.items()
            if db < self.min_sqnr_db or self.agreement.get(name, 1.0) < self.min_agreement
        ]  # fmt: skip
        if not low:
            return ""
        promoted = f" after promoting {len(self.promoted)} node(s)" if self.promoted else ""
        why = f" ({self.stopped})" if self.stopped else ""
        return (
            f"{', '.join(low)} below the fidelity thresholds ({self.min_sqnr_db:g} dB SQNR, "
            f"{self.min_agreement:.0%} top-1 agreement){promoted}{why}"
        )


@dataclass
class Provenance:
    """Everything a quantized (or reference) model's sidecar says about how it was made.

    method: static, dynamic, fp16 or int4 (PTQ), qat, or fp32 (a reference model); for a
    .tflite, its conversion mode. config: the PTQConfig or QATConfig it was made with."""

    method: str
    config: PTQConfig | QATConfig | None = None
    format: str = "onnx"
    edgequant: str = ""  # the version that made it
    converter: str = ""  # the TFLite converter, for a .tflite
    description: str = ""  # a reference model's own label (e.g. which data it was trained on)
    source_sha256: str = ""  # the FP32 model it came from
    source_model: str = ""  # its path, or the task entry point
    calibration_samples: int = 0
    quantized_nodes: int = 0
    coverage: str = ""
    equalized_pairs: int = 0
    smoothed_matmuls: int = 0
    bias_corrected_nodes: int = 0
    adarounded_weights: int = 0
    gptq_weights: int = 0
    int8_embeddings: list[str] = field(default_factory=list)
    folded_activations: list[str] = field(default_factory=list)
    float_nodes: dict[str, str] = field(default_factory=dict)  # planned float node -> why
    float_layers: dict[str, str] = field(default_factory=dict)  # QAT: float module -> why
    support: SupportBrief | None = None  # on the target's runtime, after quantization
    support_planned: SupportBrief | None = None  # on the runtime the user asked about
    tune: TuneTrial | None = None
    training: TrainingRun | None = None
    fidelity: FidelityBrief | None = None

    def __post_init__(self) -> None:
        if not self.edgequant:
            from edgequant import __version__

            self.edgequant = __version__

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field, `None` and empty ones left out, and the record's version."""
        out: dict[str, Any] = {"provenance_version": PROVENANCE_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == "" or value == [] or value == {}:
                continue
            if f.name == "config":
                value = value.to_dict()
            elif f.name in _RECORDS:
                value = asdict(value)
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """The record of a sidecar's JSON, every key and type checked."""
        if not isinstance(data, dict):
            raise ConfigError("a provenance record is a JSON object")
        data = dict(data)
        version = data.pop("provenance_version", None)
        if version != PROVENANCE_VERSION:
            raise ConfigError(
                f"provenance version {version} is not one this edgequant reads "
                f"({PROVENANCE_VERSION}); quantize the model again to rewrite its .quant.json"
            )
        hints = {f.name: str(f.type) for f in fields(cls)}
        known = set(hints)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown provenance keys {unknown}; known keys: {sorted(known)}")
        if not isinstance(data.get("method"), str):
            raise ConfigError("a provenance record needs its method (a string)")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "config":
                kwargs[key] = _config(data["method"], value)
            elif key in _RECORDS:
                kwargs[key] = _record(_RECORDS[key], key, value)
            else:
                _check_type(key, value, hints[key])
                kwargs[key] = value
        return cls(**kwargs)


_RECORDS: dict[str, type] = {
    "support": SupportBrief,
    "support_planned": SupportBrief,
    "tune": TuneTrial,
    "training": TrainingRun,
    "fidelity": FidelityBrief,
}


def read_provenance(path: str | Path) -> Provenance:
    """The record in a `.quant.json` (or of the model it sits beside: `q.onnx` reads
    `q.quant.json`, `q.tflite` reads `q.tflite.quant.json`), checked."""
    path = Path(path)
    if path.suffix == ".onnx":
        path = path.with_name(path.stem + ".quant.json")
    elif path.suffix == ".tflite":
        path = path.with_name(path.stem + ".tflite.quant.json")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no provenance record at {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a provenance record ({exc})") from None
    return Provenance.from_dict(data)


def _config(method: str, value: Any) -> PTQConfig | QATConfig:
    if not isinstance(value, dict):
        raise ConfigError("provenance 'config' must be a JSON object")
    if method == "qat":
        from edgequant.qat.config import QATConfig

        return QATConfig.from_dict(value)
    from edgequant.config import PTQConfig

    return PTQConfig.from_dict(value)


def _record(cls: type, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"provenance {key!r} must be a JSON object")
    hints = {f.name: str(f.type) for f in fields(cls)}
    names = set(hints)
    required = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }  # a field added later has a default: older sidecars still load
    if not required <= set(value) <= names:
        raise ConfigError(f"provenance {key!r} needs exactly the keys {sorted(names)}")
    for name, item in value.items():
        _check_type(f"{key}.{name}", item, hints[name])
    return cls(**value)


def _check_type(key: str, value: Any, hint: str) -> None:
    """A JSON value against its field's annotation (the annotations are strings here: str,
    int, float, bool, list[str], dict[str, str], dict[str, float] and their `| None` forms)."""
    if value is None and hint.endswith("| None"):
        return
    base = hint.removesuffix(" | None")
    if base == "str":
        ok = isinstance(value, str)
    elif base in ("int", "float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (base == "float" or isinstance(value, int))
    elif base == "bool":
        ok = isinstance(value, bool)
    elif base == "dict[str, float]":
        ok = isinstance(value, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        )
    elif base == "list[str]":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif base == "dict[str, str]":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    else:
        raise AssertionError(f"provenance field {key!r} has an unchecked type {hint}")
    if not ok:
        raise ConfigError(f"provenance {key!r} has the wrong type ({type(value).__name__})")
