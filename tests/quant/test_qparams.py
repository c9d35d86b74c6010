"""``choose_quantization_params``: both of PyTorch's copies of FBGEMM's ChooseQuantizationParams, bit for bit.

- variant 'aten' (``quant_utils``, double scale, error terms subtracted) against
  ``torch._choose_qparams_per_tensor`` (0..255) and ``torch.quantize_per_tensor_dynamic`` (qint8, -128..127);
- variant 'fbgemm' (float32 scale, error terms added) against ``torch.fused_moving_avg_obs_fake_quant``
  with the observer off, per tensor and per channel, affine and symmetric ("preserve_sparsity").

Random ranges almost never decide the sign of the error terms: zp from min and zp from max agree unless
one of them lies within rounding noise of a half-integer, and for qmin = 0 both signs pick min anyway.
``near_half_ranges`` builds exactly those ranges for a signed qmin, where the two signs disagree.
"""
import numpy as np
import pytest

from minicompress.quant.fake_quantize import choose_qparams_fused
from minicompress.quant.qparams import choose_quantization_params

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:UserWarning")

ADVERSARIAL = [(0.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (-1.0, 1.0), (-1e-45, 1e-45), (-1e-45, 0.0), (0.0, 1e-45),
               (-3e-38, 3e-38), (-1e-8, 1e-8), (-1e-8, 3e-9), (1e-9, 2e-9), (-2e-9, -1e-9), (2.0, 5.0),
               (-5.0, -2.0), (-127.0, 127.0), (-128.0, 127.0), (-3.0, 7e-6), (-1e-3, 1e5), (0.0, 3.4e38),
               (-3.4e38, 0.0), (5e-6, 5e-6), (-7.25, -7.25)]


def near_half_ranges(qmin, qmax, float32_scale, n=24, seed=0):
    """(lo, hi) float32 whose zero point the sign of the error terms decides: qmin - lo/s and qmax - hi/s
    round to different integers (s as the variant computes it) and the two signs pick different ends.

    Two families: lo = -(k + 1/2) * s with a 1e-7 relative jitter (a float32 scale is off by ~1e-5 codes),
    and lo = -a, hi = a * (2R/d - 1) for an odd divisor d of R = qmax - qmin, whose exact zero point
    qmin + (d - 1)/2 + 1/2 lies on a half-integer while the double scale 2a/d is inexact.
    """
    rng = np.random.default_rng(seed)
    r = qmax - qmin
    s = 10.0 ** rng.uniform(-4, 3, 200_000)
    jittered = -(rng.integers(1, r, s.size) - qmin + 0.5) * s * (1 + rng.normal(size=s.size) * 1e-7)
    a = rng.integers(1, 2 ** 16, 200_000) * 2.0 ** rng.integers(-20, 10, 200_000)
    d = rng.choice([v for v in range(3, r + 1, 2) if r % v == 0], a.size)
    lo = np.concatenate([jittered, -a]).astype(np.float32)
    hi = np.concatenate([jittered + r * s, a * (2 * r / d - 1)]).astype(np.float32)
    scale = (hi.astype(np.float64) - lo) / r
    scale = scale.astype(np.float32).astype(np.float64) if float32_scale else scale
    lo_q, hi_q = np.abs(lo / scale), np.abs(hi / scale)
    sign_decides = (abs(qmin) + lo_q < abs(qmax) + hi_q) != (abs(qmin) - lo_q < abs(qmax) - hi_q)
    pick = (lo < 0) & (hi > 0) & (scale > 6.1e-5) & sign_decides & (
        np.rint(qmin - lo / scale) != np.rint(qmax - hi / scale))
    idx = rng.permutation(np.flatnonzero(pick))[:n]
    assert idx.size == n, "the construction should find enough deciding ranges"
    return list(zip(lo[idx], hi[idx]))


def torch_fused(torch, lo, hi, qmin, qmax, symmetric):
    """(scale, zero_point) arrays from the fused op with observer off and fake-quant on."""
    lo, hi = (np.ascontiguousarray(np.atleast_1d(v), np.float32) for v in (lo, hi))  # from_numpy keeps strides
    per_channel = lo.size > 1
    x = torch.zeros((lo.size, 2)) if per_channel else torch.zeros(2)
    s, z = torch.ones(lo.size), torch.zeros(lo.size, dtype=torch.int32)
    torch.fused_moving_avg_obs_fake_quant(x, torch.tensor([0]), torch.tensor([1]), torch.from_numpy(lo),
                                          torch.from_numpy(hi), s, z, 0.01, qmin, qmax, 0, per_channel, symmetric)
    return s.numpy(), z.numpy()


@pytest.mark.parametrize("qmin, qmax", [(-128, 127), (0, 255), (-8, 7), (0, 15), (-64, 63)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_fbgemm_variant_matches_fused_op(torch, qmin, qmax, symmetric):
    """Adversarial ranges (zero, tiny, denormal, one-signed, huge) and, for a signed range, ranges whose
    zero point is decided by the sign of the error terms (fbgemm adds them)."""
    ranges = ADVERSARIAL + (near_half_ranges(qmin, qmax, True) if qmin < 0 else [])
    lo, hi = np.array(ranges, np.float32).T
    want_s, want_z = torch_fused(torch, lo, hi, qmin, qmax, symmetric)     # per channel: all at once
    got_s, got_z = choose_qparams_fused(lo, hi, qmin, qmax, symmetric)
    np.testing.assert_array_equal(got_s.view(np.int32), want_s.view(np.int32))
    np.testing.assert_array_equal(got_z, want_z)
    for i in range(0, len(ranges), 7):                                     # per tensor: the same rule
        (s,), (z,) = torch_fused(torch, lo[i], hi[i], qmin, qmax, symmetric)
        assert choose_quantization_params(lo[i], hi[i], qmin, qmax, preserve_sparsity=symmetric,
                                          variant="fbgemm") == (float(s), int(z)), ranges[i]


def test_symmetric_zero_point_decided_after_the_range_is_rewritten(torch):
    """A denormal range whose symmetric rewrite underflows to [0, 0] keeps the affine zero point
    (fbgemm re-tests min < 0 < max at the end); deciding "symmetric" up front gave zp 0 instead of 127."""
    (s,), (z,) = torch_fused(torch, -1e-45, 1e-45, -128, 127, True)
    assert choose_quantization_params(-1e-45, 1e-45, -128, 127, preserve_sparsity=True,
                                      variant="fbgemm") == (float(s), int(z)) == (float(np.float32(0.1)), 127)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_aten_variant_matches_dynamic_quantization(torch, reduce_range):
    """quint8 0..255 (what dynamic Linear uses) and qint8 -128..127, where the subtracted error terms
    decide the zero point of every ``near_half_ranges`` case (an added sign fails all of them). With a
    double scale such cases need an odd divisor of R: none for reduce_range's -64..63 (R = 127 is prime)."""
    for lo, hi in ADVERSARIAL:
        x = torch.tensor([lo, hi], dtype=torch.float32)
        want = torch._choose_qparams_per_tensor(x, reduce_range)
        assert choose_quantization_params(lo, hi, 0, 255, reduce_range) == want, (lo, hi)
    deciding = [] if reduce_range else near_half_ranges(-128, 127, False)
    for lo, hi in ADVERSARIAL[:-4] + deciding:
        q = torch.quantize_per_tensor_dynamic(torch.tensor([lo, hi], dtype=torch.float32), torch.qint8,
                                              reduce_range)
        got = choose_quantization_params(lo, hi, -128, 127, reduce_range)
        assert got == (q.q_scale(), q.q_zero_point()), (lo, hi)


def test_variants_differ_only_where_pytorch_does():
    lo, hi = near_half_ranges(-128, 127, True, n=1)[0]
    aten = choose_quantization_params(lo, hi, -128, 127)
    fbgemm = choose_quantization_params(lo, hi, -128, 127, variant="fbgemm")
    assert fbgemm[0] == float(np.float32(fbgemm[0])) and aten[0] != fbgemm[0]
    with pytest.raises(ValueError, match="variant"):
        choose_quantization_params(0.0, 1.0, variant="x86")
    with pytest.raises(ValueError, match="min"):
        choose_quantization_params(1.0, 0.0)
    with pytest.raises(ValueError, match="qmin"):
        choose_quantization_params(0.0, 1.0, 3, 3, variant="fbgemm")
