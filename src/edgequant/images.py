"""Folders of images as model input: size, crop, channel order, layout and normalisation.

Pillow decodes and resizes (bilinear, with its antialiasing filter when shrinking); the rest is
array arithmetic. The defaults follow the usual evaluation preprocessing of image classifiers
(torchvision's `Resize(shorter side)` + `CenterCrop`): aspect ratio kept, the centre kept.
`ImageOptions.for_input` reads the size, the channel count and the layout from the model's own
input shape, so a folder of photos of any size becomes what the model takes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgequant.errors import DataError

if TYPE_CHECKING:  # numpy is imported where arrays are made: the CLI's options need none
    import numpy as np
    from numpy.typing import NDArray

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class Resize(str, Enum):
    """How an image of another size becomes `size`."""

    CROP = "crop"  # scale the shorter side to fit, then cut the centre: aspect ratio kept
    STRETCH = "stretch"  # scale each side to the size: every pixel kept, shapes distorted


class Layout(str, Enum):
    NCHW = "nchw"  # torch, ONNX exports of torch models
    NHWC = "nhwc"  # TensorFlow/Keras/TFLite exports


class Channels(str, Enum):
    RGB = "rgb"
    BGR = "bgr"  # models trained on OpenCV-decoded images
    GRAY = "gray"


@dataclass(frozen=True)
class ImageOptions:
    """How images become input arrays: pixels scaled to [0, 1], then (x - mean) / std.

    `size` (height, width): None keeps the files' own size (they must all agree). `channels`:
    None keeps gray files gray and makes the rest RGB. `mean`/`std`: one value or one per
    channel, e.g. ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)."""

    size: tuple[int, int] | None = None
    resize: Resize = Resize.CROP
    layout: Layout | None = None  # None: as the model's input says (`for_input`), else NCHW
    channels: Channels | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def for_input(self, shape: tuple[int | str | None, ...] | None) -> ImageOptions:
        """These options with what the user left unset read from a model input's `shape`: a
        rank-4 shape with 1 or 3 channels first (NCHW) or last (NHWC) and fixed height and
        width. Anything else (a symbolic size, another rank) leaves the options as they are."""
        if shape is None or len(shape) != 4:
            return self
        layout = self.layout
        if layout is None:  # TensorFlow-style exports take channels last
            layout = Layout.NHWC if shape[1] not in (1, 3) and shape[3] in (1, 3) else Layout.NCHW
        if layout == Layout.NCHW:
            c, h, w = shape[1], shape[2], shape[3]
        else:
            h, w, c = shape[1], shape[2], shape[3]
        size = self.size
        if size is None and isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            size = (h, w)
        channels = self.channels
        if channels is None and c in (1, 3):
            channels = Channels.GRAY if c == 1 else Channels.RGB
        return replace(self, size=size, layout=layout, channels=channels)


def parse_size(text: str) -> tuple[int, int]:
    """`224` or `224x320` (height x width) as (height, width)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise DataError(f"image size {text!r}: give N or HxW in pixels, e.g. 224 or 240x320")
    return (values[0], values[-1])


def load_image_folder(
    path: Path, options: ImageOptions | None = None, limit: int | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64] | None]:
    """Every image under `path` (the first `limit` in sorted order) as one float32 array
    ((N, C, H, W) or (N, H, W, C)), and class labels when every image sits in a subfolder
    (sorted names: the ImageFolder convention; classes counted over the whole folder)."""
    import numpy as np

    options = options or ImageOptions()
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    classes = (
        sorted({f.parent.name for f in files}) if all(f.parent != path for f in files) else None
    )
    files = files[:limit]  # only what is asked for is decoded
    images = [_read(f, options) for f in files]
    if len({im.shape for im in images}) != 1:
        sizes = sorted({f"{im.shape[1]}x{im.shape[2]}x{im.shape[0]}" for im in images})
        raise DataError(
            f"images in {path} differ in size or channels ({', '.join(sizes[:3])}"
            f"{', ...' if len(sizes) > 3 else ''}): give --image-size HxW (and --channels) to "
            "resize them to one shape"
        )
    x = np.stack(images).astype(np.float64) / 255.0  # (N, C, H, W)
    if options.mean is not None or options.std is not None:
        x = (x - _per_channel(options.mean or (0.0,), x.shape[1])) / _per_channel(
            options.std or (1.0,), x.shape[1]
        )
    if options.layout == Layout.NHWC:
        x = x.transpose(0, 2, 3, 1)
    labels = (
        None
        if classes is None
        else np.array([classes.index(f.parent.name) for f in files], np.int64)
    )
    return x.astype(np.float32), labels


def _read(path: Path, options: ImageOptions) -> NDArray[np.uint8]:
    """One image as (C, H, W) uint8, in the options' channels and size."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as opened:
            gray = opened.mode in ("L", "LA", "1", "I;16", "I", "F")
            want = options.channels or (Channels.GRAY if gray else Channels.RGB)
            img = opened.convert("L" if want == Channels.GRAY else "RGB")
            if options.size is not None:
                img = _resized(img, options.size, options.resize)
            arr = np.asarray(img, np.uint8)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path} is not a readable image: {exc}") from None
    if arr.ndim == 2:
        return arr[None]
    if want == Channels.BGR:
        arr = arr[..., ::-1]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))  # HWC -> CHW


def _resized(img: Any, size: tuple[int, int], how: Resize) -> Any:
    from PIL import Image

    height, width = size
    if (img.height, img.width) == (height, width):
        return img
    if how == Resize.STRETCH:
        return img.resize((width, height), Image.Resampling.BILINEAR)
    scale = max(height / img.height, width / img.width)  # the shorter side fits
    scaled = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
    img = img.resize(scaled, Image.Resampling.BILINEAR)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    return img.crop((left, top, left + width, top + height))


def _per_channel(values: tuple[float, ...], channels: int) -> NDArray[np.float64]:
    import numpy as np

    if len(values) not in (1, channels):
        raise DataError(
            f"give 1 or {channels} normalisation values for {channels}-channel images, got {len(values)}"
        )
    return np.asarray(values, np.float64).reshape(1, -1, 1, 1)
