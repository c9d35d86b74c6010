import numpy as np
import pytest
from gradcheck import check_module_grads
from hypothesis import given, strategies as st
from oracle import assert_close, compare_with_torch, to_torch_state

from minicompress import nn

seeds = st.integers(0, 2**32 - 1)


@st.composite
def bn_cases(draw, small: bool = False):
    """(layer name, kwargs, input shape, seed, warm-up steps, train) over every BatchNorm option."""
    name = draw(st.sampled_from(["BatchNorm1d", "BatchNorm2d"]))
    c = draw(st.integers(1, 3 if small else 6))
    kwargs = dict(num_features=c, eps=draw(st.sampled_from([1e-5, 1e-3])),
                  momentum=draw(st.sampled_from([0.1, 0.5, None])), affine=draw(st.booleans()),
                  bias=draw(st.booleans()),
                  track_running_stats=draw(st.booleans()))
    n = draw(st.integers(1, 4))
    if name == "BatchNorm2d":
        shape = (n, c, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    else:
        shape = (n, c) + tuple(draw(st.lists(st.integers(1, 5), max_size=1)))
    if np.prod(shape) // c < 2:  # training needs more than one value per channel
        shape = (shape[0] + 1,) + shape[1:]
    return name, kwargs, shape, draw(seeds), draw(st.integers(0, 3)), draw(st.booleans())


def _data(shape, rng):
    return (rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype(np.float32)


@given(bn_cases())
def test_batchnorm_matches_torch_train_and_eval(torch, case):
    name, kwargs, shape, seed, warmup, train = case
    rng = np.random.default_rng(seed)
    ours, theirs = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    if kwargs["affine"]:  # non-trivial gamma, beta
        ours.weight.data[...] = rng.uniform(0.5, 2, kwargs["num_features"])
        if kwargs["bias"]:
            ours.bias.data[...] = rng.standard_normal(kwargs["num_features"])
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()))
    for _ in range(warmup):  # running statistics over several batches (momentum None: cumulative average)
        x = _data(shape, rng)
        ours(x)
        theirs(torch.from_numpy(x))
    for key, value in theirs.state_dict().items():
        assert_close(ours.state_dict()[key], value.numpy(), key)
    x = _data(shape, rng)
    axes = (0,) + tuple(range(2, x.ndim))
    # d input = gamma / std * (dy - mean(dy) - xhat mean(dy xhat)) cancels: compare at the scale of its terms
    gamma = np.abs(ours.weight.data).max() if kwargs["affine"] else 1.0
    dx_scale = 4 * gamma / np.sqrt(x.var(axis=axes).min() + kwargs["eps"])
    compare_with_torch(torch, ours, theirs, x, train=train, dx_scale=dx_scale)


@given(bn_cases(small=True))
def test_batchnorm_finite_differences(case):
    name, kwargs, shape, seed, warmup, train = case
    layer = getattr(nn, name)(**kwargs)
    rng = np.random.default_rng(seed)
    for _ in range(warmup):
        layer(_data(shape, rng))
    if kwargs["affine"]:
        layer.weight.data[...] = rng.uniform(0.5, 2, kwargs["num_features"])
    layer.train(train)
    check_module_grads(layer, rng.standard_normal(shape))


def test_running_stats_use_unbiased_variance_and_count_batches():
    bn = nn.BatchNorm1d(1, momentum=None)
    x1, x2 = np.array([[1.0], [3.0]], np.float32), np.array([[0.0], [4.0], [8.0]], np.float32)
    bn(x1)
    bn(x2)
    np.testing.assert_allclose(bn.running_mean, [(2.0 + 4.0) / 2])         # cumulative average of batch means
    np.testing.assert_allclose(bn.running_var, [(2.0 + 16.0) / 2], rtol=1e-6)  # unbiased: 2 and 16
    nbt = bn.num_batches_tracked
    assert nbt.dtype == np.int64 and nbt.shape == () and nbt == 2
    bn.eval()
    y = bn(np.array([[4.0]], np.float32))  # eval: a single value per channel is fine
    np.testing.assert_allclose(y, [[(4.0 - 3.0) / np.sqrt(9.0 + 1e-5)]], rtol=1e-6)
    assert bn.num_batches_tracked == 2


def test_state_dict_keys_match_torch(torch):
    for kwargs in (dict(num_features=3), dict(num_features=3, affine=False),
                   dict(num_features=3, track_running_stats=False), dict(num_features=3, bias=False)):
        assert list(nn.BatchNorm2d(**kwargs).state_dict()) == list(torch.nn.BatchNorm2d(**kwargs).state_dict())
        assert repr(nn.BatchNorm1d(**kwargs)) == repr(torch.nn.BatchNorm1d(**kwargs))


def test_batchnorm_bad_inputs_name_layer_and_shapes():
    with pytest.raises(ValueError, match=r"^BatchNorm2d\(16, eps=1e-05, momentum=0.1, affine=True, "
                                         r"bias=True, track_running_stats=True\): expected input \(N, 16, H, W\), "
                                         r"got \(8, 3, 4, 4\)$"):
        nn.BatchNorm2d(16)(np.zeros((8, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4.*expected input \(N, 4\) or \(N, 4, L\), got \(2, 4, 1, 1\)"):
        nn.BatchNorm1d(4)(np.zeros((2, 4, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4.*more than 1 value per channel.*\(1, 4\)"):
        nn.BatchNorm1d(4)(np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match=r"BatchNorm1d\(4.*float64"):
        nn.BatchNorm1d(4)(np.zeros((3, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 7), (3, 2, 5, 4)])
def test_batch_norm_kernels_equal_the_numpy_formulas(dtype, shape):
    """kernels.channel_mean_var sums in float64 (as NumPy's float64 mean / var); batch_norm_apply and
    batch_norm_grad are the NumPy expressions of functional.norm in the same order (sums in float64)."""
    from minicompress.nn import kernels
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    x3 = x.reshape(shape[0], shape[1], -1)
    mean, var = kernels.channel_mean_var(x3)
    np.testing.assert_allclose(mean, x3.astype(np.float64).mean(axis=(0, 2)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(var, x3.astype(np.float64).var(axis=(0, 2)), rtol=1e-12)
    mean, var = mean.astype(dtype), var.astype(dtype)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    w, b = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    xhat, y = kernels.batch_norm_apply(x3, mean, inv_std, w, b)
    want = (x3 - mean[:, None]) * inv_std[:, None]
    np.testing.assert_array_equal(xhat, want)
    np.testing.assert_array_equal(y, want * w[:, None] + b[:, None])
    dy = rng.standard_normal(x3.shape).astype(dtype)
    scale = w * inv_std
    m = x3.size // shape[1]
    for batch_stats in (True, False):
        dx, dgamma, dbeta = kernels.batch_norm_grad(dy, xhat, scale, dtype(m), batch_stats)
        sb = dy.astype(np.float64).sum(axis=(0, 2)).astype(dtype)
        sg = (dy * xhat).astype(np.float64).sum(axis=(0, 2)).astype(dtype)
        np.testing.assert_allclose(dbeta, sb, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-12)
        np.testing.assert_allclose(dgamma, sg, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-12)
        if batch_stats:
            want = (dy - (dbeta / dtype(m))[:, None] - xhat * (dgamma / dtype(m))[:, None]) * scale[:, None]
        else:
            want = dy * scale[:, None]
        np.testing.assert_array_equal(dx, want)
