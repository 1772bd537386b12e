"""`edgequant analyze`: which layer is behind an accuracy drop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgequant.choices import PTQ_SCHEMES, Scheme
from edgequant.cli.common import (
    COUNT,
    batch_axis_option,
    emit,
    image_options,
    load_for_model,
    out_option,
    progress_bars,
)
from edgequant.cli.group import cli
from edgequant.images import ImageOptions


@cli.command()
@click.argument("model", type=click.Path())
@click.option(
    "--data",
    required=True,
    help="Labelled data to measure on: .npz with labels, an image folder by class, or fashion-mnist.",
)
@click.option("--calib", required=True, help="Calibration data (as for quantize).")
@click.option(
    "--precision",
    type=click.Choice([s.value for s in PTQ_SCHEMES]),
    default=Scheme.W8A8.value,
    show_default=True,
    help="The whole model's precision: w8a8, or w4a8 (int4 weights per channel).",
)
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor.")
@click.option(
    "--metric",
    help="Rank layers by this task metric: a built-in (top1, map, miou, cer, ...) or "
    "module:function (as for eval). Default: output SQNR, top-1 beside it.",
)
@click.option("--samples", type=COUNT, default=500, show_default=True, help="Calibration samples.")
@click.option(
    "--limit", type=COUNT, default=2000, show_default=True,
    help="Labelled samples per measurement.",
)  # fmt: skip
@image_options
@batch_axis_option
@click.option("--top", type=COUNT, default=10, show_default=True, help="Layers to print.")
@out_option("edgequant-analyze")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def analyze(
    model: str,
    data: str,
    calib: str,
    precision: str,
    per_tensor: bool,
    metric: str | None,
    samples: int,
    limit: int,
    images: ImageOptions,
    batch_axes: tuple[str, ...],
    top: int,
    out: str,
    as_json: bool,
) -> None:
    """Per-layer sensitivity of MODEL to quantization: each weighted layer quantized alone, and
    all layers but that one, measured in ONNX Runtime; ranked, plotted, culprits named.

    \b
    Examples:
      edgequant analyze model.onnx --calib calib.npz --data test.npz
      edgequant analyze model.onnx --calib fashion-mnist:train --data fashion-mnist --precision w4a8
      edgequant analyze detector.onnx --calib calib.npz --data scenes.npz --metric map
    """
    import edgequant as eq
    from edgequant.outputs import check_report_dir, resolve_output_dir
    from edgequant.report.sensitivity import sensitivity_table, write_sensitivity_report

    folder = Path(out)
    check_report_dir(folder)
    if metric is not None:
        from edgequant.metrics import load_metric

        load_metric(metric)  # a typo is said now, not after calibration
    fp32 = eq.load(model)
    config = (eq.PTQConfig.w4a8 if precision == Scheme.W4A8.value else eq.PTQConfig.int8)(
        per_channel=not per_tensor, max_calibration_samples=samples
    )
    norm: dict[str, Any] = {"images": images, "batch_axes": batch_axes}
    calibration = load_for_model(fp32, calib, batch_size=100, limit=samples, **norm)
    labelled = load_for_model(fp32, data, batch_size=500, limit=limit, **norm)
    with progress_bars(not as_json) as progress:
        report = eq.analyze(
            fp32, config, calibration=calibration, data=labelled, metric=metric, progress=progress
        )
    files = write_sensitivity_report(report, resolve_output_dir(folder))

    def human() -> None:
        from edgequant.cli.tables import show_markdown

        show_markdown(sensitivity_table(report, top))
        click.echo(report.sentence())
        click.echo(f"report: {files['markdown']}")

    emit({**report.to_dict(), "report": str(files["markdown"])}, as_json, human)
