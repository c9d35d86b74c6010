"""Numba kernels == their NumPy twins (``reference.py``) bit for bit, and integer GEMMs == int64 products.

Every GEMM path runs: the AVX-512 VNNI or AVX2 micro-kernel (whichever the CPU has) and the portable loops;
shapes are drawn off the tile sizes (M % 16, N % 32, K % 4 != 0) to exercise every tail.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress.nn.functional.conv import conv_output_size
from minicompress.quant import gemm as G
from minicompress.quant import kernels as K
from minicompress.quant import reference as R
from minicompress.quant import avx2, vnni
from minicompress.quant.functional import NO_VNNI

seeds = st.integers(0, 2 ** 32 - 1)
gemm_shapes = st.tuples(st.integers(1, 40), st.integers(1, 70), st.integers(1, 70))


def packings(b, a_dtype):
    """The weight packings a kernel may receive: portable always, the VNNI / AVX2 kernels' for uint8 activations."""
    out = [NO_VNNI]
    if (vnni.USE_VNNI or avx2.USE_AVX2) and a_dtype == np.uint8:
        out.append(vnni.pack_b(b))
    return out


def operands(rng, m, k, n, a_dtype=np.uint8):
    lo, hi = (0, 256) if a_dtype == np.uint8 else (-128, 128)
    a = rng.integers(lo, hi, size=(m, k)).astype(a_dtype)
    b = rng.integers(-128, 128, size=(n, k)).astype(np.int8)
    return a, b


@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 40), seeds, st.integers(0, 4))
def test_quantize_kernel_equals_twin(outer, ch, inner, seed, rule):
    rng = np.random.default_rng(seed)
    s = rng.uniform(1e-3, 1, ch).astype(np.float32)
    inv = np.float32(1) / s
    z = rng.integers(-20, 20, ch)
    x = ((rng.integers(-200, 200, (outer, ch, inner)) + 0.5) / inv[None, :, None]).astype(np.float32)
    x[..., ::3] = rng.normal(size=x[..., ::3].shape) * 100
    out = np.empty(x.shape, np.int8)
    K.quantize(x, s, inv, z, -128, 127, rule, out)
    np.testing.assert_array_equal(out, R.quantize(x, s, inv, z, -128, 127, rule))


@given(seeds)
def test_fma32_elementwise_equals_twin(seed):
    """The fake-quant ops' array FMA: broadcasting like NumPy, one rounding like ``reference.fma32``."""
    rng = np.random.default_rng(seed)
    a = (rng.normal(size=(3, 50)) * 10.0 ** rng.integers(-3, 3, (3, 50))).astype(np.float32)
    b = (np.float32(1) / rng.uniform(1e-3, 2, (3, 1))).astype(np.float32)
    c = np.round(rng.uniform(-200, 200, (3, 1))).astype(np.float32)
    c[0] = rng.normal()
    np.testing.assert_array_equal(K.fma32_elementwise(a, b, c).view(np.int32),
                                  R.fma32(a, b, c.astype(np.float64)).view(np.int32))


@given(st.integers(1, 4), st.integers(1, 5), seeds, st.booleans())
def test_dequantize_kernel_equals_twin(outer, ch, seed, per_channel):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2 ** 31, 2 ** 31, size=(outer, ch, 9)).astype(np.int32)
    s, z = rng.uniform(1e-4, 10, ch), rng.integers(-128, 128, ch)
    out = np.empty(q.shape, np.float32)
    K.dequantize(q, s, z, per_channel, out)
    np.testing.assert_array_equal(out.view(np.int32), R.dequantize(q, s, z, per_channel).view(np.int32))


@given(gemm_shapes, seeds, st.sampled_from([np.uint8, np.int8]))
def test_gemm_s32_equals_int64_product(shape, seed, a_dtype):
    m, k, n = shape
    a, b = operands(np.random.default_rng(seed), m, k, n, a_dtype)
    exact = a.astype(np.int64) @ b.astype(np.int64).T
    np.testing.assert_array_equal(R.gemm_s32(a, b), exact)
    for bp in packings(b, a_dtype):
        out = np.empty((m, n), np.int32)
        G.gemm_s32(a, b, bp, False, out)
        np.testing.assert_array_equal(out, exact)


