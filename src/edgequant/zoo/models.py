"""A small edge-style CNN: MobileNetV2 inverted residuals (Sandler et al. 2018), 28x28 input.

Depthwise convolutions with per-channel ranges that differ by orders of magnitude, linear
bottlenecks and residual adds are exactly what makes post-training quantization hard, so this is
the honest default for the demo rather than an easy LeNet.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear project, with a skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_skip = stride == 1 and c_in == c_out
        self.block = nn.Sequential(
            conv_bn(c_in, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, c_out, 1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_skip else y


class EdgeCNN(nn.Module):
    """~113k parameters; input (N, 1, 28, 28) normalised, output (N, 10) logits.

    The stem has stride 2 so that one training epoch takes about a minute on two CPU cores.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, expand: int = 4) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(1, w, 3, stride=2),  # 14x14
            InvertedResidual(w, w, 1, expand),
            InvertedResidual(w, 2 * w, 1, expand),
            InvertedResidual(2 * w, 2 * w, 1, expand),
            InvertedResidual(2 * w, 4 * w, 2, expand),  # 7x7
            InvertedResidual(4 * w, 4 * w, 1, expand),
            InvertedResidual(4 * w, 4 * w, 1, expand),
            conv_bn(4 * w, 8 * w, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
