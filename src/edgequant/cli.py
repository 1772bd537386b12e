"""The `edgequant` command: a thin layer over the public API (parsing, progress, exit codes).

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from edgequant.errors import EdgeQuantError

METHODS = ["static", "dynamic", "fp16", "int4"]
CALIBRATORS = ["minmax", "percentile", "entropy", "mse"]


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Callable[[str, int, int | None], None]]:
    """A rich progress display on stderr; one bar per stage."""
    if not enabled or not sys.stderr.isatty():
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as prog:

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in bars:
                bars[stage] = prog.add_task(stage, total=total)
            prog.update(bars[stage], completed=done, total=total)

        yield update


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _emit(data: dict[str, Any], as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=float))
    else:
        human()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgequant")
def cli() -> None:
    """Make trained models small and fast for edge devices, with proof."""


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
@click.option("--block-size", default=32, show_default=True, help="INT4: weights per scale.")
@click.option("--exclude", multiple=True, help="Node name to keep in float (repeatable).")
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
    block_size: int,
    exclude: tuple[str, ...],
    as_json: bool,
) -> None:
    """Quantize an ONNX MODEL.

    \b
    Examples:
      edgequant quantize model.onnx --calib calib.npz -o model.int8.onnx
      edgequant quantize model.onnx --calib images/ --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 -o q.onnx
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
    if method == "static":
        config = eq.PTQConfig.int8(
            per_channel=not per_tensor,
            calibrator=eq.Calibrator(calibrator),
            activations=acts,
            **common,
        )
    elif method == "dynamic":
        config = eq.PTQConfig.dynamic(per_channel=not per_tensor, **common)
    elif method == "fp16":
        config = eq.PTQConfig.fp16(**common)
    else:
        config = eq.PTQConfig.int4(block_size=block_size, **common)
    data = (
        eq.load_data(calib, batch_size=64, mean=_floats(mean), std=_floats(std)) if calib else None
    )
    if method == "static" and data is None:
        raise click.UsageError(
            "static quantization needs --calib DATA (e.g. a .npz of a few hundred inputs)"
        )
    with _progress(not as_json) as progress:
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

    _emit(summary, as_json, human)


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
    dataset = eq.load_data(data, batch_size=256, limit=limit, mean=_floats(mean), std=_floats(std))
    with _progress(not as_json) as progress:
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

    _emit(out, as_json, human)


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
    with _progress(not as_json) as progress:
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

    _emit({"results": [r.to_dict() for r in res]}, as_json, human)


def _out_option(default: str) -> Callable[[Any], Any]:
    return click.option(
        "-o", "--out", default=default, show_default=True, type=click.Path(), help="Report folder."
    )


def _print_report(rows: list[Any], reference_top1: float, report: dict[str, Path]) -> None:
    """The report's table in the terminal, and where the files are."""
    from rich.console import Console
    from rich.markdown import Markdown

    from edgequant.report import markdown_table

    Console().print(Markdown(markdown_table(rows, reference_top1)))
    click.echo(f"report: {report['html']}  ({report['markdown']})")


@cli.command()
@_out_option("edgequant-demo")
def demo(out: str) -> None:
    """Run the whole workflow on Fashion-MNIST with a built-in edge CNN.

    Trains the FP32 model (about 2.5 minutes on 2 cores, cached afterwards), quantizes it every
    way that applies, evaluates each variant on the 10,000 test images, benchmarks them side by
    side and writes report.md / report.html / report.json and the models into the folder.
    """

    from edgequant.demo import run_demo

    with _progress() as progress:
        result = run_demo(Path(out), progress=progress)
    _print_report(result.rows, result.reference_top1, result.report)


@cli.command(name="compare")
@_out_option("edgequant-compare")
@click.option("--steps8", default=400, show_default=True, help="QAT steps at W8A8.")
@click.option("--steps4", default=800, show_default=True, help="QAT steps at W4A8.")
def compare_cmd(out: str, steps8: int, steps4: int) -> None:
    """PTQ against QAT on the built-in demo task, at W8A8 and W4A8: accuracy drop, time to
    quantize, data used, size and latency, with plots (about 7 minutes on 2 cores).

    \b
    Example:
      edgequant compare -o compare-report --steps8 400 --steps4 800
    """
    import numpy as np
    import torch

    from edgequant.compare import compare, default_recipes
    from edgequant.data import ArrayDataset
    from edgequant.zoo import fashion_mnist
    from edgequant.zoo.train import demo_model

    train, test = fashion_mnist.load("train"), fashion_mnist.load("test")
    pick = np.random.default_rng(0).permutation(len(train))[:500]
    with _progress() as progress:
        result = compare(
            demo_model,
            torch.zeros(1, 1, 28, 28),
            calibration=ArrayDataset(train.images[pick], None, 100),
            train=ArrayDataset(train.images, train.labels, 128),
            test=ArrayDataset(test.images, test.labels, 1000),
            recipes=default_recipes(steps8, steps4),
            out_dir=Path(out),
            progress=progress,
        )
    _print_report(result.rows, result.reference_top1, result.report)


def main() -> None:
    """Entry point: user errors become one line and exit code 2; Ctrl-C exits 130."""
    try:
        cli.main(standalone_mode=False)
    except EdgeQuantError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
