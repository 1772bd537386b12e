"""`prepare_qat`: insert fake quantization into an ordinary nn.Module, where PTQ would quantize.

The model is traced with torch.fx. Conv(+BatchNorm) and Linear become QuantConv/QuantLinear;
activation quantizers go on the inputs of weighted layers, on the outputs of weighted layers,
additions and average pooling (after a following ReLU when there is one, which the deployed
quantizer then performs), while max-pooling, flatten and reshape pass quantized values through.
Layers QAT cannot handle stay in float and are listed in `eq.qat_state(model).float_layers`. A model whose
forward cannot be traced as a whole (a shape check is enough) is prepared child by child.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from edgequant.data import as_batches
from edgequant.errors import ConfigError, DataError
from edgequant.exporter.select import FEW_CHANNELS_REASON, is_raw_signal_conv
from edgequant.qat.config import QATConfig
from edgequant.qat.modules import ActivationQuantizer, Mode, QuantConv, QuantLinear
from edgequant.qat.state import QATState, attach
from edgequant.spec import QuantSpec

_CONVS = (nn.Conv1d, nn.Conv2d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d)
# activations that clip at zero (Relu, Clip(0, c) in ONNX): quantized after them, as PTQ does,
# so the exporter folds them into the quantizer when its range allows (`planner.plan_folds`)
_RELUS_MODULE = (nn.ReLU,)
_RELU_FUNCS = {torch.relu, nn.functional.relu, nn.functional.relu6}
_ADDS = {operator.add, torch.add}
_AVG_MODULES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AvgPool2d)
_PASS_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout)
_PASS_FUNCS = {torch.flatten, nn.functional.max_pool2d, nn.functional.max_pool1d}
_PASS_METHODS = {"flatten", "view", "reshape", "squeeze", "unsqueeze"}


def prepare_qat(
    model: nn.Module, config: QATConfig, *, calibration: Iterable[Any] | None = None
) -> nn.Module:
    """A copy of `model` with fake quantization; ranges warm-started from `calibration` batches
    (strongly recommended: a few hundred samples, as for PTQ).

    The copy is traced with torch.fx. A module whose forward cannot be traced (a shape check,
    data-dependent branches) keeps its own forward and its children are prepared one by one;
    a leaf that cannot be traced stays in float and is listed in
    `eq.qat_state(model).float_layers`."""
    import copy

    float_layers: dict[str, str] = {}
    prepared = _prepare_module(copy.deepcopy(model), config, float_layers, "")
    samples = 0 if calibration is None else warm_start(prepared, calibration, config)
    attach(prepared, QATState(config, float_layers, samples))  # eq.qat_state(prepared)
    return prepared


def _prepare_module(
    module: nn.Module, config: QATConfig, float_layers: dict[str, str], prefix: str
) -> nn.Module:
    name = prefix.rstrip(".")
    if prefix and isinstance(module, _CONVS):  # a layer of a parent that cannot be traced
        spec = _conv_spec(module, config, name, float_layers)
        return QuantConv(module, None, spec, config.bn_freeze_steps)
    if prefix and isinstance(module, nn.Linear):
        return QuantLinear(module, config.weight_spec_for(name))
    try:
        tracer = _Tracer()
        gm = fx.GraphModule(module, tracer.trace(module), type(module).__name__)
    except Exception as exc:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        children = list(module.named_children())
        if not children and not prefix:
            raise ConfigError(
                f"QAT cannot trace this model with torch.fx ({why}); keep data-dependent "
                "control flow out of forward()"
            ) from None
        if not children:
            if any(True for _ in module.parameters()):
                float_layers[prefix.rstrip(".")] = f"cannot be traced ({why}): stays in float"
            return module
        for name, child in children:
            setattr(module, name, _prepare_module(child, config, float_layers, f"{prefix}{name}."))
        return module
    _swap_weighted(gm, config, float_layers, prefix)
    _insert_quantizers(gm, config)
    gm.graph.lint()
    gm.recompile()
    return gm


class _Tracer(fx.Tracer):
    """torch.fx's tracer with every Conv and Linear a leaf, subclasses from other packages too
    (EfficientNet ports subclass nn.Conv2d for "same" padding): fx would trace through them
    into F.conv2d calls and QAT would skip them silently."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (*_CONVS, nn.Linear)) or super().is_leaf_module(m, qualname)


