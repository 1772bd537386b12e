"""Quantization-aware training: prepare, train (your loop or `finetune`), export via the one exporter."""

from edgequant.qat.config import QATConfig, RangeLearning
from edgequant.qat.export import export
from edgequant.qat.prepare import prepare_qat, warm_start
from edgequant.qat.train import finetune

__all__ = ["QATConfig", "RangeLearning", "export", "finetune", "prepare_qat", "warm_start"]
