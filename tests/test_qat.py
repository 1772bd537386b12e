"""QAT: fake-quant math, BN folding, placement, and export through the one exporter.

The differential test runs the torch fake-quant model and its exported QDQ model (ONNX Runtime's
integer kernels) on the full Fashion-MNIST test set.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import edgequant as eq
from edgequant.errors import DataError
from edgequant.primitives import fake_quantize, scale_zero_point
from edgequant.qat.fake_quant import fake_quant_learned
from edgequant.qat.modules import Mode, QuantConv
from edgequant.qat.prepare import mode
from edgequant.runtime.session import make_session
from edgequant.spec import QType, QuantSpec, Symmetry
from tests.test_static import fused_ops, op_counts


def test_fake_quant_forward_matches_the_primitives() -> None:
    spec = QuantSpec(QType.UINT8, Symmetry.AFFINE)
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 3
    scale, zp = scale_zero_point(-2.0, 5.0, spec)
    ours = fake_quant_learned(
        torch.from_numpy(x), torch.tensor([float(scale)]), torch.tensor([float(zp)]), 0, 255
    )
    np.testing.assert_array_equal(ours.numpy(), fake_quantize(x, scale, zp, spec))


def test_lsq_gradients() -> None:
    """STE for x inside the range, zero outside; LSQ's scale gradient (Esser et al. 2019, eq. 3)."""
    x = torch.tensor([0.26, 0.5, 10.0, -3.0], requires_grad=True)
    s = torch.tensor([0.1], requires_grad=True)
    y = fake_quant_learned(x, s, torch.tensor([0.0]), 0, 15)
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    # inside: round(x/s) - x/s = 3 - 2.6 = 0.4 and 5 - 5 = 0; clipped: 15 above, 0 below
    expected = (0.4 + 0.0 + 15.0 + 0.0) / np.sqrt(4 * 15)
    assert s.grad.item() == pytest.approx(expected, rel=1e-4)


def test_bn_folding_is_exact() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 6, 6)
    ref = bn.eval()(conv(x))
    folded = QuantConv(conv, bn, eq.QATConfig.int8().weights, bn_freeze_steps=0).eval()
    with mode(folded, Mode.OBSERVE), torch.no_grad():
        torch.testing.assert_close(folded(x), ref, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def qat_model(calibration):
    from edgequant.zoo.train import demo_model

    return eq.prepare_qat(demo_model(), eq.QATConfig.int8(), calibration=calibration)


def test_placement_matches_ptq(qat_model, int8_model) -> None:
    """Same quantization points as PTQ: the exported graphs have the same Q/DQ structure."""
    exported = eq.export(qat_model, torch.zeros(1, 1, 28, 28), "qat")
    assert op_counts(exported.proto) == op_counts(int8_model.proto)
    fused = fused_ops(exported)
    from edgequant.zoo.train import demo_model

    convs = sum(isinstance(m, torch.nn.Conv2d) for m in demo_model().modules())
    skips = sum(getattr(m, "use_skip", False) for m in demo_model().modules())
    assert (convs, skips) == (29, 5)  # the demo EdgeCNN
    # every conv integer but the first, over the 1-channel image (float by choice, as in PTQ)
    assert fused["QLinearConv"] == convs - 1 and fused["Conv"] == 1
    assert fused["QLinearAdd"] == skips
    assert list(eq.qat_state(qat_model).float_layers) == ["features.0.0"]


# Differential checks compare torch fake-quant and ONNX Runtime on the first 5,000 test images:
# the fake-quant forward in torch takes ~3 s per 1,000 (half of a full-set run's minute).
DIFFERENTIAL = 5000


def torch_logits(model, images: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [model(torch.from_numpy(images[i : i + 1000])) for i in range(0, len(images), 1000)]
        ).numpy()


def onnx_logits(model, images: np.ndarray) -> np.ndarray:
    sess = make_session(model)
    return np.concatenate(
        [sess.run(None, {"input": images[i : i + 1000]})[0] for i in range(0, len(images), 1000)]
    )


@pytest.mark.slow
def test_exported_model_agrees_with_fake_quant(qat_model, fmnist) -> None:
    """Differential: torch fake-quant vs the exported model in ONNX Runtime."""
    _, test = fmnist
    eq.finetune(
        qat_model, eq.ArrayDataset(test.images[:640], test.labels[:640], 64), lr=1e-4, max_steps=5
    )
    exported = eq.export(qat_model, torch.zeros(1, 1, 28, 28), "qat")
    images, labels = test.images[:DIFFERENTIAL], test.labels[:DIFFERENTIAL]
    ref = torch_logits(qat_model, images)
    got = onnx_logits(exported, images)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.995
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
    acc_torch, acc_onnx = (
        (ref.argmax(1) == labels).mean(),
        (got.argmax(1) == labels).mean(),
    )
    assert abs(acc_torch - acc_onnx) <= 0.002


def test_finetune_stops_on_nan(calibration) -> None:
    from edgequant.zoo.train import demo_model

    model = eq.prepare_qat(demo_model(), eq.QATConfig.int8(), calibration=calibration)
    x = np.full((8, 1, 28, 28), np.nan, np.float32)
    with pytest.raises(DataError, match="loss became nan"):
        eq.finetune(model, eq.ArrayDataset(x, np.zeros(8, np.int64), 8), max_steps=2)


def test_unsupported_layers_are_listed() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose2d(1, 2, 2, stride=2)
            self.fc = nn.Linear(2 * 8 * 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.up(x), 1))

    model = eq.prepare_qat(Net(), eq.QATConfig.int8())
    float_layers = eq.qat_state(model).float_layers
    assert "up" in float_layers and "not supported" in float_layers["up"]
    assert not hasattr(model, "float_layers") and not hasattr(model, "qat_config")  # no patching
    kinds = collections.Counter(type(m).__name__ for m in model.modules())
    assert kinds["QuantLinear"] == 1


