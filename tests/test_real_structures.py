"""Models as other teams export them (issue 14), through the CLI as a user runs it: inputs whose
batch axis is not 0, scalar inputs fed whole, states fixed at one stream."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgequant.zoo import fashion_mnist
from tests.structures import KeywordFrontEnd, export_voice_activity, speech_chunks
from tests.test_cli import edgequant as run_cli
from tests.test_cli import message_lines


def _chunks(n: int) -> np.ndarray:
    """Real signal for the chunks: Fashion-MNIST pixel rows, centred (an audio-like waveform
    of 512 samples per chunk; fidelity on speech is the guard's test)."""
    images = fashion_mnist.load("test").images[:n].reshape(n, -1)[:, :512]
    return (images - images.mean()).astype(np.float32)


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad")
    calib = folder / "calib.npz"
    np.savez(
        calib, input=_chunks(64), state=np.zeros((2, 64, 32), np.float32),
        sr=np.array(16000, np.int64),
    )  # fmt: skip
    return folder, calib


def test_state_batch_axis_and_scalar_input_read_from_the_model(vad) -> None:
    """state (2, batch, 32) holds its samples on axis 1 (the symbolic dim says so), the scalar
    sample rate is fed whole with every batch: the model calibrates and quantizes, and nothing
    lands in the working directory (ONNX Runtime's shape inference dumps a debug model with
    uuid-named weight files there when it cannot finish, as it cannot on these branches)."""
    folder, calib = vad
    model = export_voice_activity(folder / "vad.onnx")
    out = folder / "vad.int8.onnx"
    cwd = folder / "cwd"
    cwd.mkdir()
    proc = run_cli("quantize", str(model), "--calib", str(calib), "-o", str(out), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert list(cwd.iterdir()) == []
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert run_cli("check", str(out)).returncode == 0  # our own output passes our own check
    # every QuantizeLinear is read (a dangling one on the Gemm feeding the If kept it float)
    reads = {t for n in proto.graph.node for t in n.input}
    assert all(n.output[0] in reads for n in proto.graph.node if n.op_type == "QuantizeLinear")
    import edgequant as eq

    report = {n.name: n for n in eq.check_support(eq.load(out)).nodes}
    assert report["/pre/Gemm"].integer and report["/pre/Gemm"].macs == 512 * 512
    # the compute inside the If branches is counted: the branch the data took (16 kHz) is
    # integer (each branch quantized as a model of its own), the other one float and said so
    lstm = report["/at16k/LSTM"]
    assert lstm.integer and lstm.op_type == "DynamicQuantizeLSTM" and lstm.macs == 31 * 4 * 32 * 48
    # its 1-channel filter bank stays float by choice (the raw signal), counted all the same
    bank = report["/at16k/conv/Conv"]
    assert not bank.integer and bank.chosen and bank.macs > 0
    assert "never takes it" in report["/at8k/LSTM"].reason
    assert report["/at8k/conv/Conv"].macs > 0 and not report["/at8k/conv/Conv"].integer


def test_nodes_inside_a_branch_can_be_excluded_by_name(vad) -> None:
    """`--exclude` accepts a node inside an `If` branch (the support check lists them): the
    branch is quantized without it; a name found nowhere is still a typo."""
    folder, calib = vad
    model = folder / "vad.onnx"
    if not model.exists():
        export_voice_activity(model)
    out = folder / "vad.lstm-float.onnx"
    args = ("quantize", str(model), "--calib", str(calib), "-o", str(out))
    proc = run_cli(*args, "--exclude", "/at16k/LSTM")
    assert proc.returncode == 0, proc.stderr
    branch = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "If")
    then = next(a.g for a in branch.attribute if a.name == "then_branch")
    ops = [n.op_type for n in then.node]
    assert "LSTM" in ops and "DynamicQuantizeLSTM" not in ops and "QuantizeLinear" in ops
    proc = run_cli(*args, "--exclude", "/at16k/NoSuchNode")
    assert proc.returncode != 0 and "names nodes the model does not have" in proc.stderr
    # the Gemm is the only layer outside the If: without it the branch still quantizes (the
    # top level held nothing to quantize and that was refused before), and with every layer
    # excluded the refusal says the exclusions left nothing
    proc = run_cli(*args, "--exclude", "/pre/Gemm")
    assert proc.returncode == 0, proc.stderr
    proto = onnx.load(str(out))
    assert "QuantizeLinear" not in {n.op_type for n in proto.graph.node}
    branch = next(n for n in proto.graph.node if n.op_type == "If")
    then = next(a.g for a in branch.attribute if a.name == "then_branch")
    assert "DynamicQuantizeLSTM" in {n.op_type for n in then.node}
    layers = [f"/at{k}/{n}" for k in ("16k", "8k") for n in ("conv/Conv", "LSTM", "head/Gemm")]
    proc = run_cli(*args, *(a for name in ["/pre/Gemm", *layers] for a in ("--exclude", name)))
    assert proc.returncode != 0 and "excluded" in proc.stderr and "Traceback" not in proc.stderr


def test_a_branch_that_cannot_be_quantized_stays_float_and_says_why(vad, monkeypatch) -> None:
    """Quantizing inside a branch is an optimisation of a body that already works: any failure
    there leaves that branch float with a warning naming it, and the model is still written."""
    import edgequant as eq
    import edgequant.ptq.guarded as guarded
    from edgequant.data import Runs
    from edgequant.errors import EdgeQuantWarning

    folder, calib = vad
    model = folder / "vad.onnx"
    if not model.exists():
        export_voice_activity(model)
    real = guarded.quantize_static_guarded

    def outer_only(sub, config, data, *args, **kwargs):
        if isinstance(data, Runs):  # a branch, quantized as a model of its own
            raise RuntimeError("no kernel for this body")
        return real(sub, config, data, *args, **kwargs)

    monkeypatch.setattr(guarded, "quantize_static_guarded", outer_only)
    arrays = dict(np.load(calib))
    data = eq.ArrayDataset(arrays, axes={"input": 0, "state": 1, "sr": None})
    with pytest.warns(EdgeQuantWarning, match="/If/then_branch stays float: no kernel"):
        q = eq.quantize(eq.load(model), calibration=data)
    branch = next(n for n in q.proto.graph.node if n.op_type == "If")
    then = next(a.g for a in branch.attribute if a.name == "then_branch")
    assert "QuantizeLinear" not in {n.op_type for n in then.node}
    assert any(n.op_type == "QuantizeLinear" for n in q.proto.graph.node)  # the rest is integer


def _if_model():
    """Conv -> Relu -> If(then: Conv, Relu, Conv; else: Identity) -> Conv, the weight `w`
    shared by the top-level Conv and the branch's first Conv."""
    from onnx import TensorProto, helper, numpy_helper

    import edgequant as eq

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(8, 8, 3, 3)).astype(np.float32) * 0.2, "w")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 8, 1, 1)).astype(np.float32) * 0.2, "w2")
    out = [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in ("tout", "eout")]
    then = helper.make_graph(
        [helper.make_node("Conv", ["h", "w"], ["t1"], name="tconv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["t1"], ["t2"], name="trelu"),
         helper.make_node("Conv", ["t2", "w2"], ["tout"], name="tconv2")], "then", [], out[:1],
    )  # fmt: skip
    other = helper.make_graph([helper.make_node("Identity", ["h"], ["eout"])], "else", [], out[1:])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["h0"], name="top", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["h0"], ["h"], name="toprelu"),
         helper.make_node("If", ["flag"], ["y0"], name="branch", then_branch=then,
                          else_branch=other),
         helper.make_node("Conv", ["y0", "w2"], ["y"], name="after")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 6]),
              helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])], [w, w2],
    )  # fmt: skip
    model = eq.Model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    return model


