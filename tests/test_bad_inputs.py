"""The bad-input catalogue: what a careless or hostile user can hand the CLI, run as the user runs
it (a subprocess), against the promises in the README's "What edgequant promises" section.

Every user error: exit code 2, no traceback, exactly one line on stderr naming the problem, no
partial or temporary file left, and every input byte for byte unchanged. Device nodes are made
in a temporary folder (a character device needs root: that case is skipped without it, and says
so); the full disk is a small tmpfs mounted in a private mount namespace (skipped where the OS
does not allow one).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.test_cli import message_lines

CLI = [sys.executable, "-m", "edgequant.cli"]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: a regular file by its hash, anything else by its kind."""
    out = {}
    for p in sorted(folder.rglob("*")):
        mode = p.lstat().st_mode
        key = str(p.relative_to(folder))
        if stat.S_ISREG(mode):
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = stat.filemode(mode)[0] + (os.readlink(p) if p.is_symlink() else "")
    return out


def assert_refused(
    proc: subprocess.CompletedProcess, before: dict[str, str], folder: Path, *needles: str
) -> str:
    """Exit 2, one line naming the problem, no traceback, the folder exactly as it was."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = message_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert snapshot(folder) == before, "an input changed or an output (or temp file) appeared"
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, model_path, fmnist) -> dict[str, Path]:
    """The inputs every case starts from: the demo model, real calibration and test data."""
    train, test = fmnist
    src = tmp_path_factory.mktemp("inputs")
    shutil.copy(model_path, src / "m.onnx")
    np.savez(src / "calib.npz", input=train.images[:200])
    np.savez(src / "test.npz", input=test.images[:300], labels=test.labels[:300])
    return {p.stem: p for p in src.iterdir()}


@pytest.fixture
def work(tmp_path, files) -> Path:
    """A fresh folder holding copies of the inputs; the cases run in it."""
    for p in files.values():
        shutil.copy(p, tmp_path / p.name)
    return tmp_path


def refuse(work: Path, *args: str, needles: tuple[str, ...] = (), env=None) -> str:
    before = snapshot(work)
    return assert_refused(run(*args, cwd=work, env=env), before, work, *needles)


# Security 1: never replace what is not a regular file ------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _char_device(path: Path) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("creating a character device needs root (CAP_MKNOD); not available here")


def _folder(path: Path) -> None:
    path.mkdir()


def _link_to_dev_null(path: Path) -> None:
    path.symlink_to("/dev/null")


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_char_device, "a device"),
        (_fifo, "a FIFO"),
        (_socket, "a socket"),
        (_folder, "a folder"),
        (_link_to_dev_null, "a device"),
    ],
)
def test_output_that_is_not_a_regular_file_is_never_replaced(work, make, kind) -> None:
    make(work / "out.onnx")
    refuse(work, "quantize", "m.onnx", "--calib", "calib.npz", "-o", "out.onnx", needles=(kind,))
    assert Path("/dev/null").is_char_device()


def test_dev_null_itself_is_refused(work) -> None:
    refuse(work, "quantize", "m.onnx", "--calib", "calib.npz", "-o", "/dev/null")
    assert Path("/dev/null").is_char_device()


def test_sidecar_blocked_by_a_folder_writes_neither_model_nor_sidecar(work) -> None:
    (work / "out.quant.json").mkdir()
    refuse(work, "quantize", "m.onnx", "--calib", "calib.npz", "-o", "out.onnx",
           needles=("out.quant.json", "a folder"))  # fmt: skip


def test_a_symlink_output_replaces_the_file_it_points_to(work) -> None:
    """The documented symlink rule: followed, the link stays, the sidecar goes beside the file."""
    (work / "real").mkdir()
    (work / "real" / "model.onnx").write_bytes(b"old")
    (work / "link.onnx").symlink_to(work / "real" / "model.onnx")
    proc = run("quantize", "m.onnx", "--calib", "calib.npz", "-o", "link.onnx", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "link.onnx").is_symlink()
    onnx.checker.check_model(onnx.load(work / "real" / "model.onnx"))
    assert (work / "real" / "model.quant.json").is_file()


# Security 3: never overwrite an input ------------------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "sidecar over --config"])
def test_output_never_replaces_an_input(work, how) -> None:
    args = ["quantize", "m.onnx", "--calib", "calib.npz", "-o", "m.onnx"]
    if how == "symlink":
        (work / "alias.onnx").symlink_to(work / "m.onnx")
        args[-1] = "alias.onnx"
    elif how == "hard link":
        os.link(work / "m.onnx", work / "twin.onnx")
        args[1] = "twin.onnx"
    elif how == "sidecar over --config":
        (work / "q.quant.json").write_text(json.dumps({"method": "static"}))
        args[-1:] = ["q.onnx", "--config", "q.quant.json"]
    refuse(work, *args, needles=("input of this command",))


# Security 2: nothing in the user's folder is imported but the named --task module ----------------

HIJACK = "open({marker!r}, 'a').write(__name__ + '\\n')\nraise SystemExit(99)\n"
TASK = """
def fails():
    return helper()


