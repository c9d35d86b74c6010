"""LSQ learnable fake-quant against PyTorch 2.13's ``_fake_quantize_learnable_per_*_affine``.

Forward and dX bit-identical; dScale / dZeroPoint (sums over the tensor) within 1e-6 of the sum of
the absolute per-element terms (PyTorch sums float32 in its own order). Float64 finite differences
check the scale / zero-point formulas where the function is differentiable (away from rounding
boundaries): LSQ's dScale is the true derivative minus the straight-through term sum(dy * x / s).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress.nn import Module
from minicompress.quant.learnable import (
    LearnableFakeQuantize, fake_quantize_learnable_per_channel_affine_backward,
    fake_quantize_learnable_per_channel_affine_forward, fake_quantize_learnable_per_tensor_affine_backward,
    _grads, fake_quantize_learnable_per_tensor_affine_forward)

seeds = st.integers(0, 2**32 - 1)
RANGES = [(0, 255), (-128, 127), (0, 15), (-8, 7), (-3, 5)]
SUM_RTOL = 1e-6
FD_RTOL = 1e-6


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def close_sums(ours, theirs, abs_terms):
    """|ours - theirs| <= 1e-6 * sum|terms| (+ one float32 ulp of the result)."""
    err = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    return np.all(err <= SUM_RTOL * abs_terms + np.spacing(np.abs(theirs)).astype(np.float64))


def tie_values(rng, shape, s_b, z_b, qmin, qmax):
    """Per element: a tie (k + 0.5 - z) * s, a float32 neighbour of one, or a wide Gaussian value."""
    k = rng.integers(qmin - 3, qmax + 4, size=shape)
    zi = np.floor(z_b + 0.5)
    ties = ((k + 0.5 - zi) * s_b).astype(np.float32)
    kind = rng.integers(0, 4, size=shape)
    x = np.where(kind == 1, np.nextafter(ties, np.float32(np.inf)), ties)
    x = np.where(kind == 2, np.nextafter(ties, np.float32(-np.inf)), x)
    wide = rng.standard_normal(shape) * (qmax - qmin) * s_b * 0.6
    return np.where(kind == 3, wide, x).astype(np.float32)


def zero_points(rng, n, qmin, qmax):
    """Integers, .5 halves (forward/backward rounding disagree) and arbitrary fractions."""
    z = rng.uniform(qmin - 0.4, qmax + 0.4, size=n)
    kind = rng.integers(0, 3, size=n)
    z = np.where(kind == 0, np.round(z), np.where(kind == 1, np.floor(z) + 0.5, z))
    return z.astype(np.float32)


@st.composite
def lsq_cases(draw, per_channel):
    rng = np.random.default_rng(draw(seeds))
    qmin, qmax = draw(st.sampled_from(RANGES))
    ndim = draw(st.integers(2 if per_channel else 1, 3))  # torch's per-channel backward fails on 1-D x
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(0, ndim - 1)) if per_channel else None
    c = shape[axis] if per_channel else 1
    scale = rng.uniform(1e-2, 1.5, size=c).astype(np.float32)
    zp = zero_points(rng, c, qmin, qmax)
    idx = [1] * ndim
    if per_channel:
        idx[axis] = c
    x = tie_values(rng, shape, scale.reshape(idx).astype(np.float64), zp.reshape(idx), qmin, qmax)
    g = draw(st.sampled_from([1.0, 1.0 / (x.size * qmax) ** 0.5]))
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, scale, zp, axis, qmin, qmax, g, dy


def torch_lsq(torch, x, scale, zp, axis, qmin, qmax, g, dy):
    xt = torch.tensor(x, requires_grad=True)
    st_, zt = torch.tensor(scale, requires_grad=True), torch.tensor(zp, requires_grad=True)
    if axis is None:
        y = torch._fake_quantize_learnable_per_tensor_affine(xt, st_, zt, qmin, qmax, g)
    else:
        y = torch._fake_quantize_learnable_per_channel_affine(xt, st_, zt, axis, qmin, qmax, g)
    (y * torch.tensor(dy)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), st_.grad.numpy(), zt.grad.numpy()


def ours_lsq(x, scale, zp, axis, qmin, qmax, g, dy):
    y, cache = ours_lsq_forward(x, scale, zp, axis, qmin, qmax, g)
    if axis is None:
        return (y, *fake_quantize_learnable_per_tensor_affine_backward(dy, cache))
    return (y, *fake_quantize_learnable_per_channel_affine_backward(dy, cache))


def abs_term_sums(x, scale, zp, axis, qmin, qmax, g, dy):
    """sum over the reduced axes of |per-element dScale| and |dZp| terms (float64)."""
    _, cache = ours_lsq_forward(x, scale, zp, axis, qmin, qmax, g)
    if axis is None:
        zb = np.trunc(np.clip(zp + np.float32(0.5), qmin, qmax))
        _, ds, dz = _grads(dy, x, scale[0], zb[0], qmin, qmax, np.float32(g))
        return np.abs(ds).sum(dtype=np.float64), np.abs(dz).sum(dtype=np.float64)
    x, s, zr = cache[:3]
    _, ds, dz = _grads(dy, x, s, zr, qmin, qmax, np.float32(g))
    others = tuple(i for i in range(x.ndim) if i != axis)
    return np.abs(ds).sum(axis=others, dtype=np.float64), np.abs(dz).sum(axis=others, dtype=np.float64)


def ours_lsq_forward(x, scale, zp, axis, qmin, qmax, g):
    if axis is None:
        return fake_quantize_learnable_per_tensor_affine_forward(x, scale, zp, qmin, qmax, g)
    return fake_quantize_learnable_per_channel_affine_forward(x, scale, zp, axis, qmin, qmax, g)


# ---------------------------------------------------------------------------- parity with torch
def assert_matches_torch(torch, case):
    """y and dx bit-identical, dscale / dzero_point sums within ``close_sums``."""
    y, dx, ds, dz = ours_lsq(*case)
    ty, tdx, tds, tdz = torch_lsq(torch, *case)
    assert same_bits(y, ty) and same_bits(dx, tdx)
    ds_bound, dz_bound = abs_term_sums(*case)
    assert close_sums(ds, tds, ds_bound) and close_sums(dz, tdz, dz_bound)


@pytest.mark.parametrize("per_channel", [False, True])
@given(data=st.data())
def test_lsq_matches_torch(torch, per_channel, data):
    case = data.draw(lsq_cases(per_channel))
    y, dx, ds, dz = ours_lsq(*case)
    ty, tdx, tds, tdz = torch_lsq(torch, *case)
    assert same_bits(y, ty)
    assert same_bits(dx, tdx)
    assert ds.shape == tds.shape and dz.shape == tdz.shape and ds.dtype == np.float32
    ds_bound, dz_bound = abs_term_sums(*case)
    assert close_sums(ds, tds, ds_bound)
    assert close_sums(dz, tdz, dz_bound)


@pytest.mark.parametrize("per_channel", [False, True])
def test_non_finite_inputs_follow_torch(torch, per_channel):
    """PyTorch's LSQ forward is the plain fake-quant op (NaN -> qmin; per channel +inf -> qmin too) and its
    backward casts xq to int64 (inf, NaN -> INT64_MIN: below the range)."""
    x = np.array([[np.inf, -np.inf, np.nan, 1e30, -1e30, 3.0, -0.01, 0.26]] * 2, np.float32)
    scale = np.array([0.1, 0.2] if per_channel else [0.1], np.float32)
    zp = np.array([2.4, 0.0] if per_channel else [2.4], np.float32)
    dy = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    case = (x, scale, zp, 0 if per_channel else None, 0, 15, 0.5, dy)
    assert_matches_torch(torch, case)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("x, scale, zp", [("0.720255", "1.4404881", 254), ("-0.69420916", "1.3883971", 254),
                                          ("0.80755866", "1.6150926", 128)])
def test_backward_adds_zero_point_in_one_fused_rounding(torch, per_channel, x, scale, zp):
    """xq = rint(fma(x, inv, z)): on these inputs a double sum rounded to float32 gives the neighbouring
    code (254 instead of 255: inside instead of outside [0, 254])."""
    x = np.full((2, 3), np.float32(x))
    s, z = np.full(2 if per_channel else 1, scale, np.float32), np.full(2 if per_channel else 1, zp, np.float32)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    case = (x, s, z, 0 if per_channel else None, 0, 254, 1.0, dy)
    assert_matches_torch(torch, case)


def test_zero_point_rounds_half_even_forward_but_truncates_z_plus_half_backward(torch):
    """zp = 2.5: the forward quantizes with zp 2, the per-tensor backward with int(2.5 + 0.5) = 3."""
    s, qmin, qmax = np.array([1.0], np.float32), 0, 5
    x = np.array([-2.0, 2.4, 3.0], np.float32)   # q(zp=2) = 0, 4, 5 (all in range); q(zp=3) = 1, 5, 6
    dy = np.ones(3, np.float32)
    case = (x, s, np.array([2.5], np.float32), None, qmin, qmax, 1.0, dy)
    y, dx, ds, dz = ours_lsq(*case)
    ty, tdx, tds, tdz = torch_lsq(torch, *case)
    assert np.array_equal(y, [-2.0, 2.0, 3.0]) and same_bits(y, ty)
    assert np.array_equal(dx, [1, 1, 0]) and same_bits(dx, tdx)      # x = 3 is "above" for zp 3
    assert dz[0] == -1.0 and tdz[0] == -1.0 and ds[0] == tds[0]
    # negative zero point: forward rint(-3.7) = -4, backward int(clamp(-3.2)) = -3
    case = (np.array([0.0], np.float32), s, np.array([-3.7], np.float32), None, -8, 7, 1.0, dy[:1])
    assert same_bits(ours_lsq(*case)[0], torch_lsq(torch, *case)[0])


def test_negative_integer_zero_point_is_shifted_by_one_in_the_per_tensor_backward(torch):
    """zp = -6: int(-6 + 0.5) = -5 in the backward, so x = 13 (q = 7 = qmax, in range, y = 13 in the
    forward) counts as *above* the range: dX = 0, dScale = qmax - (-5) = 12, dZp = -scale."""
    case = (np.float32([13.0]), np.float32([1.0]), np.float32([-6.0]), None, -8, 7, 1.0, np.float32([1.0]))
    y, dx, ds, dz = ours_lsq(*case)
    ty, tdx, tds, tdz = torch_lsq(torch, *case)
    assert y[0] == 13.0 and dx[0] == 0.0 and ds[0] == 12.0 and dz[0] == -1.0
    assert same_bits(y, ty) and same_bits(dx, tdx) and same_bits(ds, tds) and same_bits(dz, tdz)


def test_backward_uses_one_fused_multiply_add(torch):
    """rint(zp + x * inv) is computed as one FMA by PyTorch's CPU build: inputs on which FMA and
    two roundings disagree flip the in-range mask; dX must still be bit-identical."""
    rng = np.random.default_rng(5)
    s, z, qmin, qmax = np.float32(0.31543767), np.float32(203), 0, 255
    k = rng.choice([qmin - 1, qmax], size=20000)
    x = ((k + 0.5 - z + rng.uniform(-2e-5, 2e-5, size=k.size)) * np.float64(s)).astype(np.float32)
    inv = np.float32(1) / s
    two_roundings = np.rint(z + x * inv)
    fused = np.rint((x.astype(np.float64) * inv + z).astype(np.float32))
    x = x[two_roundings != fused]
    assert x.size > 100
    case = (x, np.array([s]), np.array([z]), None, qmin, qmax, 1.0, np.ones_like(x))
    assert same_bits(ours_lsq(*case)[1], torch_lsq(torch, *case)[1])


# ---------------------------------------------------------------------------- finite differences
def smooth_case(rng, shape, axis, qmin, qmax):
    """float64 x at (k + u - z) * s with |u| <= 0.35: away from rounding and clamp boundaries;
    some k outside [qmin, qmax] so all three branches (in range, below, above) are exercised."""
    c = shape[axis] if axis is not None else 1
    idx = [1] * len(shape)
    if axis is not None:
        idx[axis] = c
    s = rng.uniform(0.05, 1.0, size=c)
    # per tensor: z >= 0, since PyTorch's backward uses int(z + 0.5), which is z + 1 for negative
    # integers (test_negative_integer_zero_point_is_shifted_by_one_in_the_per_tensor_backward)
    z = rng.integers(qmin if axis is not None else 0, qmax + 1, size=c).astype(np.float64)
    levels = np.r_[qmin - 4:qmin - 1, qmin + 1:qmax, qmax + 2:qmax + 5]  # skip the clamp boundaries
    k = rng.choice(levels, size=shape)
    x = (k + rng.uniform(-0.35, 0.35, size=shape) - z.reshape(idx)) * s.reshape(idx)
    return x, s, z


def continuous_zp_fq(x, s, z, qmin, qmax):
    """(clamp(rint(x / s) + z) - z) * s with a real-valued z: the function LSQ's dZp differentiates."""
    return (np.clip(np.rint(x / s) + z, qmin, qmax) - z) * s


