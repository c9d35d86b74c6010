"""fbgemm's dense u8 x s8 kernels sum neighbouring products in saturating int16 on a CPU without AVX-512 VNNI
(``quant/host.py`` (P)), exactly on one with it: our codes are torch 2.13's on the CPU the tests run on.

The codes are adversarial (activations near 255, weights near -128), so that pairs do saturate on such a CPU:
there the warning is raised and the exact sum differs from torch; on a VNNI CPU no warning, and exact = torch.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress import quant
from minicompress.quant import functional as QF
from minicompress.quant import host, reference

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
X_CODES = np.array([0, 100, 140, 200, 254, 255], np.uint8)
W_CODES = np.array([-128, -127, -100, 60, 127], np.int8)


def _weight(torch, codes, per_channel):
    n = codes.shape[0]
    if per_channel:
        s = np.linspace(0.01, 0.02, n)
        tw = torch._make_per_channel_quantized_tensor(torch.from_numpy(codes), torch.from_numpy(s),
                                                      torch.zeros(n, dtype=torch.int64), 0)
        return quant.QTensor(codes, s, np.zeros(n, np.int64), 0, "qint8"), tw
    return quant.QTensor(codes, 0.01, 0, None, "qint8"), torch._make_per_tensor_quantized_tensor(
        torch.from_numpy(codes), 0.01, 0)


def _out_scale(raw: np.ndarray, w_scale: float = 0.02) -> float:
    """An output scale that keeps the exact accumulators within +-100 codes of zero point 128, so that a
    saturated pair (which moves one by >= 32512 * s_w) changes codes."""
    return float(np.abs(raw).max(initial=1)) * w_scale / 100


def _ours(call):
    """(codes, whether an Int16SaturationWarning was raised) of call(accumulation), and the exact codes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = call("fbgemm")
    said = any(issubclass(w.category, QF.Int16SaturationWarning) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QF.Int16SaturationWarning)
        exact = call("exact")
    return got, said, exact


def _held(got, said, exact, theirs):
    np.testing.assert_array_equal(got, theirs)
    assert said == host.FBGEMM_INT16_PAIRS
    assert (not np.array_equal(exact, theirs)) == host.FBGEMM_INT16_PAIRS


@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(2, 67), n=st.integers(1, 20), per_channel=st.booleans(),
       x_zp=st.sampled_from([0, 128, 250]), seed=st.integers(0, 2 ** 16))
def test_linear(torch, m, k, n, per_channel, x_zp, seed):
    rng = np.random.default_rng(seed)
    a, w = rng.choice(X_CODES, (m, k)), rng.choice(W_CODES, (n, k))
    a[0, :2], w[0, :2] = 255, -128                                # one pair surely saturates
    qw, tw = _weight(torch, w, per_channel)
    out_scale = _out_scale((a.astype(np.int64) - x_zp) @ w.astype(np.int64).T)
    tx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(a), 1.0, x_zp)
    theirs = torch.ops.quantized.linear(tx, torch.ops.quantized.linear_prepack(tw, None), out_scale, 128)
    x = quant.QTensor(a, 1.0, x_zp, None, "quint8")
    _held(*_ours(lambda acc: QF.linear(x, qw, None, out_scale, 128, accumulation=acc).int_repr),
          theirs.int_repr().numpy())


@settings(max_examples=12, deadline=None)
@given(c_per_group=st.sampled_from([1, 3, 4, 5, 8]), groups=st.sampled_from([1, 2]), k=st.sampled_from([1, 3]),
       stride=st.sampled_from([1, 2]), pad=st.sampled_from([0, 1]), per_channel=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_conv2d(torch, c_per_group, groups, k, stride, pad, per_channel, seed):
    """im2col (odd channel counts: pairs straddle kernel taps), 1x1 (the NHWC GEMM), grouped convolutions
    (C/G = 4 or 8, 3x3: fbgemm's groupwise kernel) and depthwise ones off fbgemm's depthwise fast path, all
    with (kh, kw, c) pairs per group."""
    rng = np.random.default_rng(seed)
    k = 3 if c_per_group == 1 else k                             # K = 1 has no pairs
    c = c_per_group * groups
    oc = 2 * c if c_per_group > 1 else 4 * groups
    x_codes = rng.choice(X_CODES, (2, c, 6, 7))
    w_codes = rng.choice(W_CODES, (oc, c_per_group, k, k))
    x_codes[:, :, 2:4, 2:4], w_codes[:, :, k // 2, k // 2] = 255, -128
    qw, tw = _weight(torch, w_codes, per_channel)
    cols = reference.im2col(x_codes.astype(np.int64) - 3, k, k, (6 + 2 * pad - k) // stride + 1,
                            (7 + 2 * pad - k) // stride + 1, stride, stride, pad, pad, 1, 1, groups, 0)
    ocg, kg = oc // groups, c_per_group * k * k
    out_scale = _out_scale(np.concatenate([cols[:, g * kg:(g + 1) * kg] @ w_codes[g * ocg:(g + 1) * ocg].reshape(
        ocg, c_per_group, k * k).transpose(0, 2, 1).reshape(ocg, -1).astype(np.int64).T for g in range(groups)], 1))
    tx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x_codes), 1.0, 3)
    packed = torch.ops.quantized.conv2d_prepack(tw, None, [stride] * 2, [pad] * 2, [1, 1], groups)
    theirs = torch.ops.quantized.conv2d(tx, packed, out_scale, 128).int_repr().numpy()
    x = quant.QTensor(x_codes, 1.0, 3, None, "quint8")
    _held(*_ours(lambda acc: QF.conv2d(x, qw, None, stride, pad, 1, groups, out_scale, 128,
                                       accumulation=acc).int_repr), theirs)


def test_dynamic_linear_without_reduce_range(torch):
    """``reduce_range=False`` quantizes activations over 0..255: they can saturate (reduce_range's 0..127 cannot)."""
    rng = np.random.default_rng(0)
    x = rng.choice(np.array([0.0, 1.0, 2.5, 2.54, 2.55]), (9, 40)).astype(np.float32)
    x[:, 0] = 2.55
    w = rng.choice(np.array([-1.28, -1.27, -1.0, 0.6, 1.27]), (6, 40)).astype(np.float32)
    qw = quant.quantize_per_tensor(w, 0.01, 0, "qint8")
    tw = torch.quantize_per_tensor(torch.from_numpy(w), 0.01, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(tw, None)
    theirs = torch.ops.quantized.linear_dynamic(torch.from_numpy(x), packed, reduce_range=False).numpy()
    _held(*_ours(lambda acc: QF.linear_dynamic(x, qw, None, reduce_range=False, accumulation=acc)), theirs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QF.Int16SaturationWarning)
        reduced = QF.linear_dynamic(x, qw, None, reduce_range=True)            # 0..127: never saturates
    np.testing.assert_array_equal(reduced, torch.ops.quantized.linear_dynamic(torch.from_numpy(x), packed,
                                                                              reduce_range=True).numpy())


def test_accumulation_is_checked():
    x = quant.QTensor(np.zeros((1, 4), np.uint8), 1.0, 0, None, "quint8")
    w = quant.QTensor(np.zeros((2, 4), np.int8), 1.0, 0, None, "qint8")
    with pytest.raises(ValueError, match="linear: accumulation must be one of"):
        QF.linear(x, w, None, 1.0, 0, accumulation="int16")
