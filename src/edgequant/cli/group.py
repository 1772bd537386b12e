"""The `edgequant` command group; the commands register themselves in the cli modules."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgequant")
def cli() -> None:
    """Make trained models small and fast for edge devices, with proof.

    \b
    Your model in three commands:
      edgequant export ./my-model -o model.onnx          # or bring an .onnx (.pt2, module:function)
      edgequant data photos/ --model model.onnx --samples 300 -o calib.npz
      edgequant quantize model.onnx --calib calib.npz -o model.int8.onnx
    \b
    Then:
      edgequant eval model.int8.onnx --data val.npz --reference model.onnx
      edgequant bench model.onnx model.int8.onnx
      edgequant demo                                     # the whole workflow on built-in data

    Every command: --help for its options and examples, --json for machine-readable output.
    """