def _both_paths_faithful(model, q, x) -> None:
    from edgequant.runtime.session import make_session

    ref, got = make_session(model), make_session(q)
    for flag in (True, False):
        feed = {"x": x[:4], "flag": np.array(flag)}
        a, b = ref.run(None, feed)[0], got.run(None, feed)[0]
        assert 10 * np.log10((a**2).sum() / ((a - b) ** 2).sum()) > 18, flag


def test_both_branches_stay_faithful_when_an_activation_feeds_the_if() -> None:
    """The Relu whose output a branch reads by name is not folded into a quantizer (the branch
    would read the unclipped Conv output: with calibration on one path, the other measured
    0.1 dB, unseen by the guard); the branch the data takes is quantized inside; calibrated on
    both paths, both keep their SQNR against FP32."""
    import edgequant as eq

    model = _if_model()
    x = np.random.default_rng(1).normal(size=(64, 8, 6, 6)).astype(np.float32)
    one_path = [{"x": x[i : i + 8], "flag": np.array(True)} for i in range(0, 64, 8)]
    q = eq.quantize(model, calibration=one_path)
    assert "toprelu" in {n.name for n in q.proto.graph.node}  # kept, not folded
    both = [{"x": x[i : i + 8], "flag": np.array(i % 16 == 0)} for i in range(0, 64, 8)]
    q = eq.quantize(model, calibration=both)
    onnx.checker.check_model(q.proto, full_check=True)
    branch = next(n for n in q.proto.graph.node if n.op_type == "If")
    then = next(a.g for a in branch.attribute if a.name == "then_branch")
    assert "QuantizeLinear" in {n.op_type for n in then.node}
    _both_paths_faithful(model, q, x)


