"""`edgequant quantize`: an ONNX model (or a task's torch model) quantized for a target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgequant.choices import Calibrator, Method, Target
from edgequant.cli.common import (
    COUNT,
    emit,
    floats,
    load_for_model,
    model_output,
    progress_bars,
)
from edgequant.cli.group import cli
from edgequant.errors import ConfigError

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
    help="Fail, writing nothing, if any node would run in float on the target.",
)
@click.option(
    "--task",
    "task_entry",
    help="module:function returning the trained torch model and data, instead of MODEL "
    "(--target tflite converts from torch).",
)
@click.option("--method", type=click.Choice(METHODS), default="static", show_default=True)
@click.option(
    "--calib", "calib", help="Calibration data: .npy/.npz, an image folder, or fashion-mnist:train."
)
@click.option("--calibrator", type=click.Choice(CALIBRATORS), default="minmax", show_default=True)
@click.option(
    "--mean",
    help="Image folders: per-channel mean to subtract after scaling to [0, 1], e.g. 0.485,0.456,0.406.",
)
@click.option("--std", help="Image folders: per-channel std to divide by, e.g. 0.229,0.224,0.225.")
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
    "--weights",
    "weight_bits",
    type=click.Choice(["int8", "int4"]),
    default="int8",
    show_default=True,
    help="Static: weight type (int4 = W4A8, opset 21; smaller, no int4 conv kernel in ORT's CPU).",
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
def quantize(
    model: str | None,
    output: str,
    target: str | None,
    strict: bool,
    task_entry: str | None,
    method: str,
    calib: str | None,
    calibrator: str,
    mean: str | None,
    std: str | None,
    samples: int,
    per_tensor: bool,
    activations: str,
    equalize: bool,
    bias_correction: bool,
    weight_bits: str,
    adaround: bool,
    smoothquant: bool,
    gptq: bool,
    int8_embeddings: bool,
    block_size: int,
    exclude: tuple[str, ...],
    layers: tuple[str, ...],
    config_file: str | None,
    as_json: bool,
) -> None:
    """Quantize an ONNX MODEL (or a task's torch model) for a deployment target.

    \b
    Examples:
      edgequant quantize model.onnx --calib calib.npz -o model.int8.onnx
      edgequant quantize model.onnx --calib calib.npz --target npu --strict -o model.npu.onnx
      edgequant quantize model.onnx --calib calib.npz --target tensorrt -o model.trt.onnx
      edgequant quantize --task edgequant.zoo.tasks:fashion_mnist --target tflite -o model.tflite
      edgequant quantize model.onnx --calib images/ --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 -o q.onnx
      edgequant quantize model.onnx --calib calib.npz --per-tensor --equalize --bias-correction -o q.onnx
      edgequant quantize model.onnx --calib calib.npz --weights int4 --adaround -o model.w4a8.onnx
      edgequant quantize model.onnx --calib calib.npz --layer /stem/Conv=int16 --layer /head/Gemm=fp32 -o q.onnx
      edgequant quantize model.onnx --calib calib.npz --config edgequant-tune/model.tuned.quant.json -o q.onnx
      edgequant quantize model.onnx --method dynamic -o model.dyn.onnx
      edgequant quantize model.onnx --method int4 --block-size 32 -o model.int4.onnx
    """
    import edgequant as eq

    if (model is None) == (task_entry is None):
        raise ConfigError("give an ONNX MODEL or --task module:function (one of them)")
    tflite = target == Target.TFLITE.value
    what = (
        "--target tflite writes a .tflite model" if tflite
        else "quantize writes an ONNX model (a .tflite needs --target tflite)"
    )  # fmt: skip
    out = model_output(output, what, tflite=tflite, inputs=(model, calib, config_file))
    fp32 = eq.load(model) if model is not None else None
    norm: dict[str, Any] = {"mean": floats(mean), "std": floats(std)}
    data = None
    if calib and fp32 is not None:
        data = load_for_model(fp32, calib, batch_size=64, **norm)
    elif calib:
        data = eq.load_data(calib, batch_size=64, mean=norm["mean"], std=norm["std"])
    if target == Target.TFLITE.value:
        from edgequant.cli.targets import write_tflite

        if task_entry is None:
            raise ConfigError(
                "--target tflite converts the PyTorch model (litert-torch): pass --task "
                "module:function instead of an ONNX MODEL (see the README, TFLite export)"
            )
        write_tflite(task_entry, out, method, data, samples, strict, as_json)
        return
    config = _config(
        method, target, calibrator, per_tensor, activations, equalize, bias_correction,
        weight_bits, adaround, smoothquant, gptq, int8_embeddings, block_size, exclude,
        layers, samples,
    )  # fmt: skip
    if config_file:
        config = _read_config(Path(config_file))
    fp32, source, data = _source(fp32, model, task_entry, data)
    if config.method is eq.Method.STATIC and data is None:
        raise click.UsageError(
            "static quantization needs --calib DATA (e.g. a .npz of a few hundred inputs)"
        )
    with progress_bars(not as_json) as progress:
        result = eq.quantize_checked(
            fp32, config, calibration=data, strict=strict, source=source, progress=progress
        )
    q, planned, support = result.model, result.planned, result.support
    q.save(out)
    summary = {"output": str(out), **result.summary()}

    def human() -> None:
        click.echo(
            f"wrote {out} ({q.size_bytes / 1024:.0f} KB, {q.size_bytes / fp32.size_bytes:.1%} of FP32)"
        )
        if planned is not None:
            click.echo(f"before: {planned.summary()}")
        click.echo(f"after:  {support.summary()}")
        floats = summary["float_nodes"] or {}
        if floats:
            click.echo(f"{len(floats)} node(s) stay in float:")
            for name, why in list(floats.items())[:20]:
                click.echo(f"  {name}: {why}")

    emit(summary, as_json, human)


def _source(
    fp32: Any, model: str | None, task_entry: str | None, data: Any
) -> tuple[Any, str, Any]:
    """The FP32 ONNX model, where it came from, and calibration data (a task brings its own)."""
    if fp32 is not None and model is not None:
        return fp32, str(Path(model).resolve()), data
    from edgequant.task import load_task
    from edgequant.torch_onnx import to_onnx

    assert task_entry is not None
    task = load_task(task_entry)
    fp32 = to_onnx(task.model, task.example_input, task_entry.rpartition(":")[2] or "model")
    return fp32, task_entry, data if data is not None else task.calibration


def _config(
    method: str,
    target: str | None,
    calibrator: str,
    per_tensor: bool,
    activations: str,
    equalize: bool,
    bias_correction: bool,
    weight_bits: str,
    adaround: bool,
    smoothquant: bool,
    gptq: bool,
    int8_embeddings: bool,
    block_size: int,
    exclude: tuple[str, ...],
    layers: tuple[str, ...],
    samples: int,
) -> Any:
    """The PTQConfig the options describe (the target's preset first, then the options)."""
    import edgequant as eq
    from edgequant.config import ACTIVATIONS_INT8, ACTIVATIONS_UINT8

    acts = {"auto": None, "uint8": ACTIVATIONS_UINT8, "int8": ACTIVATIONS_INT8}[activations]
    common: dict[str, Any] = {"exclude_nodes": exclude, "max_calibration_samples": samples}
    if target is not None:
        common["target"] = eq.Target(target)
    if int8_embeddings:
        if method == "fp16":
            raise click.UsageError("--int8-embeddings is for --method static, dynamic or int4")
        common["embeddings"] = eq.Embeddings.INT8
    if layers and method != "static":
        raise click.UsageError("--layer needs --method static")
    if gptq and method != "int4":
        raise click.UsageError("--gptq is for --method int4")
    if (smoothquant or adaround) and method != "static":
        raise click.UsageError("--smoothquant and --adaround are for --method static")
    if method == "dynamic":
        return eq.PTQConfig.dynamic(per_channel=not per_tensor, **common)
    if method == "fp16":
        return eq.PTQConfig.fp16(**common)
    if method == "int4":
        return eq.PTQConfig.int4(
            block_size=block_size,
            rounding=eq.Rounding.GPTQ if gptq else eq.Rounding.NEAREST,
            **common,
        )
    return (eq.PTQConfig.w4a8 if weight_bits == "int4" else eq.PTQConfig.int8)(
        per_channel=not per_tensor,
        calibrator=eq.Calibrator(calibrator),
        activations=acts,
        equalization=eq.Equalization.CROSS_LAYER if equalize else eq.Equalization.NONE,
        bias_correction=eq.BiasCorrection.EMPIRICAL if bias_correction else eq.BiasCorrection.NONE,
        rounding=eq.Rounding.ADAROUND if adaround else eq.Rounding.NEAREST,
        smoothing=eq.Smoothing.SMOOTHQUANT if smoothquant else eq.Smoothing.NONE,
        layer_precisions=_layer_precisions(layers),
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