def test_int16_pairs_saturate_only_above_code_128():
    """(P) of ``host.py``: codes up to 128 never leave int16 (2 * 128 * -128 = -32768), 129 does; the kernels
    count the accumulators that saturation changed."""
    b = np.full((3, 5), -128, np.int8)
    for code, clipped in ((128, 0), (129, 2 * 3)):
        a = np.full((2, 5), code, np.uint8)
        acc, count = R.gemm_int16_pairs(a, b)
        assert count == clipped
        exact = code * -128 * 5
        assert (acc == (exact if not clipped else 2 * -32768 + code * -128)).all()
        out = np.empty((2, 3), np.float32)
        got = G.qgemm_dynamic(a, b, NO_VNNI, 0, b.astype(np.int64).sum(1).astype(np.int32), np.zeros(3, np.int64),
                              np.ones(3, np.float32), np.zeros(3, np.float32), False, True, out)
        assert got == clipped
        np.testing.assert_array_equal(out, acc.astype(np.float32))


def test_gemm_s32_extreme_values_long_k():
    """255 * -128 over K = 4096 sums to -133 693 440: exact in int32, no saturation anywhere."""
    a = np.full((17, 4096), 255, np.uint8)
    b = np.full((33, 4096), -128, np.int8)
    for bp in packings(b, np.uint8):
        out = np.empty((17, 33), np.int32)
        G.gemm_s32(a, b, bp, False, out)
        assert (out == 255 * -128 * 4096).all()


def _epilogue_args(rng, n, k, b):
    a_zp = int(rng.integers(0, 256))
    b_zp = rng.integers(-3, 4, n) if rng.random() < 0.5 else np.zeros(n, np.int64)
    col_offsets = (b.astype(np.int64).sum(1) - b_zp * k).astype(np.int32)
    return a_zp, b_zp, col_offsets


@given(gemm_shapes, seeds, st.booleans())
def test_qgemm_dynamic_equals_twin(shape, seed, relu):
    m, k, n = shape
    rng = np.random.default_rng(seed)
    a, b = operands(rng, m, k, n)
    a_zp, b_zp, col = _epilogue_args(rng, n, k, b)
    mult = rng.uniform(1e-5, 1e-2, n).astype(np.float32)
    bias = rng.normal(size=n).astype(np.float32)
    for pairs in (False, True):
        want = R.qgemm_dynamic(a, b, a_zp, col, b_zp, mult, bias, relu, pairs)
        for bp in packings(b, np.uint8):
            out = np.empty((m, n), np.float32)
            clipped = G.qgemm_dynamic(a, b, bp, a_zp, col, b_zp, mult, bias, relu, pairs, out)
            np.testing.assert_array_equal(out.view(np.int32), want.view(np.int32))
            assert clipped == (R.gemm_int16_pairs(a, b)[1] if pairs else 0)


@pytest.mark.parametrize("m", [7, 700])          # 700 x 29 x 40 is above PARALLEL_MIN_MACS: the threaded loop
@pytest.mark.parametrize("symmetric", [True, False])
def test_qgemm_requant_threaded_and_k_padded(m, symmetric):
    """Both block loops (calling thread, thread pool; its tasks take several blocks each here) and an activation
    matrix whose K is padded with zero columns (as conv2d's im2col pads it for the VNNI kernel), also as columns
    of a wider buffer (rows not contiguous: the kernels must not read them in place), give the twin's codes."""
    k, n = 29, 40
    assert (m * k * n >= G.PARALLEL_MIN_MACS) == (m == 700)
    rng = np.random.default_rng(m)
    a, b = operands(rng, m, k, n)
    a_zp, b_zp, col = _epilogue_args(rng, n, k, b)
    if symmetric:
        b_zp, col = np.zeros(n, np.int64), b.astype(np.int64).sum(1).astype(np.int32)
    mult = rng.uniform(1e-4, 1e-2, n).astype(np.float32)
    bias_term = (rng.normal(size=n) * 1e3).astype(np.float32)
    a_padded = np.zeros((m, 32), np.uint8)
    a_padded[:, :k] = a
    a_wide = np.full((m, 40), 255, np.uint8)
    a_wide[:, :32] = a_padded
    for pairs in (False, True):
        want = R.qgemm_requant(a, b, a_zp, col, b_zp, bias_term, mult, 17, False, pairs)
        for bp in packings(b, np.uint8):
            for operand in (a, a_padded, a_wide[:, :32]):
                out = np.empty((m, n), np.uint8)
                clipped = G.qgemm_requant(operand, b, bp, a_zp, col, b_zp, bias_term, mult, 17, False, pairs, out)
                np.testing.assert_array_equal(out, want)
                assert clipped == (R.gemm_int16_pairs(a, b)[1] if pairs else 0)


