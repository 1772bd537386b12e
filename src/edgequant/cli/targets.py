"""Target commands: `targets` (the presets), `check` (operator support), and the TFLite branch
of `quantize`."""

from __future__ import annotations

from typing import Any

import click

from edgequant.cli.common import emit
from edgequant.cli.group import cli
from edgequant.config import Target

TFLITE_MODES = {"static": "int8", "dynamic": "dynamic", "fp16": "fp16"}


@cli.command(name="targets")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def targets_cmd(as_json: bool) -> None:
    """The deployment target presets: what each one changes, and why.

    \b
    Examples:
      edgequant targets
      edgequant targets --json
      edgequant quantize model.onnx --calib calib.npz --target npu -o model.npu.onnx
    """
    from edgequant.targets import PRESETS

    rows: list[dict[str, Any]] = [
        {
            "target": p.name,
            "runtime": p.runtime.value,
            "weights": _spec_text(p.weights),
            "activations": _spec_text(p.activations),
            "full_integer": p.full_integer,
            "integer_io": p.integer_io,
            "format": p.format,
            "rules": list(p.rules),
        }
        for p in PRESETS.values()
    ]

    def human() -> None:
        detected = Target.detect().value
        for r in rows:
            here = " (this machine)" if r["target"] == detected else ""
            click.echo(
                f"{r['target']}{here}: {r['runtime']}, weights {r['weights']}, "
                f"activations {r['activations']}"
                + (", full integer" if r["full_integer"] else "")
                + (", integer inputs/outputs" if r["integer_io"] else "")
            )
            for rule in r["rules"]:
                click.echo(f"  - {rule}")

    emit({"targets": rows}, as_json, human)


@cli.command(name="check")
@click.argument("model", type=click.Path())
@click.option(
    "--target",
    type=click.Choice([t.value for t in Target]),
    help="Target preset to check against (default: this CPU; .tflite models: LiteRT).",
)
@click.option("--strict", is_flag=True, help="Exit 2 if any node runs in float on the target.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check_cmd(model: str, target: str | None, strict: bool, as_json: bool) -> None:
    """Which nodes of MODEL run in integer on a target, which stay float, and why.

    A float .onnx model is checked as the quantizer plans it; a quantized one as its runtime
    runs it (ONNX Runtime's own fused graph for CPU targets); a .tflite model from its
    operators' tensor types.

    \b
    Examples:
      edgequant check model.onnx --target npu
      edgequant check model.int8.onnx --strict
      edgequant check model.tflite
    """
    import edgequant as eq

    if model.endswith(".tflite"):
        report = eq.check_tflite(eq.load_tflite(model))
    else:
        report = eq.check_support(eq.load(model), target)
    if strict:
        eq.require_integer(report)

    def human() -> None:
        from edgequant.cli.tables import show_markdown

        show_markdown(report.markdown(limit=50))

    emit(report.to_dict(), as_json, human)


def _spec_text(spec: Any) -> str:
    sym = "sym" if spec.symmetry.value == "symmetric" else "asym"
    gran = type(spec.granularity).__name__.removeprefix("Per").lower()
    extra = " 7-bit" if spec.reduce_range else (" narrow" if spec.narrow_range else "")
    return f"{spec.qtype.value} {sym} per-{gran}{extra}"
