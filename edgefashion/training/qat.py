"""Quantization-aware training with PyTorch's own tooling (torch.ao FX), for files that static INT8 breaks.

`train --qat --init-weights CKPT` fine-tunes a trained model with fake quantization (`prepare`); its checkpoints
rebuild the prepared model (`rebuild`); `export` writes the FP32 file from its float twin (`float_twin`) and the
INT8 QDQ file from the fake-quant model itself (`for_export`), then checks it as every INT8 file is checked.

The quantization is the portable target's: uint8 per-tensor activations, 7-bit per-channel symmetric weights (no
u8s8 sum can saturate on x86 without VNNI). Hard-swish, hard-sigmoid and the squeeze-excite multiply are left
unquantized: their float results differ by an ulp between x86 and ARM kernels, and rounding them to 8 bits right
there made 20 of 372 answers differ on a Pi 4 (benchmarks/README.md, "Quantization-aware training").
"""
from __future__ import annotations

import contextlib
import copy
import operator
import warnings

import torch
import torch.fx
import torch.nn as nn

from ..meta import ModelMeta

WEIGHT_QMIN, WEIGHT_QMAX = -64, 63  # 7 bits


def _bn_act_types() -> tuple:
    try:
        from timm.layers import BatchNormAct2d
        return (BatchNormAct2d,)
    except ImportError:  # timm is part of the training extra; without it only plain BatchNorm2d is folded
        return ()


class _Tracer(torch.fx.Tracer):
    """Keeps timm's BatchNormAct2d as one module, so that the Conv -> BN pairs are visible to fold_bn."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _bn_act_types()) or super().is_leaf_module(m, qualname)


def _set(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def fold_bn(model: nn.Module) -> torch.fx.GraphModule:
    """The model traced, with every BatchNorm that directly follows a convolution folded into it (eval
    statistics): QAT then trains the weights the INT8 file will hold. A BatchNormAct2d becomes its activation."""
    model.eval()
    gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        bn = mods.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, (nn.BatchNorm2d, *_bn_act_types())):
            continue
        prev = node.args[0]
        if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module"
                and isinstance(mods[prev.target], nn.Conv2d) and len(prev.users) == 1):
            continue
        _set(gm, prev.target, torch.nn.utils.fusion.fuse_conv_bn_eval(mods[prev.target], bn))
        _set(gm, node.target, nn.Sequential(bn.drop, bn.act) if isinstance(bn, _bn_act_types()) else nn.Identity())
    gm.recompile()
    return torch.fx.GraphModule(gm, torch.fx.symbolic_trace(gm).graph)


def qconfig_mapping(per_channel: bool = True, float_elementwise: bool = True):
    """train --qat's quantization (the defaults); benchmarks/qat_probe.py measures the alternatives."""
    from torch.ao.quantization import (FakeQuantize, MovingAverageMinMaxObserver,
                                       MovingAveragePerChannelMinMaxObserver, QConfig, QConfigMapping)
    # Plain FakeQuantize: the default fused observer (fused_moving_avg_obs_fake_quant) cannot be exported.
    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                 dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    if per_channel:
        weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=WEIGHT_QMIN,
                                        quant_max=WEIGHT_QMAX, dtype=torch.qint8,
                                        qscheme=torch.per_channel_symmetric, ch_axis=0)
    else:
        weight = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=WEIGHT_QMIN,
                                        quant_max=WEIGHT_QMAX, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    mapping = QConfigMapping().set_global(QConfig(activation=act, weight=weight))
    if float_elementwise:
        for kind in (nn.Hardswish, nn.Hardsigmoid, operator.mul, torch.mul, "mean"):
            mapping.set_object_type(kind, None)
    return mapping


