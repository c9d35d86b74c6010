"""Fake quantization: functional ops and the FakeQuantize modules against PyTorch 2.13.

Forward outputs and straight-through gradients must be *bit-identical* to PyTorch's, including
half-way (tie) inputs and their float32 neighbours; FakeQuantize modules fed the same batches must
produce the same scale / zero-point sequence.
"""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress.quant.fake_quantize import (
    fake_quantize_per_channel_affine, fake_quantize_per_channel_affine_backward,
    fake_quantize_per_tensor_affine, fake_quantize_per_tensor_affine_backward)

pytestmark = [pytest.mark.filterwarnings("ignore:.*deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning")]
seeds = st.integers(0, 2**32 - 1)
RANGES = [(0, 255), (-128, 127), (0, 127), (-64, 63), (0, 15), (-8, 7), (-3, 5)]


def same_bits(a, b):
    """Exact equality including -0.0 and dtype (np.array_equal would hide both)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def tie_heavy(rng, n, scale, zp, qmin, qmax, dtype):
    """Half-way inputs (k + 0.5 - zp) * scale, their float32 neighbours, and Gaussian values that
    also fall outside [qmin, qmax]."""
    s = np.float64(np.float32(scale))
    k = rng.integers(qmin - 3, qmax + 4, size=n)
    ties = ((k + 0.5 - zp) * s).astype(np.float32)
    up, down = np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))
    wide = (rng.standard_normal(n) * (qmax - qmin) * s * 0.6).astype(np.float32)
    return rng.permutation(np.concatenate([ties, up, down, wide])).astype(dtype)


@st.composite
def per_tensor_cases(draw):
    rng = np.random.default_rng(draw(seeds))
    qmin, qmax = draw(st.sampled_from(RANGES))
    scale = float(np.float32(draw(st.floats(1e-3, 4.0))))
    zp = draw(st.integers(qmin, qmax))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = tie_heavy(rng, draw(st.integers(1, 40)), scale, zp, qmin, qmax, dtype)
    shape = draw(st.sampled_from([(-1,), (2, -1), (2, 1, -1)]))
    x = x[: x.size - x.size % 2] if shape != (-1,) and x.size % 2 else x
    return x.reshape(shape) if x.size else x, scale, zp, qmin, qmax


@st.composite
def per_channel_cases(draw):
    rng = np.random.default_rng(draw(seeds))
    qmin, qmax = draw(st.sampled_from(RANGES))
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(0, ndim - 1))
    c = shape[axis]
    scale = rng.uniform(1e-3, 2.0, size=c).astype(np.float32)
    zp = rng.integers(qmin, qmax + 1, size=c).astype(np.int32)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    # per element: a tie / neighbour / wide value for that element's channel
    idx = [1] * ndim
    idx[axis] = c
    s_b, z_b = scale.reshape(idx).astype(np.float64), zp.reshape(idx)
    k = rng.integers(qmin - 3, qmax + 4, size=shape)
    ties = ((k + 0.5 - z_b) * s_b).astype(np.float32)
    kind = rng.integers(0, 4, size=shape)
    x = np.where(kind == 1, np.nextafter(ties, np.float32(np.inf)), ties)
    x = np.where(kind == 2, np.nextafter(ties, np.float32(-np.inf)), x)
    x = np.where(kind == 3, (rng.standard_normal(shape) * (qmax - qmin) * s_b).astype(np.float32), x)
    float_zp = draw(st.booleans())
    if float_zp:  # embedding-style float zero points (rint(zp + x * inv), zp before rounding)
        zp = (zp + rng.uniform(-0.45, 0.45, size=c)).astype(np.float32)
    return x.astype(dtype), scale, zp, axis, qmin, qmax


def torch_fq(torch, fn, x, *args):
    xt = torch.tensor(x, requires_grad=True)
    y = fn(xt, *args)
    dy = np.random.default_rng(x.size).standard_normal(x.shape).astype(x.dtype)
    (y * torch.tensor(dy)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), dy


# ---------------------------------------------------------------------------- functional parity
@given(per_tensor_cases())
def test_per_tensor_forward_and_ste_gradient_equal_torch_bit_for_bit(torch, case):
    x, scale, zp, qmin, qmax = case
    ty, tdx, dy = torch_fq(torch, torch.fake_quantize_per_tensor_affine, x, scale, zp, qmin, qmax)
    assert same_bits(fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax), ty)
    assert same_bits(fake_quantize_per_tensor_affine_backward(dy, x, scale, zp, qmin, qmax), tdx)


@given(per_channel_cases())
def test_per_channel_forward_and_ste_gradient_equal_torch_bit_for_bit(torch, case):
    x, scale, zp, axis, qmin, qmax = case
    ty, tdx, dy = torch_fq(torch, torch.fake_quantize_per_channel_affine, x, torch.tensor(scale),
                           torch.tensor(zp), axis, qmin, qmax)
    assert same_bits(fake_quantize_per_channel_affine(x, scale, zp, axis, qmin, qmax), ty)
    assert same_bits(fake_quantize_per_channel_affine_backward(dy, x, scale, zp, axis, qmin, qmax), tdx)


def test_ties_round_half_even_with_zero_point_added_after_rounding(torch):
    """At ties fake-quant is NOT quantize_per_tensor -> dequantize in torch 2.13 (which adds zp before
    one fused rounding); we follow fake-quant exactly, and the two really differ on these inputs."""
    rng = np.random.default_rng(0)
    scale, zp = 0.0123, 77
    x = tie_heavy(rng, 2000, scale, zp, 0, 255, np.float32)
    ours = fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)
    fq = torch.fake_quantize_per_tensor_affine(torch.tensor(x), scale, zp, 0, 255).numpy()
    qdq = torch.quantize_per_tensor(torch.tensor(x), scale, zp, torch.quint8).dequantize().numpy()
    assert same_bits(ours, fq)
    assert np.sum(ours != qdq) > 50
    # hand-checked case: x * inv = 2.5 exactly -> rint 2 (half to even), then + zp
    s = 0.5
    assert fake_quantize_per_tensor_affine(np.array([1.25], np.float32), s, 3, 0, 255)[0] == 1.0
    assert fake_quantize_per_tensor_affine(np.array([1.75], np.float32), s, 3, 0, 255)[0] == 2.0


def test_special_values_follow_torch(torch):
    """NaN -> qmin, inf -> qmax (per tensor) but qmin per channel (C float->int64 cast); mask 0."""
    x = np.array([[np.inf, -np.inf, np.nan, 1e30, -1e30, 3.0]], np.float32)
    ty, tdx, dy = torch_fq(torch, torch.fake_quantize_per_tensor_affine, x, 0.1, 3, 0, 255)
    assert same_bits(fake_quantize_per_tensor_affine(x, 0.1, 3, 0, 255), ty)
    assert same_bits(fake_quantize_per_tensor_affine_backward(dy, x, 0.1, 3, 0, 255), tdx)
    s, z = np.array([0.1], np.float32), np.array([3], np.int32)
    ty, tdx, dy = torch_fq(torch, torch.fake_quantize_per_channel_affine, x, torch.tensor(s),
                           torch.tensor(z), 0, 0, 255)
    assert same_bits(fake_quantize_per_channel_affine(x, s, z, 0, 0, 255), ty)
    assert same_bits(fake_quantize_per_channel_affine_backward(dy, x, s, z, 0, 0, 255), tdx)


@pytest.mark.parametrize("qmin, qmax", [(-(2 ** 31), 2 ** 31 - 1), (0, 2 ** 24 + 7), (-1000, 2 ** 25 + 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranges_wider_than_float32_integers_follow_torch(torch, qmin, qmax, dtype):
    """Past 2^24 codes the kernels' integer steps show: clamp in double then int64, (q - zp) as an int64
    rounded to float once (per tensor) or the product taken in double (per channel)."""
    rng = np.random.default_rng(qmax)
    for _ in range(20):
        s = float(np.float32(10.0 ** rng.uniform(-4, 1)))
        zp = int(rng.integers(max(qmin, -1000), 1000))
        x = (rng.standard_normal((4, 7)) * (qmax - qmin) * 0.6 * s).astype(dtype)
        ty, tdx, dy = torch_fq(torch, torch.fake_quantize_per_tensor_affine, x, s, zp, qmin, qmax)
        assert same_bits(fake_quantize_per_tensor_affine(x, s, zp, qmin, qmax), ty)
        assert same_bits(fake_quantize_per_tensor_affine_backward(dy, x, s, zp, qmin, qmax), tdx)
        sc, zc = np.full(4, s, np.float32), rng.integers(max(qmin, -1000), 1000, 4).astype(np.int32)
        ty, tdx, dy = torch_fq(torch, torch.fake_quantize_per_channel_affine, x, torch.tensor(sc),
                               torch.tensor(zc), 0, qmin, qmax)
        assert same_bits(fake_quantize_per_channel_affine(x, sc, zc, 0, qmin, qmax), ty)
        assert same_bits(fake_quantize_per_channel_affine_backward(dy, x, sc, zc, 0, qmin, qmax), tdx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_zero_point_zero_gives_positive_zero(torch, dtype):
    """rint(0.0 + x * inv) is -0.0 for small negative x; the kernel's int64 cast makes the output +0.0."""
    x = np.array([[-0.01, -0.049, 0.01, -0.3]], dtype)
    s, z = np.array([0.1], np.float32), np.array([0.0], np.float32)
    ty, _, _ = torch_fq(torch, torch.fake_quantize_per_channel_affine, x, torch.tensor(s), torch.tensor(z),
                        0, 0, 255)
    y = fake_quantize_per_channel_affine(x, s, z, 0, 0, 255)
    assert same_bits(y, ty) and not np.signbit(y[0, :3]).any()


