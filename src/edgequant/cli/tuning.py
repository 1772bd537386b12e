"""`edgequant tune`: the smallest mixed-precision model within an accuracy budget."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from edgequant.choices import Backend
from edgequant.cli.common import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    batch_axis_option,
    emit,
    image_options,
    load_for_model,
    out_option,
    progress_bars,
)
from edgequant.cli.group import cli
from edgequant.images import ImageOptions

_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_size(text: str) -> int:
    """'300KB', '1.5MB' or a byte count -> bytes (decimal units, as file sizes are shown)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]?B?)\s*", text.upper())
    if not match:
        raise click.BadParameter(f"expected a size such as 300KB or 1.5MB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@cli.command()
@click.argument("model", type=click.Path())
@click.option(
    "--data",
    required=True,
    help="Labelled validation data the accuracy drop is measured on (as for analyze).",
)
@click.option("--calib", required=True, help="Calibration data (as for quantize).")
@click.option(
    "--max-drop", type=NON_NEGATIVE, default=0.5, show_default=True,
    help="How far below FP32 the metric may fall, in its units (top-1 points by default).",
)  # fmt: skip
@click.option(
    "--metric",
    help="Task metric the budget is in: a built-in (top1, map, miou, cer, ...) or module:function "
    "(as for eval). Default: top-1 of a classifier.",
)
@click.option("--max-size", help="Largest model allowed, e.g. 300KB or 1.5MB.")
@click.option("--max-latency", type=POSITIVE, help="Latency budget, as a ratio to FP32 (e.g. 0.8).")
@click.option(
    "--latency-batch", type=COUNT, default=1, show_default=True,
    help="Batch the latency is timed at.",
)  # fmt: skip
@click.option(
    "--precisions",
    default="int4,int8,fp32",
    show_default=True,
    help="The precisions to choose from: int4, int8, int16, fp16, fp32.",
)
@click.option(
    "--time-budget",
    type=POSITIVE,
    default=600.0,
    show_default=True,
    help="Seconds; the search stops then.",
)
@click.option(
    "--max-trials", type=COUNT, default=100, show_default=True,
    help="Candidates measured at most.",
)  # fmt: skip
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor.")
@click.option("--adaround", is_flag=True, help="AdaRound every integer layer (needs torch).")
@click.option(
    "--backend",
    type=click.Choice([b.value for b in Backend]),
    default="auto",
    show_default=True,
    help="Where trials run; auto = Ray when installed (pip install 'edgequant[ray]').",
)
@click.option(
    "--workers", type=COUNT, default=2, show_default=True, help="Ray workers started locally."
)
@click.option("--samples", type=COUNT, default=500, show_default=True, help="Calibration samples.")
@click.option(
    "--limit", type=COUNT, default=2000, show_default=True,
    help="Labelled samples to measure on.",
)  # fmt: skip
@image_options
@batch_axis_option
@out_option("edgequant-tune")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def tune(
    model: str,
    data: str,
    calib: str,
    max_drop: float,
    metric: str | None,
    max_size: str | None,
    max_latency: float | None,
    latency_batch: int,
    precisions: str,
    time_budget: float,
    max_trials: int,
    per_tensor: bool,
    adaround: bool,
    backend: str,
    workers: int,
    samples: int,
    limit: int,
    images: ImageOptions,
    batch_axes: tuple[str, ...],
    out: str,
    as_json: bool,
) -> None:
    """Choose a precision per layer of MODEL: the smallest model whose task metric (top-1, or
    --metric) stays within --max-drop of FP32 (and --max-size / --max-latency). The best model
    so far and its report are always in the output folder, also after a budget runs out or
    Ctrl-C.

    \b
    Examples:
      edgequant tune model.onnx --calib calib.npz --data val.npz --max-drop 0.5
      edgequant tune detector.onnx --calib calib.npz --data scenes.npz --metric map --max-drop 1
      edgequant tune model.onnx --calib fashion-mnist:train --data fashion-mnist --max-size 800KB
    """
    import edgequant as eq
    from edgequant.errors import ConfigError
    from edgequant.outputs import check_report_dir

    check_report_dir(out)
    try:
        ladder = tuple(eq.Precision(p.strip()) for p in precisions.split(","))
    except ValueError as exc:
        raise ConfigError(f"--precisions: {exc}; use int4, int8, int16, fp16, fp32") from None
    ptq = eq.PTQConfig.int8(
        per_channel=not per_tensor,
        max_calibration_samples=samples,
        rounding=eq.Rounding.ADAROUND if adaround else eq.Rounding.NEAREST,
    )
    if metric is not None:
        from edgequant.metrics import load_metric

        load_metric(metric)  # a typo is said now, not after calibration
    config = eq.TuneConfig(
        max_accuracy_drop=max_drop,
        metric=metric,
        max_size_bytes=parse_size(max_size) if max_size else None,
        max_latency_ratio=max_latency,
        latency_batch=latency_batch,
        time_budget_s=time_budget,
        max_trials=max_trials,
        precisions=ladder,
        ptq=ptq,
        backend=eq.Backend(backend),
        workers=workers,
    )
    fp32 = eq.load(model)
    norm: dict[str, Any] = {"images": images, "batch_axes": batch_axes}
    calibration = load_for_model(fp32, calib, batch_size=100, limit=samples, **norm)
    labelled = load_for_model(fp32, data, batch_size=500, limit=limit, **norm)
    with progress_bars(not as_json) as progress:
        result = eq.tune(
            fp32, config, calibration=calibration, data=labelled, out_dir=out, progress=progress
        )

    def human() -> None:
        click.echo(result.sentence())
        if result.best_path is not None:
            click.echo(f"model: {result.best_path}")
        click.echo(f"report: {Path(out) / 'tune.md'}")

    emit(result.to_dict(), as_json, human)
    if result.stop_reason == "interrupted":
        sys.exit(130)
    if result.best is None:
        sys.exit(1)
