import numpy as np
import pytest
from gradcheck import check_module_grads
from hypothesis import given, strategies as st
from oracle import compare_with_torch

from minicompress import nn
from minicompress.nn.functional import conv as F

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel:UserWarning")

seeds = st.integers(0, 2**32 - 1)


@st.composite
def conv_cases(draw, nd: int, small: bool = False):
    """Constructor kwargs, input shape and a seed: any mix of stride, padding (ints, 'same', 'valid'),
    dilation and groups whose output is non-empty."""
    groups = draw(st.integers(1, 3))
    per_group = 2 if small else 3
    kwargs = dict(in_channels=groups * draw(st.integers(1, per_group)),
                  out_channels=groups * draw(st.integers(1, per_group)), groups=groups,
                  kernel_size=tuple(draw(st.integers(1, 3)) for _ in range(nd)),
                  dilation=tuple(draw(st.integers(1, 2)) for _ in range(nd)), bias=draw(st.booleans()))
    padding = draw(st.sampled_from(["ints", "same", "valid"]))
    if padding == "ints":
        kwargs["padding"] = tuple(draw(st.integers(0, 2)) for _ in range(nd))
        kwargs["stride"] = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    else:
        kwargs["padding"] = padding
    pads = kwargs["padding"] if padding == "ints" else (0,) * nd
    spatial = []
    for k, d, p in zip(kwargs["kernel_size"], kwargs["dilation"], pads):
        reach = d * (k - 1) + 1
        spatial.append(draw(st.integers(max(1, reach - 2 * p), reach + (3 if small else 6))))
    if draw(st.booleans()):  # PyTorch-style ints where an int says the same
        for key in ("kernel_size", "stride", "dilation", "padding"):
            value = kwargs.get(key)
            if isinstance(value, tuple) and len(set(value)) == 1:
                kwargs[key] = value[0]
    batch = draw(st.integers(1, 2 if small else 3))
    return kwargs, (batch, kwargs["in_channels"], *spatial), draw(seeds)


@given(conv_cases(nd=2))
def test_conv2d_matches_torch(torch, case):
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    compare_with_torch(torch, nn.Conv2d(**kwargs, rng=rng), torch.nn.Conv2d(**kwargs), x)


@given(conv_cases(nd=1))
def test_conv1d_matches_torch(torch, case):
    kwargs, shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    compare_with_torch(torch, nn.Conv1d(**kwargs, rng=rng), torch.nn.Conv1d(**kwargs), x)


@given(conv_cases(nd=2, small=True))
def test_conv2d_finite_differences(case):
    kwargs, shape, seed = case
    check_module_grads(nn.Conv2d(**kwargs, rng=seed), np.random.default_rng(seed).standard_normal(shape))


@given(conv_cases(nd=1, small=True))
def test_conv1d_finite_differences(case):
    kwargs, shape, seed = case
    check_module_grads(nn.Conv1d(**kwargs, rng=seed), np.random.default_rng(seed).standard_normal(shape))


def test_conv_unbatched_input_matches_batched():
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 5, 5)).astype(np.float32)
    y = conv(x)
    dx = conv.backward(np.ones_like(y))
    conv.zero_grad()
    yb = conv(x[None])
    np.testing.assert_array_equal(y, yb[0])
    np.testing.assert_array_equal(dx, conv.backward(np.ones_like(yb))[0])


def test_conv_skips_input_grad_on_request():
    conv = nn.Conv2d(1, 2, 3, rng=0)
    conv.needs_input_grad = False
    y = conv(np.ones((1, 1, 4, 4), np.float32))
    assert conv.backward(np.ones_like(y)) is None and conv.weight.grad is not None


