"""Workflow and training commands: demo, compare, qat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgequant.choices import RangeLearning, Scheme
from edgequant.cli.common import (
    COUNT,
    POSITIVE,
    SEED,
    emit,
    model_output,
    out_option,
    print_report,
    progress_bars,
)
from edgequant.cli.group import cli
from edgequant.task import BUILTIN

PRECISIONS = [s.value for s in Scheme]


@cli.command()
@out_option("edgequant-demo")
@click.option(
    "--task",
    "demo_task",
    type=click.Choice(["all", "classification", "detection"]),
    default="all",
    show_default=True,
    help="The classifier with a detection section (all), or one task alone.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report's data as JSON.")
def demo(out: str, demo_task: str, as_json: bool) -> None:
    """Run the whole workflow on Fashion-MNIST with a built-in edge CNN, and on a built-in
    YOLO-style detector of Fashion-MNIST scenes.

    Trains the FP32 models (about 2.5 minutes and 70 s on 2 cores, cached afterwards),
    quantizes the CNN every way that applies, adds PTQ against a short QAT at 4-bit weights
    (W4A8), evaluates each variant on the 10,000 test images, benchmarks them side by side,
    quantizes it for every deployment target (TFLite included, run in LiteRT) with an
    operator-support check; then the detector: FP32, naive all-INT8, edgequant's INT8 and
    FP16 by mAP50-95, latency and size, with a picture of the detections. Writes report.md /
    report.html / report.json and the models into the folder.

    \b
    Examples:
      edgequant demo
      edgequant demo --task detection -o detection-demo
      edgequant demo --task classification --json
    """
    from edgequant.cli.tables import show_markdown
    from edgequant.workflows.detection_demo import detection_sentence

    if demo_task == "detection":
        from edgequant.workflows.detection_demo import run_detection_demo

        with progress_bars(not as_json) as progress:
            found, report = run_detection_demo(Path(out), progress=progress)
        if as_json:
            emit(_report_json(report), True, lambda: None)
            return
        print_report(found.rows, None, report, found.reference)
        click.echo(detection_sentence(found.rows, found.reference))
        return
    from edgequant.workflows.demo import run_demo

    with progress_bars(not as_json) as progress:
        result = run_demo(Path(out), progress=progress, detection=demo_task == "all")
    if as_json:
        emit(_report_json(result.report), True, lambda: None)
        return
    show_markdown(result.targets.markdown())
    if result.detection is not None:
        show_markdown(result.detection.section.table)
        click.echo(detection_sentence(result.detection.rows, result.detection.reference))
    print_report(result.rows, result.reference_top1, result.report)


def _report_json(report: dict[str, Path]) -> dict[str, Any]:
    """The report's own JSON (what report.json holds) and where its files are."""
    import json

    data = json.loads(report["json"].read_text())
    return {**data, "report": {k: str(v) for k, v in report.items()}}


def _task_option(f: Any) -> Any:
    return click.option(
        "--task",
        "task_entry",
        default=BUILTIN,
        show_default=True,
        help="module:function returning the trained model and its data (see the README).",
    )(f)


@cli.command(name="compare")
@out_option("edgequant-compare")
@_task_option
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(PRECISIONS),
    default=("w8a8", "w4a8"),
    show_default=True,
    help="Precisions to compare (repeatable).",
)
@click.option("--steps", type=COUNT, help="QAT steps (default: 400 at 8-bit weights, 800 at 4).")
@click.option(
    "--metric",
    help="Measure by this task metric instead of top-1: a built-in (map, miou, cer, ...) or "
    "module:function (see `edgequant eval --help`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report's data as JSON.")