def test_ptq_starts_from_the_same_torch_module(calibration, fp32_model, int8_model) -> None:
    """eq.quantize on the nn.Module exports it first: the same model as PTQ on its ONNX export."""
    from edgequant.zoo.train import demo_model

    q = eq.quantize(
        demo_model(),
        eq.PTQConfig.int8(),
        calibration=calibration,
        example_input=torch.zeros(1, 1, 28, 28),
    )
    assert q.serialize() == int8_model.serialize()
    with pytest.raises(eq.EdgeQuantError, match="example_input"):
        eq.quantize(demo_model(), eq.PTQConfig.int8(), calibration=calibration)


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    calibration, fmnist, tmp_path
) -> None:
    """Same seed: stop at step 5 (checkpoint at 4), resume, and end bit-identical to a clean run."""
    from edgequant.zoo.train import demo_model

    train, _ = fmnist
    data = eq.ArrayDataset(train.images[:512], train.labels[:512], 64)
    fresh = eq.prepare_qat(demo_model(), eq.QATConfig.int8(), calibration=calibration)
    base = {k: v.clone() for k, v in fresh.state_dict().items()}
    eq.finetune(fresh, data, epochs=2, lr=1e-3, seed=3)

    def stop_at_5(stage: str, done: int, total: int | None) -> None:
        if done == 5:
            raise KeyboardInterrupt

    resumed = eq.prepare_qat(demo_model(), eq.QATConfig.int8(), calibration=calibration)
    resumed.load_state_dict(base)
    with pytest.raises(KeyboardInterrupt):
        eq.finetune(
            resumed,
            data,
            epochs=2,
            lr=1e-3,
            seed=3,
            checkpoint_dir=tmp_path,
            checkpoint_every=2,
            progress=stop_at_5,
        )
    again = eq.prepare_qat(demo_model(), eq.QATConfig.int8(), calibration=calibration)
    again.load_state_dict(base)
    losses = eq.finetune(
        again, data, epochs=2, lr=1e-3, seed=3, checkpoint_dir=tmp_path, checkpoint_every=2
    )
    assert len(losses) == 16 - 4  # 8 steps per epoch, resumed after step 4
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_corrupt_checkpoint_is_a_clear_error(calibration, fmnist, tmp_path) -> None:
    from edgequant.qat.train import CHECKPOINT
    from edgequant.zoo.train import demo_model

    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    train, _ = fmnist
    model = eq.prepare_qat(demo_model(), eq.QATConfig.int8(), calibration=calibration)
    with pytest.raises(DataError, match="cannot resume"):
        eq.finetune(
            model,
            eq.ArrayDataset(train.images[:64], train.labels[:64], 64),
            checkpoint_dir=tmp_path,
        )