# x * inv + zp within half a float64 ulp of a float32 midpoint next to a half-integer (test_quant_qtensor's
# cases): a float64 sum rounded to float32 rounds twice and lands on the wrong code; the build's FMA does not.
DOUBLE_ROUNDING_CASES = [("0.80755866", "1.6150926", 128), ("0.720255", "1.4404881", 128),
                         ("0.69420916", "1.3883971", 200), ("-0.80755866", "1.6150926", 200),
                         ("0.720255", "1.4404881", 254), ("-0.69420916", "1.3883971", 254)]


@pytest.mark.parametrize("x, scale, zp", DOUBLE_ROUNDING_CASES)
def test_float_zero_point_is_added_in_one_fused_rounding(torch, x, scale, zp):
    x, s, z = np.full((1, 5), np.float32(x)), np.array([scale], np.float32), np.array([zp], np.float32)
    inv = np.float64(np.float32(1) / s[0])
    ty, tdx, dy = torch_fq(torch, torch.fake_quantize_per_channel_affine, x, torch.tensor(s), torch.tensor(z),
                           0, 0, 255)
    naive = (np.clip(np.rint(np.float32(np.float64(x[0, 0]) * inv + zp)), 0, 255) - zp) * s[0]
    assert naive != ty[0, 0], "the case must defeat the double-rounding emulation"
    assert same_bits(fake_quantize_per_channel_affine(x, s, z, 0, 0, 255), ty)
    assert same_bits(fake_quantize_per_channel_affine_backward(dy, x, s, z, 0, 0, 255), tdx)


