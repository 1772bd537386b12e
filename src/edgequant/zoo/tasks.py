"""The built-in training task, written as a user's `--task module:function` would be."""

from __future__ import annotations

import numpy as np

from edgequant.data import ArrayDataset
from edgequant.task import CALIBRATION_SAMPLES, TrainingTask

SEED = 0


def fashion_mnist() -> TrainingTask:
    """The trained demo CNN (cached; trained on first use) with Fashion-MNIST: 60,000 training
    images in batches of 128, the 10,000 test images, 500 random training images to calibrate."""
    import torch

    from edgequant.zoo import fashion_mnist as fm
    from edgequant.zoo.train import demo_model

    train, test = fm.load("train"), fm.load("test")
    pick = np.random.default_rng(SEED).permutation(len(train))[:CALIBRATION_SAMPLES]
    return TrainingTask(
        model=demo_model(),
        train=ArrayDataset(train.images, train.labels, 128),
        test=ArrayDataset(test.images, test.labels, 1000),
        calibration=ArrayDataset(train.images[pick], None, 100),
        example_input=torch.zeros(1, 1, 28, 28),
    )