@pytest.mark.parametrize("per_channel", [False, True])
@given(seed=seeds, qrange=st.sampled_from(RANGES))
def test_lsq_scale_and_zero_point_gradients_match_finite_differences(per_channel, seed, qrange):
    rng = np.random.default_rng(seed)
    qmin, qmax = qrange
    shape = (3, 5)
    axis = 1 if per_channel else None
    x, s, z = smooth_case(rng, shape, axis, qmin, qmax)
    dy = rng.standard_normal(shape)
    g = 0.37
    _, dx, ds, dz = ours_lsq(x, s, z, axis, qmin, qmax, g, dy)
    view = (1, -1) if per_channel else (1, 1)
    sb, zb = s.reshape(view), z.reshape(view)
    inside = (np.rint(x / sb) + zb >= qmin) & (np.rint(x / sb) + zb <= qmax)
    assert np.array_equal(dx, dy * inside)        # STE mask
    red = 0 if per_channel else None
    for c in range(s.size):
        h = 1e-6 * s[c]
        sp, sm = s.copy(), s.copy()
        sp[c] += h
        sm[c] -= h
        f = lambda ss: np.sum(dy * ours_lsq(x, ss, z, axis, qmin, qmax, g, dy)[0], axis=red)
        true_ds = (f(sp) - f(sm)) / (2 * h)
        ste_term = np.sum(dy * inside * x / sb, axis=red)       # LSQ adds d round / d s := -x / s^2
        expect = (np.atleast_1d(true_ds)[c] - np.atleast_1d(ste_term)[c]) * g
        assert abs(ds[c] - expect) <= FD_RTOL * max(abs(expect), np.abs(dy).sum() * g)
        zp_, zm = z.copy(), z.copy()
        zp_[c] += 1e-6
        zm[c] -= 1e-6
        fz = lambda zz: np.sum(dy * continuous_zp_fq(x, sb, zz.reshape(view), qmin, qmax), axis=red)
        num_dz = np.atleast_1d((fz(zp_) - fz(zm)) / 2e-6)[c] * g
        assert abs(dz[c] - num_dz) <= FD_RTOL * max(abs(num_dz), 1.0)


