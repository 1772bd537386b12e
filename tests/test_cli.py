"""The command line: happy paths with --json, and every kind of bad input.

Bad input must give one line on stderr, exit code 2, no traceback, and no output file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def edgequant(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; `env`: variables set on top of this process's."""
    return subprocess.run(
        [sys.executable, "-m", "edgequant.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env} if env else None,
        check=False,
    )


def message_lines(stderr: str) -> list[str]:
    """stderr without the plain progress lines a log gets after 10 s of work ("[   12 s]
    stage: 3/10", `cli.common.plain_progress`): what the command said."""
    return [line for line in stderr.strip().splitlines() if not re.match(r"\[\s*\d+ s\] ", line)]


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = message_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def calib_npz(tmp_path_factory, fmnist) -> Path:
    train, _test = fmnist
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    np.savez(path, input=train.images[:200], labels=train.labels[:200])
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out.onnx"


def eq_load(path: Path) -> bytes:
    import edgequant as eq

    return eq.load(path).serialize()


def no_output(folder: Path) -> bool:
    return not any(p.suffix in {".onnx", ".json", ".tmp"} for p in folder.iterdir())


def test_quantize_eval_bench_happy_path(model_path, calib_npz, tmp_path) -> None:
    out = tmp_path / "m.int8.onnx"
    proc = edgequant(
        "quantize", str(model_path), "--calib", str(calib_npz), "-o", str(out), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["quantized_nodes"] > 20 and summary["size_bytes"] == out.stat().st_size
    sidecar = json.loads((tmp_path / "m.int8.quant.json").read_text())
    assert sidecar["config"]["method"] == "static" and sidecar["calibration_samples"] == 200
    assert sidecar["source_sha256"] == __import__("hashlib").sha256(eq_load(model_path)).hexdigest()
    proc = edgequant(
        "eval", str(out), "--data", str(calib_npz), "--reference", str(model_path), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["agreement"] >= 0.97
    proc = edgequant(
        "eval",
        str(out),
        "--data",
        str(calib_npz),
        "--reference",
        str(model_path),
        "--layers",
        "--limit",
        "64",
    )
    assert proc.returncode == 0, proc.stderr
    assert "layers losing most accuracy" in proc.stdout and "cumulative" in proc.stdout
    proc = edgequant(
        "bench",
        str(model_path),
        str(out),
        "--batch",
        "4",
        "--threads",
        "1",
        "--rounds",
        "1",
        "--no-memory",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["latency"][0]["batch"] for r in json.loads(proc.stdout)["results"]] == [4, 4]


def test_help_has_examples() -> None:
    proc = edgequant("quantize", "--help")
    assert proc.returncode == 0 and "Examples" in proc.stdout and "--calib" in proc.stdout


def test_missing_model(tmp_path, calib_npz, out) -> None:
    assert_user_error(
        edgequant(
            "quantize", str(tmp_path / "nope.onnx"), "--calib", str(calib_npz), "-o", str(out)
        ),
        "not found",
    )
    assert no_output(tmp_path)


def test_truncated_model(tmp_path, model_path, calib_npz, out) -> None:
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(model_path.read_bytes()[: model_path.stat().st_size // 2])
    assert_user_error(
        edgequant("quantize", str(bad), "--calib", str(calib_npz), "-o", str(out)), str(bad)
    )
    assert not out.exists()


def test_file_that_is_not_a_model(tmp_path, calib_npz, out) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("these are my notes, not a model\n")
    assert_user_error(
        edgequant("quantize", str(bad), "--calib", str(calib_npz), "-o", str(out)), str(bad)
    )
    assert not out.exists()


def test_calibration_shape_mismatch(tmp_path, model_path, out) -> None:
    data = tmp_path / "wrong.npy"
    np.save(data, np.zeros((8, 1, 32, 32), np.float32))
    assert_user_error(
        edgequant("quantize", str(model_path), "--calib", str(data), "-o", str(out)),
        "shape",
        "(batch, 1, 28, 28)",
    )
    assert not out.exists()


def test_calibration_name_mismatch(tmp_path, model_path, out) -> None:
    data = tmp_path / "names.npz"
    np.savez(data, image=np.zeros((8, 1, 28, 28), np.float32), mask=np.zeros((8, 4), np.float32))
    assert_user_error(
        edgequant("quantize", str(model_path), "--calib", str(data), "-o", str(out)),
        "do not match",
        "input",
    )
    assert not out.exists()


def test_calibration_dtype_mismatch(tmp_path, model_path, out) -> None:
    data = tmp_path / "ints.npy"
    np.save(data, np.zeros((8, 1, 28, 28), np.int64))
    assert_user_error(
        edgequant("quantize", str(model_path), "--calib", str(data), "-o", str(out)), "dtype int64"
    )
    assert not out.exists()


def test_empty_calibration(tmp_path, model_path, out) -> None:
    data = tmp_path / "empty.npy"
    np.save(data, np.zeros((0, 1, 28, 28), np.float32))
    assert_user_error(
        edgequant("quantize", str(model_path), "--calib", str(data), "-o", str(out)), "no samples"
    )
    assert not out.exists()


def test_nan_in_calibration(tmp_path, model_path, out) -> None:
    x = np.zeros((8, 1, 28, 28), np.float32)
    x[3, 0, 5, 5] = np.nan
    data = tmp_path / "nan.npy"
    np.save(data, x)
    assert_user_error(
        edgequant("quantize", str(model_path), "--calib", str(data), "-o", str(out)), "NaN"
    )
    assert not out.exists()


def test_pickled_npy_is_refused(tmp_path, model_path, out) -> None:
    data = tmp_path / "objects.npy"
    np.save(data, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_user_error(
        edgequant("quantize", str(model_path), "--calib", str(data), "-o", str(out)), str(data)
    )


def test_missing_output_folder(tmp_path, model_path, calib_npz) -> None:
    target = tmp_path / "no" / "such" / "dir" / "m.onnx"
    assert_user_error(
        edgequant("quantize", str(model_path), "--calib", str(calib_npz), "-o", str(target)),
        "does not exist",
    )


def test_unwritable_output_folder(tmp_path, model_path, calib_npz, monkeypatch, capsys) -> None:
    """Run in-process: as root (CI) every folder is writable, so the permission check is simulated."""
    from edgequant import cli

    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: False if mode & os.W_OK else real_access(path, mode)
    )
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "edgequant",
            "quantize",
            str(model_path),
            "--calib",
            str(calib_npz),
            "-o",
            str(tmp_path / "m.onnx"),
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not writable" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_write_failure_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    """An error while writing (disk full, interrupt) removes the temporary file; nothing else appears."""
    import edgequant.outputs as outputs

    def failing_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        outputs.write_atomic(tmp_path / "m.onnx", b"x" * 100)
    assert list(tmp_path.iterdir()) == []


def test_model_and_sidecar_appear_together_or_not_at_all(tmp_path, monkeypatch) -> None:
    """The second rename of a group fails: the first is undone, and a file it had replaced
    comes back unchanged."""
    import edgequant.outputs as outputs

    old = tmp_path / "m.onnx"
    old.write_bytes(b"the previous model")
    real_replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", second_fails)
    with pytest.raises(OSError):
        outputs.write_files({old: b"new model", tmp_path / "m.quant.json": b"{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert old.read_bytes() == b"the previous model"


def test_static_without_calibration_data(model_path, out) -> None:
    proc = edgequant("quantize", str(model_path), "-o", str(out))
    assert proc.returncode == 2 and "--calib" in proc.stderr and "Traceback" not in proc.stderr


def test_quantize_with_equalisation_and_bias_correction(model_path, calib_npz, tmp_path) -> None:
    out = tmp_path / "m.int8.onnx"
    proc = edgequant(
        "quantize", str(model_path), "--calib", str(calib_npz), "-o", str(out),
        "--per-tensor", "--equalize", "--bias-correction", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sidecar = json.loads((tmp_path / "m.int8.quant.json").read_text())
    assert sidecar["config"]["equalization"] == "cross-layer"
    assert sidecar["config"]["bias_correction"] == "empirical"
    # 31 convs and the classifier; the first conv reads one channel and stays float
    assert sidecar["equalized_pairs"] == 18 and sidecar["bias_corrected_nodes"] == 29


def test_the_cli_is_a_thin_call_of_the_library_workflow(model_path, calib_npz, tmp_path) -> None:
    """`eq.quantize_checked` in Python writes exactly the model and sidecar `quantize` writes."""
    import edgequant as eq

    cli_out = tmp_path / "cli.int8.onnx"
    proc = edgequant("quantize", str(model_path), "--calib", str(calib_npz), "-o", str(cli_out))
    assert proc.returncode == 0, proc.stderr
    result = eq.quantize_checked(
        eq.load(model_path),
        eq.PTQConfig.int8(max_calibration_samples=1000),
        calibration=eq.load_data(str(calib_npz), batch_size=64),
        source=str(model_path.resolve()),
    )
    api_out = result.model.save(tmp_path / "api.int8.onnx")
    assert api_out.read_bytes() == cli_out.read_bytes()
    assert (tmp_path / "api.int8.quant.json").read_text() == (
        tmp_path / "cli.int8.quant.json"
    ).read_text()
    assert result.planned is not None and not result.support.fallbacks
    # the one float node is the first conv, over the 1-channel image, and by choice
    assert [(n.name, n.chosen) for n in result.support.float_nodes] == [
        ("/features/features.0/features.0.0/Conv", True)
    ]


def test_every_command_and_option_explains_itself() -> None:
    """Help text on every option, examples on every command and at the top, -o/--output for
    every output, one precision vocabulary (w8a8/w4a8) wherever a whole model's is chosen."""
    import click

    from edgequant.cli import _commands

    cli = _commands()
    assert "three commands" in (cli.help or "") and "edgequant quantize" in (cli.help or "")
    for name, cmd in cli.commands.items():
        assert "Examples:" in (cmd.help or ""), name
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.help, (name, param.opts)
                if "-o" in param.opts:
                    assert "--output" in param.opts, name
                if "--precision" in param.opts:
                    assert {"w8a8", "w4a8"} <= set(param.type.choices), name
    proc = edgequant("analyze", "m.onnx", "--calib", "c.npz", "--data", "d.npz", "-o", "r.onnx")
    assert_user_error(proc, "writes a folder")


def test_quantize_output_never_contradicts_itself(model_path, calib_npz, tmp_path) -> None:
    """TensorRT keeps every compute node integer: its Relus (symmetric activations cannot fold
    them) are said to run fused, not listed as float; a long float list says what it left out."""
    import onnx

    proc = edgequant("quantize", str(model_path), "--calib", str(calib_npz), "--target", "tensorrt", "-o", str(tmp_path / "t.onnx"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "100.0% of MACs" in proc.stdout and "stay in float" not in proc.stdout
    assert "run fused with them" in proc.stdout
    convs = [n.name for n in onnx.load(model_path).graph.node if n.op_type == "Conv"]
    assert len(convs) > 22
    excluded = [a for name in convs for a in ("--exclude", name)]
    proc = edgequant("quantize", str(model_path), "--calib", str(calib_npz), *excluded, "--no-guard", "-o", str(tmp_path / "x.onnx"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    listed = [line for line in proc.stdout.splitlines() if line.startswith("  /")]
    assert len(listed) == 20 and "more (every one: --json, or the .quant.json)" in proc.stdout
