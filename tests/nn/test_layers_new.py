"""Layers for real architectures: ReLU6, Hardtanh, Hardswish, Hardsigmoid, SiLU, PReLU, LayerNorm,
GroupNorm, Embedding, AdaptiveAvgPool1d, Permute, Unflatten, the merges and the containers.
PyTorch as the oracle for forward, d input and every parameter gradient; float64 finite differences."""
import numpy as np
import pytest
from gradcheck import check_module_grads, numerical_grad
from hypothesis import given, strategies as st
from oracle import compare_with_torch, to_torch_state

from minicompress import nn

seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)

elementwise = st.one_of(
    st.just(("ReLU6", {})), st.just(("Hardswish", {})), st.just(("Hardsigmoid", {})), st.just(("SiLU", {})),
    st.builds(lambda lo, w: ("Hardtanh", {"min_val": lo, "max_val": lo + w}),
              st.sampled_from([-2.0, -1.0, 0.0]), st.sampled_from([0.5, 1.0, 3.0])),
)


def _data(shape, seed, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _off_kinks(x, kinks):
    for k in kinks:                                       # finite differences need distance from the kinks
        x[np.abs(x - k) < 1e-3] = k + 0.37
    return x


@given(elementwise, shapes, seeds)
def test_new_activations_match_torch(torch, layer, shape, seed):
    name, kwargs = layer
    x = _off_kinks(_data(shape, seed), (-3, 3, 0, 6, kwargs.get("min_val", 9), kwargs.get("max_val", 9)))
    compare_with_torch(torch, getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs), x)


@given(elementwise, shapes, seeds)
def test_new_activations_finite_differences(layer, shape, seed):
    name, kwargs = layer
    x = _off_kinks(np.random.default_rng(seed).standard_normal(shape) * 3,
                   (-3, 3, 0, 6, kwargs.get("min_val", 9), kwargs.get("max_val", 9)))
    check_module_grads(getattr(nn, name)(**kwargs), x)


def test_kinks_follow_pytorch(torch):
    """At the kinks themselves PyTorch picks a side: Hardtanh passes nothing at its bounds, Hardswish
    takes the middle branch at -3 and 3, Hardsigmoid passes nothing at -3 and 3."""
    x = np.array([-3.0, -1.0, 0.0, 1.0, 3.0, 6.0], np.float32)
    for name, kwargs in [("ReLU6", {}), ("Hardtanh", {}), ("Hardswish", {}), ("Hardsigmoid", {})]:
        compare_with_torch(torch, getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs), x.copy())


@pytest.mark.parametrize("name", ["ReLU6", "Hardtanh", "Hardswish", "Hardsigmoid", "SiLU"])
def test_inplace_variants_overwrite_and_differentiate(torch, name):
    x = _data((3, 4), 1)
    expected = getattr(torch.nn, name)()(torch.from_numpy(x.copy())).numpy()
    layer = getattr(nn, name)(inplace=True)
    y = layer(x)
    assert np.shares_memory(x, y)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)
    assert layer.backward(np.ones_like(y)).shape == y.shape


@given(st.sampled_from([1, 3]), st.integers(1, 3), st.lists(st.integers(1, 4), max_size=2), seeds)
def test_prelu_matches_torch(torch, num_parameters, n, rest, seed):
    shape = (n, num_parameters if num_parameters > 1 else 2, *rest)
    ours, theirs = nn.PReLU(num_parameters), torch.nn.PReLU(num_parameters)
    ours.weight.data[...] = np.random.default_rng(seed).uniform(-0.5, 1.5, num_parameters)
    compare_with_torch(torch, ours, theirs, _off_kinks(_data(shape, seed), (0,)))
    check_module_grads(ours, _off_kinks(np.random.default_rng(seed).standard_normal(shape), (0,)))


@st.composite
def layer_norm_cases(draw):
    k = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=k, max_size=k + 2))) + (draw(st.integers(3, 5)),)
    # (the last axis >= 3: over one element x - mean is exactly 0 here, PyTorch's rounding noise there;
    #  over two, xhat = +-1 whatever x, and d input is O(eps), below finite differences' resolution)
    kwargs = dict(eps=draw(st.sampled_from([1e-5, 1e-3])), elementwise_affine=draw(st.booleans()),
                  bias=draw(st.booleans()))
    return shape, shape[len(shape) - k:], kwargs, draw(seeds)