def test_im2col_col2im_are_adjoint():
    """<im2col(x), c> == <x, col2im(c)> for any x, c: the backward scatter is the exact transpose."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6))
    kernel, stride, dilation, pads = (3, 2), (2, 1), (1, 2), ((1, 2), (0, 1))
    out = tuple(F.conv_output_size(n, k, s, p, d) for n, k, s, p, d in zip((7, 6), kernel, stride, pads, dilation))
    cols = F.im2col(np.pad(x, ((0, 0), (0, 0)) + pads), kernel, out, stride, dilation)
    c = rng.standard_normal(cols.shape)
    back = F.col2im(c, x.shape, pads, kernel, out, stride, dilation)
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * back), rtol=1e-12)


def test_default_init_bounds_follow_pytorch():
    conv = nn.Conv2d(4, 64, (3, 5), groups=2, rng=0)
    bound = 1 / np.sqrt(2 * 3 * 5)  # fan_in = in_channels / groups * kh * kw
    for p in (conv.weight.data, conv.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    assert conv.weight.data.dtype == np.float32
    assert abs(conv.weight.data.std() - bound / np.sqrt(3)) < 0.05 * bound


def test_conv_repr_and_keys_match_torch(torch):
    for kwargs in (dict(in_channels=3, out_channels=16, kernel_size=3),
                   dict(in_channels=4, out_channels=8, kernel_size=(1, 3), stride=2, padding=(0, 1), dilation=2,
                        groups=2, bias=False),
                   dict(in_channels=2, out_channels=2, kernel_size=2, padding="same"),
                   dict(in_channels=2, out_channels=2, kernel_size=2, padding="valid")):
        assert repr(nn.Conv2d(**kwargs)) == repr(torch.nn.Conv2d(**kwargs))
        assert list(nn.Conv2d(**kwargs).state_dict()) == list(torch.nn.Conv2d(**kwargs).state_dict())
    assert repr(nn.Conv1d(3, 4, 5, stride=2)) == repr(torch.nn.Conv1d(3, 4, 5, stride=2))


def test_conv_bad_arguments():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        nn.Conv2d(4, 4, 3, groups=0)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        nn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="invalid padding string 'full'"):
        nn.Conv2d(1, 1, 3, padding="full")
    with pytest.raises(NotImplementedError, match="padding_mode='reflect' is not implemented"):
        nn.Conv2d(1, 1, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(TypeError, match="kernel_size must be an int or a tuple of 2 ints"):
        nn.Conv2d(1, 1, (3, 3, 3))
    with pytest.raises(ValueError, match="stride must be positive"):
        nn.Conv2d(1, 1, 3, stride=0)


def test_conv_bad_inputs_name_layer_and_shapes():
    conv = nn.Conv2d(3, 16, 3)
    with pytest.raises(ValueError, match=r"^Conv2d\(3, 16, kernel_size=\(3, 3\), stride=\(1, 1\)\): expected input "
                                         r"\(N, 3, H, W\) or \(3, H, W\), got \(8, 1, 28, 28\)$"):
        conv(np.zeros((8, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d\(3, 16.*got \(8, 3, 28\)"):
        conv(np.zeros((8, 3, 28), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d\(3, 16.*input \(1, 3, 2, 5\) is too small.*\(2, 5\).*\(3, 3\)"):
        conv(np.zeros((1, 3, 2, 5), np.float32))
    with pytest.raises(ValueError, match=r"Conv1d\(2, 4, kernel_size=\(3,\), stride=\(1,\)\): expected input "
                                         r"\(N, 2, L\) or \(2, L\), got \(1, 3, 9\)"):
        nn.Conv1d(2, 4, 3)(np.zeros((1, 3, 9), np.float32))


@pytest.mark.parametrize("shape, kernel, stride, pads, dilation", [
    ((3, 4, 8, 8), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)), ((2, 3, 7, 5), (3, 2), (2, 1), ((1, 1), (1, 1)), (1, 2)),
    ((2, 2, 5, 5), (1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1)),
    ((1, 5, 16, 16), (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1)),
    ((2, 3, 4, 6), (2, 3), (3, 2), ((0, 1), (2, 0)), (1, 1)), ((1, 2, 3, 3), (3, 3), (1, 1), ((4, 4), (3, 3)), (2, 2)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_im2col_and_col2im_kernel_equal_per_sample_twins(shape, kernel, stride, pads, dilation, dtype):
    """im2col_batch holds the per-sample im2col's values (1) with the batch in the columns; kernels.col2im
    adds each element's terms in the twin's (p, q) order: bit-equal, padding (even lopsided) included."""
    from minicompress.nn import kernels
    n, c, h, w = shape
    out = tuple(F.conv_output_size(s, k, st, p, d) for s, k, st, p, d in zip((h, w), kernel, stride, pads, dilation))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    k = c * kernel[0] * kernel[1]
    args = (*kernel, *stride, pads[0][0], pads[1][0], *dilation, *out)
    twin = F.im2col(np.pad(x, ((0, 0), (0, 0)) + pads), kernel, out, stride, dilation)     # (N, K, OH*OW)
    np.testing.assert_array_equal(F.im2col_batch(x, kernel, out, pads, stride, dilation),
                                  twin.transpose(1, 0, 2).reshape(k, -1))
    dcols = rng.standard_normal((n, k, out[0] * out[1])).astype(dtype)
    want = F.col2im(dcols, shape, pads, kernel, out, stride, dilation)
    got = kernels.col2im(np.ascontiguousarray(dcols.transpose(1, 0, 2)).reshape(k, -1), n, c, h, w, *args)
    np.testing.assert_array_equal(got, want)