# ---------------------------------------------------------------------------- invariants (no torch)
@given(per_tensor_cases())
def test_ste_mask_is_the_in_range_set_and_error_is_at_most_half_a_step(case):
    x, scale, zp, qmin, qmax = case
    x = x.astype(np.float64)
    y = fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
    dx = fake_quantize_per_tensor_affine_backward(np.ones_like(x), x, scale, zp, qmin, qmax)
    s = np.float64(np.float32(scale))
    lo, hi = (qmin - zp) * s, (qmax - zp) * s
    inside = (x >= lo - s / 2) & (x <= hi + s / 2)
    clear = np.abs(np.abs(x - np.clip(x, lo, hi)) - s / 2) > 1e-6 * s  # not on the boundary tie
    assert np.array_equal(dx.astype(bool)[clear], inside[clear])
    float32_ulp = 2.0**-23 * (np.abs(x) + s)  # y is rounded to float32 even for float64 x
    assert np.all((np.abs(y - x) <= s / 2 + float32_ulp)[inside])
    assert np.all(np.isin(np.rint(y / s).astype(np.int64) + zp, np.arange(qmin, qmax + 1)))


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, match", [
    ((0.1, 0, 5, 5), "quant_min must be < quant_max"),
    ((0.1, 0, 10, 3), "quant_min must be < quant_max"),
    ((-0.1, 0, 0, 255), "scale must be positive"),
    ((0.0, 0, 0, 255), "scale must be positive"),
    ((np.inf, 0, 0, 255), "scale must be positive"),
])
def test_per_tensor_bad_qparams_raise_clear_errors(args, match):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=match):
        fake_quantize_per_tensor_affine(x, *args)
    with pytest.raises(ValueError, match=match):
        fake_quantize_per_tensor_affine_backward(x, x, *args)