# ---------------------------------------------------------------------------- module
class FixedObserver(Module):
    """A stand-in observer reporting fixed qparams (keeps these tests independent of observers)."""

    def __init__(self, quant_min=0, quant_max=255, dtype="quint8", qscheme="per_tensor_affine",
                 ch_axis=None, scale=0.1, zero_point=3):
        super().__init__()
        self.quant_min, self.quant_max, self.dtype, self.qscheme = quant_min, quant_max, dtype, qscheme
        if ch_axis is not None:
            self.ch_axis = ch_axis
        self.qparams = (np.atleast_1d(np.float32(scale)), np.atleast_1d(np.int64(zero_point)))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x

    def calculate_qparams(self):
        return self.qparams


def test_module_static_then_learned_matches_functional_and_accumulates_grads():
    rng = np.random.default_rng(0)
    fq = LearnableFakeQuantize(FixedObserver, quant_min=0, quant_max=255, use_grad_scaling=True)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    y = fq(x)                                   # static: qparams copied from the observer
    assert fq.scale.data[0] == np.float32(0.1) and fq.zero_point.data[0] == 3
    ref, cache = fake_quantize_learnable_per_tensor_affine_forward(
        x, np.float32([0.1]), np.float32([3]), 0, 255, 1 / (x.size * 255) ** 0.5)
    assert same_bits(y, ref)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = fq.backward(dy)
    rdx, rds, rdz = fake_quantize_learnable_per_tensor_affine_backward(dy, cache)
    assert same_bits(dx, rdx) and same_bits(fq.scale.grad, rds) and same_bits(fq.zero_point.grad, rdz)
    fq.enable_param_learning()
    fq.scale.data[:] = -1.0                     # learned scale is clamped to eps before use
    calls = fq.activation_post_process.calls
    fq(x)
    assert fq.activation_post_process.calls == calls and fq.scale.data[0] == np.finfo(np.float32).eps
    fq.enable_static_observation()              # observe only: identity, no qparam grads
    fq.zero_grad()
    assert same_bits(fq(x), x) and same_bits(fq.backward(dy), dy) and fq.scale.grad is None