def compare_cmd(
    out: str,
    task_entry: str,
    precisions: tuple[str, ...],
    steps: int | None,
    metric: str | None,
    as_json: bool,
) -> None:
    """PTQ against QAT on one model: accuracy drop (or the task metric's), time to quantize,
    data used, size and latency, with plots (about 7 minutes on 2 cores for the built-in task).

    \b
    Examples:
      edgequant compare -o compare-report
      edgequant compare --task mytrain:make_task --precision w4a8 --steps 300
      edgequant compare --task mydetector:make_task --metric map
    """
    from edgequant.outputs import check_report_dir
    from edgequant.task import load_task
    from edgequant.workflows.compare import compare, default_recipe

    recipes = [default_recipe(p, steps) for p in precisions]
    check_report_dir(out)
    task_metric = None
    if metric is not None:
        from edgequant.metrics import load_metric

        task_metric = load_metric(metric)  # a typo is said now, not after the training
    task = load_task(task_entry)
    with progress_bars(not as_json) as progress:
        result = compare(
            task, recipes=recipes, out_dir=Path(out), metric=task_metric, progress=progress
        )
    if as_json:
        emit(_report_json(result.report), True, lambda: None)
        return
    print_report(result.rows, result.reference_top1, result.report, result.reference_metric)


@cli.command()
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="Where to write the QAT .onnx (a .quant.json goes beside it).",
)
@_task_option
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default="w8a8", show_default=True,
    help="Weights and activations: w8a8, w4a8 (4-bit weights) or w4a4.",
)  # fmt: skip
@click.option(
    "--ranges",
    type=click.Choice([r.value for r in RangeLearning]),
    default="lsq",
    show_default=True,
    help="Activation ranges: learned (LSQ), kept as calibrated, or a moving min-max.",
)
@click.option(
    "--steps", type=COUNT, help="Training steps (default: 400 at 8-bit weights, 800 at 4)."
)
@click.option(
    "--lr", type=POSITIVE, help="Learning rate (default: 5e-4 at 8-bit weights, 2e-3 at 4)."
)
@click.option(
    "--keep-8bit", multiple=True, help="Module whose weights stay 8-bit (repeatable), e.g. conv1."
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the training run.")
@click.option(
    "--checkpoint-dir", type=click.Path(), help="Write checkpoints here; resume from one found."
)
@click.option(
    "--checkpoint-every", type=COUNT, default=100, show_default=True,
    help="Steps between checkpoints.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def qat(
    output: str,
    task_entry: str,
    precision: str,
    ranges: str,
    steps: int | None,
    lr: float | None,
    keep_8bit: tuple[str, ...],
    seed: int,
    checkpoint_dir: str | None,
    checkpoint_every: int,
    as_json: bool,
) -> None:
    """Quantization-aware training of a PyTorch model, exported to QDQ ONNX.

    Under torchrun the training runs with DistributedDataParallel (gloo on CPU, NCCL on GPUs);
    the first process writes the model.

    \b
    Examples:
      edgequant qat -o fmnist.qat.onnx                     # the built-in task
      edgequant qat --task mytrain:make_task --precision w4a8 --keep-8bit conv1 -o m.onnx
      torchrun --nproc-per-node 2 -m edgequant qat -o fmnist.qat.onnx
    """
    import edgequant as eq
    from edgequant.task import load_task

    out = model_output(output, "qat writes an ONNX model")
    config = eq.QATRunConfig(
        precision=precision, ranges=RangeLearning(ranges), steps=steps, lr=lr,
        keep_8bit=keep_8bit, seed=seed, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
    )  # fmt: skip
    task = load_task(task_entry)
    with progress_bars(not as_json) as progress:  # run_qat shows it on the first process only
        run = eq.run_qat(task, config, name=out.stem, task_label=task_entry, progress=progress)
    if run.model is None or run.fp32 is None:
        return  # another process of a DDP run: the first one writes the model
    q, fp32 = run.model, run.fp32
    q.save(out)
    summary: dict[str, Any] = {"output": str(out), **run.summary()}

    def human() -> None:
        click.echo(
            f"wrote {out} ({q.size_bytes / 1024:.0f} KB, {q.size_bytes / fp32.size_bytes:.1%} of "
            f"FP32) after {run.steps} steps in {run.seconds:.0f} s on {run.processes} process(es)"
        )
        if "top1" in summary:
            click.echo(
                f"top-1 {summary['top1']:.2%} (FP32 {summary['fp32_top1']:.2%}), "
                f"agreement with FP32 {summary['agreement']:.2%}"
            )
        for name, why in summary["float_layers"].items():
            click.echo(f"  stays float: {name}: {why}")

    emit(summary, as_json, human)
