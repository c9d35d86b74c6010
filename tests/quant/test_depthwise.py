"""The depthwise int8 kernel (``quant/depthwise.py``) gives the per-group GEMM path's codes bit for bit, and
fbgemm's saturating int16 pair sums where PyTorch takes fbgemm's depthwise fast path."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress import quant
from minicompress.quant import functional as QF
from minicompress.quant import host


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_kernel_equals_per_group_gemms(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 40))
    k = int(rng.choice([1, 3, 5]))
    stride, padding, dilation = int(rng.integers(1, 3)), int(rng.integers(0, 3)), int(rng.integers(1, 3))
    size = int(rng.integers(dilation * (k - 1) + 1, 12))
    x = quant.quantize_per_tensor(rng.standard_normal((2, c, size, size)).astype(np.float32), 0.05,
                                  int(rng.integers(0, 256)), "quint8")
    w = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    per_channel = bool(seed % 2)
    if per_channel:
        wq = quant.quantize_per_channel(w, np.abs(w).reshape(c, -1).max(1) / 127.5 + 1e-3, np.zeros(c, np.int64), 0,
                                        "qint8")
    else:
        wq = quant.quantize_per_tensor(w, float(np.abs(w).max() / 127.5), 0, "qint8")
    bias = rng.standard_normal(c).astype(np.float32)
    packs = QF.pack_weight(wq, c)
    assert hasattr(packs, "whole")
    for relu in (False, True):
        args = (bias, stride, padding, dilation, c, 0.07, int(rng.integers(0, 256)))
        fast = QF.conv2d(x, packs, *args, relu=relu, accumulation="exact")
        loop = QF.conv2d(x, list(packs), *args, relu=relu, accumulation="exact")   # a plain list: a GEMM per group
        np.testing.assert_array_equal(fast.int_repr, loop.int_repr)
        assert fast.channels_last and (fast.scale, fast.zero_point) == (loop.scale, loop.zero_point)
        if host.FBGEMM_INT16_PAIRS:          # the GEMMs' int16 pairs are the kernel's pairs of taps
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", QF.Int16SaturationWarning)
                np.testing.assert_array_equal(QF.conv2d(x, packs, *args, relu=relu).int_repr,
                                              QF.conv2d(x, list(packs), *args, relu=relu).int_repr)


@pytest.mark.parametrize("seed", range(8))
def test_depthwise_kernel_equals_its_numpy_twin(seed):
    """The kernel reads the padded NHWC input; its twin reads the im2col columns of the same input. Channel
    counts of one and of several 16-lane vectors with and without a remainder (``depthwise._taps_lanes``)."""
    from minicompress.quant import depthwise, kernels, reference
    from minicompress.nn.functional.conv import conv_output_size
    rng = np.random.default_rng(seed)
    c, ks = [16, 33, 19, 48, 48, 1, 5, 40][seed], int(rng.choice([1, 3, 5]))
    per = 1 if seed % 4 < 2 else 2           # one output channel per input channel: the vector path
    stride, pad, dil = int(rng.integers(1, 3)), int(rng.integers(0, 3)), int(rng.integers(1, 3))
    size = int(rng.integers(dil * (ks - 1) + 1, 12))
    a_zp, out_zp = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    x = rng.choice(np.array([0, 3, 128, 200, 255], np.uint8), (2, c, size, size))
    oh = conv_output_size(size, ks, stride, (pad, pad), dil)
    cols = reference.im2col(x, ks, ks, oh, oh, stride, stride, pad, pad, dil, dil, c, a_zp)
    xp = kernels.pad_nhwc(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), pad, pad, a_zp)
    k = ks * ks
    w = rng.choice(np.array([-128, -127, -3, 0, 90, 127], np.int8), (c * per, k))
    w_zp = rng.integers(-5, 6, c * per).astype(np.int64) if seed % 2 else np.zeros(c * per, np.int64)
    bias_term = rng.normal(0, 100, c * per).astype(np.float32)
    mult = rng.uniform(1e-5, 1e-3, c * per).astype(np.float32)
    for relu in (False, True):
        for saturate in (False, True):
            out = np.empty((cols.shape[0], c * per), np.uint8)
            clipped = depthwise.depthwise_requant(xp, ks, ks, stride, stride, dil, dil, oh, oh, w, a_zp, w_zp,
                                                  bias_term, mult, out_zp, relu, saturate, out)
            np.testing.assert_array_equal(out, reference.depthwise_requant(cols, w, a_zp, w_zp, bias_term, mult,
                                                                           out_zp, relu, saturate))
            assert (clipped > 0) == (saturate and k > 1 and bool(np.any(
                np.abs(_pair_sums(cols, w, per)) > 32767)))


def _pair_sums(cols, w, per):
    m, (oc, k) = cols.shape[0], w.shape
    x = np.repeat(cols.reshape(m, oc // per, k).astype(np.int64), per, axis=1)
    prod = x * w.astype(np.int64)
    if k % 2:
        prod = np.concatenate([prod, np.zeros((m, oc, 1), np.int64)], axis=2)
    return prod[..., 0::2] + prod[..., 1::2]


def _torch_depthwise(torch, x, w, a_zp, groups, stride, pad, out_scale, out_zp):
    oc = w.shape[0]
    qw = torch.quantize_per_channel(torch.from_numpy(w.astype(np.float32)), torch.ones(oc, dtype=torch.double),
                                    torch.zeros(oc, dtype=torch.long), 0, torch.qint8)
    conv = torch.ao.nn.quantized.Conv2d(x.shape[1], oc, w.shape[2], padding=pad, stride=stride, groups=groups)
    conv.set_weight_bias(qw, None)
    conv.scale, conv.zero_point = out_scale, out_zp
    xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), 1.0, a_zp)
    return conv(xq).int_repr().numpy()


@given(c=st.sampled_from([4, 8, 12, 16, 24]), per=st.sampled_from([1, 2]), k=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2, 3]), same_pad=st.booleans(), a_zp=st.sampled_from([0, 7, 128]),
       seed=st.integers(0, 2 ** 16))
def test_depthwise_codes_are_pytorchs_including_fbgemm_saturation(torch, c, per, k, stride, same_pad, a_zp, seed):
    """Adversarial codes (activations near 255, weights near -128): torch 2.13 saturates int16 pair sums exactly
    where ``fbgemm_fast_path`` says, and our default accumulation reproduces its codes; 'exact' is the true sum."""
    from minicompress.quant import depthwise
    rng = np.random.default_rng(seed)
    pad = (k - 1) // 2 if same_pad else (k // 2 + 1 if k > 1 else 1)
    x_codes = rng.choice(np.array([0, 140, 200, 254, 255], np.uint8), (2, c, 7, 7))
    w_codes = rng.choice(np.array([-128, -127, -100, 60, 127]), (c * per, 1, k, k)).astype(np.float32)
    out_scale, out_zp = 300.0 * k * k, 128
    theirs = _torch_depthwise(torch, x_codes, w_codes, a_zp, c, stride, pad, out_scale, out_zp)
    x = quant.QTensor(x_codes, 1.0, a_zp, None, "quint8")
    wq = quant.quantize_per_channel(w_codes, np.ones(c * per), np.zeros(c * per, np.int64), 0, "qint8")
    packs = QF.pack_weight(wq, c)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = QF.conv2d(x, packs, None, stride, pad, 1, c, out_scale, out_zp).int_repr
    exact = QF.conv2d(x, packs, None, stride, pad, 1, c, out_scale, out_zp, accumulation="exact").int_repr
    np.testing.assert_array_equal(ours, theirs)
    fast = depthwise.fbgemm_fast_path(c, c * per, c, (k, k), (stride, stride), (pad, pad), (1, 1))
    saturated = any(issubclass(w.category, QF.Int16SaturationWarning) for w in caught)
    assert saturated <= (fast or host.FBGEMM_INT16_PAIRS)
    if not (fast or host.FBGEMM_INT16_PAIRS):
        np.testing.assert_array_equal(exact, theirs)


def test_the_saturation_changes_codes_and_is_said():
    x = quant.QTensor(np.full((1, 8, 3, 3), 255, np.uint8), 1.0, 0, None, "quint8")
    wq = quant.quantize_per_channel(np.full((8, 1, 3, 3), -128.0, np.float32), np.ones(8), np.zeros(8, np.int64), 0,
                                    "qint8")
    packs = QF.pack_weight(wq, 8)
    with pytest.warns(QF.Int16SaturationWarning, match="int16 pair sums saturated"):
        ours = QF.conv2d(x, packs, None, 1, 1, 1, 8, 2000.0, 255)
    exact = QF.conv2d(x, packs, None, 1, 1, 1, 8, 2000.0, 255, accumulation="exact")
    # centre: 9 x 255 x -128 = -293760 exactly; fbgemm: 4 saturated pairs + one tap = -163712
    assert int(ours.int_repr[0, 0, 1, 1]) == 255 + round(-163712 / 2000)
    assert int(exact.int_repr[0, 0, 1, 1]) == 255 + round(-293760 / 2000)
