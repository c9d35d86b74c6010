"""The int8 steps of an inference plan: eager-mode quantized modules on uint8 codes kept channels last.

Each step prepares once what the module recomputes per call -- the packed weight, ``functional.requant_params``,
the int32 overflow bound -- and then calls the same kernels as ``quant.functional`` on buffers of its own,
so its codes are the module's (held to it on every new input shape, ``_checked``)::

    Quantize      q = clamp(rint(fma(x, 1/s, z)), 0, 255)            kernels.quantize, then NHWC
    Conv(ReLU)2d  im2col (NHWC) -> qgemm_requant -> (N*OH*OW, OC)     = NHWC output, no transpose
                  dense, symmetric weights, VNNI / AVX2: conv_implicit.conv_requant (implicit GEMM, no im2col)
                  depthwise: depthwise_requant (fbgemm's int16 pairs where fbgemm sums in them, quant/host.py)
    Linear(ReLU)  qgemm_requant; after a Flatten of NHWC codes the weight columns are reordered (C,H,W) -> (H,W,C)
    ReLU          max(q, z);  MaxPool2d: max over the window (codes are monotone in the value)
    DeQuantize    s * (q - z) in float32, back in the logical layout
"""
from __future__ import annotations

import numpy as np

from ..nn import Dropout, Identity
from ..nn.functional.conv import conv_output_size
from ..nn.functional.pool import pool_output_size
from ..nn.layers._utils import ntuple
from ..quant import gemm, kernels, qops
from ..quant import functional as QF
from ..quant.modules import DeQuantize, Quantize, QuantizedConv2d, QuantizedConvReLU2d, QuantizedLinear
from ..quant.qmerge import QFunctional
from ..quant.passthrough import QuantizedAdaptiveAvgPool2d, QuantizedDropout, QuantizedFlatten, QuantizedMaxPool2d, QuantizedReLU
from ..quant.qtensor import dtype_range
from ..quant.rounding import DEFAULT_MODE, rule_for
from .kernels import global_avg_pool_nhwc, max_pool_nhwc
from .plan import Spec, Step, register_builder, register_merge_builder, to_logical


def _checked(step: Step, module, xs: list, specs: list, node=None) -> Step:
    """Run the step and its module on the example inputs (the module with the node's recorded arguments, if
    given); their outputs must be identical, code for code."""
    logical = [to_logical(x, s) for x, s in zip(xs, specs)]
    ours = to_logical(step(*xs), step.out_spec)
    theirs = module(*(node.replay(logical) if node is not None else logical))
    ours_codes = ours.int_repr if hasattr(ours, "int_repr") else ours
    theirs_codes = theirs.int_repr if hasattr(theirs, "int_repr") else theirs
    if ours_codes.shape != theirs_codes.shape or not np.array_equal(ours_codes, theirs_codes):
        raise RuntimeError(f"inference plan: the int8 step of {step.name} disagrees with the module on an input "
                           f"of shape {xs[0].shape}; please report this with the model")
    return step


class QuantizeStep(Step):
    def __init__(self, mod: Quantize, x: np.ndarray) -> None:
        self.name = mod._name()
        scale, zp = float(mod.scale[0]), int(mod.zero_point[0])
        self.s32 = np.array([scale], np.float32)
        self.inv, self.zp = np.float32(1.0) / self.s32, np.array([zp], np.int64)
        self.lo, self.hi = dtype_range("quint8")
        self.rule = rule_for(DEFAULT_MODE, "quint8", per_channel=False)
        self.codes = np.empty(x.shape, np.uint8)
        self.nhwc = np.empty((x.shape[0], *x.shape[2:], x.shape[1]), np.uint8) if x.ndim == 4 else None
        self.out_spec = Spec("nhwc" if x.ndim == 4 else "logical", None, (float(self.s32[0]), zp))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if np.isnan(x).any():
            raise ValueError(f"{self.name}: input contains NaN (PyTorch returns an unspecified code for NaN)")
        kernels.quantize(x.reshape(1, 1, -1), self.s32, self.inv, self.zp, self.lo, self.hi, self.rule,
                         self.codes.reshape(1, 1, -1))
        if self.nhwc is None:
            return self.codes
        if x.shape[1] == 1:                                   # one channel: NCHW and NHWC are the same bytes
            return self.codes.reshape(self.nhwc.shape)
        np.copyto(self.nhwc, self.codes.transpose(0, 2, 3, 1))
        return self.nhwc


