"""PTQ commands: quantize, eval, bench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgequant.cli.common import emit, floats, progress_bars
from edgequant.cli.group import cli

METHODS = ["static", "dynamic", "fp16", "int4"]
CALIBRATORS = ["minmax", "percentile", "entropy", "mse"]


@cli.command()
@click.argument("model", type=click.Path())
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="Where to write the quantized .onnx (a .quant.json goes beside it).",
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
    "--samples", default=1000, show_default=True, help="Calibration samples to use at most."
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
@click.option("--block-size", default=32, show_default=True, help="INT4: weights per scale.")
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
    model: str,
    output: str,
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
    """Quantize an ONNX MODEL.

    \b
    Examples:
      edgequant quantize model.onnx --calib calib.npz -o model.int8.onnx
      edgequant quantize model.onnx --calib images/ --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 -o q.onnx
      edgequant quantize model.onnx --calib calib.npz --per-tensor --equalize --bias-correction -o q.onnx
      edgequant quantize model.onnx --calib calib.npz --weights int4 --adaround -o model.w4a8.onnx
      edgequant quantize model.onnx --calib calib.npz --layer /stem/Conv=int16 --layer /head/Gemm=fp32 -o q.onnx
      edgequant quantize model.onnx --calib calib.npz --config edgequant-tune/model.tuned.quant.json -o q.onnx
      edgequant quantize model.onnx --method dynamic -o model.dyn.onnx
      edgequant quantize model.onnx --method int4 --block-size 32 -o model.int4.onnx
    """
    import edgequant as eq
    from edgequant.config import ACTIVATIONS_INT8, ACTIVATIONS_UINT8
    from edgequant.model import check_writable_dir

    out = Path(output)
    check_writable_dir(out.parent)
    fp32 = eq.load(model)
    acts = {"auto": None, "uint8": ACTIVATIONS_UINT8, "int8": ACTIVATIONS_INT8}[activations]
    common: dict[str, Any] = {"exclude_nodes": exclude, "max_calibration_samples": samples}
    if int8_embeddings:
        if method == "fp16":
            raise click.UsageError("--int8-embeddings is for --method static, dynamic or int4")
        common["embeddings"] = eq.Embeddings.INT8
    if method == "static":
        config = (eq.PTQConfig.w4a8 if weight_bits == "int4" else eq.PTQConfig.int8)(
            per_channel=not per_tensor,
            calibrator=eq.Calibrator(calibrator),
            activations=acts,
            equalization=eq.Equalization.CROSS_LAYER if equalize else eq.Equalization.NONE,
            bias_correction=eq.BiasCorrection.EMPIRICAL
            if bias_correction
            else eq.BiasCorrection.NONE,
            rounding=eq.Rounding.ADAROUND if adaround else eq.Rounding.NEAREST,
            smoothing=eq.Smoothing.SMOOTHQUANT if smoothquant else eq.Smoothing.NONE,
            layer_precisions=_layer_precisions(layers),
            **common,
        )
    elif method == "dynamic":
        config = eq.PTQConfig.dynamic(per_channel=not per_tensor, **common)
    elif method == "fp16":
        config = eq.PTQConfig.fp16(**common)
    else:
        config = eq.PTQConfig.int4(
            block_size=block_size,
            rounding=eq.Rounding.GPTQ if gptq else eq.Rounding.NEAREST,
            **common,
        )
    if layers and method != "static":
        raise click.UsageError("--layer needs --method static")
    if gptq and method != "int4":
        raise click.UsageError("--gptq is for --method int4")
    if (smoothquant or adaround) and method != "static":
        raise click.UsageError("--smoothquant and --adaround are for --method static")
    if config_file:
        config = _read_config(Path(config_file))
        method = config.method.value
    data = eq.load_data(calib, batch_size=64, mean=floats(mean), std=floats(std)) if calib else None
    if method == "static" and data is None:
        raise click.UsageError(
            "static quantization needs --calib DATA (e.g. a .npz of a few hundred inputs)"
        )
    with progress_bars(not as_json) as progress:
        q = eq.quantize(fp32, config, calibration=data, progress=progress)
    q.provenance["source_model"] = str(Path(model).resolve())
    q.save(out)
    summary = {
        "output": str(out),
        "size_bytes": q.size_bytes,
        "fp32_size_bytes": fp32.size_bytes,
        "quantized_nodes": q.provenance.get("quantized_nodes"),
        "float_nodes": q.provenance.get("float_nodes", {}),
    }

    def human() -> None:
        click.echo(
            f"wrote {out} ({q.size_bytes / 1024:.0f} KB, {q.size_bytes / fp32.size_bytes:.1%} of FP32)"
        )
        floats = summary["float_nodes"] or {}
        if floats:
            click.echo(f"{len(floats)} node(s) stay in float:")
            for name, why in list(floats.items())[:20]:
                click.echo(f"  {name}: {why}")

    emit(summary, as_json, human)


@cli.command(name="eval")
@click.argument("model", type=click.Path())
@click.option(
    "--data",
    required=True,
    help="Labelled data: .npz with labels, an image folder by class, or fashion-mnist.",
)
@click.option(
    "--reference", type=click.Path(), help="FP32 model to compare with (agreement, SQNR)."
)
@click.option("--layers", is_flag=True, help="Also report per-layer SQNR against --reference.")
@click.option("--mean", help="Image folders: per-channel mean (after scaling to [0, 1]).")
@click.option("--std", help="Image folders: per-channel std.")
@click.option("--limit", type=int, help="Use at most this many samples.")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(
    model: str,
    data: str,
    reference: str | None,
    layers: bool,
    mean: str | None,
    std: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Accuracy of MODEL on labelled data, and agreement with a reference.

    \b
    Example:
      edgequant eval model.int8.onnx --data fashion-mnist --reference model.onnx --layers
    """
    import edgequant as eq

    m = eq.load(model)
    ref = eq.load(reference) if reference else None
    dataset = eq.load_data(data, batch_size=256, limit=limit, mean=floats(mean), std=floats(std))
    with progress_bars(not as_json) as progress:
        res = eq.evaluate(m, dataset, reference=ref, progress=progress)
    out: dict[str, Any] = res.to_dict()
    if layers:
        if ref is None:
            raise click.UsageError("--layers needs --reference")
        from edgequant.ptq.preprocess import optimize

        out["layers"] = [vars(r) for r in eq.layer_sqnr(m, optimize(ref), dataset)]

    def human() -> None:
        for k, v in res.to_dict().items():
            if v is not None:
                click.echo(f"{k:16s} {v:.4f}" if isinstance(v, float) else f"{k:16s} {v}")
        if layers:
            worst = sorted(out["layers"], key=lambda r: r["own_sqnr_db"])[:5]
            click.echo(
                "layers losing most accuracy (SQNR of the error each node adds, lowest first):"
            )
            for r in worst:
                own, total = r["own_sqnr_db"], r["sqnr_db"]
                click.echo(
                    f"  {r['node']} -> {r['tensor']}: {own:.1f} dB (cumulative {total:.1f} dB)"
                )

    emit(out, as_json, human)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--batch", "batches", multiple=True, type=int, default=(1, 32), show_default=True)
