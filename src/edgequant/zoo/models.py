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
    """~1.1M parameters; input (N, 1, 28, 28) normalised, output (N, 10) logits.

    Channels grow as resolution shrinks, as in MobileNetV2: 14x14 -> 7x7 -> 4x4 -> 2x2 with
    widths w, 2w, 4w, 8w, 16w, then a 1x1 head to 32w. The stem has stride 2 and the wide stages
    run at low resolution, so one training epoch takes about a minute on two CPU cores while most
    parameters sit in wide 1x1 convolutions, as in deployed edge CNNs (MobileNetV2: ~200 weights
    per output channel; per-channel scales and biases are a fixed cost per output channel, so a
    net of narrow layers cannot shrink to a quarter of its size at INT8).
    """

    # (width multiple, blocks, stride of the first block) per stage
    STAGES = ((1, 1, 1), (2, 2, 1), (4, 2, 2), (8, 2, 2), (16, 2, 2))

    def __init__(self, num_classes: int = 10, width: int = 16, expand: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(1, width, 3, stride=2)]  # 14x14
        c_in = width
        for multiple, blocks, stride in self.STAGES:
            for i in range(blocks):
                c_out = multiple * width
                layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        layers.append(conv_bn(c_in, 2 * c_in, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
