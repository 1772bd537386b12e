"""Train the built-in detector (`zoo.detector`) on Fashion-MNIST scenes, deterministically, with a
weights cache keyed by the recipe (as the classifier's, `zoo.train`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgequant.zoo.train import cache_dir, cached_weights, recipe_key


@dataclass(frozen=True)
class DetectorRecipe:
    """Everything that decides the trained weights (about 70 s on 2 cores)."""

    scenes: int = 8000
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    width: int = 16
    seed: int = 0
    threads: int = 2
    version: int = 1


def detector_model(
    recipe: DetectorRecipe = DetectorRecipe(),
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """The trained `Detector` in eval mode: from the cache, or trained now."""
    import torch

    from edgequant.zoo.detector import Detector

    torch.manual_seed(recipe.seed)
    model = Detector(recipe.width)
    path = cache_dir() / f"detector-{recipe_key(recipe)}.pt"
    return cached_weights(model, path, lambda: train_detector(model, recipe, progress))


def train_detector(
    model: Any, recipe: DetectorRecipe, progress: Callable[[int, int], None] | None = None
) -> None:
    """AdamW with a one-cycle schedule on `recipe.scenes` training scenes."""
    import torch

    from edgequant.zoo import scenes
    from edgequant.zoo.detector import assign, loss

    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    data = scenes.compose("train", recipe.scenes, seed=recipe.seed)
    cls, dist, _ = assign(
        [torch.from_numpy(b) for b in data.boxes], [torch.from_numpy(c) for c in data.classes]
    )
    images = torch.from_numpy(data.images)
    steps_per_epoch = len(images) // recipe.batch_size
    total = recipe.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=total, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(recipe.seed)
    model.train()
    step = 0
    for _ in range(recipe.epochs):
        order = torch.randperm(len(images), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            value = loss(model(images[idx]), cls[idx], dist[idx])
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step, total)
    model.eval()
