"""Adaptive rounding, AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
Post-Training Quantization", https://arxiv.org/abs/2004.10568).

Rounding each weight to nearest minimises each weight's own error, not the layer's output error.
AdaRound learns, per weight, whether to round down or up: W~ = s * clip(floor(W / s) + h(V), qmin,
qmax) with h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1) (rectified sigmoid, eq. 23), and
minimises || f(x; W) - f(x; W~) ||^2 over calibration inputs x plus a regulariser
lambda * sum(1 - |2 h(V) - 1|^beta) (eq. 24) whose beta anneals from 20 to 2 so that every h
ends at exactly 0 or 1. The scale s is the round-to-nearest scale and is not changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ZETA, GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid (paper section 4.1)


@dataclass(frozen=True)
class AdaRoundConfig:
    iterations: int = 500
    batch_size: int = 32
    lr: float = 1e-2
    reg_weight: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2  # fraction of iterations without the regulariser (paper: 20%)
    seed: int = 0


def _rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def adaround(
    weight: torch.Tensor,
    scale: torch.Tensor,
    qmin: int,
    qmax: int,
    inputs: torch.Tensor,
    layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: AdaRoundConfig = AdaRoundConfig(),
) -> torch.Tensor:
    """Integer codes (same shape as `weight`) chosen by AdaRound.

    weight: float weights (C_out, ...); scale: broadcastable to weight (per-channel (C_out, 1, ...)
    or a scalar), symmetric (zero-point 0); inputs: (N, ...) calibration inputs of the layer;
    layer(x, w) -> output, e.g. a conv with the node's strides/pads/groups and no bias (the bias
    cancels in the difference).
    """
    gen = torch.Generator().manual_seed(config.seed)
    weight, scale = weight.detach().float(), scale.detach().float()
    inputs = inputs.detach().float()
    floor = torch.floor(weight / scale)
    rest = weight / scale - floor  # in [0, 1): initialise h(V) to it, i.e. start at W itself
    v = torch.log((rest - GAMMA) / (ZETA - rest)).clamp(-10, 10).requires_grad_(True)  # h^-1
    optimizer = torch.optim.Adam([v], lr=config.lr)
    with torch.no_grad():
        targets = layer(inputs, weight)
        power = targets.pow(2).mean().clamp_min(1e-12)  # loss relative to the output's power
    warm = int(config.warmup * config.iterations)
    for step in range(config.iterations):
        pick = torch.randint(0, len(inputs), (min(config.batch_size, len(inputs)),), generator=gen)
        soft = scale * torch.clamp(floor + _rectified_sigmoid(v), qmin, qmax)
        loss = (layer(inputs[pick], soft) - targets[pick]).pow(2).mean() / power
        if step >= warm:
            progress = (step - warm) / max(1, config.iterations - warm)
            beta = config.beta_end + (config.beta_start - config.beta_end) * (1 - progress)
            h = _rectified_sigmoid(v)
            loss = loss + config.reg_weight * (1 - (2 * h - 1).abs().pow(beta)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return torch.clamp(floor + (_rectified_sigmoid(v) >= 0.5).float(), qmin, qmax)