@given(gemm_shapes, seeds, st.booleans(), st.floats(1e-5, 3.0))
def test_qgemm_requant_equals_twin(shape, seed, relu, mult_scale):
    """Multipliers up to 3 make (raw + bias) * mult overflow int32 sometimes: cvtps2dq -> INT32_MIN -> 0."""
    m, k, n = shape
    rng = np.random.default_rng(seed)
    a, b = operands(rng, m, k, n)
    a_zp, b_zp, col = _epilogue_args(rng, n, k, b)
    mult = (rng.uniform(0.1, 1, n) * mult_scale).astype(np.float32)
    bias_term = (rng.normal(size=n) * 1e3).astype(np.float32)
    out_zp = int(rng.integers(0, 256))
    for pairs in (False, True):
        want = R.qgemm_requant(a, b, a_zp, col, b_zp, bias_term, mult, out_zp, relu, pairs)
        for bp in packings(b, np.uint8):
            out = np.empty((m, n), np.uint8)
            G.qgemm_requant(a, b, bp, a_zp, col, b_zp, bias_term, mult, out_zp, relu, pairs, out)
            np.testing.assert_array_equal(out, want)


def _strided_outs(m, n, dtype):
    """(row-strided out: columns of a wider buffer, column-strided out, the buffers' guard check)."""
    wide = np.full((m, n + 5), 7, dtype)
    strided = np.full((m, 2 * n), 7, dtype)

    def guards_intact():
        return (wide[:, :2] == 7).all() and (wide[:, 2 + n:] == 7).all() and (strided[:, 1::2] == 7).all()
    return wide[:, 2:2 + n], strided[:, ::2], guards_intact


@given(gemm_shapes, seeds, st.booleans())
def test_register_store_equals_twin_on_edge_values(shape, seed, relu):
    """Symmetric weights on the VNNI kernel apply the Requant / Dynamic epilogue in its registers
    (``register_store``): the twin's outputs for NaN / inf / int32-overflowing values, into a row-strided out
    (columns of a wider buffer, nothing written beside them) and a column-strided one (the accumulator path)."""
    m, k, n = shape
    rng = np.random.default_rng(seed)
    a, b = operands(rng, m, k, n)
    a_zp, b_zp, col = int(rng.integers(0, 256)), np.zeros(n, np.int64), b.astype(np.int64).sum(1).astype(np.int32)
    mult = rng.choice(np.array([1e-3, 0.02, 3.0, 1e30, np.inf, np.nan], np.float32), n)
    bias = rng.choice(np.array([0.0, 1e3, -1e3, 3e9, np.inf, -np.inf, np.nan], np.float32), n)
    out_zp = int(rng.integers(0, 256))
    with np.errstate(invalid="ignore", over="ignore"):
        want_codes = R.qgemm_requant(a, b, a_zp, col, b_zp, bias, mult, out_zp, relu, False)
        want_floats = R.qgemm_dynamic(a, b, a_zp, col, b_zp, mult, bias, relu, False)
    runs = ((np.uint8, want_codes, lambda bp, out: G.qgemm_requant(a, b, bp, a_zp, col, b_zp, bias, mult, out_zp,
                                                                     relu, False, out)),
            (np.float32, want_floats, lambda bp, out: G.qgemm_dynamic(a, b, bp, a_zp, col, b_zp, mult, bias, relu,
                                                                      False, out)))
    for bp in packings(b, np.uint8):
        for dtype, want, run in runs:
            *outs, guards_intact = _strided_outs(m, n, dtype)
            for out in outs:
                run(bp, out)
                np.testing.assert_array_equal(out.view(f"u{out.itemsize}"), want.view(f"u{out.itemsize}"))
            assert guards_intact()


def test_requant_overflow_follows_cvtps2dq():
    raw = np.array([2 ** 31 - 1, -2 ** 31, 1000], np.int32)
    got = R.requant_epilogue(raw, np.float32(0), np.float32(2.0), 10, 0)
    np.testing.assert_array_equal(got, [0, 0, 255])         # both overflow to INT32_MIN, then clamp
    assert G.requant_epilogue(np.int32(2 ** 31 - 1), np.float32(0), np.float32(2.0), 10, 0) == 0