def _modules(gm: fx.GraphModule) -> dict[str, nn.Module]:
    return dict(gm.named_modules())


def _swap_weighted(
    gm: fx.GraphModule, config: QATConfig, float_layers: dict[str, str], prefix: str
) -> None:
    mods = _modules(gm)
    erased: set[fx.Node] = set()
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node in erased:
            continue
        mod = mods[node.target]
        if isinstance(mod, _CONVS):
            users = list(node.users)
            bn_node = (
                users[0]
                if len(users) == 1
                and users[0].op == "call_module"
                and isinstance(mods[users[0].target], _BNS)
                else None
            )
            bn = mods[bn_node.target] if bn_node is not None else None
            spec = _conv_spec(mod, config, prefix + node.target, float_layers, _pooled(node, mods))
            _set(gm, node.target, QuantConv(mod, bn, spec, config.bn_freeze_steps))
            if bn_node is not None:
                bn_node.replace_all_uses_with(node)
                gm.graph.erase_node(bn_node)
                erased.add(bn_node)
        elif isinstance(mod, nn.Linear):
            _set(gm, node.target, QuantLinear(mod, config.weight_spec_for(prefix + node.target)))
        elif isinstance(mod, _BNS):
            float_layers[prefix + node.target] = (
                "BatchNorm not directly after a Conv stays in float"
            )
        elif isinstance(
            mod, nn.ConvTranspose2d | nn.Conv3d | nn.LSTM | nn.GRU | nn.MultiheadAttention
        ):
            float_layers[prefix + node.target] = (
                f"{type(mod).__name__} is not supported by QAT yet: it stays in float"
            )


def _conv_spec(
    conv: nn.Conv1d | nn.Conv2d,
    config: QATConfig,
    name: str,
    float_layers: dict[str, str],
    pooled: bool = False,
) -> QuantSpec | None:
    """The conv's weight spec, or None where PTQ leaves it float too (`is_raw_signal_conv`:
    a first layer on pixels or audio, not `pooled` after it) unless the config names it in
    `overrides`."""
    raw = not pooled and is_raw_signal_conv(conv.in_channels, tuple(conv.kernel_size), conv.groups)
    if raw and name not in dict(config.overrides):
        float_layers[name] = FEW_CHANNELS_REASON
        return None
    return config.weight_spec_for(name)


_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, *_AVG_MODULES[2:])
_POOL_FUNCS = {
    nn.functional.max_pool1d,
    nn.functional.max_pool2d,
    nn.functional.avg_pool1d,
    nn.functional.avg_pool2d,
}


