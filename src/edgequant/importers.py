"""Bring your own model: an FP32 ONNX model from what users hold.

- `.onnx`: loaded as it is.
- `.pt2` (`torch.export.save`): loaded with every tensor read by `torch.load(weights_only=True)`
  (`TORCH_FORCE_WEIGHTS_ONLY_LOAD`: torch.export.load would otherwise unpickle), exported by
  torch's dynamo ONNX exporter (`torch.onnx.export(exported_program)`): the TorchScript exporter
  that edgequant uses elsewhere cannot trace an ExportedProgram's module. Weights inline.
- `module:function`: the function returns a `torch.nn.Module` (or `(module, example_input)`);
  exported with the TorchScript exporter like every other torch model here (`torch_onnx`), with
  the example from the calibration data's first sample when the function gives none.
- A local Hugging Face model folder (`config.json`): the class its config names, loaded by
  `transformers` offline, exported with the TorchScript exporter and dynamic batch and sequence
  axes, inputs as the model's own tokenizer names them. Not Optimum's ONNX exporter: optimum-onnx
  0.1 requires transformers < 4.58, and edgequant's transformers extra (and the MiniLM task) runs
  on 5.x; for encoders and classifiers Optimum does the same torch.onnx export underneath.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from edgequant.errors import ConfigError, DependencyError, ModelError
from edgequant.model import Model, load

KINDS = "an .onnx or .pt2 file, a Hugging Face model folder, or module:function"


def is_importable(source: str) -> bool:
    """Whether `source` names something `import_model` reads beyond a plain .onnx file."""
    path = Path(source)
    if path.suffix.lower() == ".pt2" or (path.is_dir() and (path / "config.json").is_file()):
        return True
    return is_entry(source)


def is_entry(source: str) -> bool:
    """Whether `source` names `module:function` (and no file of that name exists)."""
    module, sep, func = source.partition(":")
    plain = sep and module and func and "/" not in source and "\\" not in source
    return bool(plain) and not Path(source).exists()


def import_model(
    source: str | Path,
    *,
    example: Mapping[str, NDArray[Any]] | NDArray[Any] | None = None,
    sequence_length: int = 128,
) -> Model:
    """The FP32 ONNX model behind `source` (see the module docstring). `example`: one batch of
    inputs for a `module:function` that gives none (its first sample is used);
    `sequence_length`: the token count of a Hugging Face text model's export example (its
    sequence axis stays dynamic)."""
    text = str(source)
    path = Path(text)
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelError(f"{path} is a folder without config.json: give {KINDS}")
    if not is_importable(text):
        return load(path)
    with _quiet():
        if path.suffix.lower() == ".pt2":
            return _from_pt2(path)
        if path.is_dir():
            return _from_hugging_face(path, sequence_length)
        return _from_callable(text, example)


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """`name` set to `value` while the block runs, as it was afterwards."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' and loaders' own chatter (torch.onnx's skipped torchvision ops, torchao's
    optional kernels, transformers' weight-loading bar) off while they run: the command prints
    what matters itself."""
    import logging

    logging.disable(logging.WARNING)  # torch sets its loggers' levels itself: switch them all
    try:
        with _environment("HF_HUB_DISABLE_PROGRESS_BARS", "1"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _from_pt2(path: Path) -> Model:
    import torch

    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        # every torch.load inside reads tensors only: torch honours this variable over the
        # weights_only=False that torch.export.load passes for pickled weights
        with _environment("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1"):
            program = torch.export.load(str(path))
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if "weights_only" in reason or "Unpickler" in reason or "pickle" in reason.lower():
            reason = "it holds pickled Python objects, which edgequant never unpickles"
        raise ModelError(
            f"{path} is not a loadable torch.export program ({reason}); save it with "
            "torch.export.save from a model whose weights are tensors"
        ) from None
    try:  # warnings are off (`_quiet`)
        onnx_program = torch.onnx.export(
            program, dynamo=True, external_data=False, optimize=True, verbose=False
        )
    except Exception as exc:
        raise ModelError(
            f"{path}: torch's ONNX exporter cannot export it: {_first_line(exc)}"
        ) from None
    assert onnx_program is not None
    return _named(onnx_program.model_proto, path.stem)


def _from_callable(entry: str, example: Mapping[str, NDArray[Any]] | NDArray[Any] | None) -> Model:
    import torch

    from edgequant.task import call_user_function
    from edgequant.torch_onnx import export_proto

    result = call_user_function(entry, "MODEL")
    module, given = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"{entry} returned {type(module).__name__}: MODEL as module:function returns a "
            "torch.nn.Module, or (module, example_input)"
        )
    if given is None:
        if example is None:
            raise ConfigError(
                f"{entry} gives no example input: return (module, example_input), or pass "
                "calibration data (--calib) to take its first sample from"
            )
        if isinstance(example, Mapping) and len(example) > 1:
            raise ConfigError(
                f"{entry}: a module with {len(example)} inputs needs its example: return "
                "(module, example_input) from the function"
            )
        first = example if isinstance(example, np.ndarray) else next(iter(example.values()))
        given = torch.from_numpy(np.ascontiguousarray(first[:1]))
    name = entry.partition(":")[2]
    try:
        return _named(export_proto(module, given), name)
    except Exception as exc:
        raise ModelError(
            f"{entry}: torch.onnx.export cannot export it: {_first_line(exc)}"
        ) from None


def _from_hugging_face(folder: Path, sequence_length: int) -> Model:
    import torch

    from edgequant.torch_onnx import export_proto

    transformers = _transformers()
    config = json.loads((folder / "config.json").read_text())
    arch = (config.get("architectures") or ["AutoModel"])[0]
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        raise ConfigError(
            f"{folder} is a decoder language model ({arch}): its export needs a KV cache, "
            "which edgequant does not make yet; give an encoder, classifier or vision model"
        )
    cls = getattr(transformers, arch, None) or transformers.AutoModel
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
    except Exception as exc:
        raise ModelError(f"{folder}: transformers cannot load it: {_first_line(exc)}") from None
    model.eval()
    names, example, dynamic = _hf_inputs(model, folder, sequence_length)

    class Outputs(torch.nn.Module):
        """The model with positional inputs and a tuple of its output tensors."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.model(**dict(zip(names, args, strict=True)), return_dict=True)
            return tuple(v for v in out.values() if isinstance(v, torch.Tensor))

    wrapper = Outputs().eval()
    with torch.no_grad():
        probe = model(**dict(zip(names, example, strict=True)), return_dict=True)
    outputs = [k for k, v in probe.items() if isinstance(v, torch.Tensor)]
    axes = {**dynamic, **{o: {0: "batch"} for o in outputs}}
    if "input_ids" in names:
        axes.update({o: {0: "batch", 1: "sequence"} for o in outputs if o.endswith("hidden_state")})
    try:
        proto = export_proto(
            wrapper, tuple(example), input_names=names, output_names=outputs, dynamic_axes=axes
        )
    except Exception as exc:
        raise ModelError(
            f"{folder}: torch.onnx.export cannot export {arch}: {_first_line(exc)}"
        ) from None
    return _named(proto, folder.name)