@pytest.mark.slow
def test_w4a8_exports_int4_weights(calibration, fmnist) -> None:
    """4-bit weights are stored as INT4 (opset 21) and the export agrees with the fake-quant model.

    Tolerance 99%: ONNX Runtime has no fused int4 convolution, so it runs these convs in float
    between integer-kernel neighbours whose requantization rounds differently from the simulation.
    """
    from edgequant.zoo.train import demo_model

    _, test = fmnist
    model = eq.prepare_qat(
        demo_model(), eq.QATConfig.w4a8(overrides=(("classifier", 8),)), calibration=calibration
    )
    exported = eq.export(model, torch.zeros(1, 1, 28, 28), "w4a8")
    inits = {i.name: i for i in exported.proto.graph.initializer}
    stored = collections.Counter(
        inits[n.input[0]].data_type
        for n in exported.proto.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits
    )
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in demo_model().modules())
    assert stored[onnx.TensorProto.INT4] == convs - 1 and stored[onnx.TensorProto.INT8] == 1
    # (the classifier kept at 8 bits; the first conv, over the 1-channel image, float)
    assert exported.proto.opset_import[0].version == 21
    ref = torch_logits(model, test.images[:DIFFERENTIAL])
    got = onnx_logits(exported, test.images[:DIFFERENTIAL])
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99


def test_moving_minmax_follows_batch_ranges() -> None:
    """Range tracking (Jacob et al. 2018): an exponential moving average of batch min and max,
    starting from the calibrated range, updated in training only; the scale is not learned."""
    from edgequant.config import ACTIVATIONS_UINT8, Calibrator
    from edgequant.qat.config import RangeLearning
    from edgequant.qat.modules import ActivationQuantizer

    q = ActivationQuantizer(ACTIVATIONS_UINT8, RangeLearning.MOVING_MINMAX, momentum=0.1)
    q.start_observing(Calibrator.MINMAX)
    with mode(q, Mode.OBSERVE):
        q(torch.linspace(0, 1, 101))
    q.finish_observing(Calibrator.MINMAX)
    assert q.scale.item() == pytest.approx(1 / 255)
    assert not q.scale.requires_grad
    q.train()
    q(torch.tensor([-1.0, 3.0]))
    lo, hi = -0.1, 1 + 0.1 * (3 - 1)
    assert q.running_range.tolist() == pytest.approx([lo, hi])
    assert q.scale.item() == pytest.approx((hi - lo) / 255, rel=1e-6)
    q.eval()
    q(torch.tensor([-5.0, 10.0]))
    assert q.running_range.tolist() == pytest.approx([lo, hi])


@pytest.mark.slow
def test_w4a4_exports_uint4_activations(calibration, fmnist) -> None:
    """W4A4: 4-bit weights (int4) and 4-bit activations (uint4) in the exported graph, which
    ONNX Runtime runs (through float: it has no 4-bit activation kernels) in agreement with the
    fake-quant model. This needs the bias on the runtime's int32 grid in the fake-quant model:
    with a float bias, agreement was 85% (measured)."""
    from edgequant.zoo.train import demo_model

    _, test = fmnist
    model = eq.prepare_qat(demo_model(), eq.QATConfig.w4a4(), calibration=calibration)
    exported = eq.export(model, torch.zeros(1, 1, 28, 28), "w4a4")
    graph = exported.proto.graph
    inits = {i.name: i for i in graph.initializer}
    act_zero_points = collections.Counter(
        inits[n.input[2]].data_type for n in graph.node if n.op_type == "QuantizeLinear"
    )
    assert set(act_zero_points) == {onnx.TensorProto.UINT4} and act_zero_points.total() >= 20
    assert exported.proto.opset_import[0].version == 21
    ref = torch_logits(model, test.images[:DIFFERENTIAL])
    got = onnx_logits(exported, test.images[:DIFFERENTIAL])
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.995
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_fake_quant_bias_matches_the_exporter_grid() -> None:
    from edgequant.primitives import bias_scale, quantize_bias
    from edgequant.qat.fake_quant import fake_quant_bias

    rng = np.random.default_rng(0)
    b = rng.standard_normal(64).astype(np.float32)
    s_act, s_w = np.float32(0.37), (rng.random(64).astype(np.float32) + 0.01) / 7
    scale = bias_scale(s_act, s_w)
    expected = quantize_bias(b, scale).astype(np.float32) * scale
    got = fake_quant_bias(torch.from_numpy(b), torch.tensor([s_act]), torch.from_numpy(s_w))
    np.testing.assert_array_equal(got.numpy(), expected)


