"""The float steps of an inference plan: convolutions on the NHWC activations, BatchNorm folded.

    Conv2d [+ BatchNorm2d] [+ ReLU]     float32, column dilation 1: the implicit GEMM of ``conv_f32`` on the
                                        zero-padded input (kept between calls); otherwise im2col
                                        cols (N*OH*OW, KH*KW*C) @ W'^T (KH*KW*C, OC) + b' (one BLAS GEMM)
    depthwise Conv2d [+ BN] [+ ReLU]    one pass along the NHWC channels
    Linear [+ BatchNorm1d] [+ ReLU]     x @ W'^T + b' (after a Flatten of NHWC: columns reordered)
    FloatFunctional add / add_relu      one pass over two activations stored alike (the same bits)
    AdaptiveAvgPool2d(1)                the mean over H*W per channel of the NHWC activation
    ReLU, MaxPool2d, Flatten, Identity, Dropout (eval), QuantStub / DeQuantStub (identities in float)

W', b' = ``quant.fuse_conv_bn_weights`` / ``fuse_linear_bn_weights`` (what ``torch.jit.freeze`` and
onnxruntime fold): y = (W x + b - mean) gamma / sqrt(var + eps) + beta = W' x + b'. Folding, and summing in
another order than the engine's layers, moves results by float32 rounding only.
"""
from __future__ import annotations

import numpy as np

from ..nn import (AdaptiveAvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, FloatFunctional, Hardtanh,
                  Identity, Linear, MaxPool2d, ReLU, ReLU6)
from ..nn.functional.conv import conv_output_size
from ..quant import functional as QF
from ..quant import kernels
from ..quant.modules import DeQuantStub, DynamicQuantizedLinear, DynamicQuantizedLinearReLU, QuantStub
from ..quant.fuse import fuse_conv_bn_eval, fuse_linear_bn_eval
from .int8_steps import MaxPoolStep, ReLUStep, flatten_step, _hwc_columns, _Pass, fits_conv, pooled_size
from . import conv_f32
from .kernels import (add_bias_clamp, add_clamp_flat, batch_norm_rows, depthwise_step,
                      global_avg_pool_float_nhwc)
from .plan import Spec, Step, has_hooks, register_builder, register_merge_builder


def _next(chain: list, i: int, kind: type):
    """chain[i] if it is exactly ``kind`` and has no hooks, else None."""
    if i < len(chain) and type(chain[i]) is kind and not has_hooks(chain[i]):
        return chain[i]
    return None


def _foldable(bn) -> bool:
    return bn is not None and bn.running_mean is not None and bn.running_var is not None


NO_CLAMP = (-np.inf, np.inf)


def _activation(chain: list, j: int) -> tuple[tuple[float, float], int]:
    """The (lo, hi) of a ReLU (0, inf), ReLU6 or Hardtanh (min_val, max_val) at chain[j], and how many modules
    that is (1), else ((-inf, inf), 0): the clamp a conv / linear step applies to its output."""
    if _next(chain, j, ReLU) is not None:
        return (0.0, np.inf), 1
    act = _next(chain, j, ReLU6) or _next(chain, j, Hardtanh)
    return ((act.min_val, act.max_val), 1) if act is not None else (NO_CLAMP, 0)


def _bias(layer, n: int, dtype) -> np.ndarray:
    return np.zeros(n, dtype) if layer.bias is None else layer.bias.data.astype(dtype)


class _FloatConv(Step):
    """What the float convolution steps share: the folded conv's weight and bias, its geometry on an NHWC x,
    an (N*OH*OW, OC) output buffer (and its NHWC view)."""

    def __init__(self, conv: Conv2d, bn, bounds: tuple, names: str, x: np.ndarray) -> None:
        self.name, self.out_spec = names, Spec("nhwc")
        self.lo, self.hi = (x.dtype.type(v) for v in bounds)
        conv = fuse_conv_bn_eval(conv, bn) if bn is not None else conv
        self.weight = conv.weight.data
        oc, _, self.kh, self.kw = self.weight.shape
        self.b = _bias(conv, oc, x.dtype)
        (pt, _), (pl, _) = conv._pads()
        self.stride, self.pad, self.dil = tuple(conv.stride), (pt, pl), tuple(conv.dilation)
        n, h, wd, _ = x.shape
        oh = conv_output_size(h, self.kh, self.stride[0], (pt, pt), self.dil[0])
        ow = conv_output_size(wd, self.kw, self.stride[1], (pl, pl), self.dil[1])
        self.out = np.empty((n * oh * ow, oc), x.dtype)
        self.out_shape = (n, oh, ow, oc)
        self.out_nhwc = self.out.reshape(self.out_shape)

    def _padded_buffer(self, x: np.ndarray) -> np.ndarray:
        """The zero-padded copy of the input that the kernel fills each call (its border written here, once); an
        empty array without padding."""
        (n, h, w, c), (ph, pw) = x.shape, self.pad
        return np.zeros((n, h + 2 * ph, w + 2 * pw, c) if ph or pw else (0, 0, 0, 0), x.dtype)