@pytest.mark.parametrize("zp", [300, -1])
def test_out_of_range_integer_zero_points_raise_torchs_runtime_error(torch, zp):
    """Regression (issue 15): ValueError where PyTorch raises RuntimeError with this text."""
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    message = "`zero_point` must be between `quant_min` and `quant_max`."
    for ours, theirs in (
            (lambda: fake_quantize_per_tensor_affine(x, 0.1, zp, 0, 255),
             lambda: torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), 0.1, zp, 0, 255)),
            (lambda: fake_quantize_per_tensor_affine_backward(x, x, 0.1, zp, 0, 255), None),
            (lambda: fake_quantize_per_channel_affine(x, np.full(3, 0.1, np.float32), np.full(3, zp, np.int32), 0, 0, 255),
             lambda: torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.full((3,), 0.1),
                                                            torch.full((3,), zp, dtype=torch.int32), 0, 0, 255))):
        with pytest.raises(RuntimeError, match=re.escape(message)):
            ours()
        if theirs is not None:
            with pytest.raises(RuntimeError, match=re.escape(message)):
                theirs()


@pytest.mark.parametrize("zp", [300.0, -5.0, 2.7, -0.5, 3.5])
def test_array_and_float_zero_points_compute_as_torch_does(torch, zp):
    """Regression (issue 15): a float or array zero point outside [qmin, qmax] was refused; PyTorch
    truncates a per-tensor tensor zero point to an integer and computes, and uses per-channel float
    zero points as they are (zp added before rounding)."""
    x = (np.arange(-12, 12, dtype=np.float32) * np.float32(0.037)).reshape(4, 6)
    tx = torch.from_numpy(x)
    ours = fake_quantize_per_tensor_affine(x, np.array([0.1], np.float32), np.array([zp], np.float32), 0, 255)
    theirs = torch.fake_quantize_per_tensor_affine(tx, torch.tensor([0.1]), torch.tensor([zp]), 0, 255)
    np.testing.assert_array_equal(ours, theirs.numpy())
    s, z = np.full(4, 0.1, np.float32), np.full(4, zp, np.float32)
    ours = fake_quantize_per_channel_affine(x, s, z, 0, 0, 255)
    theirs = torch.fake_quantize_per_channel_affine(tx, torch.from_numpy(s), torch.from_numpy(z), 0, 0, 255)
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_float16_is_computed_in_float32_and_rounded_once(torch):
    """Regression (issue 15): float16 input was computed in float16 (1.851 with scale 0.1 gave 1.8)."""
    x = np.array([1.851, -0.3, 2.05, 0.149, -12.0], np.float16)
    ours = fake_quantize_per_tensor_affine(x, 0.1, 0, -128, 127)
    assert ours.dtype == np.float16 and ours[0] == np.float16(1.9004)
    tx = torch.from_numpy(x).requires_grad_()
    theirs = torch.fake_quantize_per_tensor_affine(tx, 0.1, 0, -128, 127)
    np.testing.assert_array_equal(ours, theirs.detach().numpy())
    grad = np.linspace(-1, 1, 5).astype(np.float16)
    theirs.backward(torch.from_numpy(grad))
    ours_grad = fake_quantize_per_tensor_affine_backward(grad, x, 0.1, 0, -128, 127)
    assert ours_grad.dtype == np.float16 == tx.grad.numpy().dtype
    np.testing.assert_array_equal(ours_grad, tx.grad.numpy())