def test_a_weight_shared_with_a_float_branch_layer_stays_float_there() -> None:
    """The branch's first Conv excluded (float) reads the weight the top-level Conv quantizes to
    int8 in place: the branch gets a float copy of its own (ONNX Runtime refused the model:
    int8 `w` for a float Conv); both paths stay faithful."""
    import edgequant as eq

    model = _if_model()
    x = np.random.default_rng(1).normal(size=(64, 8, 6, 6)).astype(np.float32)
    data = [{"x": x[i : i + 8], "flag": np.array(i % 16 == 0)} for i in range(0, 64, 8)]
    q = eq.quantize(model, calibration=data, config=eq.PTQConfig(exclude_nodes=("tconv",)))
    onnx.checker.check_model(q.proto, full_check=True)
    top = {i.name: i.data_type for i in q.proto.graph.initializer}
    assert top["w"] == onnx.TensorProto.INT8
    branch = next(n for n in q.proto.graph.node if n.op_type == "If")
    then = next(a.g for a in branch.attribute if a.name == "then_branch")
    conv = next(n for n in then.node if n.name == "tconv")
    own = {i.name: i.data_type for i in then.initializer}
    assert own[conv.input[1]] == onnx.TensorProto.FLOAT
    _both_paths_faithful(model, q, x)


