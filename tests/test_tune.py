"""`edgequant tune`: the smallest mixed-precision model within an accuracy budget, on the real
demo model and Fashion-MNIST; the best model is on disk however the search ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import edgequant as eq
from edgequant.errors import ConfigError, DataError

pytestmark = pytest.mark.slow  # minutes in all: not in the fast lane


@pytest.fixture(scope="module")
def validation(fmnist):
    _, test = fmnist
    return eq.ArrayDataset(test.images[:2000], test.labels[:2000], batch_size=500)


@pytest.fixture(scope="module")
def tuned(fp32_model, calibration, validation, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune")
    config = eq.TuneConfig(max_accuracy_drop=0.5, backend=eq.Backend.LOCAL)
    return eq.tune(fp32_model, config, calibration=calibration, data=validation, out_dir=out), out


def test_tune_meets_the_budget_smaller_than_fp16_in_time(tuned, fp32_model, validation) -> None:
    result, out = tuned
    best = result.best
    assert best is not None and result.stop_reason == "search finished"
    assert best.drop_points <= 0.5
    fp16 = eq.quantize(fp32_model, eq.PTQConfig.fp16())
    assert best.size_bytes < fp16.size_bytes
    assert best.size_bytes < min(t.size_bytes for t in result.trials if t.stage == "uniform int8")
    assert result.seconds < 600
    assert "int4" in best.counts()  # mixed: some layers went to 4 bits
    # the file on disk is the model that was measured: ONNX Runtime gives the same top-1 again
    saved = eq.load(out / "model.tuned.onnx")
    assert saved.size_bytes == best.size_bytes
    again = eq.evaluate(saved, validation)
    assert again.top1 == pytest.approx(best.top1, abs=1e-12)
    sidecar = json.loads((out / "model.tuned.quant.json").read_text())
    assert sidecar["config"]["layer_precisions"] == best.precisions
    report = json.loads((out / "tune.json").read_text())
    assert report["best"]["index"] == best.index and len(report["trials"]) == len(result.trials)
    assert (out / "tune.png").stat().st_size > 0 and "Best:" in (out / "tune.md").read_text()
    # operator support of the best model, from ONNX Runtime's fused graph: its CPU has no int4
    # convolution, so every int4 layer runs as DQ -> float Conv and every int8 layer fuses
    floats = set(sidecar["support"]["float_nodes"])
    int4 = {name for name, p in best.precisions.items() if p == "int4"}
    int8 = {name for name, p in best.precisions.items() if p == "int8"}
    assert int4 and int4 <= floats and not int8 & floats
    assert report["best_support"] == sidecar["support"]
    assert "Operator support:" in (out / "tune.md").read_text()


def test_search_steps_are_consistent(tuned) -> None:
    """Sensitivity measures each layer once; the best is the smallest trial within budget."""
    result, _ = tuned
    layers = len(result.trials[0].precisions)
    assert sum(t.stage.startswith("sensitivity") for t in result.trials) == layers
    within = [t for t in result.trials if t.within]
    assert result.best == min(within, key=lambda t: (t.size_bytes, t.index))
    assert all(t.within == (t.drop_points <= 0.5 + 1e-9) for t in result.trials)


def test_ray_gives_the_same_trials_and_model(fp32_model, calibration, fmnist, tmp_path) -> None:
    pytest.importorskip("ray")  # installed by ./run (the [ray] extra); never skipped in CI
    _, test = fmnist
    data = eq.ArrayDataset(test.images[:500], test.labels[:500], batch_size=500)
    results = {}
    for backend in (eq.Backend.LOCAL, eq.Backend.RAY):
        config = eq.TuneConfig(max_accuracy_drop=0.5, backend=backend, max_trials=40)
        results[backend] = eq.tune(
            fp32_model, config, calibration=calibration, data=data, out_dir=tmp_path / backend.value
        )
    local, ray = results[eq.Backend.LOCAL], results[eq.Backend.RAY]

    def strip(r):
        return [{**t.__dict__, "elapsed_s": None} for t in r.trials]

    assert strip(local) == strip(ray) and local.stop_reason == ray.stop_reason
    assert (tmp_path / "local" / "model.tuned.onnx").read_bytes() == (
        tmp_path / "ray" / "model.tuned.onnx"
    ).read_bytes()


def test_interrupted_search_leaves_the_best_model(fp32_model, calibration, validation, tmp_path):
    def interrupt(stage: str, done: int, total: int | None) -> None:
        if stage == "tuning trials" and done == 4:
            raise KeyboardInterrupt

    config = eq.TuneConfig(backend=eq.Backend.LOCAL)
    result = eq.tune(fp32_model, config, calibration=calibration, data=validation,
                     out_dir=tmp_path, progress=interrupt)  # fmt: skip
    assert result.stop_reason == "interrupted" and len(result.trials) == 4
    assert result.best is not None and result.best.drop_points <= 0.5
    saved = eq.load(tmp_path / "model.tuned.onnx")
    assert saved.size_bytes == result.best.size_bytes
    assert "interrupted" in (tmp_path / "tune.md").read_text()


def test_trial_budget_stops_with_the_best_so_far(fp32_model, calibration, validation, tmp_path):
    config = eq.TuneConfig(backend=eq.Backend.LOCAL, max_trials=3)
    result = eq.tune(fp32_model, config, calibration=calibration, data=validation, out_dir=tmp_path)
    assert result.stop_reason.startswith("trial budget") and len(result.trials) <= 3
    assert result.best is not None and (tmp_path / "model.tuned.onnx").exists()


def test_size_budget_no_candidate_is_reported(fp32_model, calibration, validation, tmp_path):
    config = eq.TuneConfig(backend=eq.Backend.LOCAL, max_size_bytes=1000, max_trials=5)
    result = eq.tune(fp32_model, config, calibration=calibration, data=validation, out_dir=tmp_path)
    assert result.best is None and not (tmp_path / "model.tuned.onnx").exists()
    assert all(not t.within for t in result.trials)
    assert "No candidate met every budget" in (tmp_path / "tune.md").read_text()


def test_bad_tune_input_is_a_clear_error(fp32_model, calibration, fmnist, tmp_path) -> None:
    _, test = fmnist
    unlabelled = eq.ArrayDataset(test.images[:100], None, batch_size=50)
    with pytest.raises(DataError, match="labelled"):
        eq.tune(fp32_model, calibration=calibration, data=unlabelled, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="two different"):
        eq.TuneConfig(precisions=(eq.Precision.INT8,))
    with pytest.raises(ConfigError, match="static"):
        eq.TuneConfig(ptq=eq.PTQConfig.dynamic())


def _tune_cli(model_path, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgequant", "tune", str(model_path), "--calib",
            "fashion-mnist:train", "--data", "fashion-mnist", "--limit", "1000", "--samples",
            "200", "--backend", "local", "-o", str(out), *extra]  # fmt: skip


def test_cli_ctrl_c_exits_130_and_keeps_the_best_model(model_path, tmp_path) -> None:
    proc = subprocess.Popen(_tune_cli(model_path, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    best = tmp_path / "model.tuned.onnx"
    deadline = time.monotonic() + 300
    while not best.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert best.exists(), proc.stderr.read() if proc.poll() is not None else "no model in time"
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stdout
    eq.load(best)  # complete and loadable, never half-written
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_errors_and_json(model_path, tmp_path) -> None:
    bad = subprocess.run(_tune_cli(model_path, tmp_path, "--max-size", "lots"),
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "300KB" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run(_tune_cli(model_path, tmp_path, "--precisions", "int8,int3"),
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "int3" in bad.stderr
    run = subprocess.run(_tune_cli(model_path, tmp_path, "--max-trials", "2", "--json"),
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["stop_reason"] in ("search finished", "trial budget (2) reached")
    assert data["best"] is not None and data["best"]["drop_points"] <= 0.5
    assert np.isclose(
        data["best"]["drop_points"], 100 * (data["reference_top1"] - data["best"]["top1"])
    )
