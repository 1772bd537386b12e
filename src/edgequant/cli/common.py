"""Helpers shared by the commands: progress bars, JSON or human output, report printing."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from edgequant.errors import DataError
from edgequant.images import Channels, ImageOptions, Layout, Resize, parse_size


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Callable[[str, int, int | None], None]]:
    """A rich progress display on stderr, one bar per stage; when stderr is not a terminal (a
    log, CI), plain lines instead (`plain_progress`)."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    if not sys.stderr.isatty():
        yield plain_progress()
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


def plain_progress(
    quiet_s: float = 10.0, every_s: float = 30.0, clock: Callable[[], float] | None = None
) -> Callable[[str, int, int | None], None]:
    """Progress as plain stderr lines for logs: silent for the first `quiet_s` seconds (quick
    commands and their one-line errors stay as they are), then a line when a stage starts or
    ends and every `every_s` seconds within one, with the elapsed time and the count."""
    import time

    now = clock or time.monotonic
    start = now()
    last: dict[str, float] = {}

    def update(stage: str, done: int, total: int | None) -> None:
        t = now()
        if t - start < quiet_s:
            return
        finished = total is not None and done >= total
        if stage in last and not finished and t - last[stage] < every_s:
            return
        if stage in last and finished and last[stage] == float("inf"):
            return  # said already
        count = f"{done:,}/{total:,}" if total is not None else f"{done:,}"
        print(
            f"[{t - start:6.0f} s] {stage}: {count}{' done' if finished else ''}",
            file=sys.stderr,
            flush=True,
        )
        last[stage] = float("inf") if finished else t

    return update


def floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def emit(data: dict[str, Any], as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=float))
    else:
        human()


def out_option(default: str) -> Callable[[Any], Any]:
    """-o/--output of a command that writes a report folder (passed as `out`)."""

    def folder(_ctx: Any, _param: Any, value: str) -> str:
        if Path(value).suffix.lower() in (".onnx", ".npz", ".json", ".md", ".html", ".tflite"):
            raise click.BadParameter(
                f"{value} names a file; this command writes a folder (its report and models "
                "inside): give a folder name",
                param_hint="-o/--output",
            )
        return value

    return click.option(
        "-o", "--output", "out", default=default, show_default=True, type=click.Path(),
        callback=folder, help="Report folder (created; the models and reports go inside).",
    )  # fmt: skip


def print_report(
    rows: list[Any], reference_top1: float | None, report: dict[str, Path], metric: Any = None
) -> None:
    """The report's table in the terminal (by the task `metric` when it has one), and where
    the files are."""
    from edgequant.cli.tables import show_markdown
    from edgequant.report import markdown_table

    show_markdown(markdown_table(rows, reference_top1, metric))
    click.echo(f"report: {report['html']}  ({report['markdown']})")


# Numeric options are validated when parsed, with one line naming the option (click ranges).
COUNT = click.IntRange(min=1)  # samples, batches, threads, rounds, steps: at least one
SEED = click.IntRange(min=0)


class FiniteFloat(click.ParamType):
    """A finite float above `low` (or at least `low` when `inclusive`); NaN and inf refused."""

    name = "number"

    def __init__(self, low: float, *, inclusive: bool) -> None:
        self.low, self.inclusive = low, inclusive

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        ok = number >= self.low if self.inclusive else number > self.low
        if not (ok and number == number and abs(number) != float("inf")):
            bound = f">= {self.low:g}" if self.inclusive else f"> {self.low:g}"
            self.fail(f"{value} is not a finite number {bound}", param, ctx)
        return number


POSITIVE = FiniteFloat(0.0, inclusive=False)
NON_NEGATIVE = FiniteFloat(0.0, inclusive=True)