@given(layer_norm_cases())
def test_layer_norm_matches_torch_and_finite_differences(torch, case):
    shape, normalized, kwargs, seed = case
    rng = np.random.default_rng(seed)
    ours = nn.LayerNorm(normalized, **kwargs)
    if ours.weight is not None:
        ours.weight.data[...] = rng.uniform(0.5, 2, normalized)
    if ours.bias is not None:
        ours.bias.data[...] = rng.standard_normal(normalized)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    compare_with_torch(torch, ours, torch.nn.LayerNorm(normalized, **kwargs), x, dx_scale=1.0)
    check_module_grads(ours, rng.standard_normal(shape))


@given(st.sampled_from([(1, 2), (2, 4), (3, 6), (4, 4)]), st.integers(1, 3), st.lists(st.integers(1, 4), max_size=2),
       st.booleans(), seeds)
def test_group_norm_matches_torch_and_finite_differences(torch, groups_channels, n, rest, affine, seed):
    g, c = groups_channels
    rng = np.random.default_rng(seed)
    ours = nn.GroupNorm(g, c, affine=affine)
    if affine:
        ours.weight.data[...] = rng.uniform(0.5, 2, c)
        ours.bias.data[...] = rng.standard_normal(c)
    shape = (n, c, *rest)
    if int(np.prod(shape[2:])) * (c // g) < 3:        # one or two values per group: see the LayerNorm test
        shape = shape + (3,)
    x = (rng.standard_normal(shape) * 2 - 1).astype(np.float32)
    compare_with_torch(torch, ours, torch.nn.GroupNorm(g, c, affine=affine), x, dx_scale=1.0)
    check_module_grads(ours, rng.standard_normal(shape))


@given(st.integers(2, 8), st.integers(1, 4), st.sampled_from([None, 0, -1]), shapes, seeds)
def test_embedding_matches_torch(torch, num, dim, padding_idx, idx_shape, seed):
    rng = np.random.default_rng(seed)
    ours = nn.Embedding(num, dim, padding_idx=padding_idx, rng=seed)
    theirs = torch.nn.Embedding(num, dim, padding_idx=padding_idx)
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()))
    assert repr(ours) == repr(theirs)
    idx = rng.integers(0, num, idx_shape)
    y = ours(idx)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    assert ours.backward(dout) is None
    yt = theirs(torch.from_numpy(idx))
    (yt * torch.from_numpy(dout)).sum().backward()
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-6, atol=1e-6)
    if padding_idx is not None:
        assert not ours.weight.data[padding_idx].any() and not ours.weight.grad[padding_idx].any()


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 5), seeds)
def test_adaptive_avg_pool1d_matches_torch(torch, n, c, length, out, seed):
    compare_with_torch(torch, nn.AdaptiveAvgPool1d(out), torch.nn.AdaptiveAvgPool1d(out), _data((n, c, length), seed))
    check_module_grads(nn.AdaptiveAvgPool1d(out), np.random.default_rng(seed).standard_normal((n, c, length)))


def test_permute_and_unflatten_match_torch(torch):
    from minicompress.nn.layers.misc import Permute
    x = _data((2, 3, 4, 5), 0)
    y = Permute([0, 2, 3, 1])(x)
    np.testing.assert_array_equal(y, torch.from_numpy(x).permute(0, 2, 3, 1).numpy())
    compare_with_torch(torch, nn.Unflatten(1, (3, 4)), torch.nn.Unflatten(1, (3, 4)), _data((2, 12, 5), 1))
    check_module_grads(Permute([2, 0, 1]), np.random.default_rng(0).standard_normal((2, 3, 4)))
    check_module_grads(nn.Unflatten(-1, (2, -1)), np.random.default_rng(0).standard_normal((3, 8)))