def helper():
    raise ValueError("my data loader broke")


def misfit():
    import torch
    return torch.nn.Linear(10, 2), [(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))]
"""


@pytest.fixture
def hostile(work) -> Path:
    """A folder whose files are named like edgequant's dependencies; importing any one of them
    leaves a marker."""
    marker = work.parent / f"{work.name}.imported"
    for name in ("onnxruntime", "onnx", "numpy", "torch", "click", "rich", "ml_dtypes"):
        (work / f"{name}.py").write_text(HIJACK.format(marker=str(marker)))
    (work / "mytask.py").write_text(TASK)
    return marker


@pytest.mark.parametrize(
    "command",
    [
        [*CLI, "check", "m.onnx"],
        [sys.executable, "-m", "edgequant", "check", "m.onnx"],
        [str(Path(sys.executable).parent / "edgequant"), "check", "m.onnx"],
        [*CLI, "qat", "--task", "mytask:fails", "-o", "q.onnx"],
    ],
    ids=["python -m edgequant.cli", "python -m edgequant", "console script", "qat --task"],
)
def test_files_named_like_dependencies_are_never_imported(work, hostile, command) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, cwd=work, check=False)
    assert not hostile.exists(), f"imported from the user's folder: {hostile.read_text()}"
    assert proc.returncode in (0, 2), proc.stderr


def test_failing_task_shows_the_users_traceback_then_one_line(work) -> None:
    (work / "mytask.py").write_text(TASK)
    proc = run("qat", "--task", "mytask:fails", "-o", "q.onnx", cwd=work)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "mytask.py" in proc.stderr and "/edgequant/" not in proc.stderr
    assert lines[-1].startswith(
        "error: --task mytask:fails failed: ValueError: my data loader broke"
    )
    assert not (work / "q.onnx").exists()


def test_task_model_that_does_not_fit_its_data(work) -> None:
    (work / "mytask.py").write_text(TASK)
    refuse(work, "qat", "--task", "mytask:misfit", "-o", "q.onnx",
           needles=("does not run on its own data", "(1, 3)"))  # fmt: skip


# Silently wrong numbers -----------------------------------------------------------------------


@pytest.mark.parametrize("label", [10, -1])
def test_impossible_labels_are_rejected(work, fmnist, label) -> None:
    _, test = fmnist
    np.savez(work / "bad.npz", input=test.images[:50], labels=np.full(50, label))
    refuse(work, "eval", "m.onnx", "--data", "bad.npz", needles=("labels range", "10 classes"))


def test_labels_shorter_than_inputs(work, fmnist) -> None:
    _, test = fmnist
    np.savez(work / "short.npz", input=test.images[:50], labels=test.labels[:40])
    refuse(work, "eval", "m.onnx", "--data", "short.npz", needles=("40 labels for 50 samples",))


def test_one_hot_labels(work, fmnist) -> None:
    _, test = fmnist
    np.savez(work / "onehot.npz", input=test.images[:50], labels=np.eye(10)[test.labels[:50]])
    refuse(work, "eval", "m.onnx", "--data", "onehot.npz", needles=("one-hot",))


def test_eval_says_what_it_did_not_measure(work) -> None:
    proc = run("eval", "m.onnx", "--data", "calib.npz", "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["top1"] is None and result["samples"] == 200
    assert any("no labels" in m for m in result["not_measured"])
    assert any("--reference" in m for m in result["not_measured"])
    proc = run("eval", "m.onnx", "--data", "calib.npz", cwd=work)
    assert "not measured: accuracy" in proc.stdout


def test_reference_with_other_inputs(work, fmnist) -> None:
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 28, 28])
    other = helper.make_model(helper.make_graph([helper.make_node("Relu", ["pixels"], ["y"])],
                                                "other", [x], [y]))  # fmt: skip
    onnx.save(other, work / "other.onnx")
    refuse(work, "eval", "m.onnx", "--data", "test.npz", "--reference", "other.onnx",
           needles=("reference model's inputs",))  # fmt: skip


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["eval", "m.onnx", "--data", "test.npz", "--limit", "0"], "--limit"),
        (["eval", "m.onnx", "--data", "test.npz", "--limit", "-5"], "--limit"),
        (["analyze", "m.onnx", "--data", "test.npz", "--calib", "calib.npz", "--limit", "0"], "--limit"),
        (["bench", "m.onnx", "--batch", "0"], "--batch"),
        (["bench", "m.onnx", "--batch", "-1"], "--batch"),
        (["bench", "m.onnx", "--threads", "0"], "--threads"),
        (["bench", "m.onnx", "--threads", "-2"], "--threads"),
        (["bench", "m.onnx", "--rounds", "0"], "--rounds"),
        (["qat", "-o", "q.onnx", "--steps", "-3"], "--steps"),
        (["qat", "-o", "q.onnx", "--lr", "0"], "--lr"),
        (["qat", "-o", "q.onnx", "--seed", "-1"], "--seed"),
        (["compare", "--steps", "0"], "--steps"),
        (["quantize", "m.onnx", "--calib", "calib.npz", "-o", "q.onnx", "--samples", "0"], "--samples"),
        (["quantize", "m.onnx", "--method", "int4", "-o", "q.onnx", "--block-size", "0"], "--block-size"),
        (["tune", "m.onnx", "--data", "test.npz", "--calib", "calib.npz", "--max-drop", "-1"], "--max-drop"),
        (["tune", "m.onnx", "--data", "test.npz", "--calib", "calib.npz", "--max-latency", "nan"], "--max-latency"),
        (["tune", "m.onnx", "--data", "test.npz", "--calib", "calib.npz", "--time-budget", "0"], "--time-budget"),
    ],
)  # fmt: skip
def test_numeric_options_are_validated_when_parsed(work, args, option) -> None:
    refuse(work, *args, needles=(option,))


def test_all_zero_calibration_warns(work) -> None:
    np.save(work / "zeros.npy", np.zeros((64, 1, 28, 28), np.float32))
    proc = run("quantize", "m.onnx", "--calib", "zeros.npy", "-o", "q.onnx", cwd=work)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "single value 0" in warnings[0], proc.stderr


# Tracebacks that are now one line ----------------------------------------------------------------


def test_npz_with_an_object_array(work) -> None:
    np.savez(work / "objects.npz", input=np.array([{"a": 1}], dtype=object))
    refuse(work, "quantize", "m.onnx", "--calib", "objects.npz", "-o", "q.onnx",
           needles=("never unpickles",))  # fmt: skip


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary", "not a text"),
        (b'{"percentile": "high"}', "'percentile' must be a number"),
        (b'{"max_calibration_samples": "10"}', "'max_calibration_samples' must be a whole number"),
        (b'{"exclude_nodes": 5}', "'exclude_nodes' must be a list"),
        (b'{"weights": null}', "'weights' must be an object"),
        (b'{"weights": "int8"}', "'weights' must be an object"),
        (b'{"num_bins": true}', "'num_bins' must be a whole number"),
    ],
)
def test_bad_config_files(work, content, needle) -> None:
    (work / "config.json").write_bytes(content)
    refuse(work, "quantize", "m.onnx", "--calib", "calib.npz", "--config", "config.json",
           "-o", "q.onnx", needles=(needle,))  # fmt: skip


def test_unknown_excluded_node_names_the_option(work) -> None:
    refuse(work, "quantize", "m.onnx", "--calib", "calib.npz", "--exclude", "/no/such/node",
           "-o", "q.onnx", needles=("--exclude", "/no/such/node"))  # fmt: skip


@pytest.mark.parametrize("command", ["analyze", "tune"])
def test_report_folder_that_is_a_file(work, command) -> None:
    (work / "report").write_text("my notes")
    refuse(work, command, "m.onnx", "--calib", "calib.npz", "--data", "test.npz", "-o", "report",
           needles=("is a file, not a folder",))  # fmt: skip


def test_wrong_output_format(work) -> None:
    refuse(work, "quantize", "m.onnx", "--calib", "calib.npz", "-o", "q.tflite",
           needles=("--target tflite",))  # fmt: skip


def test_json_errors_are_json_on_stdout(work) -> None:
    (work / "report").write_text("x")
    for args in (
        ["compare", "-o", "report"],
        ["demo", "-o", "report"],
        ["bench", "m.onnx", "--rounds", "0"],
    ):
        proc = run(*args, "--json", cwd=work)
        assert proc.returncode == 2 and len(message_lines(proc.stderr)) == 1
        assert json.loads(proc.stdout)["exit"] == 2 and json.loads(proc.stdout)["error"]


def _oom_model(path: Path) -> None:
    """A real model whose one intermediate tensor ONNX Runtime cannot allocate (an Expand to
    300000 x 300000 x 16 x 4 floats), so out-of-memory is reproduced without filling the machine."""
    shape = numpy_helper.from_array(np.array([300000, 300000, 1, 4], np.int64), "shape")
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Expand", ["h", "shape"], ["big"], name="expand"),
        helper.make_node("ReduceSum", ["big"], ["y"], name="sum", keepdims=0),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    graph = helper.make_graph(nodes, "oom", [x], [y], [shape, w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_out_of_memory_is_one_line_that_says_what_to_do(work) -> None:
    _oom_model(work / "big.onnx")
    np.save(work / "x.npy", np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32))
    refuse(work, "quantize", "big.onnx", "--calib", "x.npy", "-o", "q.onnx",
           needles=("out of memory", "--samples"))  # fmt: skip


def test_disk_full_leaves_nothing(work, tmp_path_factory) -> None:
    """A 256 KB tmpfs, mounted in a private mount namespace: the 1.2 MB model does not fit."""
    small = tmp_path_factory.mktemp("small")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if shutil.which("unshare") is None or probe.returncode != 0:
        pytest.skip("no private mount namespace here (unshare -m needs CAP_SYS_ADMIN)")
    script = (
        f"mount -t tmpfs -o size=256k tmpfs {small} && "
        f"{' '.join(CLI)} quantize m.onnx --calib calib.npz -o {small}/q.onnx; "
        f"code=$?; ls -A {small} >&2; exit $code"
    )
    before = snapshot(work)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, cwd=work, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = message_lines(proc.stderr)
    assert len(lines) == 1 and "no space left" in lines[0], proc.stderr  # `ls` printed nothing
    assert snapshot(work) == before


# Misleading messages ----------------------------------------------------------------------------


def _external_data_model(folder: Path, location: str | None) -> Path:
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    path = folder / "ext.onnx"
    onnx.save(helper.make_model(graph), path, save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.data", size_threshold=0)  # fmt: skip
    if location is None:
        (folder / "ext.data").unlink()
    else:
        proto = onnx.load(path, load_external_data=False)
        for entry in proto.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save(proto, path)
    return path


def test_missing_external_data_file_is_named(work) -> None:
    _external_data_model(work, None)
    refuse(work, "check", "ext.onnx", needles=("ext.data", "missing"))


def test_external_data_path_leaving_the_folder_is_refused(work) -> None:
    _external_data_model(work, "../../etc/passwd")
    refuse(work, "check", "ext.onnx", needles=("leaves the model's folder",))


def test_model_with_a_fixed_batch_of_eight(work) -> None:
    """The CLI feeds a fixed-batch model batches of its own size (the remainder left out)."""
    proto = onnx.load(work / "m.onnx")
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 8
    onnx.save(proto, work / "b8.onnx")
    proc = run("quantize", "b8.onnx", "--calib", "calib.npz", "-o", "b8.int8.onnx", cwd=work)
    assert proc.returncode == 0, proc.stderr
    proc = run("eval", "b8.int8.onnx", "--data", "test.npz", "--reference", "b8.onnx",
               "--limit", "100", "--json", cwd=work)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["samples"] == 96 and result["agreement"] >= 0.95


# Interrupts ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated")])  # fmt: skip
def test_signal_at_any_moment_exits_cleanly(work, sig, code, word) -> None:
    """Signals sent while Python starts edgequant, while onnxruntime is imported (a Ctrl-C there
    used to surface as ImportError, exit 1), while the graph is optimised in a temporary folder
    and while calibrating: each run exits with the promised code, one line, no output, no temp
    folder left in $TMPDIR. A run that finished before the signal must have written its model."""
    tmpdir = work / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    interrupted = 0
    for delay in (0.2, 0.35, 0.5, 0.7, 0.9, 1.2, 1.6):
        proc = subprocess.Popen([*CLI, "quantize", "m.onnx", "--calib", "calib.npz", "-o", "q.onnx"],
                                cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        left = [p.name for p in tmpdir.iterdir() if p.name != ".ses"]  # ONNX Runtime's own file
        assert left == [], f"temporary files left after {delay} s"
        if proc.returncode == 0:  # it finished first: a complete model
            onnx.checker.check_model(onnx.load(work / "q.onnx"))
            (work / "q.onnx").unlink()
            (work / "q.quant.json").unlink()
            continue
        assert proc.returncode == code, (delay, proc.returncode, err)
        assert err.strip().splitlines() == [word], err
        assert not (work / "q.onnx").exists() and not list(work.glob(".q.*"))
        interrupted += 1
    assert interrupted >= 3