@pytest.mark.slow  # four CLI runs end to end
@pytest.mark.parametrize("method", ["static", "dynamic", "int4", "fp16"])
def test_every_method_keeps_a_control_flow_graph_valid(vad, method) -> None:
    """Weights read only inside `If` branches survive every method, the graph stays in
    topological order with the branches' outer reads counted (ONNX's full check, ONNX Runtime
    and `edgequant check` accept it), and an integer model is never larger than FP32."""
    from edgequant.runtime.session import make_session

    folder, calib = vad
    model = folder / "vad.onnx"
    if not model.exists():
        export_voice_activity(model)
    out = folder / f"vad.{method}.onnx"
    proc = run_cli(
        "quantize", str(model), "--calib", str(calib), "--method", method, "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert run_cli("check", str(out)).returncode == 0
    feed = {"input": _chunks(4), "state": np.zeros((2, 4, 32), np.float32),
            "sr": np.array(16000, np.int64)}  # fmt: skip
    import edgequant as eq

    prob = make_session(eq.Model(proto)).run(None, feed)[0]
    assert prob.shape == (4, 1) and np.isfinite(prob).all()
    if method != "fp16":
        assert out.stat().st_size < model.stat().st_size


def test_a_state_fixed_at_one_stream_needs_its_batch_axis(vad) -> None:
    """Exported with the state fixed at (2, 1, 32): the model does not say where the state's
    samples lie; the error says so and names the option, `--batch-axis state=1` runs it (one
    stream at a time)."""
    folder, calib = vad
    model = export_voice_activity(folder / "vad1.onnx", symbolic_state=False)
    out = folder / "vad1.int8.onnx"
    proc = run_cli("quantize", str(model), "--calib", str(calib), "-o", str(out))
    assert proc.returncode == 2 and "--batch-axis" in proc.stderr and "'state': 2" in proc.stderr
    assert len(message_lines(proc.stderr)) == 1 and not out.exists()
    proc = run_cli(
        "quantize", str(model), "--calib", str(calib), "--batch-axis", "state=1", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    for bad, message in [("state=3", "has 3 dimension(s)"), ("mel=0", "not an input"),
                         ("state", "expects NAME=AXIS")]:  # fmt: skip
        proc = run_cli("quantize", str(model), "--calib", str(calib), "--batch-axis", bad, "-o",
                       str(folder / "x.onnx"))  # fmt: skip
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_recurrent_layers_count_their_macs() -> None:
    """An LSTM is compute, not 0 MACs: seq * batch * directions * 4H * (I + H) (a BiLSTM of a
    text recogniser held 19% of its compute, which a support check must not call integer)."""
    from onnx import TensorProto, helper, numpy_helper

    from edgequant.graph.macs import node_macs

    seq, batch, inputs, hidden = 20, 1, 48, 64
    w = np.zeros((2, 4 * hidden, inputs), np.float32)
    r = np.zeros((2, 4 * hidden, hidden), np.float32)
    graph = helper.make_graph(
        [
            helper.make_node(
                "LSTM",
                ["x", "W", "R"],
                ["y"],
                name="bilstm",
                hidden_size=hidden,
                direction="bidirectional",
            )
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert node_macs(model) == {"bilstm": seq * batch * 2 * 4 * hidden * (inputs + hidden)}


@pytest.mark.slow  # quantize and eval through the CLI on real speech
def test_spectrogram_powers_stay_float_with_the_real_reason(tmp_path) -> None:
    """A keyword-spotting model with its front end inside, on real 16 kHz speech: the power
    tensor (values to ~1e12, typically ~1e6) cannot go on an 8-bit grid; the nodes around it
    stay float and say why (not "an attention mask"), the rest is integer, and the quantized
    model keeps FP32's decisions."""
    import json

    import torch

    from edgequant.torch_onnx import to_onnx

    chunks = speech_chunks(183)
    model = to_onnx(KeywordFrontEnd().eval(), torch.zeros(1, 16000), "kws").save(
        tmp_path / "kws.onnx"
    )
    np.savez(tmp_path / "calib.npz", x=chunks[:120])
    np.savez(tmp_path / "test.npz", x=chunks[120:])
    out = tmp_path / "kws.int8.onnx"
    proc = run_cli(
        "quantize", str(model), "--calib", str(tmp_path / "calib.npz"), "-o", str(out), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    floats = json.loads(proc.stdout)["float_nodes"]
    assert "round to zero" in floats["/Mul"] and "round to zero" in floats["/mel/MatMul"]
    assert not any("mask" in why for why in floats.values())
    proc = run_cli(
        "eval", str(out), "--data", str(tmp_path / "test.npz"), "--reference", str(model), "--json"
    )
    result = json.loads(proc.stdout)
    assert (
        result["agreement"] >= 0.95 and result["output_sqnr_db"] >= 15.0
    )  # measured 1.00, 19.2 dB


def _stream(session, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stream one clip step by step with the state fed back, as a VAD runs on a device:
    (speech probability per step, the state each step was given in the model's layout)."""
    state = np.zeros((2, 1, 32), np.float32)
    probs, states = [], []
    for t in range(len(steps)):
        states.append(state)
        feed = {"input": steps[t : t + 1], "state": state, "sr": np.array(16000, np.int64)}
        prob, state = session.run(None, feed)
        probs.append(prob[0, 0])
    return np.array(probs), np.concatenate(states, axis=1)


@pytest.mark.slow  # trains the detector on real speech (~15 s), then quantizes through the CLI
def test_trained_voice_activity_keeps_its_decisions_per_step(tmp_path) -> None:
    """The stateful VAD (LSTMs in `If` branches, scalar sample rate, state (2, batch, 32)),
    trained on real 16 kHz speech, calibrated from (chunk, state) pairs recorded while FP32
    streams its training clips, in the model's own layout: streamed over six clips it never
    saw, the default INT8 model makes FP32's speech/non-speech decision on >= 99% of steps."""
    import torch

    from edgequant.runtime.session import make_session
    from tests.structures import speech_streams, train_voice_activity

    streams = speech_streams()
    held = sorted(k for k in streams if k.startswith("cards/") or k == "goforward.raw")
    training = {k: v for k, v in streams.items() if k not in held}
    torch.manual_seed(0)
    model = export_voice_activity(
        tmp_path / "vad.onnx", module=train_voice_activity(training, epochs=60)
    )
    import edgequant as eq

    fp32 = make_session(eq.load(model))
    chunks, states = [], []
    for steps in training.values():
        chunks.append(steps)
        states.append(_stream(fp32, steps)[1])
    x, state = np.concatenate(chunks), np.concatenate(states, axis=1)
    pick = np.random.default_rng(0).permutation(len(x))[:512]
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=x[pick], state=state[:, pick], sr=np.array(16000, np.int64))
    out = tmp_path / "vad.int8.onnx"
    proc = run_cli("quantize", str(model), "--calib", str(calib), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size < 0.35 * model.stat().st_size
    int8 = make_session(eq.load(out))
    same = [(_stream(fp32, streams[k])[0] > 0.5) == (_stream(int8, streams[k])[0] > 0.5)
            for k in held]  # fmt: skip
    steps = np.concatenate(same)
    assert len(steps) > 350 and steps.mean() >= 0.99, steps.mean()  # measured 0.997 of 387


def _fashion_trained(tmp_path, structure: str, images: int, lr: float = 2e-3):
    """A structure of tests/structures.py trained on `images` Fashion-MNIST training images and
    exported as a user would: (model, calibration .npz of 256 other training images, test .npz
    of 1000 labelled test images)."""
    import torch

    import tests.structures as structures
    from edgequant.torch_onnx import to_onnx

    train, test = fashion_mnist.load("train"), fashion_mnist.load("test")
    torch.manual_seed(0)
    net = structures.train_classifier(
        getattr(structures, structure)(), train.images[:images], train.labels[:images], lr=lr
    )
    model = to_onnx(net, torch.zeros(1, 1, 28, 28), structure.lower())
    calib, data = tmp_path / "calib.npz", tmp_path / "test.npz"
    np.savez(calib, x=train.images[-256:])
    np.savez(data, x=test.images[:1000], y=test.labels[:1000])
    return model.save(tmp_path / f"{structure.lower()}.onnx"), calib, data


def _agreement(out, model, data) -> float:
    """Top-1 agreement of `out` with `model` on `data`, by `edgequant eval` as a user runs it."""
    import json

    proc = run_cli("eval", str(out), "--data", str(data), "--reference", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    return float(json.loads(proc.stdout)["agreement"])


@pytest.mark.slow  # trains a small CNN on Fashion-MNIST (~10 s), then quantizes through the CLI
def test_hard_swish_written_out_runs_in_integer(tmp_path) -> None:
    """Hard-swish as exported models write it, x * clip(x + 3, 0, 6) / 6: the Add and Mul with
    a constant operand are quantized (the constant per tensor from its own values), the Div by
    a constant becomes a Mul by its reciprocal, so ONNX Runtime runs the whole activation in
    integer (QLinearAdd, QLinearMul; the Clip folds) instead of a float island after every conv
    (measured on a 6-conv model at 112x112: 0.76x -> 0.61x FP32 latency, batch 32 0.72x ->
    0.43x); the decisions on 1000 other real images stay FP32's."""
    from edgequant.analysis.support import check_support
    from edgequant.model import load

    model, calib, data = _fashion_trained(tmp_path, "HardSwishCNN", 20000, lr=3e-3)
    out = tmp_path / "hswish.int8.onnx"
    proc = run_cli("quantize", str(model), "--calib", str(calib), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Div" not in ops
    report = check_support(load(out))
    fused = [n.op_type for n in report.nodes if n.integer]
    assert fused.count("QLinearAdd") == 3 and fused.count("QLinearMul") == 6, fused
    assert [n.op_type for n in report.fallbacks] == ["ReduceMean"]  # no integer kernel
    # and the first conv, over the 1-channel image, float by choice
    assert [n.op_type for n in report.float_nodes if n.chosen] == ["Conv"]
    assert _agreement(out, model, data) >= 0.99  # measured 0.995


@pytest.mark.slow  # trains a conv + attention model on Fashion-MNIST (~8 s), then the CLI
def test_convs_before_an_attention_block_run_in_integer(tmp_path) -> None:
    """Attention makes the default coverage 'weighted' (layers with weights only, float
    outputs: MatMul and Gemm have integer kernels with a float output). A Conv has none: its
    output is quantized too and read dequantized by every reader, or ONNX Runtime runs it in
    float between a DequantizeLinear and a QuantizeLinear (measured: 1.05x FP32 latency before,
    0.66x after; at batch 32 on two threads 1.74x -> 0.67x). Decisions stay FP32's."""
    import json

    from edgequant.analysis.support import check_support
    from edgequant.model import load

    model, calib, data = _fashion_trained(tmp_path, "ConvAttentionNet", 10000)
    out = tmp_path / "ca.int8.onnx"
    proc = run_cli("quantize", str(model), "--calib", str(calib), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.with_name("ca.int8.quant.json").read_text())["coverage"] == "weighted"
    report = check_support(load(out))
    # every conv integer but the first, over the 1-channel image (float by choice)
    assert [n.op_type for n in report.nodes if n.integer].count("QLinearConv") == 2
    assert [n.chosen for n in report.float_nodes if "Conv" in n.op_type] == [True]
    assert _agreement(out, model, data) >= 0.99  # measured 0.997


@pytest.mark.slow  # trains a conv + BiLSTM recogniser on Fashion-MNIST (~9 s), then the CLI
def test_lstm_weights_go_int8_through_ort_dynamic_lstm(tmp_path) -> None:
    """A CRNN-style model (convs read column by column by a BiLSTM): ONNX Runtime has no QDQ
    fusion for LSTM, so the default quantize writes its weights as int8 for the
    DynamicQuantizeLSTM kernel (the BiLSTM held 70% of the weights in float: the INT8 file was
    97% of FP32, now 27%; 1.04x -> 0.71x FP32 latency), and keeps FP32's decisions. The
    dynamic method does the same; --exclude keeps it float by name."""

    from edgequant.analysis.support import check_support
    from edgequant.model import load

    model, calib, data = _fashion_trained(tmp_path, "ConvBiLSTM", 10000)
    for method in ("static", "dynamic"):
        out = tmp_path / f"crnn.{method}.onnx"
        proc = run_cli("quantize", str(model), "--calib", str(calib), "--method", method, "-o",
                       str(out))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size < 0.30 * model.stat().st_size
        proto = onnx.load(str(out))
        lstm = next(n for n in proto.graph.node if n.op_type == "DynamicQuantizeLSTM")
        codes = {i.name: i for i in proto.graph.initializer}[lstm.input[1]]
        assert codes.data_type == onnx.TensorProto.INT8 and list(codes.dims) == [2, 224, 256]
        report = {n.name: n for n in check_support(load(out)).nodes}
        assert report["/lstm/LSTM"].integer and report["/lstm/LSTM"].macs > 0
        assert _agreement(out, model, data) >= 0.99  # measured 0.997 and 0.998
    out = tmp_path / "crnn.kept.onnx"
    proc = run_cli("quantize", str(model), "--calib", str(calib), "--exclude", "/lstm/LSTM",
                   "-o", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "LSTM" in [n.op_type for n in onnx.load(str(out)).graph.node]
