"""Measuring commands: eval, bench."""

from __future__ import annotations

from typing import Any

import click

from edgequant.cli.common import (
    COUNT,
    batch_axis_option,
    emit,
    image_options,
    load_for_model,
    progress_bars,
    runtime_option,
)
from edgequant.cli.group import cli
from edgequant.images import ImageOptions
from edgequant.runtime.runtimes import Runtime


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
@click.option(
    "--metric",
    help="Task metric: top1, top5, map, map50, miou, mse, psnr, cer, perplexity, recall1, or module:function "
    "(function(outputs by name, targets) -> float). Default: top-1/top-5 of a classifier.",
)
@image_options
@runtime_option
@batch_axis_option
@click.option("--limit", type=COUNT, help="Use at most this many samples.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def eval_cmd(
    model: str,
    data: str,
    reference: str | None,
    layers: bool,
    metric: str | None,
    images: ImageOptions,
    runtime: Runtime,
    batch_axes: tuple[str, ...],
    limit: int | None,
    as_json: bool,
) -> None:
    """Accuracy of MODEL (.onnx in ONNX Runtime, .tflite in LiteRT) on labelled data, and
    agreement with a reference.

    \b
    Examples:
      edgequant eval model.int8.onnx --data fashion-mnist --reference model.onnx --layers
      edgequant eval detector.int8.onnx --data scenes.npz --metric map --reference detector.onnx
      edgequant eval model.int8.onnx --data val.npz --metric my_metrics:f1 --reference model.onnx
      edgequant eval model.tflite --data fashion-mnist
    """
    import edgequant as eq
    from edgequant.errors import ConfigError
    from edgequant.metrics import load_metric

    if model.endswith(".tflite"):
        if metric:
            raise ConfigError("--metric is for .onnx models; a .tflite gets top-1")
        _eval_tflite(model, data, reference, layers, images, limit, as_json)
        return
    task = load_metric(metric) if metric else None
    if layers and reference is None:
        raise click.UsageError("--layers needs --reference")
    m = eq.load(model)
    ref = eq.load(reference) if reference else None
    dataset = load_for_model(
        m, data, batch_size=256, limit=limit, images=images, batch_axes=batch_axes
    )
    with progress_bars(not as_json) as progress:
        res = eq.evaluate(
            m, dataset, reference=ref, metric=task, progress=progress, runtime=runtime
        )
    out: dict[str, Any] = {"runtime": runtime.label, **res.to_dict()}
    out["not_measured"] = _not_measured(res, data, metric)
    if layers and ref is not None:
        from edgequant.graph.preprocess import optimize

        out["layers"] = [vars(r) for r in eq.layer_sqnr(m, optimize(ref), dataset)]

    def human() -> None:
        click.echo(f"{'runtime':16s} {runtime.label}")
        for k, v in res.to_dict().items():
            if v is not None and k not in ("metric", "reference_metric", "outputs"):
                click.echo(f"{k:16s} {v:.4f}" if isinstance(v, float) else f"{k:16s} {v}")
        for label, value in (("metric", res.metric), ("reference", res.reference_metric)):
            if value is not None:
                better = "higher" if value.higher_is_better else "lower"
                units = f" {value.units}" if value.units else ""
                click.echo(
                    f"{label:16s} {value.name} {value.value:.4f}{units} ({better} is better)"
                )
        if len(res.outputs) > 1 or (res.outputs and res.outputs[0].agreement is None):
            click.echo("fidelity to the reference, per output:")
            for o in res.outputs:
                agree = f", top-1 agreement {o.agreement:.4f}" if o.agreement is not None else ""
                click.echo(
                    f"  {o.output}: SQNR {o.sqnr_db:.1f} dB, cosine {o.cosine:.5f}, "
                    f"max error {o.max_abs_error:.4g}{agree}"
                )
        for what in out["not_measured"]:
            click.echo(f"not measured: {what}")
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
@click.option(
    "--batch",
    "batches",
    multiple=True,
    type=COUNT,
    default=(1, 32),
    show_default=True,
    help="Batch size to time (repeatable).",
)
@click.option(
    "--threads",
    multiple=True,
    type=COUNT,
    default=(1, 2),
    show_default=True,
    help="Intra-op threads (repeatable).",
)
@runtime_option
@click.option(
    "--rounds",
    type=COUNT,
    default=5,
    show_default=True,
    help="Timed rounds per setting; the median is reported.",
)
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory probe.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench(
    models: tuple[str, ...],
    batches: tuple[int, ...],
    threads: tuple[int, ...],
    rounds: int,
    runtime: Runtime,
    no_memory: bool,
    as_json: bool,
) -> None:
    """Latency, throughput, memory and size of MODELS side by side (ratios to the first).

    \b
    Examples:
      edgequant bench model.onnx model.int8.onnx
      edgequant bench model.onnx model.int8.onnx --batch 1 --batch 32 --threads 1 --threads 2
      edgequant bench model.onnx model.int8.onnx --rounds 9 --no-memory --json
      edgequant bench model.onnx model.int8.onnx --runtime openvino
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
            runtime=runtime,
        )

    def human() -> None:
        from edgequant.cli.tables import show_table

        headers = [
            "model",
            "size KB",
            "peak MiB",
            *(f"b{lat.batch}/t{lat.threads}" for lat in res[0].latency),
        ]
        rows = []
        for r in res:
            cells = [
                f"{lat.p50_ms:.3f} ms ({lat.p50_ms / res[0].at(lat.batch, lat.threads).p50_ms:.2f}x)"
                for lat in r.latency
            ]
            mem = "-" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.1f}"
            rows.append([r.name, f"{r.size_bytes / 1024:.0f}", mem, *cells])
        show_table(headers, rows, title=f"{runtime.label}, p50 latency (ratio to the first model)")

    emit({"runtime": runtime.label, "results": [r.to_dict() for r in res]}, as_json, human)


def _not_measured(res: Any, data: str, metric: str | None) -> list[str]:
    """What `eval` could not measure with what it was given, said rather than left out."""
    missing = []
    if res.top1 is None and metric is None:
        missing.append(
            f"accuracy (top-1/top-5): {data} has no labels (or give --metric for another task)"
        )
    if not res.outputs:
        missing.append("fidelity to FP32 (per output): give --reference MODEL.onnx")
    elif res.agreement is None and res.metric is None and res.top1 is None:
        missing.append(
            "no task metric: fidelity to the reference is the measure (the first output holds "
            "no class scores to agree on)"
        )
    return missing


def _eval_tflite(
    model: str,
    data: str,
    reference: str | None,
    layers: bool,
    images: ImageOptions,
    limit: int | None,
    as_json: bool,
) -> None:
    """Top-1 of a .tflite model in the LiteRT interpreter (batch 1, its own input scale)."""
    import edgequant as eq
    from edgequant.errors import ConfigError

    if reference or layers:
        raise ConfigError("--reference and --layers are for .onnx models; a .tflite gets top-1")
    m = eq.load_tflite(model)
    dataset = eq.load_data(data, batch_size=256, limit=limit, images=images)
    samples = sum(len(batch[1]) for batch in dataset if isinstance(batch, tuple | list))
    out = {"runtime": "litert", "mode": m.mode.value, "samples": samples,
           "top1": eq.evaluate_tflite(m, dataset)}  # fmt: skip
    emit(out, as_json, lambda: click.echo(f"top1 {out['top1']:.4f} ({samples} samples, LiteRT)"))