class ConvStep(Step):
    """QuantizedConv2d / ConvReLU2d on NHWC codes: ``functional.PreparedConv2d`` built once per input shape."""

    def __init__(self, mod: QuantizedConv2d, x: np.ndarray, spec: Spec) -> None:
        self.name = mod._name()
        n, h, w, c = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            ntuple(v, 2, what, self.name) for v, what in ((mod.kernel_size, "kernel_size"), (mod.stride, "stride"),
                                                          (mod.padding, "padding"), (mod.dilation, "dilation")))
        oh, ow = conv_output_size(h, kh, sh, (ph, ph), dh), conv_output_size(w, kw, sw, (pw, pw), dw)
        packs = QF.pack_weight(mod.weight_qtensor(), mod.groups)
        scale, zp = float(mod.scale), int(mod.zero_point)
        self.conv = QF.PreparedConv2d(packs if isinstance(packs, list) else [packs],
                                      QF._bias(mod.bias, mod.out_channels, self.name), spec.qparams[0],
                                      spec.qparams[1], scale, zp,
                                      QF.ConvGeometry(n, h, w, c, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, mod.groups),
                                      bool(mod._relu), "fbgemm", "fbgemm")
        self.out = np.empty((n * oh * ow, mod.out_channels), np.uint8)
        self.out_shape = (n, oh, ow, mod.out_channels)
        self.out_spec = Spec("nhwc", None, (scale, zp), True)          # fbgemm's output is channels last

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.conv(np.ascontiguousarray(x), self.out, "warn", self.name).reshape(self.out_shape)


def fits_conv(conv, x: np.ndarray) -> bool:
    """Whether an NHWC x is a valid input of the convolution (else the module's own call says why not)."""
    pads = conv._pads() if hasattr(conv, "_pads") else tuple((p, p) for p in ntuple(conv.padding, 2, "padding", ""))
    sizes = [conv_output_size(size, k, s, pad, d) for size, k, s, pad, d in
             zip(x.shape[1:3], ntuple(conv.kernel_size, 2, "kernel_size", ""), ntuple(conv.stride, 2, "stride", ""),
                 pads, ntuple(conv.dilation, 2, "dilation", ""))]
    return x.shape[3] == conv.in_channels and min(sizes) >= 1


def _hwc_columns(chw: tuple) -> np.ndarray:
    """Index of each (H, W, C)-ordered column in the (C, H, W) order a Flatten of NCHW gives."""
    c, h, w = chw
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


class LinearStep(Step):
    """QuantizedLinear / LinearReLU on (..., K) codes; a 'flat_hwc' input reorders the weight columns -- or, where
    fbgemm sums int16 pairs (whose pairs follow the column order, ``quant/host.py``), the input's columns."""

    def __init__(self, mod: QuantizedLinear, x: np.ndarray, spec: Spec) -> None:
        self.name, self.relu = mod._name(), bool(mod._relu)
        self.in_scale, self.in_zp = spec.qparams
        self.scale, self.zp = float(mod.scale), int(mod.zero_point)
        wq = mod.weight_qtensor()
        self.pairs = QF.check_accumulation("fbgemm", self.name)
        self.gather = None
        if spec.layout == "flat_hwc" and self.pairs:
            self.gather = np.argsort(_hwc_columns(spec.chw))
        elif spec.layout == "flat_hwc":
            wq = type(wq)(np.ascontiguousarray(wq.int_repr[:, _hwc_columns(spec.chw)]), wq.scale, wq.zero_point,
                          wq.axis, wq.dtype)
        self.w = QF.pack_weight(wq)
        self.bias_term, self.mult = QF.requant_params(self.in_scale, self.w, QF._bias(mod.bias, mod.out_features,
                                                                                      self.name), self.scale)
        k = mod.in_features
        self.rows = x.size // k
        self.out = np.empty((self.rows, mod.out_features), np.uint8)
        self.out_shape = x.shape[:-1] + (mod.out_features,)
        self.check_overflow = max(self.in_zp, 255 - self.in_zp) * self.w.abs_dev_max > QF.INT32_MAX
        self.out_spec = Spec("logical", None, (self.scale, self.zp))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a = x.reshape(self.rows, -1)
        a = np.ascontiguousarray(a if self.gather is None else a[:, self.gather])
        if self.check_overflow:
            QF.check_int32_range(a, self.in_zp, (0, 255), self.w, self.name)
        clipped = gemm.qgemm_requant(a, self.w.codes, self.w.vnni, self.in_zp, self.w.col_offsets,
                                     self.w.zero_points, self.bias_term, self.mult, self.zp, self.relu, self.pairs,
                                     self.out)
        QF.warn_saturated(clipped, self.name, "the u8 x s8 GEMM", 2)
        return self.out.reshape(self.out_shape)


