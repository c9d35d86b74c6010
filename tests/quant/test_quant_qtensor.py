"""quantize_per_tensor / quantize_per_channel / dequantize vs PyTorch 2.13.0, rounding modes, invariants.

The adversarial inputs are exact ties: with a power-of-two scale, x = (k + 1/2) * s makes x * inv
exactly half-way, so "zero point before rounding" (PyTorch's FMA path) and "after" give different
codes whenever the zero point is odd. Other scales use near-ties and their float32 neighbours.
"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress.quant import QTensor, dequantize, quantize_per_channel, quantize_per_tensor
from minicompress.quant import reference as ref
from minicompress.quant.kernels import fma32 as fma32_kernel
from minicompress.quant.rounding import DIV_HALF_AWAY, DIV_HALF_EVEN, FMA, MODES, MUL_ROUND_ADD, get_mode

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

RANGES = {"qint8": (-128, 127), "quint8": (0, 255), "qint32": (-2 ** 31, 2 ** 31 - 1)}


@st.composite
def scales(draw):
    """A float32-representable scale: a power of two (exact ties) or anything in [1e-3, 2)."""
    if draw(st.booleans()):
        return float(2.0 ** draw(st.integers(-9, 0)))
    return float(np.float32(draw(st.floats(1e-3, 2.0))))


def halfway_data(draw, scale: float, shape: tuple) -> np.ndarray:
    """Values at, and one float32 ulp around, x = (k + 1/2) / inv, plus Gaussian noise."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    inv = np.float64(np.float32(1) / np.float32(scale))
    ties = ((rng.integers(-300, 300, size=shape) + 0.5) / inv).astype(np.float32)
    pick = rng.integers(0, 4, size=shape)
    up, down = np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))
    noise = (rng.normal(size=shape) * 100 * scale).astype(np.float32)
    return np.choose(pick, [ties, up, down, noise]).astype(np.float32)


@st.composite
def per_tensor_cases(draw):
    dtype = draw(st.sampled_from(sorted(RANGES)))
    lo, hi = RANGES["qint8" if dtype == "qint32" else dtype]
    scale, zp = draw(scales()), draw(st.integers(lo, hi))
    n = draw(st.integers(1, 80))            # lengths off multiples of 8 / 16 hit FBGEMM's masked tail
    return halfway_data(draw, scale, (n,)), scale, zp, dtype


@st.composite
def per_channel_cases(draw):
    dtype = draw(st.sampled_from(sorted(RANGES)))
    lo, hi = RANGES["qint8" if dtype == "qint32" else dtype]
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(0, ndim - 1))
    c = shape[axis]
    s = np.array([draw(scales()) for _ in range(c)])
    z = np.array([draw(st.integers(lo, hi)) for _ in range(c)], np.int64)
    return halfway_data(draw, float(s.min()), shape), s, z, axis, dtype


@given(per_tensor_cases())
def test_quantize_per_tensor_matches_torch(torch, case):
    x, scale, zp, dtype = case
    q_t = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, getattr(torch, dtype))
    q = quantize_per_tensor(x, scale, zp, dtype)
    np.testing.assert_array_equal(q.int_repr, q_t.int_repr().numpy())
    assert q.int_repr.dtype == q_t.int_repr().numpy().dtype
    assert (q.scale, q.zero_point) == (q_t.q_scale(), q_t.q_zero_point())
    np.testing.assert_array_equal(q.dequantize().view(np.int32), q_t.dequantize().numpy().view(np.int32))


@given(per_channel_cases())
def test_quantize_per_channel_matches_torch(torch, case):
    x, s, z, axis, dtype = case
    q_t = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(s), torch.from_numpy(z), axis,
                                     getattr(torch, dtype))
    q = quantize_per_channel(x, s, z, axis, dtype)
    np.testing.assert_array_equal(q.int_repr, q_t.int_repr().numpy())
    np.testing.assert_array_equal(q.dequantize().view(np.int32), q_t.dequantize().numpy().view(np.int32))