@given(st.integers(0, 2 ** 32 - 1), st.booleans())
def test_float16_fake_quant_matches_torch(torch, seed, per_channel):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(3, 50)) * 4).astype(np.float16)
    s = rng.uniform(0.01, 0.3, 3).astype(np.float32)
    z = rng.integers(0, 256, 3).astype(np.int32)
    tx = torch.from_numpy(x).requires_grad_()
    if per_channel:
        ours = fake_quantize_per_channel_affine(x, s, z, 0, 0, 255)
        theirs = torch.fake_quantize_per_channel_affine(tx, torch.from_numpy(s), torch.from_numpy(z), 0, 0, 255)
        dx = fake_quantize_per_channel_affine_backward(np.ones_like(x), x, s, z, 0, 0, 255)
    else:
        ours = fake_quantize_per_tensor_affine(x, float(s[0]), int(z[0]), 0, 255)
        theirs = torch.fake_quantize_per_tensor_affine(tx, float(s[0]), int(z[0]), 0, 255)
        dx = fake_quantize_per_tensor_affine_backward(np.ones_like(x), x, float(s[0]), int(z[0]), 0, 255)
    theirs.sum().backward()
    assert ours.dtype == np.float16 and dx.dtype == np.float16
    np.testing.assert_array_equal(ours, theirs.detach().numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())


def test_per_channel_bad_input_raises_clear_errors():
    x = np.zeros((3, 4), np.float32)
    s, z = np.full(3, 0.1, np.float32), np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="length x.shape\\[0\\] = 3"):
        fake_quantize_per_channel_affine(x, s[:2], z[:2], 0, 0, 255)
    with pytest.raises(ValueError, match="axis must be in"):
        fake_quantize_per_channel_affine(x, s, z, 2, 0, 255)
    with pytest.raises(ValueError, match="scale must be positive"):
        fake_quantize_per_channel_affine(x, -s, z, 0, 0, 255)
    with pytest.raises(ValueError, match="quant_min must be < quant_max"):
        fake_quantize_per_channel_affine(x, s, z, 0, 0, 0)
    with pytest.raises(TypeError, match="floating-point ndarray"):
        fake_quantize_per_channel_affine(x.astype(np.int32), s, z, 0, 0, 255)
    with pytest.raises(TypeError, match="floating-point ndarray"):
        fake_quantize_per_tensor_affine([1.0, 2.0], 0.1, 0, 0, 255)
    with pytest.raises(ValueError, match="grad shape"):
        fake_quantize_per_tensor_affine_backward(np.zeros(5, np.float32), x, 0.1, 0, 0, 255)


# ---------------------------------------------------------------------------- FakeQuantize modules
def module_pairs(torch):
    """(name, ours factory, torch factory) for every default and two 4-bit configurations."""
    from torch.ao.quantization import fake_quantize as tfq
    from torch.ao.quantization import observer as tob
    from minicompress.quant import fake_quantize as fq
    from minicompress.quant import observer as ob
    return [
        ("default_fake_quant (activation)", fq.default_fake_quant, tfq.default_fake_quant),
        ("default_weight_fake_quant", fq.default_weight_fake_quant, tfq.default_weight_fake_quant),
        ("default_per_channel_weight_fake_quant", fq.default_per_channel_weight_fake_quant,
         tfq.default_per_channel_weight_fake_quant),
        ("default_fused_act_fake_quant (activation)", fq.default_fused_act_fake_quant,
         tfq.default_fused_act_fake_quant),
        ("default_fused_wt_fake_quant", fq.default_fused_wt_fake_quant, tfq.default_fused_wt_fake_quant),
        ("default_fused_per_channel_wt_fake_quant", fq.default_fused_per_channel_wt_fake_quant,
         tfq.default_fused_per_channel_wt_fake_quant),
        ("4-bit activation 0..15", fq.FakeQuantize.with_args(
            observer=ob.MovingAverageMinMaxObserver, quant_min=0, quant_max=15, dtype="quint8"),
         tfq.FakeQuantize.with_args(observer=tob.MovingAverageMinMaxObserver, quant_min=0, quant_max=15,
                                    dtype=torch.quint8)),
        ("4-bit fused per-channel weights -8..7", fq.FusedMovingAvgObsFakeQuantize.with_args(
            observer=ob.MovingAveragePerChannelMinMaxObserver, quant_min=-8, quant_max=7, dtype="qint8",
            qscheme="per_channel_symmetric"),
         tfq.FusedMovingAvgObsFakeQuantize.with_args(
             observer=tob.MovingAveragePerChannelMinMaxObserver, quant_min=-8, quant_max=7, dtype=torch.qint8,
             qscheme=torch.per_channel_symmetric)),
    ]