def _hf_inputs(
    model: Any, folder: Path, sequence_length: int
) -> tuple[list[str], list[Any], dict[str, dict[int, str]]]:
    """Input names, an example tensor for each, and their dynamic axes: token ids (with the
    attention mask and, where the tokenizer makes them, token type ids), pixels or audio."""
    import inspect

    import torch

    main = getattr(model, "main_input_name", "input_ids")
    config = model.config
    if main == "pixel_values":
        size = getattr(config, "image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        channels = getattr(config, "num_channels", 3)
        return [main], [torch.zeros(1, channels, h, w)], {main: {0: "batch"}}
    if main == "input_values":
        return [main], [torch.zeros(1, 16000)], {main: {0: "batch", 1: "samples"}}
    takes = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in takes and "token_type_ids" in _tokenizer_inputs(folder):
        names.append("token_type_ids")
    ids = torch.ones(1, sequence_length, dtype=torch.long)
    example = [ids, torch.ones_like(ids), torch.zeros_like(ids)][: len(names)]
    return names, example, {n: {0: "batch", 1: "sequence"} for n in names}


def _tokenizer_inputs(folder: Path) -> list[str]:
    """The arrays the folder's tokenizer makes (BERT's include token_type_ids); the usual pair
    when the folder holds no tokenizer."""
    if not is_tokenizer_folder(folder):
        return ["input_ids", "attention_mask"]
    try:
        return list(load_tokenizer(folder).model_input_names)
    except Exception:
        return ["input_ids", "attention_mask"]


def is_tokenizer_folder(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def load_tokenizer(folder: Path) -> Any:
    """The Hugging Face tokenizer saved in `folder` (`transformers.AutoTokenizer`, offline)."""
    return _transformers().AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _transformers() -> Any:
    """The transformers package, offline (a local folder: never the network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise DependencyError(
            "a Hugging Face folder needs transformers: pip install 'edgequant[transformers]'"
        ) from None
    return transformers


def _named(proto: onnx.ModelProto, name: str) -> Model:
    proto.producer_name, proto.producer_version = "edgequant", ""
    return Model(proto, name)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