# ---------------------------------------------------------------------------- merges
def test_add_mul_cat_match_torch_autograd(torch):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 1, 1))   # a broadcast gate
    dout = rng.standard_normal((2, 3, 4, 4))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    for ours, theirs in [(nn.Add(), lambda: ta + tb), (nn.Mul(), lambda: ta * tb)]:
        ta.grad = tb.grad = None
        y = ours(a, b)
        da, db = ours.backward(dout)
        (theirs() * torch.from_numpy(dout)).sum().backward()
        np.testing.assert_allclose(y, theirs().detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(da, ta.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-12)
    c = rng.standard_normal((2, 5, 4, 4))
    cat = nn.Cat(1)
    y = cat(a, c)
    da, dc = cat.backward(rng.standard_normal(y.shape))
    assert y.shape == (2, 8, 4, 4) and da.shape == a.shape and dc.shape == c.shape


def test_merges_finite_differences():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((1, 3))
    dout = rng.standard_normal((2, 3))
    for module in (nn.Add(), nn.Mul()):
        module(a, b)
        da, db = module.backward(dout)
        np.testing.assert_allclose(da, numerical_grad(lambda v: float((module(v, b) * dout).sum()), a.copy()),
                                   rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(db, numerical_grad(lambda v: float((module(a, v) * dout).sum()), b.copy()),
                                   rtol=1e-6, atol=1e-9)
        module.clear_caches()


def test_float_functional_ops_and_their_gradients(torch):
    ff = nn.FloatFunctional()
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    np.testing.assert_allclose(ff.add(a, b), (ta + tb).numpy())
    np.testing.assert_allclose(ff.add_relu(a, b), torch.relu(ta + tb).numpy())
    np.testing.assert_allclose(ff.mul(a, b), (ta * tb).numpy())
    np.testing.assert_allclose(ff.cat([a, b], dim=1), torch.cat([ta, tb], 1).numpy())
    np.testing.assert_allclose(ff.add_scalar(a, 2.0), (ta + 2.0).numpy())
    np.testing.assert_allclose(ff.mul_scalar(a, -3.0), (ta * -3.0).numpy())
    g = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(ff.backward(g), -3 * g)                       # the latest call first
    np.testing.assert_array_equal(ff.backward(g), g)
    da, db = ff.backward(np.ones((2, 6), np.float32))
    assert da.shape == db.shape == (2, 3)
    np.testing.assert_array_equal(ff.backward(g)[0], b)                      # mul: d a = dout * b
    relu_grad = ff.backward(g)[0]
    np.testing.assert_array_equal(relu_grad, (a + b > 0).astype(np.float32))
    with pytest.raises(ValueError, match="FloatFunctional: unknown op 'sub'"):
        ff("sub", a, b)
    assert list(ff.state_dict()) == []


def test_merge_bad_inputs_name_the_module_and_shapes():
    with pytest.raises(ValueError, match=r"Add\(\): inputs of shapes \[\(2, 3\), \(2, 4\)\] do not broadcast"):
        nn.Add()(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"Cat\(dim=1\): cannot concatenate inputs of shapes"):
        nn.Cat(1)(np.zeros((2, 3), np.float32), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"PReLU\(num_parameters=3\): expected input \(N, 3, \*\)"):
        nn.PReLU(3)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"LayerNorm\(\(4,\).*expected input \(\*, 4\), got \(2, 3\)"):
        nn.LayerNorm(4)(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="num_channels \\(5\\) must be divisible by num_groups \\(2\\)"):
        nn.GroupNorm(2, 5)
    with pytest.raises(IndexError, match=r"Embedding\(4, 2\): index 4 is out of range \[0, 4\)"):
        nn.Embedding(4, 2)(np.array([0, 4]))


# ---------------------------------------------------------------------------- containers
def test_module_list_and_dict_use_pytorchs_keys(torch):
    ours = nn.ModuleList([nn.Linear(2, 3, rng=0), nn.ReLU(), nn.Linear(3, 1, rng=0)])
    theirs = torch.nn.ModuleList([torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)])
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()))
    assert len(ours) == 3 and ours[-1] is ours[2] and [type(m).__name__ for m in ours[1:]] == ["ReLU", "Linear"]
    heads = nn.ModuleDict({"cls": nn.Linear(4, 2, rng=0), "box": nn.Linear(4, 4, rng=0)})
    theirs = torch.nn.ModuleDict({"cls": torch.nn.Linear(4, 2), "box": torch.nn.Linear(4, 4)})
    assert list(heads.state_dict()) == list(theirs.state_dict()) and list(heads) == ["cls", "box"]
    assert "box" in heads and heads["box"].out_features == 4
    with pytest.raises(IndexError):
        ours[3]