@given(st.sampled_from(sorted(RANGES)), st.floats(1e-4, 10.0), st.integers(0, 2 ** 32 - 1), st.booleans())
def test_dequantize_matches_torch_on_all_codes(torch, dtype, scale, seed, per_channel):
    """Scales that are not float32 (torch keeps doubles) and, for qint32, codes near +-2^31."""
    rng = np.random.default_rng(seed)
    lo, hi = RANGES[dtype]
    storage = {"qint8": np.int8, "quint8": np.uint8, "qint32": np.int32}[dtype]
    codes = rng.integers(lo, hi + 1, size=(3, 37), dtype=np.int64).astype(storage)
    zlo, zhi = RANGES["qint8" if dtype == "qint32" else dtype]
    if per_channel:
        s, z = rng.uniform(scale / 2, scale, size=37), rng.integers(zlo, zhi + 1, size=37)
        t = torch._make_per_channel_quantized_tensor(torch.from_numpy(codes), torch.from_numpy(s),
                                                     torch.from_numpy(z), 1)
        q = QTensor(codes, s, z, axis=1)
    else:
        z = int(rng.integers(zlo, zhi + 1))
        t = torch._make_per_tensor_quantized_tensor(torch.from_numpy(codes), scale, z)
        q = QTensor(codes, scale, z)
    np.testing.assert_array_equal(dequantize(q).view(np.int32), t.dequantize().numpy().view(np.int32))


# Constructed so that x * inv + zp lies within half a float64 ulp of a float32 midpoint next to a
# half-integer: float64 "product + zp, then round to float32" rounds twice and lands on the wrong side.
DOUBLE_ROUNDING_CASES = [("0.80755866", "1.6150926", 128), ("0.720255", "1.4404881", 128),
                         ("0.69420916", "1.3883971", 200), ("-0.80755866", "1.6150926", 200),
                         ("0.720255", "1.4404881", 254), ("-0.69420916", "1.3883971", 254)]


@pytest.mark.parametrize("x, scale, zp", DOUBLE_ROUNDING_CASES)
def test_double_rounding_cases_match_torch(torch, x, scale, zp):
    x, scale = np.float32(x), float(np.float32(scale))
    xs = np.full(16, x, np.float32)
    expected = torch.quantize_per_tensor(torch.from_numpy(xs), scale, zp, torch.quint8).int_repr().numpy()
    inv = np.float32(1) / np.float32(scale)
    naive = np.rint(np.float32(np.float64(x) * np.float64(inv) + zp))        # float64 then float32: 2 roundings
    assert naive != expected[0], "the case must defeat the naive emulation"
    np.testing.assert_array_equal(quantize_per_tensor(xs, scale, zp, "quint8").int_repr, expected)   # kernel
    twin = ref.quantize(xs.reshape(1, 1, -1), np.array([scale], np.float32), np.array([inv]), np.array([zp]),
                        0, 255, FMA)
    np.testing.assert_array_equal(twin.reshape(-1), expected)


def _round_to_f32(v: Fraction) -> np.float32:
    """Correctly rounded float32 of an exact rational (ties to even)."""
    c = np.float32(float(v))
    cands = [np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))]
    best = min(cands, key=lambda f: (abs(Fraction(float(f)) - v), int(np.array(f).view(np.int32)) & 1))
    return best


@given(st.integers(0, 2 ** 32 - 1))
def test_fma32_is_correctly_rounded(seed):
    rng = np.random.default_rng(seed)
    a = np.float32(rng.normal() * 10.0 ** rng.integers(-3, 3))
    b = np.float32(rng.normal() * 10.0 ** rng.integers(-3, 3))
    c = float(rng.integers(-300, 300)) if rng.random() < 0.5 else float(np.float32(rng.normal()))
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(c)
    want = _round_to_f32(exact)
    assert fma32_kernel(a, b, c) == want
    assert ref.fma32(np.array([a]), np.array([b]), np.array([c]))[0] == want


@pytest.mark.parametrize("x, scale, zp", DOUBLE_ROUNDING_CASES)
def test_fma32_exact_on_constructed_cases(x, scale, zp):
    x, inv = np.float32(x), np.float32(1) / np.float32(scale)
    want = _round_to_f32(Fraction(float(x)) * Fraction(float(inv)) + zp)
    assert fma32_kernel(x, inv, float(zp)) == want == ref.fma32(np.array([x]), np.array([inv]), np.array([zp]))[0]


# ------------------------------------------------------------------------------------ other rounding modes
def test_rounding_modes_registry():
    assert set(MODES) == {"pytorch-2.13", "fake-quant", "onnx", "onnxruntime", "tflite"}
    with pytest.raises(ValueError, match="unknown rounding mode"):
        get_mode("banker")


@given(per_tensor_cases())
def test_fake_quant_mode_matches_torch_fake_quantize(torch, case):
    x, scale, zp, dtype = case
    lo, hi = RANGES[dtype]
    if dtype == "qint32":
        return
    fq = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), scale, zp, lo, hi).numpy()
    q = quantize_per_tensor(x, scale, zp, dtype, rounding="fake-quant")
    np.testing.assert_array_equal(((q.int_repr.astype(np.float32) - zp) * np.float32(scale)), fq)