def batches(rng, kind):
    """Five batches of (4, 3, 2, 2): shifting, rescaled Gaussians; all-positive and all-zero channels."""
    out = []
    for i in range(5):
        x = (rng.standard_normal((4, 3, 2, 2)) * (0.5 + i) + 0.3 * i).astype(np.float32)
        if kind == "weights":
            x[1] = np.abs(x[1])          # an all-positive channel (affine zero point in the fused op)
            x[2] = 0.0 if i == 0 else x[2]
        else:
            x = np.maximum(x, 0) if i % 2 else x
        out.append(x)
    return out


@pytest.mark.parametrize("index", range(8))
@given(seed=seeds)
def test_fake_quantize_modules_give_torchs_scale_zero_point_sequence(torch, index, seed):
    name, ours_factory, torch_factory = module_pairs(torch)[index]
    ours, theirs = ours_factory(), torch_factory()
    assert (ours.quant_min, ours.quant_max, ours.ch_axis) == (
        theirs.activation_post_process.quant_min, theirs.activation_post_process.quant_max, theirs.ch_axis)
    rng = np.random.default_rng(seed)
    for step, x in enumerate(batches(rng, "activations" if "activation" in name else "weights")):
        if step == 3:                     # freeze the qparams for one step, then disable fake-quant
            ours.disable_observer(), theirs.disable_observer()
        if step == 4:
            ours.enable_observer(), theirs.enable_observer()
            ours.disable_fake_quant(), theirs.disable_fake_quant()
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        (yt * torch.tensor(dy)).sum().backward()
        y = ours(x)
        assert same_bits(ours.scale, theirs.scale.numpy()), (name, step)
        assert np.array_equal(ours.zero_point, theirs.zero_point.numpy()), (name, step)
        assert same_bits(y, yt.detach().numpy()), (name, step)
        assert same_bits(ours.backward(dy), xt.grad.numpy()), (name, step)
        obs, tobs = ours.activation_post_process, theirs.activation_post_process
        assert same_bits(np.asarray(obs.min_val).reshape(-1), tobs.min_val.numpy().reshape(-1))
        s, z = ours.calculate_qparams()
        ts, tz = theirs.calculate_qparams()
        assert same_bits(s, ts.numpy()) and np.array_equal(z, tz.numpy())


def test_fake_quantize_state_dict_keys_and_dtypes_match_torch(torch):
    from torch.ao.quantization import fake_quantize as tfq
    from minicompress.quant import fake_quantize as fq
    for ours, theirs in ((fq.default_fake_quant(), tfq.default_fake_quant()),
                         (fq.default_fused_per_channel_wt_fake_quant(), tfq.default_fused_per_channel_wt_fake_quant())):
        sd, tsd = ours.state_dict(), theirs.state_dict()
        assert list(sd) == list(tsd)
        for key in ("fake_quant_enabled", "observer_enabled", "scale", "zero_point"):
            assert sd[key].dtype == np.dtype(str(tsd[key].dtype).replace("torch.", "")), key


def test_fake_quantize_bad_configuration_raises():
    from minicompress.quant import fake_quantize as fq
    from minicompress.quant import observer as ob
    with pytest.raises(ValueError, match="quant_min must be < quant_max"):
        fq.FakeQuantize(quant_min=7, quant_max=7)
    with pytest.raises(ValueError, match="quant_min must be < quant_max"):
        fq.FakeQuantize(quant_min=9, quant_max=3)
    with pytest.raises(ValueError, match="inside the quint8 range"):
        fq.FakeQuantize(quant_min=-1, quant_max=254, dtype="quint8")
    with pytest.raises(ValueError, match="axis 0"):
        fq.FusedMovingAvgObsFakeQuantize(observer=ob.MovingAveragePerChannelMinMaxObserver, quant_min=-128,
                                         quant_max=127, dtype="qint8", qscheme="per_channel_symmetric", ch_axis=1)
    with pytest.raises(TypeError, match="MovingAverage"):
        fq.FusedMovingAvgObsFakeQuantize(observer=ob.MinMaxObserver)