def _pooled(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    """Whether the conv at `node` feeds a pool, directly or through its BatchNorm and ReLU (as
    `select.feeds_pooling` decides for PTQ)."""
    for _ in range(3):
        users = list(node.users)
        if len(users) != 1:
            return False
        node = users[0]
        if node.op == "call_module" and isinstance(mods.get(node.target), _POOL_MODULES):
            return True
        if node.op == "call_function" and node.target in _POOL_FUNCS:
            return True
        steps = node.op == "call_module" and isinstance(mods.get(node.target), _BNS)
        if not (steps or _is_relu(node, mods)):
            return False
    return False


def _set(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent_name, _, child = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, child, module)


def _insert_quantizers(gm: fx.GraphModule, config: QATConfig) -> None:
    mods = _modules(gm)
    quantized: set[fx.Node] = set()
    counter = [0]

    def quantize_after(node: fx.Node) -> fx.Node:
        name = f"act_quant_{counter[0]}"
        counter[0] += 1
        gm.add_module(
            name, ActivationQuantizer(config.activations, config.ranges, config.range_momentum)
        )
        with gm.graph.inserting_after(node):
            q = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda user: user is not q)
        quantized.add(q)
        return q

    def ensure_input(node: fx.Node, arg: Any) -> None:
        if isinstance(arg, fx.Node) and arg not in quantized:
            quantize_after(arg)

    def output_point(node: fx.Node) -> fx.Node:
        users = list(node.users)
        if len(users) == 1 and _is_relu(users[0], mods):
            return users[0]
        return node

    for node in list(gm.graph.nodes):
        if node.op == "output" or node in quantized:
            continue
        if _is_weighted(node, mods) or _is_add(node) or _is_avg(node, mods):
            float_conv = _is_weighted(node, mods) and mods[node.target].spec is None
            for arg in [] if float_conv else node.args if _is_add(node) else node.args[:1]:
                ensure_input(node, arg)
            if _is_weighted(node, mods) and not float_conv:
                # the bias grid depends on the input scale (see modules._bias)
                mods[node.target].state.input_quantizer = _source_quantizer(gm, node.args[0])
            point = output_point(node)
            if not _feeds_output(point):
                quantize_after(point)
        elif (
            _is_pass(node, mods) and isinstance(node.args[0], fx.Node) and node.args[0] in quantized
        ):
            quantized.add(node)


def _source_quantizer(gm: fx.GraphModule, node: Any) -> ActivationQuantizer | None:
    """The activation quantizer whose values reach `node` (through pass-through ops)."""
    while isinstance(node, fx.Node):
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, ActivationQuantizer):
                return mod
            if not isinstance(mod, _PASS_MODULES):
                return None
        elif not (node.op in ("call_function", "call_method") and _is_pass(node, {})):
            return None
        node = node.args[0] if node.args else None
    return None


def _is_weighted(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(mods.get(node.target), QuantConv | QuantLinear)


def _is_relu(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        mod = mods.get(node.target)
        clips_at_zero = isinstance(mod, nn.Hardtanh) and mod.min_val == 0.0  # ReLU6 is one
        return isinstance(mod, _RELUS_MODULE) or clips_at_zero
    return node.op == "call_function" and node.target in _RELU_FUNCS


def _is_add(node: fx.Node) -> bool:
    return (
        node.op == "call_function"
        and node.target in _ADDS
        and all(isinstance(a, fx.Node) for a in node.args[:2])
    )


def _is_avg(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(mods.get(node.target), _AVG_MODULES)


def _is_pass(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(mods.get(node.target), _PASS_MODULES)
    if node.op == "call_function":
        return node.target in _PASS_FUNCS
    return node.op == "call_method" and node.target in _PASS_METHODS


def _feeds_output(node: fx.Node) -> bool:
    """Graph outputs stay float (as in PTQ): the logits are not requantized."""
    return any(user.op == "output" for user in node.users)


def _set_mode(model: nn.Module, mode: Mode) -> None:
    for mod in model.modules():
        if isinstance(mod, ActivationQuantizer | QuantConv | QuantLinear):
            mod.mode = mode


@contextmanager
def mode(model: nn.Module, new: Mode) -> Iterator[nn.Module]:
    """Switch every quantizer to `new` for the block; always restored, even on an exception."""
    _set_mode(model, new)
    try:
        yield model
    finally:
        _set_mode(model, Mode.QUANT)


def warm_start(model: nn.Module, calibration: Iterable[Any], config: QATConfig) -> int:
    """PTQ warm start: observe activations on float-weight forward passes, set every scale and
    zero-point with `config`'s PTQ calibrator. Returns the number of samples seen."""
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    samples = 0
    was_training = model.training
    model.eval()
    with mode(model, Mode.OBSERVE), torch.no_grad():
        for q in quantizers:
            q.start_observing(config.calibrator)
        for batch in as_batches(calibration):
            x = torch.as_tensor(batch)
            model(x)
            samples += len(x)
        if samples == 0:
            raise DataError("the calibration data for the QAT warm start is empty")
        for q in quantizers:
            q.finish_observing(config.calibrator)
    model.train(was_training)
    return samples
