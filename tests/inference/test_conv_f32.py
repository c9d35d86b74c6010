"""``inference.conv_f32``: the float implicit-GEMM convolution against PyTorch's conv2d (float64), with the fused
clamp (ReLU, ReLU6) and NaN kept, over geometries that exercise every tile and panel edge."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from minicompress.inference import conv_f32


@st.composite
def convs(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 20))
    oc = draw(st.sampled_from([1, 5, conv_f32.LANES, conv_f32.LANES + 1, 2 * conv_f32.LANES, 3 * conv_f32.LANES - 3]))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw, dh = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 11))
    w = draw(st.integers(max(1, kw - 2 * pw), 11))
    bounds = draw(st.sampled_from([(-np.inf, np.inf), (0.0, np.inf), (0.0, 6.0), (-1.0, 1.0)]))
    return n, c, oc, kh, kw, sh, sw, dh, ph, pw, h, w, bounds


def _run(x, weight, bias, stride, dh, pad, bounds):
    """x (N, H, W, C) -> (N, OH, OW, OC) through conv_f32 on its zero-padded copy."""
    (sh, sw), (ph, pw) = stride, pad
    n, h, w, c = x.shape
    oc, _, kh, kw = weight.shape
    xp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), np.float32)
    xp[:, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.full((n * oh * ow, oc), np.nan, np.float32)
    conv_f32.conv2d_nhwc(xp, kh, kw, sh, sw, dh, oh, ow, conv_f32.pack(weight), bias, np.float32(bounds[0]),
                         np.float32(bounds[1]), out)
    return out.reshape(n, oh, ow, oc)


@given(convs())
def test_conv_agrees_with_torch_to_float32_rounding(torch, case):
    n, c, oc, kh, kw, sh, sw, dh, ph, pw, h, w, bounds = case
    rng = np.random.default_rng(h * 100 + w * 10 + c)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    weight = rng.normal(size=(oc, c, kh, kw)).astype(np.float32)
    bias = rng.normal(size=oc).astype(np.float32)
    got = _run(x, weight, bias, (sh, sw), dh, (ph, pw), bounds)
    want = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)),
                                      torch.from_numpy(weight.astype(np.float64)),
                                      torch.from_numpy(bias.astype(np.float64)), stride=(sh, sw), padding=(ph, pw),
                                      dilation=(dh, 1)).clamp(*bounds).numpy().transpose(0, 2, 3, 1)
    assert got.shape == want.shape
    scale = np.abs(weight).sum(axis=(1, 2, 3)).max() * np.abs(x).max() + np.abs(bias).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-7 * scale * np.sqrt(c * kh * kw))


def test_nan_stays_nan_through_the_clamp():
    x = np.ones((1, 3, 3, 2), np.float32)
    x[0, 1, 1, 0] = np.nan
    weight = np.ones((4, 2, 1, 1), np.float32)
    got = _run(x, weight, np.zeros(4, np.float32), (1, 1), 1, (0, 0), (0.0, 6.0))
    assert np.isnan(got[0, 1, 1]).all()
    assert (np.isnan(got).sum(), got[0, 0, 0, 0]) == (4, 2.0)
