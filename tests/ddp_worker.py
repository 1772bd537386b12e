"""Run by tests/test_ddp.py, once as one process and once under torchrun: QAT of the built-in
task in float64 for a few steps; the first process saves the weights to argv[1]."""

from __future__ import annotations

import sys

import torch

import edgequant as eq
from edgequant.qat.distributed import init_from_env, is_main_process, shutdown
from edgequant.zoo.tasks import fashion_mnist

init_from_env()
task = fashion_mnist()
model = eq.prepare_qat(task.model, eq.QATConfig.int8(), calibration=task.calibration).double()
eq.finetune(model, task.train, lr=5e-4, max_steps=int(sys.argv[2]))
if is_main_process():
    torch.save(model.state_dict(), sys.argv[1])
shutdown()
