"""A small anchor-free YOLO-style detector for the Fashion-MNIST scenes (`zoo.scenes`).

Built as YOLOv8 (Jocher et al., Ultralytics 2023) is, and exported with the same head users
ship: two levels (strides 8 and 16) joined by a top-down neck (Resize + Concat), per-level box
and class branches, distribution focal loss boxes (Li et al. 2020, "Generalized Focal Loss":
each side a softmax over REG_MAX bins, decoded by a 1x1 conv of 0..REG_MAX-1), anchor-point
decoding to centre/width/height in pixels, and one output (N, 4 + classes, anchors) that
concatenates the boxes (0-64 px) with the sigmoid class scores (0-1): the structure that makes
plain INT8 lose detections. Training assigns each object to one level by its size and to the
cells near its centre (an FCOS-style assignment, Tian et al. 2019: simpler than YOLOv8's
task-aligned one and enough for these scenes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgequant.zoo.scenes import SIZE

REG_MAX = 8  # distance bins per box side, in strides
STRIDES = (8, 16)
CLASSES = 10


def _block(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.SiLU(),
    )


class Detector(nn.Module):
    """(N, 1, 64, 64) scenes -> (N, 4 + CLASSES, 80): centre x, centre y, width, height in
    pixels and a sigmoid score per class, for each of the 8x8 + 4x4 anchor points. In training
    mode: the raw per-level maps (N, 4 * REG_MAX + CLASSES, H, W)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(_block(1, w, stride=2), _block(w, 2 * w, stride=2))
        self.p3 = nn.Sequential(_block(2 * w, 2 * w), _block(2 * w, 4 * w, stride=2))
        self.p4 = _block(4 * w, 4 * w, stride=2)
        self.merge = _block(8 * w, 4 * w)  # top-down: P3 + upsampled P4
        self.box = nn.ModuleList(
            nn.Sequential(_block(4 * w, 2 * w), nn.Conv2d(2 * w, 4 * REG_MAX, 1)) for _ in STRIDES
        )
        self.cls = nn.ModuleList(
            nn.Sequential(_block(4 * w, 2 * w), nn.Conv2d(2 * w, CLASSES, 1)) for _ in STRIDES
        )
        for head, stride in zip(self.cls, STRIDES, strict=True):
            assert isinstance(head, nn.Sequential)
            conv = head[-1]
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            nn.init.constant_(
                conv.bias, float(torch.log(torch.tensor(2 / CLASSES / (SIZE / stride) ** 2)))
            )
        self.dfl = nn.Conv2d(REG_MAX, 1, 1, bias=False).requires_grad_(False)
        self.dfl.weight.data[:] = torch.arange(REG_MAX, dtype=torch.float32).view(1, REG_MAX, 1, 1)
        points, strides = anchor_points()
        self.points: torch.Tensor
        self.strides: torch.Tensor
        self.register_buffer("points", points.T.unsqueeze(0), persistent=False)  # (1, 2, A)
        self.register_buffer("strides", strides.view(1, 1, -1), persistent=False)  # (1, 1, A)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p3 = self.merge(torch.cat([p3, F.interpolate(p4, scale_factor=2.0, mode="nearest")], 1))
        feats = [p3, p4]
        return [
            torch.cat([b(f), c(f)], 1) for f, b, c in zip(feats, self.box, self.cls, strict=True)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        maps = self.levels(x)
        if self.training:
            return maps
        n = x.shape[0]
        flat = torch.cat([m.view(n, 4 * REG_MAX + CLASSES, -1) for m in maps], 2)
        box, cls = flat.split((4 * REG_MAX, CLASSES), 1)
        anchors = box.shape[-1]
        dist = self.dfl(box.view(n, 4, REG_MAX, anchors).transpose(2, 1).softmax(1))
        lt, rb = dist.view(n, 4, anchors).chunk(2, 1)
        x1y1, x2y2 = self.points - lt, self.points + rb
        xywh = torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], 1) * self.strides
        return torch.cat([xywh, cls.sigmoid()], 1)


def anchor_points() -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres in units of their level's stride (A, 2) and each one's stride (A,)."""
    points, strides = [], []
    for s in STRIDES:
        cells = SIZE // s
        ys, xs = torch.meshgrid(torch.arange(cells) + 0.5, torch.arange(cells) + 0.5, indexing="ij")
        points.append(torch.stack([xs.flatten(), ys.flatten()], 1))
        strides.append(torch.full((cells * cells,), float(s)))
    return torch.cat(points), torch.cat(strides)


def assign(
    boxes: list[torch.Tensor], classes: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets per anchor point for a batch: class (B, A; -1 background), distances to the box
    sides in strides (B, A, 4) and the box (B, A, 4) in pixels. An object goes to stride 8 when
    its longer side is at most 32 px, else to stride 16, at the cells whose centres lie in the
    box within 1.5 strides of its centre (the nearest cell if none); a cell claimed twice keeps
    the smaller object."""
    points, strides = anchor_points()
    centres = points * strides[:, None]
    n, a = len(boxes), len(strides)
    cls = torch.full((n, a), -1, dtype=torch.long)
    dist = torch.zeros(n, a, 4)
    area = torch.full((n, a), float("inf"))
    target = torch.zeros(n, a, 4)
    for i, (bs, cs) in enumerate(zip(boxes, classes, strict=True)):
        for box, c in zip(bs, cs, strict=True):
            side = float((box[2:] - box[:2]).max())
            level = float(STRIDES[0] if side <= 32 else STRIDES[1])
            mid = (box[:2] + box[2:]) / 2
            inside = (
                (strides == level)
                & (centres > box[:2]).all(1)
                & (centres < box[2:]).all(1)
                & ((centres - mid).abs() <= 1.5 * level).all(1)
            )
            if not inside.any():
                gap = (centres - mid).norm(dim=1) + (strides != level) * 1e9
                inside = torch.zeros(a, dtype=torch.bool)
                inside[gap.argmin()] = True
            box_area = float((box[2:] - box[:2]).prod())
            take = inside & (area[i] > box_area)
            cls[i, take] = int(c)
            area[i, take] = box_area
            target[i, take] = box
            ltrb = torch.cat([centres - box[:2], box[2:] - centres], 1) / strides[:, None]
            dist[i, take] = ltrb[take].clamp(0, REG_MAX - 1.01)
    return cls, dist, target


def loss(maps: list[torch.Tensor], cls: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Class BCE over every anchor point plus distribution focal loss on the positives, both
    normalised by the number of positives (as YOLOv8's)."""
    flat = torch.cat([m.flatten(2) for m in maps], 2).transpose(1, 2)  # (B, A, 4R + C)
    box, logits = flat.split((4 * REG_MAX, CLASSES), 2)
    positive = cls >= 0
    onehot = F.one_hot(cls.clamp(min=0), CLASSES).float() * positive[..., None]
    count = max(int(positive.sum()), 1)
    cls_loss = F.binary_cross_entropy_with_logits(logits, onehot, reduction="sum") / count
    pred = box[positive].view(-1, REG_MAX)  # (P * 4, R)
    goal = dist[positive].view(-1)
    left = goal.floor().long()
    w_right = goal - left
    dfl = (
        F.cross_entropy(pred, left, reduction="none") * (1 - w_right)
        + F.cross_entropy(pred, left + 1, reduction="none") * w_right
    )
    return cls_loss + dfl.sum() / count / 4
