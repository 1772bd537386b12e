"""`edgequant quantize`: an ONNX model (or a task's torch model) quantized for a target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from edgequant.analysis.fidelity import FidelityGuard
from edgequant.choices import PTQ_SCHEMES, Calibrator, Method, Scheme, Target
from edgequant.cli.common import (
    COUNT,
    batch_axis_option,
    emit,
    image_options,
    load_for_model,
    model_output,
    open_model,
    progress_bars,
)
from edgequant.cli.group import cli
from edgequant.cli.targets import TFLITE_MODES
from edgequant.errors import ConfigError
from edgequant.images import ImageOptions

METHODS = [m.value for m in Method]
CALIBRATORS = [c.value for c in Calibrator]
TARGETS = [t.value for t in Target]


@cli.command()
@click.argument("model", type=click.Path(), required=False)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="Where to write the quantized .onnx or .tflite (a .quant.json goes beside it).",
)
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    help="Deployment target preset (`edgequant targets` lists them); default: this CPU.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Fail, writing nothing, if any node would run in float on the target or the "
    "fidelity guard's thresholds do not hold.",
)
@click.option(
    "--min-sqnr",
    type=float,
    default=FidelityGuard.min_sqnr_db,
    show_default=True,
    metavar="DB",
    help="Fidelity guard: every output's SQNR against FP32 (held-back samples) must reach this; "
    "layers that lose it are promoted.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=FidelityGuard.min_agreement,
    show_default=True,
    help="Fidelity guard: top-1 agreement with FP32 of every class-score output.",
)
@click.option(
    "--guard-time",
    type=click.FloatRange(min=0),
    default=FidelityGuard.time_budget_s,
    show_default=True,
    metavar="SECONDS",
    help="Fidelity guard: time to spend finding and promoting layers.",
)
@click.option(
    "--no-guard", is_flag=True, help="Skip the fidelity guard (no measurement, no promotion)."
)
@click.option(
    "--task",
    "task_entry",
    help="module:function returning the trained torch model and data, instead of MODEL "
    "(--target tflite converts from torch).",
)
@click.option(
    "--method", type=click.Choice(METHODS), default="static", show_default=True,
    help="static: int8 weights and activations, ranges from --calib; dynamic: int8 MatMul/Gemm "
    "weights, activations at run time; fp16; int4: weight-only MatMul/Gemm.",
)  # fmt: skip
@click.option(
    "--calib", "calib", help="Calibration data: .npy/.npz, an image folder, or fashion-mnist:train."
)
@click.option(
    "--calibrator", type=click.Choice(CALIBRATORS), default="minmax", show_default=True,
    help="Static: how ranges come from the calibration data (minmax; percentile, entropy or mse "
    "clip outliers).",
)  # fmt: skip
@image_options
@batch_axis_option
@click.option(
    "--samples",
    type=COUNT,
    default=1000,
    show_default=True,
    help="Calibration samples to use at most.",
)
@click.option(
    "--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel."
)
@click.option(
    "--activations",
    type=click.Choice(["auto", "uint8", "int8"]),
    default="auto",
    show_default=True,
    help="Activation type; auto picks what ONNX Runtime runs fast on this CPU.",
)
@click.option(
    "--equalize",
    is_flag=True,
    help="Static: cross-layer equalisation of Conv pairs first (Nagel et al. 2019); helps per-tensor weights.",
)
@click.option(
    "--bias-correction",
    is_flag=True,
    help="Static: remove the mean output shift that rounding weights adds (input means from calibration).",
)
@click.option(
    "--precision",
    type=click.Choice([s.value for s in PTQ_SCHEMES]),
    default=Scheme.W8A8.value,
    show_default=True,
    help="Static: w8a8, or w4a8 (int4 weights, opset 21: smaller; ORT's CPU has no int4 conv kernel).",
)
@click.option(
    "--adaround",
    is_flag=True,
    help="Static: learn whether each weight rounds up or down (AdaRound, Nagel et al. 2020); needs torch.",
)
@click.option(
    "--smoothquant",
    is_flag=True,
    help="Static: move activation outliers into MatMul weights first (SmoothQuant, Xiao et al. 2022).",
)
@click.option(
    "--gptq",
    is_flag=True,
    help="INT4: GPTQ rounding from calibration inputs (Frantar et al. 2022); needs --calib.",
)
@click.option(
    "--int8-embeddings",
    is_flag=True,
    help="Static/dynamic/INT4: embedding tables (Gather on a constant table) as per-row int8.",
)
@click.option(
    "--block-size", type=click.IntRange(min=2), default=32, show_default=True,
    help="INT4: weights per scale.",
)  # fmt: skip
@click.option("--exclude", multiple=True, help="Node name to keep in float (repeatable).")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    metavar="NODE=PRECISION",
    help="Static: one layer's precision, int4|int8|int16|fp16|fp32 (repeatable; mixed precision).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(),
    help="A PTQConfig as JSON, or a .quant.json (e.g. from `edgequant tune`): replaces the options above.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def quantize(**options: Any) -> None:
    """Quantize an ONNX MODEL (or a task's torch model) for a deployment target.

    \b
    Examples:
      edgequant quantize model.onnx --calib calib.npz -o model.int8.onnx
      edgequant quantize model.onnx --calib calib.npz --target npu --strict -o model.npu.onnx
      edgequant quantize model.onnx --calib calib.npz --target tensorrt -o model.trt.onnx
      edgequant quantize --task edgequant.zoo.tasks:fashion_mnist --target tflite -o model.tflite
      edgequant quantize model.onnx --calib images/ --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 -o q.onnx
      edgequant quantize model.onnx --calib calib.npz --per-tensor --equalize --bias-correction -o q.onnx
      edgequant quantize model.onnx --calib calib.npz --precision w4a8 --adaround -o model.w4a8.onnx
      edgequant quantize model.onnx --calib calib.npz --layer /stem/Conv=int16 --layer /head/Gemm=fp32 -o q.onnx
      edgequant quantize model.onnx --calib calib.npz --config edgequant-tune/model.tuned.quant.json -o q.onnx
      edgequant quantize model.onnx --method dynamic -o model.dyn.onnx
      edgequant quantize model.onnx --method int4 --block-size 32 -o model.int4.onnx
    """
    import edgequant as eq
    from edgequant.workflows.quantize import convert_checked, fp32_source

    o = QuantizeOptions(**options)
    if (o.model is None) == (o.task_entry is None):
        raise ConfigError("give an ONNX MODEL or --task module:function (one of them)")
    tflite = o.target == Target.TFLITE.value
    what = (
        "--target tflite writes a .tflite model" if tflite
        else "quantize writes an ONNX model (a .tflite needs --target tflite)"
    )  # fmt: skip
    out = model_output(o.output, what, tflite=tflite, inputs=(o.model, o.calib, o.config_file))
    if tflite and o.task_entry is None:
        raise ConfigError(
            "--target tflite converts the PyTorch model (litert-torch): pass --task "
            "module:function instead of an ONNX MODEL (see the README, TFLite export)"
        )
    fp32 = open_model(o.model, calib=o.calib, images=o.images) if o.model is not None else None
    data = None
    if o.calib and fp32 is not None:
        data = load_for_model(
            fp32, o.calib, batch_size=64, images=o.images, batch_axes=o.batch_axes,
        )  # fmt: skip
    elif o.calib:
        data = eq.load_data(o.calib, batch_size=64, images=o.images)
    if tflite:
        assert o.task_entry is not None
        if o.method not in TFLITE_MODES:
            raise ConfigError(
                "--target tflite takes --method static (full integer), dynamic or fp16"
            )
        with progress_bars(not o.as_json) as progress:
            converted = convert_checked(
                o.task_entry, eq.TFLiteMode(TFLITE_MODES[o.method]), calibration=data,
                max_samples=o.samples, strict=o.strict, progress=progress,
            )  # fmt: skip
        converted.model.save(out)
        _show_conversion(out, converted, o.as_json)
        return
    config = _read_config(Path(o.config_file)) if o.config_file else _config(o)
    source = fp32_source(o.model, o.task_entry, loaded=fp32)
    data = data if data is not None else source.calibration
    if config.method is eq.Method.STATIC and data is None:
        raise click.UsageError(
            "static quantization needs --calib DATA (e.g. a .npz of a few hundred inputs)"
        )
    with progress_bars(not o.as_json) as progress:
        result = eq.quantize_checked(
            source.model, config, calibration=data, strict=o.strict, source=source.label,
            guard=_guard(o), progress=progress,
        )  # fmt: skip
    result.model.save(out)
    _show_quantization(out, result, o.as_json)


@dataclass(frozen=True)
class QuantizeOptions:
    """Every option of `edgequant quantize`, typed (click passes them by name)."""

    model: str | None
    output: str
    target: str | None
    strict: bool
    min_sqnr: float
    min_agreement: float
    guard_time: float
    no_guard: bool
    task_entry: str | None
    method: str
    calib: str | None
    calibrator: str
    images: ImageOptions
    batch_axes: tuple[str, ...]
    samples: int
    per_tensor: bool
    activations: str
    equalize: bool
    bias_correction: bool
    precision: str
    adaround: bool
    smoothquant: bool
    gptq: bool
    int8_embeddings: bool
    block_size: int
    exclude: tuple[str, ...]
    layers: tuple[str, ...]
    config_file: str | None
    as_json: bool


def _guard(o: QuantizeOptions) -> FidelityGuard | None:
    if o.no_guard:
        return None
    return FidelityGuard(
        min_sqnr_db=o.min_sqnr, min_agreement=o.min_agreement, time_budget_s=o.guard_time
    )


def _show_quantization(out: Path, result: Any, as_json: bool) -> None:
    q, planned, support = result.model, result.planned, result.support
    summary = {"output": str(out), **result.summary()}

    def human() -> None:
        ratio = q.size_bytes / result.fp32.size_bytes
        click.echo(f"wrote {out} ({q.size_bytes / 1024:.0f} KB, {ratio:.1%} of FP32)")
        if planned is not None:
            click.echo(f"before: {planned.summary()}")
        click.echo(f"after:  {support.summary()}")
        if result.latency_ratio is not None:
            click.echo(
                f"speed:  {result.latency_ratio:.2f}x the FP32 latency here (batch 1, one thread; "
                "a quick check: `edgequant bench` measures)"
            )
        fidelity = q.provenance.fidelity
        if fidelity is not None:
            click.echo(f"fidelity: {fidelity.summary()}")
            if fidelity.promoted:
                names = ", ".join(f"{k} ({v})" for k, v in list(fidelity.promoted.items())[:10])
                before = min(fidelity.sqnr_db_before.values())
                click.echo(
                    f"the guard promoted {len(fidelity.promoted)} layer(s) that lost fidelity "
                    f"(worst output {before:.1f} dB before): {names}"
                )
        _show_float_nodes(summary["float_nodes"] or {})

    emit(summary, as_json, human)


def _show_float_nodes(floats: dict[str, str], shown: int = 20) -> None:
    """The nodes left in float and why; activations that run fused with the quantized layer
    before them are counted, not listed as float (they are no float island); a cut list says
    how many it left out."""
    from edgequant.exporter.select import FOLDED_REASON

    fused = [n for n, why in floats.items() if why == FOLDED_REASON]
    rest = {n: why for n, why in floats.items() if why != FOLDED_REASON}
    if fused:
        click.echo(
            f"{len(fused)} activation(s) after quantized layers run fused with them (folded into "
            "the quantizer where the range allows, else fused by the runtime): no float island"
        )
    if rest:
        click.echo(f"{len(rest)} node(s) stay in float:")
        for name, why in list(rest.items())[:shown]:
            click.echo(f"  {name}: {why}")
        if len(rest) > shown:
            click.echo(
                f"  ... and {len(rest) - shown} more (every one: --json, or the .quant.json)"
            )


def _show_conversion(out: Path, converted: Any, as_json: bool) -> None:
    model = converted.model
    summary = {
        "output": str(out),
        "size_bytes": model.size_bytes,
        "support": converted.support.brief().to_dict(),
    }

    def human() -> None:
        click.echo(f"wrote {out} ({model.size_bytes / 1024:.0f} KB, {model.mode.value})")
        click.echo(converted.support.summary())

    emit(summary, as_json, human)


def _config(o: QuantizeOptions) -> Any:
    """The PTQConfig the options describe (the target's preset first, then the options)."""
    import edgequant as eq
    from edgequant.config import ACTIVATIONS_INT8, ACTIVATIONS_UINT8

    acts = {"auto": None, "uint8": ACTIVATIONS_UINT8, "int8": ACTIVATIONS_INT8}[o.activations]
    common: dict[str, Any] = {"exclude_nodes": o.exclude, "max_calibration_samples": o.samples}
    if o.target is not None:
        common["target"] = eq.Target(o.target)
    if o.int8_embeddings:
        if o.method == "fp16":
            raise click.UsageError("--int8-embeddings is for --method static, dynamic or int4")
        common["embeddings"] = eq.Embeddings.INT8
    if o.layers and o.method != "static":
        raise click.UsageError("--layer needs --method static")
    if o.gptq and o.method != "int4":
        raise click.UsageError("--gptq is for --method int4")
    if (o.smoothquant or o.adaround) and o.method != "static":
        raise click.UsageError("--smoothquant and --adaround are for --method static")
    if o.method == "dynamic":
        return eq.PTQConfig.dynamic(per_channel=not o.per_tensor, **common)
    if o.method == "fp16":
        return eq.PTQConfig.fp16(**common)
    if o.method == "int4":
        return eq.PTQConfig.int4(
            block_size=o.block_size,
            rounding=eq.Rounding.GPTQ if o.gptq else eq.Rounding.NEAREST,
            **common,
        )
    return (eq.PTQConfig.w4a8 if o.precision == Scheme.W4A8.value else eq.PTQConfig.int8)(
        per_channel=not o.per_tensor,
        calibrator=eq.Calibrator(o.calibrator),
        activations=acts,
        equalization=eq.Equalization.CROSS_LAYER if o.equalize else eq.Equalization.NONE,
        bias_correction=eq.BiasCorrection.EMPIRICAL
        if o.bias_correction
        else eq.BiasCorrection.NONE,
        rounding=eq.Rounding.ADAROUND if o.adaround else eq.Rounding.NEAREST,
        smoothing=eq.Smoothing.SMOOTHQUANT if o.smoothquant else eq.Smoothing.NONE,
        layer_precisions=_layer_precisions(o.layers),
        **common,
    )


def _layer_precisions(items: tuple[str, ...]) -> dict[str, Any]:
    import edgequant as eq

    out = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        choices = [p.value for p in eq.Precision]
        if not sep or not name or value not in choices:
            raise click.BadParameter(
                f"expected NODE=PRECISION with PRECISION one of {'|'.join(choices)}, got {item!r}",
                param_hint="--layer",
            )
        out[name] = eq.Precision(value)
    return out


def _read_config(path: Path) -> Any:
    """A PTQConfig from JSON: the config itself, or a model's .quant.json holding it."""
    import json

    import edgequant as eq

    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not a text (JSON) file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config {path} is not valid JSON: {exc.msg} (line {exc.lineno})"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a JSON object")
    return eq.PTQConfig.from_dict(data)