class ConvStep(_FloatConv):
    """Conv2d (groups 1, zero padding) [+ folded BatchNorm2d] [+ ReLU / ReLU6 / Hardtanh] on an NHWC float
    activation: float32 with column dilation 1 as ``conv_f32``'s implicit GEMM (padding and convolution in one
    kernel call), else im2col + one BLAS GEMM."""

    def __init__(self, conv: Conv2d, bn, bounds: tuple, names: str, x: np.ndarray) -> None:
        super().__init__(conv, bn, bounds, names, x)
        oc = self.weight.shape[0]
        (sh, sw), (ph, pw), (dh, dw), (_, oh, ow, _) = self.stride, self.pad, self.dil, self.out_shape
        self.implicit = x.dtype == np.float32 and dw == 1
        if self.implicit:
            geometry = np.array([self.kh, self.kw, sh, sw, dh, ph, pw, oh, ow], np.int64)
            self.args = (geometry, self._padded_buffer(x), conv_f32.pack(self.weight.astype(np.float32)), self.b, self.lo,
                         self.hi, self.out)
            return
        self.wt = np.ascontiguousarray(self.weight.transpose(2, 3, 1, 0).reshape(-1, oc), x.dtype)  # (KH*KW*C, OC)
        self.pointwise = (self.kh, self.kw) == (1, 1) and self.stride == (1, 1) and self.pad == (0, 0)
        self.cols = np.empty((self.out.shape[0], self.wt.shape[0]), x.dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        if self.implicit:
            conv_f32.conv2d_step(x, *self.args)
            return self.out_nhwc
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.pad, self.dil
        if self.pointwise:                        # 1x1, stride 1, no padding: the NHWC rows are the columns
            cols = x.reshape(self.cols.shape)
        else:
            kernels.im2col(x, self.kh, self.kw, self.out_shape[1], self.out_shape[2], sh, sw, ph, pw, dh, dw, 1,
                           x.dtype.type(0), self.cols)
            cols = self.cols
        np.matmul(cols, self.wt, out=self.out)
        add_bias_clamp(self.out, self.b, self.lo, self.hi)
        return self.out_nhwc


class DepthwiseStep(_FloatConv):
    """A depthwise Conv2d (groups = in = out channels, zero padding) [+ folded BatchNorm2d] [+ ReLU / ReLU6 /
    Hardtanh] on an NHWC float activation: ``kernels.depthwise_step``, one pass along the contiguous channels."""

    def __init__(self, conv: Conv2d, bn, bounds: tuple, names: str, x: np.ndarray) -> None:
        super().__init__(conv, bn, bounds, names, x)
        c = self.weight.shape[0]                                            # weight (C, 1, KH, KW)
        w_t = np.ascontiguousarray(self.weight.reshape(c, -1).T, x.dtype)   # (KH*KW, C)
        (sh, sw), (ph, pw), (dh, dw), (_, oh, ow, _) = self.stride, self.pad, self.dil, self.out_shape
        geometry = np.array([self.kh, self.kw, sh, sw, dh, dw, ph, pw, oh, ow], np.int64)
        self.args = (geometry, self._padded_buffer(x), w_t, self.b, self.lo, self.hi, self.out)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        depthwise_step(np.ascontiguousarray(x), *self.args)
        return self.out_nhwc


class LinearStep(Step):
    """Linear [+ folded BatchNorm1d] [+ ReLU / ReLU6 / Hardtanh] on (N, K); a 'flat_hwc' input reorders the
    weight columns."""

    def __init__(self, lin: Linear, bn, bounds: tuple, names: str, x: np.ndarray, spec: Spec) -> None:
        self.name = names
        self.lo, self.hi = (x.dtype.type(v) for v in bounds)
        lin = fuse_linear_bn_eval(lin, bn) if bn is not None else lin
        w = lin.weight.data
        if spec.layout == "flat_hwc":
            w = w[:, _hwc_columns(spec.chw)]
        self.wt = np.ascontiguousarray(w.T, x.dtype)
        self.b = _bias(lin, lin.out_features, x.dtype)
        self.out = np.empty((x.shape[0], lin.out_features), x.dtype)
        self.out_spec = Spec()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        np.matmul(x, self.wt, out=self.out)
        add_bias_clamp(self.out, self.b, self.lo, self.hi)
        return self.out


class BatchNormStep(Step):
    """An eval BatchNorm1d on (N, C) that no linear step absorbed (e.g. after a dynamic int8 Linear), with the
    engine's own arithmetic (``kernels.batch_norm_rows``: the same bits), [+ ReLU]."""

    def __init__(self, bn: BatchNorm1d, relu: bool, names: str, x: np.ndarray) -> None:
        self.name, self.relu, self.out_spec = names, relu, Spec()
        dtype = x.dtype
        self.mean = bn.running_mean.astype(dtype, copy=False)
        self.inv_std = (1.0 / np.sqrt(bn.running_var + bn.eps)).astype(dtype, copy=False)
        c = bn.num_features
        self.weight = np.ones(c, dtype) if bn.weight is None else bn.weight.data.astype(dtype, copy=False)
        self.bias = np.zeros(c, dtype) if bn.bias is None else bn.bias.data.astype(dtype, copy=False)
        self.out = np.empty(x.shape, dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        batch_norm_rows(x, self.mean, self.inv_std, self.weight, self.bias, self.relu, self.out)
        return self.out


class DynamicLinearStep(Step):
    """A dynamic int8 Linear (``quant.DynamicQuantizedLinear``): ``functional.linear_dynamic`` with the weight
    packed once -- the module's own computation, so the same bits."""

    def __init__(self, mod, x: np.ndarray) -> None:
        self.name, self.relu, self.out_spec = mod._name(), bool(mod._relu), Spec()
        self.w = QF.pack_weight(mod.weight_qtensor())
        self.bias = QF._bias(mod.bias, mod.out_features, self.name)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return QF.linear_dynamic(x, self.w, self.bias, reduce_range=True, relu=self.relu)


class AddStep(Step):
    """FloatFunctional ``add`` / ``add_relu`` of two float activations of one shape and layout: one pass."""

    def __init__(self, mod: FloatFunctional, relu: bool, x: np.ndarray, spec: Spec) -> None:
        self.name, self.out_spec = mod._name(), spec
        self.lo, self.hi = (x.dtype.type(v) for v in ((0.0, np.inf) if relu else NO_CLAMP))
        self.out = np.empty(x.shape, x.dtype)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        add_clamp_flat(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1), self.lo, self.hi,
                       self.out.reshape(-1))
        return self.out


@register_merge_builder
def float_add_step(node, ins: list, specs: list):
    """A FloatFunctional add of two float activations of one shape, dtype and layout whose
    ``activation_post_process`` is still the Identity (not observed by ``prepare``)."""
    mod = node.module
    if (type(mod) is not FloatFunctional or len(ins) != 2 or not node.args or node.args[0] not in ("add", "add_relu")
            or type(mod.activation_post_process) is not Identity or has_hooks(mod.activation_post_process)):
        return None
    (a, b), (sa, sb) = ins, specs
    if (sa.qparams is not None or sb.qparams is not None or a.dtype.kind != "f" or a.dtype != b.dtype
            or a.shape != b.shape or sa != sb or sa.layout not in ("nhwc", "logical")):
        return None
    return AddStep(mod, node.args[0] == "add_relu", a, sa)


def _to_one(output_size, x: np.ndarray) -> bool:
    """Whether an adaptive pooling of the NHWC x to ``output_size`` pools each whole map to 1x1."""
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    return min(x.shape[1:3]) >= 1 and all(s == 1 or (s is None and d == 1) for s, d in zip(sizes, x.shape[1:3]))


class GlobalAvgPoolStep(Step):
    """AdaptiveAvgPool2d to 1x1 of an NHWC float activation: (N, 1, 1, C), NHWC."""

    def __init__(self, mod, x: np.ndarray, spec: Spec) -> None:
        self.name, self.out_spec = mod._name(), spec
        self.out = np.empty((x.shape[0], 1, 1, x.shape[3]), x.dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        global_avg_pool_float_nhwc(x, self.out.reshape(self.out.shape[0], -1))
        return self.out


def _nhwc(x: np.ndarray, spec: Spec) -> np.ndarray | None:
    """A 4-D float activation as an (N, H, W, C) array (a view of a logical NCHW input), else None."""
    if x.ndim != 4:
        return None
    return x if spec.layout == "nhwc" else x.transpose(0, 2, 3, 1)


class _FromLogical(Step):
    """Wrap a step that reads NHWC so that it also takes the plan's logical NCHW input (as a view)."""

    def __init__(self, step: Step) -> None:
        self.step, self.name, self.out_spec = step, step.name, step.out_spec

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.step(x.transpose(0, 2, 3, 1))


def _conv_chain(chain: list, i: int, x: np.ndarray, spec: Spec):
    conv = chain[i]
    nhwc = _nhwc(x, spec)
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if (nhwc is None or (conv.groups != 1 and not depthwise) or getattr(conv, "padding_mode", "zeros") != "zeros"
            or any(a != b for a, b in conv._pads()) or conv.weight.data.dtype != x.dtype
            or not fits_conv(conv, nhwc)):
        return None
    bn = _next(chain, i + 1, BatchNorm2d)
    bn = bn if _foldable(bn) else None
    j = i + 1 + (bn is not None)
    bounds, act = _activation(chain, j)
    names = " + ".join(m._name() for m in chain[i:j + act])
    step = (DepthwiseStep if depthwise else ConvStep)(conv, bn, bounds, names, nhwc)
    return (step if spec.layout == "nhwc" else _FromLogical(step)), j + act - i


def _linear_chain(chain: list, i: int, x: np.ndarray, spec: Spec):
    lin = chain[i]
    if x.ndim != 2 or x.shape[1] != lin.in_features or lin.weight.data.dtype != x.dtype:
        return None
    bn = _next(chain, i + 1, BatchNorm1d)
    bn = bn if _foldable(bn) and bn.num_features == lin.out_features else None
    j = i + 1 + (bn is not None)
    bounds, act = _activation(chain, j)
    names = " + ".join(m._name() for m in chain[i:j + act])
    return LinearStep(lin, bn, bounds, names, x, spec), j + act - i


@register_builder
def float_step(chain: list, i: int, x: np.ndarray, spec: Spec):
    """The step of chain[i] (and the BatchNorm / ReLU it absorbs) for a float activation."""
    mod = chain[i]
    if spec.qparams is not None or x.dtype.kind != "f":
        return None
    kind = type(mod)
    if kind is Conv2d:
        return _conv_chain(chain, i, x, spec)
    if kind is Linear:
        return _linear_chain(chain, i, x, spec)
    if kind in (DynamicQuantizedLinear, DynamicQuantizedLinearReLU) and spec.layout == "logical" \
            and x.dtype == np.float32 and x.ndim >= 2 and x.shape[-1] == mod.in_features:
        return DynamicLinearStep(mod, x), 1
    if kind is BatchNorm1d and x.ndim == 2 and _foldable(mod) and x.shape[1] == mod.num_features:
        relu = _next(chain, i + 1, ReLU) is not None
        return BatchNormStep(mod, relu, " + ".join(m._name() for m in chain[i:i + 1 + relu]), x), 1 + relu
    if kind in (Identity, Dropout, QuantStub, DeQuantStub):
        return _Pass(mod, spec), 1
    if kind is AdaptiveAvgPool2d and x.ndim == 4 and spec.layout == "nhwc" and _to_one(mod.output_size, x):
        return GlobalAvgPoolStep(mod, x, spec), 1
    if kind is ReLU:
        return ReLUStep(mod, x, spec), 1
    if kind is MaxPool2d and x.ndim == 4 and pooled_size(mod, _nhwc(x, spec)) is not None:
        step = MaxPoolStep(mod, _nhwc(x, spec), spec._replace(layout="nhwc"))
        return (step if spec.layout == "nhwc" else _FromLogical(step)), 1
    if kind is Flatten:
        step = flatten_step(mod, x, spec)
        return None if step is None else (step, 1)
    return None
