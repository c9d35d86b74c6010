"""The implicit-GEMM int8 convolution (``quant/conv_implicit.py``) gives the im2col + GEMM path's codes exactly."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress import quant
from minicompress.quant import conv_implicit, kernels, vnni
from minicompress.quant import functional as QF


def needs_simd(test):
    """The implicit GEMM runs on the VNNI or the AVX2 micro-kernel."""
    return pytest.mark.cpu("avx2")(test)


# codes the kernel takes: all on VNNI; up to 128 on AVX2, whose int16 pairs are exact only there
TOP_CODE = 255 if vnni.USE_VNNI else 128


cases = st.fixed_dictionaries({
    "c": st.integers(1, 20), "oc": st.integers(1, 40), "k": st.sampled_from([(1, 1), (3, 3), (5, 5), (3, 1), (1, 3)]),
    "stride": st.sampled_from([(1, 1), (2, 2), (1, 2), (3, 1)]), "pad": st.sampled_from([(0, 0), (1, 1), (2, 1)]),
    "dh": st.integers(1, 2), "h": st.integers(1, 12), "w": st.integers(1, 21), "batch": st.integers(1, 3),
    "per_channel": st.booleans(), "relu": st.booleans(), "seed": st.integers(0, 2 ** 16)})


def _conv(case, x, packs, bias, scale, zp):
    return QF.conv2d(x, packs, bias, case["stride"], case["pad"], (case["dh"], 1), 1, scale, zp, relu=case["relu"])


def _implicit(case, x, packed, bias, scale, zp):
    """The kernel itself, called directly."""
    (kh, kw), (sh, sw), (ph, pw), dh = case["k"], case["stride"], case["pad"], case["dh"]
    n, c, h, w = x.shape
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - kw) // sw + 1
    hp, wp = h + 2 * ph, w + 2 * pw
    xp = np.full(n * hp * wp * c + conv_implicit.SLACK, x.zero_point, np.uint8)
    kernels.pad_nhwc_into(np.ascontiguousarray(x.int_repr.transpose(0, 2, 3, 1)), ph, pw, xp)
    bias_term, mult = QF.requant_params(x.scale, packed, bias, scale)
    out = np.empty((n * oh * ow, packed.codes.shape[0]), np.uint8)
    assert conv_implicit.conv_requant(xp, n, hp, wp, c, kh, kw, sh, sw, dh, oh, ow, packed.vnni_rows,
                                      packed.col_offsets, x.zero_point, bias_term, mult, zp, case["relu"], out)
    return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


@needs_simd
@given(cases)
def test_implicit_gemm_equals_the_im2col_path(case):
    rng = np.random.default_rng(case["seed"])
    (kh, kw), (ph, pw), dh = case["k"], case["pad"], case["dh"]
    if case["h"] + 2 * ph < dh * (kh - 1) + 1 or case["w"] + 2 * pw < kw:
        return
    c, oc = case["c"], case["oc"]
    x = quant.QTensor(rng.integers(0, TOP_CODE + 1, (case["batch"], c, case["h"], case["w"])).astype(np.uint8),
                      0.02, int(rng.integers(0, TOP_CODE + 1)), None, "quint8")
    codes = rng.integers(-128, 128, (oc, c, kh, kw)).astype(np.int8)
    w = (quant.QTensor(codes, rng.uniform(1e-3, 1e-2, oc), np.zeros(oc, np.int64), 0, "qint8") if case["per_channel"]
         else quant.QTensor(codes, 0.005, 0, None, "qint8"))
    bias = rng.normal(0, 1, oc).astype(np.float32)
    packed = QF.pack_weight(w)
    scale, zp = float(rng.uniform(0.05, 0.5)), int(rng.integers(0, 256))
    ours = _implicit(case, x, packed, bias, scale, zp)
    im2col = _conv(case, x, packed._replace(vnni_rows=QF.NO_VNNI_ROWS), bias, scale, zp)
    portable = _conv(case, x, packed.portable(), bias, scale, zp)
    np.testing.assert_array_equal(ours, im2col.int_repr)
    np.testing.assert_array_equal(ours, portable.int_repr)


@needs_simd
def test_big_convolutions_take_the_threaded_loop_with_the_same_codes():
    rng = np.random.default_rng(1)
    x = quant.QTensor(rng.integers(0, TOP_CODE + 1, (4, 16, 20, 20)).astype(np.uint8), 0.02, 3, None, "quint8")
    w = quant.QTensor(rng.integers(-128, 128, (24, 16, 3, 3)).astype(np.int8), 0.004, 0, None, "qint8")
    packed = QF.pack_weight(w)
    assert 4 * 20 * 20 * 24 * 16 * 9 >= quant.gemm.PARALLEL_MIN_MACS
    a = QF.conv2d(x, packed, None, 1, 1, 1, 1, 0.3, 7)
    b = QF.conv2d(x, packed.portable(), None, 1, 1, 1, 1, 0.3, 7)
    np.testing.assert_array_equal(a.int_repr, b.int_repr)


def test_weight_zero_points_and_column_dilation_take_the_im2col_path():
    zps = np.array([0, 1])
    assert not conv_implicit.applies(1, 1, zps, True)
    assert not conv_implicit.applies(1, 2, np.zeros(2), True)
    assert not conv_implicit.applies(2, 1, np.zeros(2), True)
    assert not conv_implicit.applies(1, 1, np.zeros(2), False)
    assert conv_implicit.applies(1, 1, np.zeros(2), True)


@needs_simd
@pytest.mark.parametrize("top", [128, 129, 255])
def test_the_avx2_kernel_refuses_codes_above_128_and_conv2d_takes_im2col(top):
    """On AVX2 the kernel's int16 pairs could saturate above 128: conv_requant computes nothing and says so, and
    conv2d's codes are the im2col path's ((P) as fbgemm sums there) either way; VNNI takes every code."""
    rng = np.random.default_rng(top)
    codes = rng.integers(0, top + 1, (2, 8, 6, 6)).astype(np.uint8)
    codes[0, 0, 0, 0] = top
    x = quant.QTensor(codes, 0.02, 5, None, "quint8")
    w = quant.QTensor(rng.integers(-128, 128, (16, 8, 3, 3)).astype(np.int8), 0.004, 0, None, "qint8")
    packed = QF.pack_weight(w)
    case = {"k": (3, 3), "stride": (1, 1), "pad": (1, 1), "dh": 1, "relu": False}
    out = np.full((2 * 6 * 6, 16), 7, np.uint8)
    hp = wp = 8
    xp = np.full(2 * hp * wp * 8 + conv_implicit.SLACK, x.zero_point, np.uint8)
    kernels.pad_nhwc_into(np.ascontiguousarray(codes.transpose(0, 2, 3, 1)), 1, 1, xp)
    bias_term, mult = QF.requant_params(x.scale, packed, np.zeros(16, np.float32), 0.3)
    took = conv_implicit.conv_requant(xp, 2, hp, wp, 8, 3, 3, 1, 1, 1, 6, 6, packed.vnni_rows, packed.col_offsets,
                                      x.zero_point, bias_term, mult, 9, False, out)
    assert took == (vnni.USE_VNNI or top <= 128)
    assert took or (out == 7).all()
    ours = _conv(case, x, packed, None, 0.3, 9)
    np.testing.assert_array_equal(ours.int_repr, _conv(case, x, packed._replace(vnni_rows=QF.NO_VNNI_ROWS), None,
                                                        0.3, 9).int_repr)
