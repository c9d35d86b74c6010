"""linear_dynamic / linear / conv2d vs torch.ops.quantized (fbgemm engine): every output bit equal.

Weights are per tensor or per output channel, symmetric or with small non-zero zero points (fbgemm
then needs the row-offset term); both GEMM paths (VNNI and portable) must give the same bits.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress.quant import functional as F
from minicompress.quant import quantize_per_channel, quantize_per_tensor

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
seeds = st.integers(0, 2 ** 32 - 1)


def make_weight(torch, rng, w, per_channel, affine):
    """The same qint8 weight in both libraries."""
    n = w.shape[0]
    if per_channel:
        s = np.abs(w).reshape(n, -1).max(1) / 127.5 + 1e-6
        z = rng.integers(-4, 5, n) if affine else np.zeros(n, np.int64)
        t = torch.quantize_per_channel(torch.from_numpy(w), torch.from_numpy(s), torch.from_numpy(z), 0, torch.qint8)
        return quantize_per_channel(w, s, z, 0, "qint8"), t
    s, z = float(np.abs(w).max() / 127.5 + 1e-6), int(rng.integers(-4, 5)) if affine else 0
    return quantize_per_tensor(w, s, z, "qint8"), torch.quantize_per_tensor(torch.from_numpy(w), s, z, torch.qint8)


@st.composite
def linear_cases(draw):
    rng = np.random.default_rng(draw(seeds))
    lead = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=2)))
    k, n = draw(st.integers(1, 70)), draw(st.integers(1, 45))
    x = (rng.normal(size=lead + (k,)) * rng.uniform(0.05, 5) + rng.uniform(-1, 1) * draw(st.booleans()))
    w = rng.normal(size=(n, k)) * rng.uniform(0.01, 1)
    bias = rng.normal(size=n).astype(np.float32) if draw(st.booleans()) else None
    return rng, x.astype(np.float32), w.astype(np.float32), bias, draw(st.booleans()), draw(st.booleans())


def both_paths(weight):
    packed = F.pack_weight(weight)
    return [packed, packed.portable()]


@given(linear_cases(), st.booleans())
def test_linear_dynamic_matches_torch(torch, case, relu):
    rng, x, w, bias, per_channel, affine = case
    qw, tw = make_weight(torch, rng, w, per_channel, affine)
    packed = torch.ops.quantized.linear_prepack(tw, None if bias is None else torch.from_numpy(bias))
    op = torch.ops.quantized.linear_relu_dynamic if relu else torch.ops.quantized.linear_dynamic
    want = op(torch.from_numpy(x), packed, True).numpy()
    for pw in both_paths(qw):
        got = F.linear_dynamic(x, pw, bias, reduce_range=True, relu=relu)
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@given(linear_cases(), st.booleans(), st.floats(0.005, 1.0), st.integers(0, 255))
def test_linear_matches_torch(torch, case, relu, out_scale, out_zp):
    rng, x, w, bias, per_channel, affine = case
    qw, tw = make_weight(torch, rng, w, per_channel, affine)
    xs, xz = float(rng.uniform(0.005, 0.1)), int(rng.integers(0, 256))
    tx = torch.quantize_per_tensor(torch.from_numpy(x), xs, xz, torch.quint8)
    packed = torch.ops.quantized.linear_prepack(tw, None if bias is None else torch.from_numpy(bias))
    op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    want = op(tx, packed, out_scale, out_zp)
    qx = quantize_per_tensor(x, xs, xz, "quint8")
    for pw in both_paths(qw):
        got = F.linear(qx, pw, bias, out_scale, out_zp, relu=relu)
        np.testing.assert_array_equal(got.int_repr, want.int_repr().numpy())
        assert (got.scale, got.zero_point) == (want.q_scale(), want.q_zero_point())


@st.composite
def conv_cases(draw):
    rng = np.random.default_rng(draw(seeds))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, ocg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.integers(0, 5)) == 0:
        groups, cg, ocg = draw(st.integers(2, 6)), 1, 1                       # depthwise
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 9))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 9))
    x = rng.normal(size=(draw(st.integers(1, 2)), cg * groups, h, w)).astype(np.float32)
    wt = (rng.normal(size=(ocg * groups, cg, kh, kw)) * 0.3).astype(np.float32)
    bias = rng.normal(size=ocg * groups).astype(np.float32) if draw(st.booleans()) else None
    return rng, x, wt, bias, stride, padding, dilation, groups, draw(st.booleans())


@given(conv_cases(), st.booleans())
def test_conv2d_matches_torch(torch, case, relu):
    import torch.ao.nn.quantized.functional as qF
    rng, x, wt, bias, stride, padding, dilation, groups, per_channel = case
    qw, tw = make_weight(torch, rng, wt, per_channel, affine=False)
    xs, xz = float(rng.uniform(0.01, 0.05)), int(rng.integers(0, 256))
    os_, oz = float(rng.uniform(0.01, 0.3)), int(rng.integers(0, 256))
    tx = torch.quantize_per_tensor(torch.from_numpy(x), xs, xz, torch.quint8)
    tb = None if bias is None else torch.from_numpy(bias)
    if relu:
        packed = torch.ops.quantized.conv2d_prepack(tw, tb, list(stride), list(padding), list(dilation), groups)
        want = torch.ops.quantized.conv2d_relu(tx, packed, os_, oz)
    else:
        want = qF.conv2d(tx, tw, tb, stride, padding, dilation, groups, scale=os_, zero_point=oz)
    qx = quantize_per_tensor(x, xs, xz, "quint8")
    packs = F.pack_weight(qw, groups)
    packs = packs if isinstance(packs, list) else [packs]
    for weight in (qw, [p.portable() for p in packs]):
        got = F.conv2d(qx, weight, bias, stride, padding, dilation, groups, os_, oz, relu=relu)
        np.testing.assert_array_equal(got.int_repr, want.int_repr().numpy())


@given(linear_cases())
def test_gemmlowp_requant_within_one_step_of_fbgemm(torch, case):
    rng, x, w, bias, per_channel, _ = case
    qw, _ = make_weight(torch, rng, w, per_channel, affine=False)
    qx = quantize_per_tensor(x, 0.02, 128, "quint8")
    a = F.linear(qx, qw, bias, 0.05, 100).int_repr.astype(np.int64)
    b = F.linear(qx, qw, bias, 0.05, 100, requant="gemmlowp").int_repr.astype(np.int64)
    assert np.abs(a - b).max() <= 1
    assert (a == b).mean() > 0.8


def test_functional_bad_input():
    w = quantize_per_tensor(np.ones((4, 3), np.float32), 0.1, 0, "qint8")
    qx = quantize_per_tensor(np.ones((2, 3), np.float32), 0.1, 0, "quint8")
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        F.linear_dynamic(np.ones((2, 5), np.float32), w)
    for where in [(0, 0), (1, 2)]:                     # first and last element: min/max must see both
        x = np.ones((2, 3), np.float32)
        x[where] = np.nan
        with pytest.raises(ValueError, match=r"linear_dynamic: input of shape \(2, 3\) contains NaN"):
            F.linear_dynamic(x, w)
    with pytest.raises(TypeError, match="quint8 QTensor"):
        F.linear(np.ones((2, 3), np.float32), w)
    with pytest.raises(TypeError, match="qint8 QTensor"):
        F.linear(qx, qx)
    with pytest.raises(ValueError, match="bias"):
        F.linear(qx, w, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="scale"):
        F.linear(qx, w, None, 0.0, 0)
    with pytest.raises(ValueError, match="requant"):
        F.linear(qx, w, None, 0.1, 0, requant="tflite")
    cw = quantize_per_tensor(np.ones((4, 2, 3, 3), np.float32), 0.1, 0, "qint8")
    cx = quantize_per_tensor(np.ones((1, 3, 5, 5), np.float32), 0.1, 0, "quint8")
    with pytest.raises(ValueError, match="groups"):
        F.conv2d(cx, cw, None)
    with pytest.raises(ValueError, match="too small"):
        F.conv2d(quantize_per_tensor(np.ones((1, 2, 2, 2), np.float32), 0.1, 0, "quint8"), cw, None)
