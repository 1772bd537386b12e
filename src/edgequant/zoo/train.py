"""Train the demo CNN on Fashion-MNIST in FP32, deterministically, with a weights cache.

The cache holds only a state_dict, loaded with `weights_only=True` (no arbitrary unpickling), and
is keyed by a hash of the recipe so a changed recipe never reuses stale weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgequant.outputs import write_atomic
from edgequant.zoo import fashion_mnist


@dataclass(frozen=True)
class TrainRecipe:
    """Everything that decides the trained weights."""

    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.01
    weight_decay: float = 4e-5
    width: int = 16
    expand: int = 4
    seed: int = 0
    threads: int = 2
    version: int = 3

    def key(self) -> str:
        """Cache key; bump `version` in the recipe when training code changes its result."""
        return recipe_key(self)


def recipe_key(recipe: Any) -> str:
    """A frozen recipe dataclass's cache key: a hash of every field."""
    return hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """$EDGEQUANT_CACHE, else ~/.cache/edgequant."""
    return Path(os.environ.get("EDGEQUANT_CACHE", Path.home() / ".cache" / "edgequant"))


def demo_model(
    recipe: TrainRecipe = TrainRecipe(), progress: Callable[[int, int], None] | None = None
) -> Any:
    """The trained demo `EdgeCNN` in eval mode: from the cache, or trained now (about two minutes on 2 cores)."""
    import torch

    from edgequant.zoo.models import EdgeCNN

    torch.manual_seed(recipe.seed)  # initial weights too: same recipe, same model, in any process
    model = EdgeCNN(width=recipe.width, expand=recipe.expand)
    path = cache_dir() / f"edgecnn-{recipe.key()}.pt"
    return cached_weights(model, path, lambda: train(model, recipe, progress))


def cached_weights(model: Any, path: Path, train_now: Callable[[], None]) -> Any:
    """`model` in eval mode with the state_dict cached at `path` (loaded with weights_only=True),
    else trained by `train_now` and cached (written atomically)."""
    import torch

    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception:
            path.unlink(missing_ok=True)
    train_now()
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    write_atomic(path, buf.getvalue())
    return model.eval()


def train(
    model: Any, recipe: TrainRecipe, progress: Callable[[int, int], None] | None = None
) -> None:
    """SGD with Nesterov momentum and a one-cycle schedule; same recipe and seed, same weights."""
    import torch

    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    data = fashion_mnist.load("train")
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    # channels_last makes oneDNN's conv and batch-norm kernels about 1.5x faster on CPU.
    model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(labels) // recipe.batch_size
    total = recipe.epochs * steps_per_epoch
    opt = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=recipe.weight_decay,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr * 10, total_steps=total)
    gen = torch.Generator().manual_seed(recipe.seed)
    model.train()
    step = 0
    for _ in range(recipe.epochs):
        order = torch.randperm(len(labels), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            x = _augment(images[idx], gen).contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step, total)
    model.to(memory_format=torch.contiguous_format)
    model.eval()


def _augment(x: Any, gen: Any) -> Any:
    """Random horizontal flips (Fashion-MNIST garments are left-right symmetric in meaning)."""
    import torch

    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def accuracy(model: Any, split: fashion_mnist.Split, batch: int = 1000) -> float:
    """Top-1 accuracy of a torch model on a split (for training diagnostics)."""
    import torch

    correct = 0
    with torch.no_grad():
        for i in range(0, len(split), batch):
            logits = model(torch.from_numpy(split.images[i : i + batch]))
            correct += int((logits.argmax(1).numpy() == split.labels[i : i + batch]).sum())
    return correct / len(split)
