"""Commands that bring things in: `data` (a calibration or evaluation .npz from images, text or
arrays) and `export` (an FP32 ONNX model from a .pt2, a Hugging Face folder or module:function)."""

from __future__ import annotations

from pathlib import Path

import click

from edgequant.cli.common import COUNT, emit, image_options
from edgequant.cli.group import cli
from edgequant.images import ImageOptions


@cli.command(name="data")
@click.argument("source", type=click.Path())
@click.option(
    "-o", "--output", required=True, type=click.Path(),
    help="The .npz to write (arrays named after the model's inputs, plus labels when the source has them).",
)  # fmt: skip
@click.option(
    "--model", "model_path", type=click.Path(),
    help="The ONNX model the data is for: its input names, types, image size and sequence length.",
)  # fmt: skip
@click.option("--samples", type=COUNT, help="Keep this many samples, picked at random (--seed).")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Which samples --samples keeps."
)
@image_options
@click.option(
    "--tokenizer", type=click.Path(file_okay=False),
    help="Text: the model's Hugging Face tokenizer folder (needs the transformers extra).",
)  # fmt: skip
@click.option(
    "--max-length", type=click.IntRange(min=1), default=128, show_default=True,
    help="Text: tokens per sample, padded and truncated (a model with a fixed length sets it).",
)  # fmt: skip
@click.option(
    "--column", default="text", show_default=True, help="Text in a .csv: the column with the text."
)
@click.option("--label-column", help="Text in a .csv: the column with class labels, if any.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def data_cmd(
    source: str,
    output: str,
    model_path: str | None,
    samples: int | None,
    seed: int,
    images: ImageOptions,
    tokenizer: str | None,
    max_length: int,
    column: str,
    label_column: str | None,
    as_json: bool,
) -> None:
    """Write a calibration or evaluation .npz from SOURCE: a folder of images (class
    sub-folders become labels), a .txt (one text per line) or .csv of text, or an .npy/.npz.

    With --model the arrays take the model's input names and types, images its input size,
    channels and layout, text its sequence length. Pass the file to --calib or --data.

    \b
    Examples:
      edgequant data photos/ --model model.onnx --samples 300 -o calib.npz
      edgequant data photos/ --model model.onnx --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 -o calib.npz
      edgequant data reviews.txt --tokenizer bert-folder/ --model bert.onnx --samples 300 -o calib.npz
      edgequant data val.csv --tokenizer bert-folder/ --column sentence --label-column label -o val.npz
      edgequant data big.npz --model model.onnx --samples 500 -o calib.npz
    """
    import edgequant as eq
    from edgequant.data_files import TextOptions, make_data, write_npz
    from edgequant.errors import ConfigError
    from edgequant.outputs import resolve_output, write_atomic

    if Path(output).suffix.lower() != ".npz":
        raise ConfigError(f"-o {output}: data writes an .npz file; name the output *.npz")
    out = resolve_output(output, inputs=(source, model_path))
    model = eq.load(model_path) if model_path else None
    text = (
        TextOptions(Path(tokenizer), max_length, column, label_column)
        if tokenizer is not None
        else None
    )
    made = make_data(source, model=model, images=images, text=text, samples=samples, seed=seed)
    write_atomic(out, write_npz(made.arrays))
    kept = (
        f"{made.samples} of {made.source_samples} samples, picked at random (seed {seed})"
        if made.samples < made.source_samples
        else f"{made.samples} samples"
    )
    summary = {
        "output": str(out),
        "samples": made.samples,
        "source_samples": made.source_samples,
        "arrays": {
            k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in made.arrays.items()
        },
    }

    def human() -> None:
        click.echo(f"wrote {out}: {kept}")
        for line in made.describe():
            click.echo(f"  {line}")

    emit(summary, as_json, human)


@cli.command(name="export")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(), help="The FP32 .onnx to write.")
@click.option(
    "--example", type=click.Path(),
    help="module:function without its own example input: data (.npz, .npy, images) whose first sample is it.",
)  # fmt: skip
@click.option(
    "--max-length", type=click.IntRange(min=1), default=128, show_default=True,
    help="Hugging Face text models: tokens in the export example (the sequence axis stays dynamic).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def export_cmd(
    source: str, output: str, example: str | None, max_length: int, as_json: bool
) -> None:
    """Export SOURCE to an FP32 ONNX model: a torch.export .pt2 file, a local Hugging Face
    model folder, or module:function returning a torch.nn.Module (or (module, example_input)).
    `quantize` takes these as MODEL too; export first to look at or reuse the ONNX file.

    \b
    Examples:
      edgequant export model.pt2 -o model.onnx
      edgequant export ./bert-base-finetuned -o bert.onnx
      edgequant export mymodels:build --example calib.npz -o model.onnx
    """
    import edgequant as eq
    from edgequant.cli.common import model_output
    from edgequant.importers import import_model

    out = model_output(output, "export writes an ONNX model", inputs=(source, example))
    if Path(source).suffix.lower() == ".onnx":
        from edgequant.errors import ConfigError

        raise ConfigError(f"{source} is ONNX already: give it to quantize as it is")
    sample = None
    if example is not None:
        batch = next(iter(eq.load_data(example, batch_size=1, limit=1)))
        sample = batch[0] if isinstance(batch, tuple) else batch
    model = import_model(source, example=sample, sequence_length=max_length)
    model.save(out)
    inputs = {k: [d if d is not None else "?" for d in v] for k, v in model.input_shapes.items()}
    outputs = [o.name for o in model.proto.graph.output]
    summary = {
        "output": str(out),
        "inputs": inputs,
        "outputs": outputs,
        "size_bytes": model.size_bytes,
    }

    def human() -> None:
        shown = ", ".join(f"{k} {tuple(v)}" for k, v in inputs.items())
        click.echo(
            f"wrote {out}: inputs {shown}; outputs {', '.join(outputs)}; {model.size_bytes / 2**20:.1f} MiB"
        )

    emit(summary, as_json, human)
