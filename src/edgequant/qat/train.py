"""`finetune`: the common QAT training loop, with checkpoints and exact resume.

Users may equally train in their own loop. Here, each epoch's order is derived from (seed, epoch)
rather than from a running generator, so a run resumed from a checkpoint at step k sees exactly
the batches an uninterrupted run sees and ends with the same weights. Checkpoints hold only
tensors and plain numbers, are written atomically, and load with `weights_only=True`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.data import ArrayDataset, split_item
from edgequant.errors import ConfigError, DataError
from edgequant.outputs import write_atomic
from edgequant.progress import ProgressFn, silent
from edgequant.qat.distributed import (
    global_sum,
    init_from_env,
    is_main_process,
    rank_and_world,
    shard,
    wrap,
)

CHECKPOINT = "qat-checkpoint.pt"


def finetune(
    model: Any,
    train_data: ArrayDataset | Iterable[Any],
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    max_steps: int | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    loss: Callable[[Any, Any], Any] | None = None,
    progress: ProgressFn = silent,
) -> list[float]:
    """SGD (momentum 0.9) with a cosine learning-rate schedule over (inputs, labels) batches.

    `loss(outputs, labels)` returns the batch-mean loss; the default is cross-entropy over class
    scores, for a model with one output. A model with several outputs (a tuple, a list, a dict:
    a detector, a landmark net) needs its own `loss`.

    An `ArrayDataset` is reshuffled every epoch from (seed, epoch); other iterables are used as
    given (and cannot be resumed mid-epoch exactly). With `checkpoint_dir`, a checkpoint is written
    every `checkpoint_every` steps and an existing one is resumed from. A non-finite loss stops
    training with a clear error; the last good checkpoint stays on disk. Returns the step losses
    of this call (of the whole batch, also under DDP).

    Under `torchrun --nproc-per-node N`, training runs with DistributedDataParallel: every
    process reads the same batches and trains on its share of each (`qat.distributed`), so the
    result matches one process up to float summation order. Only the first process writes
    checkpoints and reports progress; all resume from the same checkpoint file.
    """
    import torch

    init_from_env()
    main = is_main_process()
    net = wrap(model)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    per_epoch = (
        math.ceil(len(train_data) / train_data.batch_size)
        if isinstance(train_data, ArrayDataset)
        else None
    )
    total = max_steps or (epochs * per_epoch if per_epoch else None)

    def cosine(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total)) if total else 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    step = _resume(path, model, opt, sched)
    losses: list[float] = []
    model.train()
    for epoch in range(epochs):
        for i, item in enumerate(_epoch(train_data, seed, epoch)):
            if epoch * (per_epoch or 0) + i < step:
                continue  # already trained before the checkpoint
            losses.append(_train_step(net, opt, item, step + 1, loss))
            sched.step()
            step += 1
            if main and path is not None and step % checkpoint_every == 0:
                _save(path, model, opt, sched, step)
            if main:
                progress("QAT fine-tuning", step, total)
            if max_steps is not None and step >= max_steps:
                model.eval()
                return losses
    model.eval()
    return losses


def _train_step(
    net: Any, opt: Any, item: Any, step: int, loss_fn: Callable[[Any, Any], Any] | None
) -> float:
    import torch

    x, y = split_item(item)
    if y is None:
        raise DataError("QAT training data needs labels: give (inputs, labels) batches")
    x, y, weight = shard(x, y)
    param = next(net.parameters())  # inputs follow the model's device and float precision
    x = torch.as_tensor(x).to(param.device)
    outputs = net(x.to(param.dtype) if x.is_floating_point() else x)
    labels = torch.as_tensor(y).to(param.device) if isinstance(y, np.ndarray | torch.Tensor) else y
    if loss_fn is not None:  # the batch mean of the user's loss, as a share of the whole batch
        loss = loss_fn(outputs, labels) * (len(x) * weight)
    elif isinstance(outputs, torch.Tensor):
        loss = torch.nn.functional.cross_entropy(outputs, labels, reduction="sum") * weight
    else:
        raise ConfigError(
            f"the model returns {type(outputs).__name__} of several outputs: give QAT a loss "
            "function, loss(outputs, labels) -> batch-mean loss (TrainingTask(loss=...) for "
            "--task, finetune(..., loss=...) in Python)"
        )
    batch_loss = global_sum(loss.detach()).item() / rank_and_world()[1]
    if not math.isfinite(batch_loss):
        raise DataError(
            f"the training loss became {batch_loss} at step {step}: lower the learning rate "
            "(the last checkpoint, if any, holds the last good weights)"
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return batch_loss


def _epoch(data: ArrayDataset | Iterable[Any], seed: int, epoch: int) -> Iterator[Any]:
    if not isinstance(data, ArrayDataset):
        return iter(data)
    order = np.random.default_rng([seed, epoch]).permutation(len(data))
    x = (
        data.inputs[order]
        if not isinstance(data.inputs, dict)
        else {k: v[order] for k, v in data.inputs.items()}
    )
    return iter(
        ArrayDataset(x, None if data.labels is None else data.labels[order], data.batch_size)
    )


def _save(path: Path, model: Any, opt: Any, sched: Any, step: int) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
        },
        buf,
    )
    write_atomic(path, buf.getvalue())


def _resume(path: Path | None, model: Any, opt: Any, sched: Any) -> int:
    import torch

    if path is None or not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle objects
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except Exception as exc:
        raise DataError(
            f"cannot resume from {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}; "
            "delete it to start over"
        ) from None
    return int(state["step"])
