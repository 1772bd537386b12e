"""QAT beyond one machine: torch DistributedDataParallel, launched by `torchrun`.

Nothing here is a cluster of our own: torchrun starts the processes and sets RANK / WORLD_SIZE /
MASTER_ADDR; `torch.distributed` (gloo on CPU, NCCL on GPUs) moves the gradients. The one rule
edgequant adds is how a batch is shared: every process reads the same batches (same seed, same
order) and trains on its slice of each, with the loss weighted so that the averaged gradient is
exactly the gradient of the whole batch. Together with BatchNorm statistics and LSQ gradient
scales computed over all processes (`modules.batch_statistics`, `fake_quant.fake_quant_learned`),
N processes train the same model one process would, up to floating-point summation order.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from edgequant.errors import ConfigError, DataError


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment (once); True when running
    with more than one process."""
    dist = torch.distributed
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    try:
        dist.init_process_group(backend)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"cannot join the torchrun process group ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); launch with `torchrun --nproc-per-node N ...`"
        ) from None
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_and_world()[0] == 0


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module to call for training: DDP around `model` when distributed, else `model`."""
    if rank_and_world()[1] == 1:
        return model
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(x: Any, y: Any) -> tuple[Any, Any, float]:
    """This process's slice of a batch and the loss weight (world / batch) that turns a summed
    loss over the slice into its share of the batch-mean gradient."""
    rank, world = rank_and_world()
    n = len(y)
    if n < world:
        raise DataError(
            f"a batch of {n} sample(s) cannot be shared by {world} processes: use a batch size "
            "of at least the number of processes (a multiple of it trains evenly)"
        )
    lo, hi = rank * n // world, (rank + 1) * n // world
    return x[lo:hi], y[lo:hi], world / n


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """`value` summed over all processes (itself when not distributed)."""
    if rank_and_world()[1] > 1:
        value = value.clone()
        torch.distributed.all_reduce(value)
    return value


def global_max(value: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum of `value` over all processes (itself when not distributed)."""
    if rank_and_world()[1] > 1:
        value = value.clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return value


def shutdown() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
