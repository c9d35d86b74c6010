"""Quantized functional ops matching PyTorch 2.13's fbgemm kernels bit for bit.

- :func:`linear_dynamic` == ``torch.ops.quantized.linear_dynamic``: float in, float out; the input is
  quantized on the fly to quint8 over [0, 127] (reduce_range) with FBGEMM's ChooseQuantizationParams.
- :func:`linear`, :func:`conv2d` == ``torch.ao.nn.quantized.functional.linear`` / ``conv2d``:
  quint8 in, quint8 out; int8 weights per tensor or per output channel.

The integer core is ``acc = sum_k a_ik * w_jk`` (int32) and, with row sums r_i = sum_k a_ik and
column offsets c_j = sum_k w_jk - z_w[j] * K (``docs/quantization.md`` eq. (5))::

    raw_ij = acc_ij - z_a * c_j - r_i * z_w[j]   (= sum_k (a_ik - z_a)(w_jk - z_w[j]))

then one of the epilogues (``gemm.py``): dynamic ``fma(fl32(raw), fl32(s_a * s_w[j]), bias[j])``;
static ``clamp(rint((fl32(raw) + bias_term[j]) * mult[j]) + z_out)`` with the float32 parameters of
:func:`requant_params`; or the integer-only gemmlowp fixed-point multiplier (``requant='gemmlowp'``).

int32 overflow (``docs/quantization.md`` section 2): the kernels, like fbgemm, compute in int32 and
wrap. raw_ij is exact whenever its true value fits in int32 (wrapping sums are exact modulo 2^32), and

    |raw_ij| <= max_k |a_ik - z_a| * sum_k |w_jk - z_w[j]|                                (bound)

``pack_weight`` keeps sum_k |w_jk - z_w[j]| per output; each call first tries the bound with the
worst input deviation (the code range), and only if that can leave int32 measures the input's
actual deviation. If even that bound can leave int32, ``overflow='warn'`` (default: PyTorch's result,
wrapped as fbgemm's, and an :class:`Int32OverflowWarning`) or ``'raise'`` (OverflowError).
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

from ..nn.functional.conv import conv_output_size
from ..nn.layers._utils import ntuple
from . import avx2, conv_implicit, depthwise, gemm, host, kernels, vnni
from .qparams import quantize_multiplier
from .qtensor import QTensor, check_qparams

REQUANT_MODES = ("fbgemm", "gemmlowp")
OVERFLOW_MODES = ("warn", "raise")
INT32_MAX = 2 ** 31 - 1


class Int32OverflowWarning(RuntimeWarning):
    """The int32 accumulator of an int8 GEMM may wrap (fbgemm wraps identically: the result is PyTorch's).

    ``warnings.filterwarnings('error', category=Int32OverflowWarning)`` turns it into an error everywhere.
    """


class Int16SaturationWarning(RuntimeWarning):
    """fbgemm saturated int16 pair sums -- its depthwise kernel on every CPU (``depthwise.py`` eq. 1'), its dense
    kernels on a CPU without AVX-512 VNNI (``host.py`` (P)): the codes are PyTorch's on this CPU, not the exact
    sum's; ``accumulation='exact'`` gives the exact sum."""


ACCUMULATION_MODES = ("fbgemm", "exact")


def check_accumulation(accumulation: str, who: str) -> bool:
    """Whether the dense GEMM sums in saturating int16 pairs: ``accumulation='fbgemm'`` (PyTorch's on this CPU)
    on a CPU without AVX-512 VNNI (``host.FBGEMM_INT16_PAIRS``); never with ``'exact'``."""
    if accumulation not in ACCUMULATION_MODES:
        raise ValueError(f"{who}: accumulation must be one of {ACCUMULATION_MODES}, got {accumulation!r}")
    return accumulation == "fbgemm" and host.FBGEMM_INT16_PAIRS


def warn_saturated(clipped: int, who: str, kernel: str, stacklevel: int, what: str = "accumulators") -> None:
    """The ``Int16SaturationWarning`` of a call in which saturated int16 pair sums changed ``clipped``
    accumulators (or, ``what='pair sums'``, in which ``clipped`` pair sums saturated); none: no warning."""
    if clipped:
        said = (f"{clipped} int16 pair sums saturated" if what == "pair sums" else
                f"saturated int16 pair sums changed {clipped} {what}")
        warnings.warn(f"{who}: {said} in {kernel}, as fbgemm's kernel does on this CPU (PyTorch 2.13 computes "
                      f"the same codes); activation codes above 128 next to large weight codes cause it "
                      f"(reduce_range keeps activations below); accumulation='exact' gives the exact sum",
                      Int16SaturationWarning, stacklevel=stacklevel + 1)


class PackedWeight(NamedTuple):
    """An int8 weight ready for the GEMM (PyTorch's "packed params"): computed once per module.

    codes int8 (N, K); scales float32 (N,) and zero_points int64 (N,) (repeated when per tensor);
    col_offsets int32 (N,) = sum_k codes[j, k] - zero_points[j] * K; per_channel; shape (original);
    vnni: the codes in the VNNI and AVX2 micro-kernels' layout (``vnni.pack_b``), or an empty array when the
    CPU has neither (the portable kernel then runs; all give identical integers);
    abs_dev_max: max_j sum_k |codes[j, k] - zero_points[j]| (int), for the overflow bound;
    vnni_rows: a 4-D weight's codes packed per kernel row for the implicit-GEMM convolution
    (``conv_implicit.pack_rows``), or an empty array (neither VNNI nor AVX2, or not a convolution weight).
    """

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    col_offsets: np.ndarray
    per_channel: bool
    shape: tuple
    vnni: np.ndarray
    abs_dev_max: int
    vnni_rows: np.ndarray

    def portable(self) -> "PackedWeight":
        """The same weight without the VNNI packings (forces the portable kernels: im2col and 4x4 loops)."""
        return self._replace(vnni=NO_VNNI, vnni_rows=NO_VNNI_ROWS)


NO_VNNI = np.zeros((0, 0, 16, 4), np.int8)
NO_VNNI_ROWS = np.zeros((0, 0, 0, 16, 4), np.int8)


class GroupedWeights(list):
    """``pack_weight(w, groups)``: one PackedWeight per group (a list), plus ``whole``, the full weight packed
    as one (OC, K) matrix without VNNI layout, which the depthwise kernel reads (``depthwise.py``)."""

    whole: PackedWeight


def _packed(codes, scales, zps, col_offsets, per_channel, shape) -> PackedWeight:
    packed = vnni.pack_b(codes) if vnni.USE_VNNI or avx2.USE_AVX2 else NO_VNNI
    rows = (conv_implicit.pack_rows(codes, shape[2]) if (vnni.USE_VNNI or avx2.USE_AVX2) and len(shape) == 4
            else NO_VNNI_ROWS)
    deviation = np.abs(codes.astype(np.int64) - zps[:, None]).sum(axis=1)
    return PackedWeight(codes, scales, zps, col_offsets, per_channel, shape, packed,
                        int(deviation.max()) if deviation.size else 0, rows)


def check_int32_range(a: np.ndarray, a_zp: int, a_range: tuple[int, int], w: PackedWeight, who: str,
                      overflow: str = "warn") -> None:
    """Warn (or raise) if sum_k (a - z_a)(w - z_w) can leave int32 for this input (module docstring, bound)."""
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"{who}: overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")
    worst = max(a_zp - a_range[0], a_range[1] - a_zp)
    if worst * w.abs_dev_max <= INT32_MAX:
        return                                                   # no input can overflow: the usual case
    actual = int(np.abs(a.astype(np.int32) - a_zp).max()) if a.size else 0
    bound = actual * w.abs_dev_max
    if bound <= INT32_MAX:
        return
    message = (f"{who}: the int32 accumulator may wrap for this input (K = {w.codes.shape[1]}: "
               f"max|a - z_a| * max_j sum_k |w - z_w| = {actual} * {w.abs_dev_max} = {bound} > 2^31 - 1); "
               f"PyTorch's fbgemm wraps the same way")
    if overflow == "raise":
        raise OverflowError(message)
    warnings.warn(message, Int32OverflowWarning, stacklevel=3)


def pack_weight(w: QTensor | PackedWeight, groups: int = 1) -> PackedWeight | list[PackedWeight]:
    """Flatten a qint8 weight (out, ...) to (out, K) and precompute column offsets (and VNNI packing).

    4-D (convolution) weights (OC, C/groups, KH, KW) are flattened channels last, (OC, KH*KW*C/groups),
    matching ``kernels.im2col``'s column order. With ``groups > 1`` returns one PackedWeight per group.
    """
    if isinstance(w, PackedWeight) or isinstance(w, list):
        return w
    if not isinstance(w, QTensor) or w.dtype != "qint8":
        raise TypeError(f"expected a qint8 QTensor weight, got {w!r}")
    if w.axis not in (None, 0):
        raise ValueError(f"per-channel weights must be quantized along axis 0 (output channels), got axis {w.axis}")
    n = w.shape[0]
    codes = w.int_repr.transpose(0, 2, 3, 1) if w.ndim == 4 else w.int_repr
    codes = np.ascontiguousarray(codes.reshape(n, -1))
    if w.axis is None:
        scales = np.full(n, np.float32(w.scale), np.float32)
        zps = np.full(n, w.zero_point, np.int64)
    else:
        scales, zps = w.scale.astype(np.float32), w.zero_point.astype(np.int64)
    col_offsets = (codes.sum(axis=1, dtype=np.int64) - zps * codes.shape[1]).astype(np.int32)
    if groups == 1:
        return _packed(codes, scales, zps, col_offsets, w.axis is not None, tuple(w.shape))
    if n % groups:
        raise ValueError(f"{n} output channels cannot be split into {groups} groups")
    step = n // groups
    parts = [slice(g * step, (g + 1) * step) for g in range(groups)]
    grouped = GroupedWeights(_packed(np.ascontiguousarray(codes[r]), scales[r], zps[r], col_offsets[r],
                                     w.axis is not None, tuple(w.shape)) for r in parts)
    deviation = np.abs(codes.astype(np.int64) - zps[:, None]).sum(axis=1)
    grouped.whole = PackedWeight(codes, scales, zps, col_offsets, w.axis is not None, tuple(w.shape), NO_VNNI,
                                 int(deviation.max()) if deviation.size else 0, NO_VNNI_ROWS)
    return grouped


def _bias(bias: Any, n: int, who: str) -> np.ndarray:
    if bias is None:
        return np.zeros(n, np.float32)
    b = np.asarray(bias)
    if b.shape != (n,) or b.dtype.kind != "f":
        raise ValueError(f"{who}: bias must be a float array of shape ({n},), got {b.dtype} {b.shape}")
    return np.ascontiguousarray(b, np.float32)


def _check_input(x: Any, dtype: str, who: str) -> QTensor:
    if not isinstance(x, QTensor) or x.dtype != dtype or x.axis is not None:
        raise TypeError(f"{who}: expected a per-tensor {dtype} QTensor input, got {x!r}")
    return x


# ------------------------------------------------------------------------------------ dynamic
def linear_dynamic(x: Any, w_q: QTensor | PackedWeight, bias: Any = None, reduce_range: bool = True,
                   relu: bool = False, *, overflow: str = "warn", accumulation: str = "fbgemm") -> np.ndarray:
    """y = dequant(quant(x)) @ dequant(w)^T + b, computed in int8 with a float epilogue.

    x: float (..., K) with at least 2 dims; w_q: qint8 (N, K), per tensor or per channel; bias (N,).
    Returns float32 (..., N). ``relu`` gives ``linear_relu_dynamic``; ``overflow``: module docstring;
    ``accumulation``: :func:`linear`'s (only ``reduce_range=False`` inputs can saturate).
    """
    pairs = check_accumulation(accumulation, "linear_dynamic")
    w = pack_weight(w_q)
    x = np.asarray(x)
    n, k = w.codes.shape
    if x.dtype.kind != "f" or x.ndim < 2 or x.shape[-1] != k:
        raise ValueError(f"linear_dynamic: expected a float input (..., {k}) with >= 2 dims, got {x.dtype} {x.shape}")
    x2 = np.ascontiguousarray(x.reshape(-1, k), np.float32)
    lo, hi = (x2.min(), x2.max()) if x2.size else (np.float32(0), np.float32(0))
    if lo != lo or hi != hi:
        raise ValueError(f"linear_dynamic: input of shape {x.shape} contains NaN")
    a = np.empty(x2.shape, np.uint8)
    scale, zp, defined = kernels.quantize_dynamic_input(x2.reshape(-1), lo, hi, reduce_range, a.reshape(-1))
    if not defined:
        raise ValueError(f"linear_dynamic: the input's range [{lo}, {hi}] is not finite")
    check_int32_range(a, zp, (0, 127 if reduce_range else 255), w, "linear_dynamic", overflow)
    mult = (np.float32(scale) * w.scales).astype(np.float32)
    out = np.empty((x2.shape[0], n), np.float32)
    clipped = gemm.qgemm_dynamic(a, w.codes, w.vnni, zp, w.col_offsets, w.zero_points, mult,
                                 _bias(bias, n, "linear_dynamic"), bool(relu), pairs, out)
    warn_saturated(clipped, "linear_dynamic", "the u8 x s8 GEMM", 2)
    return out.reshape(*x.shape[:-1], n)


# ------------------------------------------------------------------------------------ static
def requant_params(x_scale: float, w: PackedWeight, bias: np.ndarray,
                   out_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(bias_term, mult) float32 (N,) exactly as fbgemm's static requantisation prepares them::

        act_times_w[j] = fl32(s_x) * s_w[j]                 (float32)
        mult[j]        = act_times_w[j] / fl32(s_out)       (float32)
        bias_term[j]   = bias[j] * fl32(1.0 / act_times_w)  per-tensor weights (double reciprocal)
                       = bias[j] / act_times_w[j]           per-channel weights (float32 division)
    """
    act_times_w = (np.float32(x_scale) * w.scales).astype(np.float32)
    mult = (act_times_w / np.float32(out_scale)).astype(np.float32)
    if w.per_channel:
        bias_term = bias / act_times_w
    else:
        bias_term = bias * np.float32(1.0 / np.float64(act_times_w[0]))
    return bias_term.astype(np.float32), mult


def static_epilogue(x_scale: float, w: PackedWeight, bias: np.ndarray, scale: float, requant: str) -> tuple:
    """The parameters of the static GEMM's epilogue: ``requant_params``' (bias_term, mult) for 'fbgemm';
    (bias_q, multiplier, shift) int64 (N,) of the gemmlowp fixed-point multiplier for 'gemmlowp'."""
    if requant == "fbgemm":
        return requant_params(x_scale, w, bias, scale)
    if requant != "gemmlowp":
        raise ValueError(f"unknown requant mode {requant!r}; expected one of {REQUANT_MODES}")
    act_times_w = np.float64(np.float32(x_scale)) * w.scales.astype(np.float64)
    pairs = [quantize_multiplier(m) for m in act_times_w / np.float64(np.float32(scale))]
    multiplier = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    bias_q = np.rint(bias.astype(np.float64) / act_times_w)
    if not np.all(np.abs(bias_q) <= INT32_MAX):            # gemmlowp's bias is an int32 on the accumulator
        bad = int(np.argmax(~(np.abs(bias_q) <= INT32_MAX)))
        raise OverflowError(f"requant='gemmlowp': bias[{bad}] = {float(bias[bad]):.6g} is {bias_q[bad]:.4g} in accumulator "
                            f"units (bias / (s_x * s_w)), outside int32; use requant='fbgemm'")
    return bias_q.astype(np.int64), multiplier, shift


def qgemm_prepared(a: np.ndarray, a_zp: int, w: PackedWeight, ep: tuple, zero_point: int, relu: bool,
                   requant: str, pairs: bool, out: np.ndarray) -> int:
    """out (M, N) uint8 (rows may be strided) = the requantised a @ w^T under ``static_epilogue``'s ``ep``,
    summed in int16 pairs if ``pairs`` (``check_accumulation``); returns how many accumulators the
    saturation changed."""
    args = (a, w.codes, w.vnni, a_zp, w.col_offsets, w.zero_points)
    if requant == "fbgemm":
        return gemm.qgemm_requant(*args, *ep, zero_point, bool(relu), pairs, out)
    return gemm.qgemm_fixed_point(*args, *ep, zero_point, bool(relu), pairs, out)


def _check_out_qparams(scale: Any, zero_point: Any) -> tuple[float, int]:
    return check_qparams(scale, zero_point, "quint8")


def linear(input: QTensor, weight: QTensor | PackedWeight, bias: Any = None, scale: float = 1.0,
           zero_point: int = 0, *, relu: bool = False, requant: str = "fbgemm", overflow: str = "warn",
           accumulation: str = "fbgemm") -> QTensor:
    """Quantized linear: quint8 (..., K) x qint8 (N, K) -> quint8 (..., N) with (scale, zero_point);
    ``overflow``: what an input that may wrap the int32 accumulator does (module docstring);
    ``accumulation='fbgemm'`` (PyTorch's on this CPU): on a CPU without AVX-512 VNNI, neighbouring products
    are summed in saturating int16 pairs as fbgemm does there (``host.py`` (P)), with an
    ``Int16SaturationWarning`` when that changed a sum; ``'exact'``: the exact int32 sum."""
    pairs = check_accumulation(accumulation, "linear")
    x = _check_input(input, "quint8", "linear")
    w = pack_weight(weight)
    n, k = w.codes.shape
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"linear: expected input (..., {k}), got {x.shape}")
    scale, zero_point = _check_out_qparams(scale, zero_point)
    a = np.ascontiguousarray(x.int_repr.reshape(-1, k))
    check_int32_range(a, x.zero_point, (0, 255), w, "linear", overflow)
    ep = static_epilogue(x.scale, w, _bias(bias, n, "linear"), scale, requant)
    codes = np.empty((a.shape[0], n), np.uint8)
    warn_saturated(qgemm_prepared(a, x.zero_point, w, ep, zero_point, relu, requant, pairs, codes), "linear",
                   "the u8 x s8 GEMM", 2)
    return QTensor(codes.reshape(*x.shape[:-1], n), scale, zero_point, None, "quint8")


def conv2d(input: QTensor, weight: QTensor | list[PackedWeight], bias: Any, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1, scale: float = 1.0, zero_point: int = 0, *,
           relu: bool = False, requant: str = "fbgemm", overflow: str = "warn",
           accumulation: str = "fbgemm") -> QTensor:
    """Quantized 2-D convolution: quint8 (N, C, H, W) * qint8 (OC, C/groups, KH, KW) -> quint8 (N, OC, OH, OW).

    OH = floor((H + 2*ph - dh*(KH - 1) - 1) / sh) + 1 (likewise OW), computed here once by the float
    engine's ``conv_output_size``; im2col (padded with the input zero point, channels-last columns) then
    one GEMM per group with the linear epilogue. Two kernels compute the same codes without the im2col
    matrix: a depthwise convolution (one input channel per group) runs all groups in one pass
    (``depthwise.py``), and a dense one with symmetric weights on a VNNI CPU is an implicit GEMM over the
    padded NHWC input (``conv_implicit.py``).
    ``weight`` may also be ``pack_weight(w, groups)`` (a list of per-group PackedWeights).
    ``accumulation='fbgemm'`` (PyTorch's on this CPU): where fbgemm takes its depthwise fast path, and on a
    CPU without AVX-512 VNNI everywhere, neighbouring products are summed in saturating int16 pairs as fbgemm
    does (``depthwise.py`` eq. 1', ``host.py`` (P)), with an ``Int16SaturationWarning`` when that changed a
    sum; ``'exact'``: the exact int32 sum everywhere.
    """
    check_accumulation(accumulation, "conv2d")
    x = _check_input(input, "quint8", "conv2d")
    if groups < 1:
        raise ValueError(f"conv2d: groups must be >= 1, got {groups}")
    packs = pack_weight(weight, groups)
    packs = packs if isinstance(packs, list) else [packs]
    shape = packs[0].shape
    if len(shape) != 4 or x.ndim != 4:
        raise ValueError(f"conv2d: expected input (N, C, H, W) and weight (OC, C/groups, KH, KW), "
                         f"got {x.shape} and {shape}")
    oc, cg, kh, kw = shape
    n, c, h, wd = x.shape
    (sh, sw), (ph, pw), (dh, dw) = (ntuple(v, 2, name, "conv2d") for v, name in
                                    ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    if c != cg * groups or oc % groups or len(packs) != groups:
        raise ValueError(f"conv2d: input channels {c} and weight {shape} do not match groups={groups}")
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"conv2d: bad stride {stride}, padding {padding} or dilation {dilation}")
    oh, ow = conv_output_size(h, kh, sh, (ph, ph), dh), conv_output_size(wd, kw, sw, (pw, pw), dw)
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: input {x.shape} too small for kernel {(kh, kw)} with padding {(ph, pw)}")
    scale, zero_point = _check_out_qparams(scale, zero_point)
    conv = PreparedConv2d(packs, _bias(bias, oc, "conv2d"), x.scale, x.zero_point, scale, zero_point,
                          ConvGeometry(n, h, wd, c, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups), bool(relu),
                          requant, accumulation)
    out = conv(np.ascontiguousarray(x.int_repr.transpose(0, 2, 3, 1)), np.empty((n * oh * ow, oc), np.uint8),
               overflow, "conv2d")
    codes = out.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2)          # NCHW view of NHWC memory, as fbgemm's
    return QTensor(codes, scale, zero_point, None, "quint8", channels_last=True)


class ConvGeometry(NamedTuple):
    """Sizes of one 2-D convolution call: input (n, h, w, c), output (oh, ow), kernel, stride, padding, dilation."""

    n: int
    h: int
    w: int
    c: int
    oh: int
    ow: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    groups: int


class PreparedConv2d:
    """A quantized convolution with everything but its input computed: the kernel it takes, the requantisation
    parameters, the int32 bound. ``conv2d`` builds one per call; an inference plan builds one per layer and input
    shape. Called with the NHWC input codes (N, H, W, C) and an output (N*OH*OW, OC) uint8, fills and returns it.

    Kernels (the same codes): depthwise (``depthwise.py``), a 1x1 / stride 1 / no padding convolution as one
    GEMM on the NHWC input itself ("pointwise": im2col would copy it), implicit GEMM (``conv_implicit.py``: dense,
    symmetric weights, VNNI or AVX2 -- on AVX2 while no input code exceeds 128), else im2col + one GEMM per group.
    The padded input of the depthwise and implicit paths is kept between calls (its border holds the zero point;
    each call rewrites the interior).
    """

    def __init__(self, packs: list, bias: np.ndarray, x_scale: float, x_zp: int, scale: float, zero_point: int,
                 geometry: ConvGeometry, relu: bool, requant: str, accumulation: str) -> None:
        g = self.geometry = geometry
        self.x_zp, self.zero_point, self.relu, self.requant = x_zp, zero_point, relu, requant
        cg, whole = g.c // g.groups, getattr(packs, "whole", None)
        worst = max(x_zp, 255 - x_zp)
        self.pairs = check_accumulation(accumulation, "conv2d")
        if g.groups > 1 and cg == 1 and requant == "fbgemm" and whole is not None:
            self.path, self.weights = "depthwise", [whole]
            self.depthwise_weights = depthwise.prepare_weights(whole.codes, whole.zero_points)   # once
            # outside its fast path fbgemm runs one GEMM per group, whose pairs are the same taps
            self.saturate = self.pairs or accumulation == "fbgemm" and depthwise.fbgemm_fast_path(
                g.c, whole.shape[0], g.groups, (g.kh, g.kw), (g.sh, g.sw), (g.ph, g.pw), (g.dh, g.dw))
            self.epilogues = [requant_params(x_scale, whole, bias, scale)]
        else:
            ocg = packs[0].codes.shape[0]
            self.weights = list(packs)
            self.epilogues = [static_epilogue(x_scale, wg, bias[i * ocg:(i + 1) * ocg], scale, requant)
                              for i, wg in enumerate(packs)]
            w0 = packs[0]
            pointwise = (g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups) == (1, 1, 1, 1, 0, 0, 1, 1, 1)
            self.path = ("pointwise" if pointwise else
                         "implicit" if requant == "fbgemm" and conv_implicit.applies(g.groups, g.dw, w0.zero_points,
                                                                                  w0.vnni_rows.size > 0)
                         else "im2col")
            self.k_cols = (w0.vnni.shape[1] * 4 if g.groups == 1 and w0.vnni.size else g.c * g.kh * g.kw)
        self.may_overflow = any(worst * w.abs_dev_max > INT32_MAX for w in self.weights)
        self._cols: np.ndarray | None = None
        self._padded: np.ndarray | None = None

    def _padded_input(self, x: np.ndarray, extra: int) -> np.ndarray:
        """x padded by (ph, pw) with the input zero point, then ``extra`` bytes, in the kept flat buffer."""
        g = self.geometry
        if self._padded is None:
            self._padded = np.full(g.n * (g.h + 2 * g.ph) * (g.w + 2 * g.pw) * g.c + extra, self.x_zp, np.uint8)
        kernels.pad_nhwc_into(x, g.ph, g.pw, self._padded)
        return self._padded

    def __call__(self, x: np.ndarray, out: np.ndarray, overflow: str = "warn", who: str = "conv2d",
                 stacklevel: int = 2) -> np.ndarray:
        """``stacklevel``: the caller's, for the ``Int16SaturationWarning`` (2: the caller of ``conv2d``)."""
        g, zp = self.geometry, self.x_zp
        if self.path == "pointwise":
            a = x.reshape(-1, g.c)
            self._check(a, self.weights[0], overflow, who)
            clipped = qgemm_prepared(a, zp, self.weights[0], self.epilogues[0], self.zero_point, self.relu,
                                     self.requant, self.pairs, out)
            warn_saturated(clipped, who, f"a 1x1 convolution of {g.c} channels", stacklevel + 1)
        elif self.path == "depthwise":
            xp = self._padded_input(x, 0).reshape(g.n, g.h + 2 * g.ph, g.w + 2 * g.pw, g.c)
            self._check(xp, self.weights[0], overflow, who)
            bias_term, mult = self.epilogues[0]
            clipped = depthwise.depthwise_requant_prepared(xp, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.oh, g.ow,
                                                           *self.depthwise_weights, zp, bias_term, mult,
                                                           self.zero_point, self.relu, self.saturate, out)
            warn_saturated(clipped, who, f"a depthwise {g.kh}x{g.kw} convolution of {g.c} channels", stacklevel + 1,
                           "pair sums")
        elif not (self.path == "implicit" and self._implicit(x, out, overflow, who)):
            self._im2col(x, out, overflow, who, stacklevel)
        return out

    def _implicit(self, x: np.ndarray, out: np.ndarray, overflow: str, who: str) -> bool:
        """The implicit GEMM (``conv_implicit``); False where its kernel refuses the input (then im2col runs)."""
        g, w0 = self.geometry, self.weights[0]
        xp, hp, wp = self._padded_input(x, conv_implicit.SLACK), g.h + 2 * g.ph, g.w + 2 * g.pw
        self._check(xp, w0, overflow, who)
        bias_term, mult = self.epilogues[0]
        return conv_implicit.conv_requant(xp, g.n, hp, wp, g.c, g.kh, g.kw, g.sh, g.sw, g.dh, g.oh, g.ow,
                                          w0.vnni_rows, w0.col_offsets, self.x_zp, bias_term, mult, self.zero_point,
                                          self.relu, out)

    def _im2col(self, x: np.ndarray, out: np.ndarray, overflow: str, who: str, stacklevel: int) -> None:
        """im2col (NHWC, K padded for the SIMD kernels) + one fused GEMM per group."""
        g, zp = self.geometry, self.x_zp
        if self._cols is None:                   # kept: an inference plan calls the same object again
            self._cols = np.empty((g.n * g.oh * g.ow, self.k_cols), np.uint8)
        cols = self._cols
        kernels.im2col(x, g.kh, g.kw, g.oh, g.ow, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups, zp, cols)
        kg = g.c // g.groups * g.kh * g.kw
        clipped = 0
        for i, (wg, ep) in enumerate(zip(self.weights, self.epilogues)):
            ocg = wg.codes.shape[0]
            a = cols if g.groups == 1 else np.ascontiguousarray(cols[:, i * kg:(i + 1) * kg])
            self._check(a, wg, overflow, who)
            clipped += qgemm_prepared(a, zp, wg, ep, self.zero_point, self.relu, self.requant, self.pairs,
                                      out if g.groups == 1 else out[:, i * ocg:(i + 1) * ocg])
        warn_saturated(clipped, who, f"a {g.kh}x{g.kw} convolution of {g.c} channels", stacklevel + 2)

    def _check(self, a: np.ndarray, w: PackedWeight, overflow: str, who: str) -> None:
        if self.may_overflow or overflow not in OVERFLOW_MODES:
            check_int32_range(a, self.x_zp, (0, 255), w, who, overflow)