def prepare(model: nn.Module, meta: ModelMeta, mapping=None) -> torch.fx.GraphModule:
    """`model` (trained weights) folded and prepared for QAT: fake quantization on weights and activations
    (`mapping`: qconfig_mapping()'s by default)."""
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    example = torch.zeros(2, meta.in_chans, meta.input_size, meta.input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch.ao's notice that FX quantization is in maintenance
        try:
            return prepare_qat_fx(fold_bn(model).train(), mapping or qconfig_mapping(), (example,))
        except torch.fx.proxy.TraceError as e:
            raise ValueError(f"--qat: {meta.model} cannot be traced for quantization-aware training ({e})") from None


def freeze_observers(model: nn.Module) -> None:
    """Fix the quantization ranges (the second half of a QAT run trains with the ranges the file will have)."""
    from torch.ao.quantization import disable_observer
    model.apply(disable_observer)


@contextlib.contextmanager
def observers_paused(model: nn.Module):
    """Fake quantization on, range observers off, for an evaluation: scoring the validation split must not
    move the ranges training learned."""
    from torch.ao.quantization import FakeQuantize
    saved = [(m, m.observer_enabled.clone()) for m in model.modules() if isinstance(m, FakeQuantize)]
    for m, _ in saved:
        m.observer_enabled[0] = 0
    try:
        yield model
    finally:
        for m, flag in saved:
            m.observer_enabled.copy_(flag)


def float_twin(model: nn.Module) -> nn.Module:
    """A copy computing in float (fake quantization and observers off): the FP32 file of a QAT run."""
    from torch.ao.quantization import disable_fake_quant, disable_observer
    twin = copy.deepcopy(model).eval()
    twin.apply(disable_observer)
    twin.apply(disable_fake_quant)
    return twin


def for_export(model: nn.Module) -> nn.Module:
    """A copy ready for the ONNX exporter, which writes each fake quantization as QuantizeLinear/
    DequantizeLinear. The exporter accepts int8's full range only, so the 7-bit weight quantizers are declared
    as -128..127: their scales are frozen, and the values stay within -64..63."""
    from torch.ao.quantization import FakeQuantize
    out = copy.deepcopy(model).eval()
    freeze_observers(out)
    with torch.no_grad():
        # The weights as their 7-bit grid values first: a weight the 7-bit quantizer clamped (to 63, say)
        # would otherwise become 64 under the wider range, unlike training, and could saturate on AVX2.
        for m in out.modules():
            fq = getattr(m, "weight_fake_quant", None)
            if isinstance(fq, FakeQuantize) and isinstance(getattr(m, "weight", None), torch.nn.Parameter):
                m.weight.copy_(fq(m.weight))
    for m in out.modules():
        if isinstance(m, FakeQuantize) and m.quant_min == WEIGHT_QMIN and m.quant_max == WEIGHT_QMAX:
            m.quant_min, m.quant_max = -128, 127
            m.activation_post_process.quant_min, m.activation_post_process.quant_max = -128, 127
    return out


def is_qat(config: dict | None) -> bool:
    """Whether a run's config (a checkpoint's "config") is a quantization-aware training run."""
    return bool((config or {}).get("qat"))


def fold_weight_quantizers(model_proto) -> int:
    """The exporter writes each weight as a float initializer followed by QuantizeLinear; store the int8 values
    instead (what onnxruntime computes from them anyway), so the file is the size of an INT8 file. Returns the
    number of weights folded. Works in place on an onnx.ModelProto."""
    import numpy as np
    from onnx import numpy_helper
    g = model_proto.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    # The exporter passes some weights through Identity nodes.
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity"}

    def value(name):
        while name in alias:
            name = alias[name]
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(next(a.t for a in consts[name].attribute if a.name == "value"))
        return None

    folded, keep = 0, []
    for node in g.node:
        w = value(node.input[0]) if node.op_type == "QuantizeLinear" else None
        scale = value(node.input[1]) if w is not None else None
        zp = value(node.input[2]) if w is not None and len(node.input) > 2 else None
        if w is None or scale is None or zp is None or w.dtype != np.float32:
            keep.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = scale.size
        s, z = scale.reshape(shape), zp.reshape(shape).astype(np.int32)
        info = np.iinfo(zp.dtype)
        # QuantizeLinear rounds half to even, as numpy does.
        q = np.clip(np.round(w / s) + z, info.min, info.max).astype(zp.dtype)
        g.initializer.append(numpy_helper.from_array(q, node.output[0]))
        folded += 1
    if folded:
        del g.node[:]
        g.node.extend(keep)
        for _ in range(2):  # Constants and Identities left without a consumer, then what fed them
            used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
            live_nodes = [n for n in g.node if n.op_type not in ("Constant", "Identity") or n.output[0] in used]
            del g.node[:]
            g.node.extend(live_nodes)
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        live = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(live)
    return folded