def load_for_model(
    model: Any,
    spec: str,
    *,
    batch_size: int,
    batch_axes: tuple[str, ...] = (),
    images: ImageOptions | None = None,
    limit: int | None = None,
) -> Any:
    """`eq.load_data` for `model`: each input read along its own batch axis (the model's
    symbolic dimensions, `--batch-axis NAME=AXIS` overriding); when the batch axis is fixed (a
    model exported at batch 8 takes nothing else) every batch is a multiple of that size, and the
    samples beyond the last multiple are left out. An image folder becomes what the model's
    input takes (size, channels, layout), where `images` leaves them unset."""
    import edgequant as eq
    from edgequant.batching import parse_batch_axes

    shapes = list(model.input_shapes.values())
    images = (images or ImageOptions()).for_input(shapes[0] if len(shapes) == 1 else None)
    kwargs: dict[str, Any] = {"images": images, "limit": limit}
    overrides = parse_batch_axes(batch_axes)
    axes = model.batch_axes(overrides)
    fixed = model.fixed_batch(overrides)
    if fixed is None or fixed == 1:
        return eq.load_data(spec, batch_size=batch_size, axes=axes, **kwargs)
    size = fixed * max(1, batch_size // fixed)  # runs as batch_size // fixed feeds of `fixed`
    return eq.load_data(spec, batch_size=size, batch_multiple=fixed, axes=axes, **kwargs)


def open_model(source: str, *, calib: str | None = None, images: ImageOptions | None = None) -> Any:
    """The FP32 model MODEL names: an ONNX file, or one `edgequant.importers` exports (a .pt2,
    a Hugging Face folder, module:function, whose example input is the first sample of
    `calib`)."""
    import edgequant as eq
    from edgequant.importers import import_model, is_entry, is_importable

    if not is_importable(source):
        return eq.load(source)
    example = None
    if calib is not None and is_entry(source):  # only module:function needs one
        batch = next(iter(eq.load_data(calib, batch_size=1, limit=1, images=images)))
        example = batch[0] if isinstance(batch, tuple) else batch
    return import_model(source, example=example)


def image_options(func: Any) -> Any:
    """The options that say how an image folder becomes input (--image-size, --resize,
    --channels, --layout, --mean, --std), passed to the command as one `images` ImageOptions."""

    @functools.wraps(func)
    def command(
        *args: Any,
        image_size: str | None,
        resize: str,
        channels: str | None,
        layout: str | None,
        mean: str | None,
        std: str | None,
        **kwargs: Any,
    ) -> Any:
        try:
            size = parse_size(image_size) if image_size else None
        except DataError as exc:
            raise click.BadParameter(str(exc), param_hint="--image-size") from None
        images = ImageOptions(
            size=size,
            resize=Resize(resize),
            layout=Layout(layout) if layout else None,
            channels=Channels(channels) if channels else None,
            mean=floats(mean),
            std=floats(std),
        )
        return func(*args, images=images, **kwargs)

    options = [
        click.option(
            "--image-size", metavar="HxW",
            help="Image folders: resize every image to this (N or HxW; default: the model's input size).",
        ),
        click.option(
            "--resize", type=click.Choice([r.value for r in Resize]), default=Resize.CROP.value,
            show_default=True,
            help="Image folders: crop = scale the shorter side, cut the centre (aspect kept); stretch = scale each side.",
        ),
        click.option(
            "--channels", type=click.Choice([c.value for c in Channels]),
            help="Image folders: channel order (default: as the model's input: 1 channel gray, 3 RGB; bgr for OpenCV-trained models).",
        ),
        click.option(
            "--layout", type=click.Choice([layout.value for layout in Layout]),
            help="Image folders: nchw (torch) or nhwc (TensorFlow); default: read from the model's input shape.",
        ),
        click.option(
            "--mean",
            help="Image folders: per-channel mean to subtract after scaling to [0, 1], e.g. 0.485,0.456,0.406.",
        ),
        click.option(
            "--std", help="Image folders: per-channel std to divide by, e.g. 0.229,0.224,0.225."
        ),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def runtime_option(func: Any) -> Any:
    """`--runtime` (ort, ort:PROVIDER, openvino[:DEVICE]), passed as a checked `Runtime`."""

    def parse(_ctx: Any, _param: Any, value: str) -> Any:
        from edgequant.runtime.runtimes import Runtime

        return Runtime.parse(value)

    return click.option(
        "--runtime", default="ort", show_default=True, callback=parse, metavar="RUNTIME",
        help="Where to run: ort (ONNX Runtime CPU), ort:PROVIDER (an installed execution "
        "provider, e.g. ort:cuda), or openvino[:DEVICE] (the openvino extra).",
    )(func)  # fmt: skip


def batch_axis_option(func: Any) -> Any:
    """`--batch-axis NAME=AXIS` (repeatable), passed as `batch_axes`."""
    return click.option(
        "--batch-axis", "batch_axes", multiple=True, metavar="NAME=AXIS", help=BATCH_AXIS_HELP
    )(func)


BATCH_AXIS_HELP = (
    "NAME=AXIS: the axis input NAME holds its samples on, where the model's dimensions do not "
    "say (e.g. state=1 for a (layers, batch, hidden) state; 'none' for an input fed whole, "
    "such as a sample rate). Repeatable."
)


def model_output(
    output: str, what: str, *, tflite: bool = False, inputs: tuple[str | None, ...] = ()
) -> Path:
    """The checked path of a model output and its sidecar, before any work: the suffix its
    format needs (`what` says why, e.g. "qat writes an ONNX model"), then `resolve_output` for
    both files (not a device or folder, not one of the command's `inputs`)."""
    from edgequant.errors import ConfigError
    from edgequant.model import sidecar_path
    from edgequant.outputs import resolve_output
    from edgequant.tflite.convert import tflite_sidecar

    suffix = ".tflite" if tflite else ".onnx"
    if Path(output).suffix.lower() != suffix:
        raise ConfigError(f"-o {output}: {what}; name the output *{suffix}")
    out = resolve_output(output, inputs=inputs)
    resolve_output(tflite_sidecar(out) if tflite else sidecar_path(out))
    return out