def test_module_symmetric_forces_zero_point_zero_and_per_channel_shapes():
    fq = LearnableFakeQuantize(FixedObserver, quant_min=-128, quant_max=127, channel_len=3,
                               qscheme="per_channel_symmetric", ch_axis=0, scale=[0.1, 0.2, 0.3],
                               zero_point=[0, 0, 0], dtype="qint8")
    fq.enable_param_learning()
    fq.zero_point.data[:] = 5.0
    x = np.linspace(-30, 30, 12, dtype=np.float32).reshape(3, 4)
    y = fq(x)
    assert np.all(fq.zero_point.data == 0) and y.shape == x.shape
    fq.backward(np.ones_like(x))
    assert fq.scale.grad.shape == (3,) and fq.zero_point.grad.shape == (3,)
    scale, zp = fq.calculate_qparams()
    assert scale.dtype == np.float32 and zp.dtype == np.int64


def test_learned_scale_reduces_quantization_error():
    """A few SGD steps on ||fq(x) - x||^2 starting from a far too large scale shrink the error."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(2000).astype(np.float32)
    fq = LearnableFakeQuantize(FixedObserver, quant_min=-8, quant_max=7, scale=1.5, zero_point=0,
                               qscheme="per_tensor_symmetric", dtype="qint8", use_grad_scaling=True)
    fq.enable_param_learning()
    fq.scale.data[:] = 1.5
    errors = []
    for _ in range(60):
        y = fq(x)
        errors.append(float(np.mean((y - x) ** 2)))
        fq.zero_grad()
        fq.backward(2 * (y - x) / x.size)
        fq.scale.data -= 5.0 * fq.scale.grad
    assert errors[-1] < 0.5 * errors[0]
    assert 0.2 < fq.scale.data[0] < 1.0


def test_bad_input_raises_clear_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="quant_min must be < quant_max"):
        LearnableFakeQuantize(FixedObserver, quant_min=5, quant_max=5)
    with pytest.raises(ValueError, match="scale must be positive"):
        fake_quantize_learnable_per_tensor_affine_forward(x, np.float32([-0.1]), np.float32([0]), 0, 255)
    with pytest.raises(ValueError, match="must include 0"):
        fake_quantize_learnable_per_tensor_affine_forward(x, np.float32([0.1]), np.float32([0]), 1, 255)
    with pytest.raises(ValueError, match="length x.shape\\[1\\] = 3"):
        fake_quantize_learnable_per_channel_affine_forward(x, np.float32([0.1]), np.float32([0]), 1, 0, 255)
    with pytest.raises(ValueError, match="channel_len"):
        LearnableFakeQuantize(FixedObserver, channel_len=0)
    with pytest.raises(TypeError, match="floating-point"):
        fake_quantize_learnable_per_tensor_affine_forward(x.astype(int), np.float32([1]), np.float32([0]), 0, 255)


@pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning")
@pytest.mark.parametrize("per_channel", [False, True])
def test_module_matches_torch_learnable_fake_quantize(torch, per_channel):
    """Static phase (qparams copied from a MovingAverage observer) then learning phase with grad scaling:
    the same scale / zero-point Parameters, outputs and gradients as torch's _LearnableFakeQuantize."""
    from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize as TorchLFQ
    from minicompress.quant import observer as ob
    rng = np.random.default_rng(3)
    if per_channel:
        kw = dict(quant_min=-8, quant_max=7, channel_len=4, use_grad_scaling=True, ch_axis=0)
        ours = LearnableFakeQuantize(ob.MovingAveragePerChannelMinMaxObserver, dtype="qint8",
                                     qscheme="per_channel_affine", **kw)
        theirs = TorchLFQ(torch.ao.quantization.MovingAveragePerChannelMinMaxObserver, dtype=torch.qint8,
                          qscheme=torch.per_channel_affine, **kw)
    else:
        kw = dict(quant_min=0, quant_max=15, use_grad_scaling=True)
        ours = LearnableFakeQuantize(ob.MovingAverageMinMaxObserver, dtype="quint8", **kw)
        theirs = TorchLFQ(torch.ao.quantization.MovingAverageMinMaxObserver, dtype=torch.quint8, **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for step in range(6):
        if step == 3:
            ours.enable_param_learning(), theirs.enable_param_learning()
        x = (rng.standard_normal((4, 6)) * (1 + step) + 0.5).astype(np.float32)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        ours.zero_grad()
        y = ours(x)
        dx = ours.backward(dy)
        xt = torch.tensor(x, requires_grad=True)
        theirs.scale.grad = theirs.zero_point.grad = None
        yt = theirs(xt)
        (yt * torch.tensor(dy)).sum().backward()
        assert same_bits(ours.scale.data, theirs.scale.detach().numpy())
        assert same_bits(ours.zero_point.data, theirs.zero_point.detach().numpy())
        assert same_bits(y, yt.detach().numpy()) and same_bits(dx, xt.grad.numpy())
        np.testing.assert_allclose(ours.scale.grad, theirs.scale.grad.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ours.zero_point.grad, theirs.zero_point.grad.numpy(), rtol=1e-5, atol=1e-7)
        if step >= 3:                    # identical SGD step on the learned qparams in both
            for p, tp in ((ours.scale, theirs.scale), (ours.zero_point, theirs.zero_point)):
                p.data = (p.data - np.float32(0.05) * tp.grad.numpy()).astype(np.float32)
                with torch.no_grad():
                    tp.copy_(torch.tensor(p.data))
