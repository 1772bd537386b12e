"""`finetune`: the common QAT training loop (users may equally train in their own loop)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgequant.data import ArrayDataset, split_item
from edgequant.errors import DataError
from edgequant.progress import ProgressFn, silent


def finetune(
    model: Any,
    train_data: ArrayDataset | Iterable[Any],
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    max_steps: int | None = None,
    seed: int = 0,
    progress: ProgressFn = silent,
) -> list[float]:
    """SGD (momentum 0.9) with a cosine learning-rate schedule over (inputs, labels) batches.

    An `ArrayDataset` is reshuffled every epoch with `seed`; other iterables are used as given.
    Returns the loss of every step. A non-finite loss stops training with a clear error.
    """
    import torch

    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    per_epoch = (
        math.ceil(len(train_data) / train_data.batch_size)
        if isinstance(train_data, ArrayDataset)
        else None
    )
    total = max_steps or (epochs * per_epoch if per_epoch else None)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)) if total else 1.0
    )
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    model.train()
    for _ in range(epochs):
        for item in _epoch(train_data, rng):
            x, y = split_item(item)
            if y is None:
                raise DataError("QAT training data needs labels: give (inputs, labels) batches")
            loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(x)), torch.as_tensor(y))
            if not torch.isfinite(loss):
                raise DataError(
                    f"the training loss became {loss.item()} at step {len(losses) + 1}: lower the learning rate"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            progress("QAT fine-tuning", len(losses), total)
            if max_steps is not None and len(losses) >= max_steps:
                model.eval()
                return losses
    model.eval()
    return losses


def _epoch(data: ArrayDataset | Iterable[Any], rng: np.random.Generator) -> Iterable[Any]:
    if not isinstance(data, ArrayDataset):
        return data
    order = rng.permutation(len(data))
    x = (
        data.inputs[order]
        if not isinstance(data.inputs, dict)
        else {k: v[order] for k, v in data.inputs.items()}
    )
    return ArrayDataset(x, None if data.labels is None else data.labels[order], data.batch_size)