@given(gemm_shapes, seeds, st.booleans())
def test_qgemm_fixed_point_equals_twin_and_float(shape, seed, relu):
    from minicompress.quant.qparams import quantize_multiplier
    m, k, n = shape
    rng = np.random.default_rng(seed)
    a, b = operands(rng, m, k, n)
    a_zp, b_zp, col = _epilogue_args(rng, n, k, b)
    real = rng.uniform(1e-5, 0.9, n)
    pairs = [quantize_multiplier(r) for r in real]
    mult, shift = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    bias_q = rng.integers(-5000, 5000, n)
    out_zp = int(rng.integers(0, 256))
    for pairs in (False, True):
        want = R.qgemm_fixed_point(a, b, a_zp, col, b_zp, bias_q, mult, shift, out_zp, relu, pairs)
        for bp in packings(b, np.uint8):
            out = np.empty((m, n), np.uint8)
            G.qgemm_fixed_point(a, b, bp, a_zp, col, b_zp, bias_q, mult, shift, out_zp, relu, pairs, out)
            np.testing.assert_array_equal(out, want)
    want = R.qgemm_fixed_point(a, b, a_zp, col, b_zp, bias_q, mult, shift, out_zp, relu)
    raw = R.corrected(R.gemm_s32(a, b), a, a_zp, col, b_zp).astype(np.int64) + bias_q
    exact = np.clip(np.floor(raw * (mult * 2.0 ** (shift - 31)) + 0.5) + out_zp, out_zp if relu else 0, 255)
    assert np.abs(want.astype(np.int64) - exact).max(initial=0) <= 1


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(3, 8), st.integers(3, 8),
       st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2), st.integers(1, 2), seeds)
def test_im2col_equals_twin(n, cg, groups, h, w, kh, kw, stride, pad, dil, seed):
    if h + 2 * pad < dil * (kh - 1) + 1 or w + 2 * pad < dil * (kw - 1) + 1:
        return
    x = np.random.default_rng(seed).integers(0, 256, size=(n, cg * groups, h, w)).astype(np.uint8)
    oh, ow = conv_output_size(h, kh, stride, (pad, pad), dil), conv_output_size(w, kw, stride, (pad, pad), dil)
    want = R.im2col(x, kh, kw, oh, ow, stride, stride, pad, pad, dil, dil, groups, 77)
    assert want.shape == (n * oh * ow, cg * groups * kh * kw)
    out = np.empty(want.shape, np.uint8)
    K.im2col(x.transpose(0, 2, 3, 1), kh, kw, oh, ow, stride, stride, pad, pad, dil, dil, groups, 77, out)
    np.testing.assert_array_equal(out, want)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))          # a channels-last array, and K padded to 4
    padded = np.full((want.shape[0], -(-want.shape[1] // 4) * 4 + 4), 9, np.uint8)
    K.im2col(nhwc, kh, kw, oh, ow, stride, stride, pad, pad, dil, dil, groups, 77, padded)
    np.testing.assert_array_equal(padded[:, :want.shape[1]], want)
    assert not padded[:, want.shape[1]:].any()
    if groups == 1 and cg == 1:          # one channel: the classic (c, i, j) unfold
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=77)
        assert out[0, 0] == xp[0, 0, 0, 0] and out[0, kw - 1] == xp[0, 0, 0, (kw - 1) * dil]


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2), seeds)
def test_int8_im2col_is_the_float_im2col_with_channels_last(c, kh, kw, stride, pad, seed):
    """docs/quantization.md (11): cols_q[(n, y, x), (p*KW + q)*C + c] == cols_f[n, (c*KH + p)*KW + q, (y, x)]."""
    from minicompress.nn.functional.conv import im2col as float_im2col
    x = np.random.default_rng(seed).integers(0, 256, size=(2, c, 6, 5)).astype(np.uint8)
    oh, ow = conv_output_size(6, kh, stride, (pad, pad), 1), conv_output_size(5, kw, stride, (pad, pad), 1)
    cols_q = R.im2col(x, kh, kw, oh, ow, stride, stride, pad, pad, 1, 1, 1, 77)        # (N*OH*OW, KH*KW*C)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=77)
    cols_f = float_im2col(xp, (kh, kw), (oh, ow), (stride, stride), (1, 1))            # (N, C*KH*KW, OH*OW)
    k_q = np.arange(kh * kw * c).reshape(kh, kw, c).transpose(2, 0, 1).reshape(-1)     # k_q at each k_f
    np.testing.assert_array_equal(cols_q[:, k_q], cols_f.transpose(0, 2, 1).reshape(-1, c * kh * kw))


def test_vnni_layout_roundtrip():
    b = np.random.default_rng(0).integers(-128, 128, size=(37, 13)).astype(np.int8)
    bp = vnni.pack_b(b)
    assert bp.shape == (48 // 16, 16 // 4, 16, 4)                  # N padded to 16, K to 4
    unpacked = bp.transpose(0, 2, 1, 3).reshape(48, 16)
    np.testing.assert_array_equal(unpacked[:37, :13], b)
    assert not unpacked[37:].any() and not unpacked[:, 13:].any()
