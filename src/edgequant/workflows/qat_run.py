"""`edgequant qat` as a library function: prepare, fine-tune (one process, or DDP under
torchrun), export through the one exporter, and measure the export against FP32 in ONNX Runtime."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from edgequant.model import Model
from edgequant.progress import ProgressFn, silent
from edgequant.provenance import TrainingRun
from edgequant.qat.config import RangeLearning
from edgequant.task import TrainingTask


@dataclass(frozen=True)
class QATRunConfig:
    """One QAT run: `precision` W8A8 / W4A8 / W4A4; `steps`/`lr` None take the measured
    defaults of that precision; `keep_8bit` names modules whose weights stay 8-bit."""

    precision: str = "W8A8"
    ranges: RangeLearning = RangeLearning.LSQ
    steps: int | None = None
    lr: float | None = None
    keep_8bit: tuple[str, ...] = ()
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100


@dataclass(frozen=True)
class QATRun:
    """The exported model (None on the other processes of a DDP run), its FP32 export, and
    what the run measured. `top1`/`fp32_top1`/`agreement` need the task's test data."""

    model: Model | None
    fp32: Model | None
    steps: int
    lr: float
    seconds: float
    processes: int
    losses: list[float]
    top1: float | None = None
    fp32_top1: float | None = None
    agreement: float | None = None

    def summary(self) -> dict[str, Any]:
        """What `edgequant qat --json` prints (beside the output path)."""
        assert self.model is not None and self.fp32 is not None
        out: dict[str, Any] = {
            "size_bytes": self.model.size_bytes,
            "fp32_size_bytes": self.fp32.size_bytes,
            "steps": self.steps,
            "processes": self.processes,
            "train_seconds": self.seconds,
            "final_loss": self.losses[-1] if self.losses else None,
            "float_layers": self.model.provenance.float_layers if self.model.provenance else {},
        }
        if self.top1 is not None:
            out.update(top1=self.top1, fp32_top1=self.fp32_top1, agreement=self.agreement)
        return out


def run_qat(
    task: TrainingTask,
    config: QATRunConfig = QATRunConfig(),
    *,
    name: str = "model",
    task_label: str | None = None,
    progress: ProgressFn = silent,
) -> QATRun:
    """Quantization-aware training of `task.model` (untouched: QAT works on a copy), exported
    to QDQ ONNX. Under torchrun it trains with DistributedDataParallel and only the first
    process exports and evaluates (the others return a run without a model)."""
    from edgequant.qat.distributed import init_from_env, is_main_process, rank_and_world, shutdown
    from edgequant.qat.export import export
    from edgequant.qat.prepare import prepare_qat
    from edgequant.qat.train import finetune
    from edgequant.runtime.evaluate import evaluate
    from edgequant.torch_onnx import to_onnx
    from edgequant.workflows.compare import default_recipe

    recipe = default_recipe(config.precision, config.steps, config.lr)
    qat_config = replace(
        recipe.config, ranges=config.ranges, overrides=tuple((n, 8) for n in config.keep_8bit)
    )
    init_from_env()
    t0 = time.perf_counter()
    try:
        model = prepare_qat(task.model, qat_config, calibration=task.calibration)
        losses = finetune(
            model, task.train, epochs=recipe.steps,  # an upper bound: training stops after `steps`
            lr=recipe.lr, max_steps=recipe.steps, seed=config.seed,
            checkpoint_dir=config.checkpoint_dir, checkpoint_every=config.checkpoint_every,
            loss=task.loss, progress=progress if is_main_process() else silent,
        )  # fmt: skip
        processes = rank_and_world()[1]
        if not is_main_process():
            return QATRun(None, None, recipe.steps, recipe.lr, 0.0, processes, losses)
        q = export(model, task.example_input, name)
        seconds = time.perf_counter() - t0
    finally:
        shutdown()
    assert q.provenance is not None
    q.provenance.training = TrainingRun(task_label, recipe.steps, recipe.lr, config.seed, processes)
    fp32 = to_onnx(task.model, task.example_input, "fp32")
    run = QATRun(q, fp32, recipe.steps, recipe.lr, seconds, processes, losses)
    if task.test is None or task.loss is not None:  # top-1 is for one output of class scores
        return run
    res = evaluate(q, task.test, reference=fp32)
    return replace(run, top1=res.top1, fp32_top1=evaluate(fp32, task.test).top1,
                   agreement=res.agreement)  # fmt: skip