def test_modes_disagree_on_ties(torch):
    """Exact ties with an odd zero point: zp-before-rounding (torch) != zp-after (fake-quant)."""
    x = ((np.arange(-10, 30) + 0.5) * 0.25).astype(np.float32)       # codes 1..40: never clamped
    torch_codes = torch.quantize_per_tensor(torch.from_numpy(x), 0.25, 11, torch.quint8).int_repr().numpy()
    ours = quantize_per_tensor(x, 0.25, 11, "quint8")
    after = quantize_per_tensor(x, 0.25, 11, "quint8", rounding="fake-quant")
    np.testing.assert_array_equal(ours.int_repr, torch_codes)
    assert (after.int_repr != torch_codes).all()


@given(st.floats(1e-3, 2.0), st.integers(-20, 20), st.integers(0, 2 ** 32 - 1))
def test_onnx_and_tflite_modes_follow_their_definitions(scale, zp, seed):
    s = np.float32(scale)
    x = (((np.random.default_rng(seed).integers(-100, 100, 64) + 0.5) * s)).astype(np.float32)
    onnx = quantize_per_tensor(x, s, zp, "qint8", rounding="onnx").int_repr
    tfl = quantize_per_tensor(x, s, zp, "qint8", rounding="tflite").int_repr
    v = x / s                                                       # float32 division
    np.testing.assert_array_equal(onnx, np.clip(np.rint(v) + zp, -128, 127))
    away = np.sign(v) * np.floor(np.abs(v).astype(np.float64) + 0.5)
    np.testing.assert_array_equal(tfl, np.clip(away + zp, -128, 127))
    for rule in (DIV_HALF_EVEN, DIV_HALF_AWAY, MUL_ROUND_ADD):
        assert ref.quantize(x.reshape(1, 1, -1), np.array([s]), np.array([1 / s], np.float32), np.array([zp]),
                            -128, 127, rule).shape == (1, 1, 64)


# ------------------------------------------------------------------------------------ invariants
@given(scales(), st.integers(0, 255), st.integers(0, 2 ** 32 - 1), st.sampled_from(sorted(MODES)))
def test_roundtrip_within_half_a_step(scale, zp, seed, mode):
    """Inside the representable range, |dequantize(quantize(x)) - x| <= s/2 (plus float32 rounding)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform((0 - zp) * scale, (255 - zp) * scale, size=200).astype(np.float32)
    q = quantize_per_tensor(x, scale, zp, "quint8", rounding=mode)
    err = np.abs(q.dequantize().astype(np.float64) - x)
    assert (err <= scale / 2 * (1 + 1e-6) + 1e-6 * np.abs(x)).all()


def test_saturation_and_infinities():
    q = quantize_per_tensor(np.array([-np.inf, -1e30, 0, 1e30, np.inf], np.float32), 0.1, 3, "qint8")
    np.testing.assert_array_equal(q.int_repr, [-128, -128, 3, 127, 127])


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("scale", [0.0, -1.0, np.inf, np.nan, 1e-50])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        quantize_per_tensor(np.ones(3, np.float32), scale, 0, "quint8")


def test_bad_zero_point_dtype_and_input():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="out of range"):
        quantize_per_tensor(x, 0.1, 256, "quint8")
    with pytest.raises(TypeError, match="zero_point must be an integer"):
        quantize_per_tensor(x, 0.1, 1.5, "quint8")
    with pytest.raises(TypeError, match="quantized dtype"):
        quantize_per_tensor(x, 0.1, 0, "int8")
    with pytest.raises(TypeError, match="floating-point"):
        quantize_per_tensor(np.ones(3, np.int32), 0.1, 0, "quint8")
    with pytest.raises(ValueError, match="NaN"):
        quantize_per_tensor(np.array([np.nan], np.float32), 0.1, 0, "quint8")
    with pytest.raises(ValueError, match="shape"):
        quantize_per_channel(np.ones((2, 3), np.float32), [0.1, 0.1], [0, 0, 0], 0, "qint8")
    with pytest.raises(ValueError, match="axis"):
        quantize_per_channel(np.ones((2, 3), np.float32), [0.1, 0.1], [0, 0], 2, "qint8")
    with pytest.raises(TypeError, match="stored as"):
        QTensor(np.zeros(3, np.int16), 0.1, 0, dtype="qint8")