@click.option("--threads", multiple=True, type=int, default=(1, 2), show_default=True)
@click.option("--rounds", default=5, show_default=True)
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory probe.")
@click.option("--json", "as_json", is_flag=True)
def bench(
    models: tuple[str, ...],
    batches: tuple[int, ...],
    threads: tuple[int, ...],
    rounds: int,
    no_memory: bool,
    as_json: bool,
) -> None:
    """Latency, throughput, memory and size of MODELS side by side (ratios to the first).

    \b
    Example:
      edgequant bench model.onnx model.int8.onnx --batch 1 --batch 32 --threads 1
    """
    import edgequant as eq

    loaded = [eq.load(p) for p in models]
    with progress_bars(not as_json) as progress:
        res = eq.benchmark(
            loaded,
            batch_sizes=batches,
            threads=threads,
            rounds=rounds,
            memory=not no_memory,
            progress=progress,
        )

    def human() -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="ONNX Runtime CPU, p50 latency (ratio to the first model)")
        for col in (
            "model",
            "size KB",
            "peak MiB",
            *(f"b{lat.batch}/t{lat.threads}" for lat in res[0].latency),
        ):
            table.add_column(col, justify="right")
        for r in res:
            cells = [
                f"{lat.p50_ms:.3f} ms ({lat.p50_ms / res[0].at(lat.batch, lat.threads).p50_ms:.2f}x)"
                for lat in r.latency
            ]
            mem = "-" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.1f}"
            table.add_row(r.name, f"{r.size_bytes / 1024:.0f}", mem, *cells)
        Console().print(table)

    emit({"results": [r.to_dict() for r in res]}, as_json, human)


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
    from edgequant.errors import ConfigError

    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config {path} is not valid JSON: {exc.msg} (line {exc.lineno})"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a JSON object")
    return eq.PTQConfig.from_dict(data)