class ClipBlocks(nn.Module):
    """A conv over the image (float in both plans: one channel), Conv-BN-ReLU6, Conv-ReLU, a
    residual Add-ReLU, pooling and Linear-ReLU-Linear: every fold the planner knows (Relu,
    Clip(0, 6), after Conv, Add and Gemm)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
        )
        self.conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(4)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(self.conv(y) + y)
        return self.head(self.pool(y))


def _plan_summary(proto: onnx.ModelProto, plan) -> dict:
    """A plan by structure (tensor names differ between the two exports): who produces each
    quantized activation, how each weight is quantized, how many int32 biases, which folds."""
    from edgequant.graph.index import GraphIndex

    index = GraphIndex.of(proto.graph)

    def producer(t: str) -> str:
        node = index.producer.get(t)
        return node.op_type if node is not None else "input"

    return {
        "activations": sorted(producer(t) for t in plan.activations),
        "weights": sorted((tq.spec.qtype.value, type(tq.spec.granularity).__name__) for tq in plan.weights.values()),
        "biases": len(plan.biases),
        "folded": sorted(index.node(n).op_type for n in plan.folded),
    }  # fmt: skip


def test_ptq_and_qat_plans_agree_folds_included(calibration) -> None:
    """One planner: the same module planned by static PTQ (calibration) and by QAT (ranges
    observed on the same data) quantizes the same tensors and weights, stores the same int32
    biases and folds the same Relu and Clip(0, 6) nodes into their quantizers."""
    from edgequant.ptq.static import calibrate_static, plan_calibrated
    from edgequant.qat.export import plan_qat
    from edgequant.torch_onnx import to_onnx

    module = ClipBlocks().eval()
    example = torch.zeros(1, 1, 28, 28)
    fp32 = to_onnx(module, example, "blocks")
    config = eq.PTQConfig.int8(calibrator=eq.Calibrator.MINMAX)
    ptq = plan_calibrated(calibrate_static(fp32, config, calibration))
    qat = eq.prepare_qat(ClipBlocks(), eq.QATConfig.int8(), calibration=calibration)
    qat_proto, qat_plan = plan_qat(qat, example)
    ptq_summary = _plan_summary(ptq.proto, ptq.plan)
    assert _plan_summary(qat_proto, qat_plan) == ptq_summary
    assert ptq_summary["folded"] == ["Clip", "Relu", "Relu", "Relu"]
    assert ptq_summary["biases"] == 4  # every layer's bias (the writer keeps Conv's float)


def test_an_activation_that_cannot_fold_lends_its_quantizer_exactly(calibration, fmnist) -> None:
    """Symmetric int8 activations: zero-point 0 is not qmin, so no Relu/Clip folds; each lends
    its output's quantizer to its input, and the exported model still computes what torch's
    fake-quant model does (quantize, clip, requantize on one grid = clip, then quantize)."""
    from edgequant.qat.export import plan_qat

    symmetric = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, eq.PerTensor())
    qat = eq.prepare_qat(
        ClipBlocks(), eq.QATConfig.int8(activations=symmetric), calibration=calibration
    )
    proto, plan = plan_qat(qat, torch.zeros(1, 1, 28, 28))
    assert plan.folded == []
    acts = [n for n in proto.graph.node if n.op_type in ("Relu", "Clip")]
    assert len(acts) == 4 and all(
        plan.activations[n.input[0]] is plan.activations[n.output[0]] for n in acts
    )
    exported = eq.export(qat, torch.zeros(1, 1, 28, 28), "lent")
    images = fmnist[1].images[:1000]
    qat.eval()
    with torch.no_grad():
        ref = qat(torch.from_numpy(images)).numpy()
    got = make_session(exported).run(None, {exported.input_names[0]: images})[0]
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


class SamePaddingNet(nn.Module):
    """An EfficientNet-style CNN whose convs are the `nn.Conv2d` subclass of a real package
    (efficientnet-lite-pytorch's TensorFlow "same" padding: it pads in its own forward)."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding as Same

        torch.manual_seed(0)
        self.stem = Same(1, 16, 3, stride=2, image_size=28, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.dw = Same(16, 16, 3, stride=1, image_size=14, groups=16, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.pw = Same(16, 32, 1, image_size=14)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.bn1(self.stem(x)))
        x = nn.functional.relu6(self.bn2(self.dw(x)))
        x = nn.functional.relu6(self.pw(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_conv_subclasses_are_quantized_and_exported_faithfully(calibration, fmnist) -> None:
    """Issue 14: `prepare_qat` used to trace through `nn.Conv2d` subclasses and skip them all
    (then export failed). Each becomes a QuantConv that keeps the subclass's own padding: right
    after the warm start the export agrees with the float model as PTQ does (>= 98%; measured
    98.6% for both, on a small net trained here to 54% top-1), and after fine-tuning with
    torch's fake quantization on 99.5% of 5,000 test images."""
    from edgequant.exporter.select import FEW_CHANNELS_REASON
    from edgequant.qat.modules import QuantConv

    train, test = fmnist
    net = SamePaddingNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(train.images[:6400]), torch.from_numpy(train.labels[:6400])
    for i in [*range(0, 6400, 64)] * 3:  # three epochs over 6,400 real images
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i : i + 64]), y[i : i + 64]).backward()
        opt.step()
    images = test.images[:DIFFERENTIAL]
    fp32 = torch_logits(net, images)
    model = eq.prepare_qat(net, eq.QATConfig.int8(), calibration=calibration)
    assert sum(isinstance(m, QuantConv) for m in model.modules()) == 3
    # the stem reads the 1-channel image: float, as PTQ leaves it; the other two quantized
    assert eq.qat_state(model).float_layers == {"stem": FEW_CHANNELS_REASON}
    warm = eq.export(model, torch.zeros(1, 1, 28, 28), "same")
    assert "Pad" in {n.op_type for n in warm.proto.graph.node}  # the subclass's padding
    assert (onnx_logits(warm, images).argmax(1) == fp32.argmax(1)).mean() >= 0.98
    eq.finetune(model, eq.ArrayDataset(train.images[:640], train.labels[:640], 64), lr=1e-4,
                max_steps=5)  # fmt: skip
    exported = eq.export(model, torch.zeros(1, 1, 28, 28), "same")
    ref, got = torch_logits(model, images), onnx_logits(exported, images)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.995


@pytest.mark.parametrize("pooled", [False, True])
def test_raw_signal_conv_is_planned_alike_by_ptq_and_qat(pooled: bool) -> None:
    """A conv over a 1-channel image stays float in both plans, unless a pool reads it (then
    both quantize it: the float path would pool floats at full resolution, measured slower)."""
    from edgequant.exporter.select import FEW_CHANNELS_REASON, select
    from edgequant.graph.index import GraphIndex
    from edgequant.graph.preprocess import optimize
    from edgequant.torch_onnx import to_onnx

    torch.manual_seed(0)
    pool = [nn.MaxPool2d(2)] if pooled else [nn.Identity()]
    side = 14 if pooled else 28
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), *pool,
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * side * side, 10),
    ).eval()  # fmt: skip
    qat_floats = eq.qat_state(eq.prepare_qat(net, eq.QATConfig.int8())).float_layers
    graph = optimize(to_onnx(net, torch.zeros(1, 1, 28, 28), "raw")).proto.graph
    ptq_floats = select(graph, GraphIndex.of(graph), raw_signal_float=True).float_nodes
    ptq_convs = [name for name, why in ptq_floats.items() if why == FEW_CHANNELS_REASON]
    if pooled:
        assert qat_floats == {} and ptq_convs == []
    else:
        assert qat_floats == {"0": FEW_CHANNELS_REASON} and len(ptq_convs) == 1