class ReLUStep(Step):
    """ReLU into a buffer of its own: max(x, 0), or max(q, z) for codes (the code of real 0 is z)."""

    def __init__(self, mod, x: np.ndarray, spec: Spec) -> None:
        self.name, self.out_spec, self.out = mod._name(), spec, np.empty(x.shape, x.dtype)
        self.floor = x.dtype.type(0 if spec.qparams is None else spec.qparams[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, self.floor, out=self.out)


def pooled_size(mod, x: np.ndarray) -> tuple[int, int] | None:
    """(OH, OW) of a MaxPool2d on an NHWC x, or None when the module itself must judge the input (too small,
    or padding above half the kernel, which it refuses)."""
    (kh, kw), stride, pad, dil = mod._args
    if any(p > k // 2 for p, k in zip(pad, (kh, kw))):
        return None
    sizes = tuple(pool_output_size(size, k, s, p, d, mod.ceil_mode) for size, k, s, p, d in
                  zip(x.shape[1:3], (kh, kw), stride, pad, dil))
    return sizes if min(sizes) >= 1 else None


class MaxPoolStep(Step):
    """Max pooling of NHWC arrays (codes or float: ``kernels.max_pool_nhwc``)."""

    def __init__(self, mod, x: np.ndarray, spec: Spec) -> None:
        self.name, self.out_spec = mod._name(), spec
        (self.kh, self.kw), self.stride, self.pad, self.dil = mod._args
        oh, ow = pooled_size(mod, x)
        self.out = np.empty((x.shape[0], oh, ow, x.shape[3]), x.dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        max_pool_nhwc(x, self.kh, self.kw, *self.stride, *self.pad, *self.dil, self.out)
        return self.out


class GlobalAvgPoolStep(Step):
    """QuantizedAdaptiveAvgPool2d(1) of channels-last codes (``kernels.global_avg_pool_nhwc``): PyTorch's NHWC
    rounding, output (N, 1, 1, C) NHWC with the input's qparams."""

    def __init__(self, mod, x: np.ndarray, spec: Spec) -> None:
        self.name, self.out_spec = mod._name(), spec
        n, h, w, c = x.shape
        s32 = np.float32(spec.qparams[0])
        self.inv = np.float32(1) / (np.float32(1) / np.float32(np.float32(s32 / s32) / np.float32(h * w)))
        self.vector, self.zp = c // 8 * 8, spec.qparams[1]
        self.out = np.empty((n, 1, 1, c), np.uint8)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        global_avg_pool_nhwc(x, self.zp, self.inv, self.vector, self.out.reshape(x.shape[0], -1))
        return self.out


class FlattenStep(Step):
    """Flatten(1, -1) of an NHWC activation: its bytes as they are, columns in (H, W, C) order."""

    def __init__(self, mod, x: np.ndarray, spec: Spec) -> None:
        self.name = mod._name()
        n, h, w, c = x.shape
        self.out_spec = Spec("flat_hwc", (c, h, w), spec.qparams)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)


class ReshapeStep(Step):
    """Flatten(start_dim, end_dim) of an activation in the logical layout: a reshape (a view)."""

    def __init__(self, mod, x: np.ndarray, spec: Spec) -> None:
        self.name, self.out_spec = mod._name(), spec
        s, e = mod.start_dim % x.ndim, mod.end_dim % x.ndim
        self.shape = (-1,) + x.shape[1:s] + (int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:] if s > 0 else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(self.shape)


def flatten_step(mod, x: np.ndarray, spec: Spec) -> Step | None:
    """The step of a Flatten, or None where the module must judge its arguments (or flattens the batch axis)."""
    n = x.ndim
    if not (-n <= mod.start_dim < n and -n <= mod.end_dim < n) or mod.start_dim % n > mod.end_dim % n:
        return None
    if spec.layout == "nhwc":
        return FlattenStep(mod, x, spec) if (mod.start_dim % n, mod.end_dim % n) == (1, 3) else None
    if spec.layout == "logical" and mod.start_dim % n > 0:
        return ReshapeStep(mod, x, spec)
    return None


class DeQuantizeStep(Step):
    def __init__(self, mod: DeQuantize, x: np.ndarray, spec: Spec) -> None:
        self.name, self.in_spec = mod._name(), spec
        self.scale = np.array([spec.qparams[0]], np.float64)
        self.zp = np.array([spec.qparams[1]], np.int64)
        self.out = np.empty(to_logical(x, spec).shape, np.float32)
        self.out_spec = Spec()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        codes = np.ascontiguousarray(to_logical(x, self.in_spec).int_repr)
        kernels.dequantize(codes.reshape(1, 1, -1), self.scale, self.zp, False, self.out.reshape(1, 1, -1))
        return self.out


class AddStep(Step):
    """QFunctional ``add`` / ``add_relu`` of two code arrays stored alike: ``kernels.qadd`` over their memory,
    which is the order PyTorch's vector body and scalar tail split (``qops.add``)."""

    def __init__(self, mod: QFunctional, relu: bool, x: np.ndarray, spec: Spec) -> None:
        self.name, self.relu = mod._name(), relu
        (self.sa, self.za), self.scale, self.zp = spec.qparams, *mod.qparams
        self.out = np.empty(x.shape, np.uint8)
        self.body_n = x.size // qops.BODY_STEP * qops.BODY_STEP
        self.out_spec = spec._replace(qparams=(float(self.scale), int(self.zp)))

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        kernels.qadd(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1), np.float32(self.sa),
                     self.za, np.float32(self.sb), self.zb, np.float32(self.scale), self.zp, 0, 255, self.relu,
                     self.body_n, self.out.reshape(-1))
        return self.out


@register_merge_builder
def add_step(node, ins: list, specs: list):
    """A QFunctional add of two quint8 activations of one shape, both NHWC as PyTorch's conv outputs are (or both
    in the logical layout): the plan's memory order is then PyTorch's. Anything else is a module call."""
    mod = node.module
    if type(mod) is not QFunctional or len(ins) != 2 or not node.args or node.args[0] not in ("add", "add_relu"):
        return None
    (a, b), (sa, sb) = ins, specs
    if (sa.qparams is None or sb.qparams is None or a.shape != b.shape or sa.layout != sb.layout
            or sa.layout not in ("nhwc", "logical") or (sa.layout == "nhwc") != (sa.torch_nhwc and sb.torch_nhwc)
            or (sa.layout == "logical" and a.ndim == 4)):
        return None
    step = AddStep(mod, node.args[0] == "add_relu", a, sa)
    step.sb, step.zb = sb.qparams
    return _checked(step, mod, ins, specs, node)


def _is(mod, *types) -> bool:
    return type(mod) in types


@register_builder
def int8_step(chain: list, i: int, x: np.ndarray, spec: Spec):
    """The step of chain[i] if it is an int8 module (or a module that passes codes through)."""
    mod = chain[i]
    if _is(mod, Quantize) and spec.qparams is None and spec.layout == "logical" and mod.dtype == "quint8":
        return _checked(QuantizeStep(mod, x), mod, [x], [spec]), 1
    if spec.qparams is None:
        return None
    if _is(mod, Identity, Dropout, QuantizedDropout):
        return _Pass(mod, spec), 1
    if _is(mod, QuantizedConv2d, QuantizedConvReLU2d) and spec.layout == "nhwc" and fits_conv(mod, x):
        return _checked(ConvStep(mod, x, spec), mod, [x], [spec]), 1
    if isinstance(mod, QuantizedLinear) and x.ndim >= 2 and x.shape[-1] == mod.in_features:
        return _checked(LinearStep(mod, x, spec), mod, [x], [spec]), 1
    if _is(mod, QuantizedReLU):
        return ReLUStep(mod, x, spec), 1
    if _is(mod, QuantizedMaxPool2d) and spec.layout == "nhwc" and pooled_size(mod, x) is not None:
        return _checked(MaxPoolStep(mod, x, spec), mod, [x], [spec]), 1
    if (_is(mod, QuantizedAdaptiveAvgPool2d) and spec.layout == "nhwc" and spec.torch_nhwc
            and ntuple(mod.output_size, 2, "output_size", mod._name()) == (1, 1)):
        return _checked(GlobalAvgPoolStep(mod, x, spec), mod, [x], [spec]), 1
    if _is(mod, QuantizedFlatten):
        step = flatten_step(mod, x, spec)
        return None if step is None else (step, 1)
    if _is(mod, DeQuantize):
        return DeQuantizeStep(mod, x, spec), 1
    return None


class _Pass(Step):
    """Identity, and Dropout in eval."""

    passthrough = True

    def __init__(self, mod, spec: Spec) -> None:
        self.name, self.out_spec = mod._name(), spec

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x

