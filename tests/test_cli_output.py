"""Output a person can read: tables that never cut a name at 80 columns, `check` as a table,
progress as plain lines in logs, top-5 only where it means something."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.test_cli import (
    calib_npz,  # noqa: F401  (the fixture)
    edgequant,
)


def at_80_columns(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return edgequant(*args, cwd=cwd, env={"COLUMNS": "80"})


def lines_fit(text: str, width: int = 80) -> bool:
    return all(len(line) <= width for line in text.splitlines())


def test_bench_keeps_long_model_names_whole(model_path, tmp_path) -> None:
    long = tmp_path / "edgecnn.fashion-mnist.int8-per-channel-minmax.onnx"
    shutil.copy(model_path, long)
    proc = at_80_columns("bench", str(model_path), str(long), "--rounds", "1", "--no-memory")
    assert proc.returncode == 0, proc.stderr
    assert "edgecnn.fashion-mnist.int8-per-channel-minmax" in proc.stdout
    assert "…" not in proc.stdout and lines_fit(proc.stdout)


def test_check_and_analyze_name_every_node_whole(model_path, calib_npz, tmp_path) -> None:  # noqa: F811
    import edgequant as eq

    q = tmp_path / "q.onnx"
    eq.quantize(eq.load(model_path), calibration=eq.load_data(str(calib_npz))).save(q)
    proc = at_80_columns("check", str(q))
    assert proc.returncode == 0, proc.stderr
    assert "/features/features.0/features.0.0/Conv" in proc.stdout  # the raw-signal conv
    assert "|---" not in proc.stdout and "| " not in proc.stdout  # a table, not Markdown
    assert lines_fit(proc.stdout)
    proc = at_80_columns(
        "analyze", str(model_path), "--calib", str(calib_npz), "--data", str(calib_npz),
        "--samples", "100", "--limit", "200", "--top", "3", "-o", str(tmp_path / "a"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ranked = json.loads((tmp_path / "a" / "sensitivity.json").read_text())["layers"][:3]
    shown = proc.stdout.splitlines()
    for layer in ranked:  # each ranked node whole: a table row, or the head of its block
        node = layer["node"]
        assert any(
            line.strip() == node or (line.startswith("│") and node in line) for line in shown
        )
    table = [line for line in shown if not line.startswith(("Most sensitive", "report:"))]
    assert "…" not in proc.stdout and lines_fit("\n".join(table))


def test_plain_progress_lines_in_a_log() -> None:
    """Silent for the first seconds (a quick command, or its one-line error, stays as it is),
    then a line per stage and every 30 s within one, with counts and elapsed time."""
    import contextlib
    import io

    from edgequant.cli.common import plain_progress

    clock = iter([0.0, 1.0, 11.0, 12.0, 45.0, 50.0, 51.0, 52.0])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        update = plain_progress(clock=lambda: next(clock))  # start at 0
        update("calibrating", 1, 10)  # 1 s: quiet
        update("calibrating", 2, 10)  # 11 s: the first line
        update("calibrating", 3, 10)  # 12 s: too soon
        update("calibrating", 8, 10)  # 45 s: 30 s later
        update("calibrating", 10, 10)  # 50 s: done
        update("calibrating", 10, 10)  # said already
        update("evaluating", 100, None)  # a new stage, no total
    assert err.getvalue().splitlines() == [
        "[    11 s] calibrating: 2/10",
        "[    45 s] calibrating: 8/10",
        "[    50 s] calibrating: 10/10 done",
        "[    52 s] evaluating: 100",
    ]


def test_top5_only_where_there_are_more_than_five_classes(tmp_path) -> None:
    """A 3-class model: top-5 is always 1 there, so eval does not print it."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.eye(4, 3, dtype=np.float32).ravel())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["scores"])], "three",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3])], [w],
    )  # fmt: skip
    model = tmp_path / "three.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, labels=x[:, :3].argmax(1))
    proc = subprocess.run(
        [sys.executable, "-m", "edgequant.cli", "eval", str(model), "--data", str(tmp_path / "d.npz"), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["top1"] == 1.0 and result["top5"] is None
