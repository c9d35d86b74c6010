import numpy as np
import pytest
from gradcheck import check_module_grads, numerical_grad, rel_error
from hypothesis import given, strategies as st
from oracle import compare_with_torch

import minicompress as mc
from minicompress import nn
from minicompress.nn.functional.misc import dropout_backward, dropout_forward

seeds = st.integers(0, 2**32 - 1)


@st.composite
def flatten_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=5)))
    n = len(shape)
    start = draw(st.integers(-n, n - 1))
    end = draw(st.integers(start % n, n - 1)) - draw(st.sampled_from([0, n]))  # as is or negative
    return shape, start, end


@given(flatten_cases(), seeds)
def test_flatten_matches_torch(torch, case, seed):
    shape, start, end = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    compare_with_torch(torch, nn.Flatten(start, end), torch.nn.Flatten(start, end), x)


@given(flatten_cases(), seeds)
def test_flatten_finite_differences(case, seed):
    shape, start, end = case
    check_module_grads(nn.Flatten(start, end), np.random.default_rng(seed).standard_normal(shape))


def test_identity_matches_torch(torch):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    compare_with_torch(torch, nn.Identity(54, unused="ignored"), torch.nn.Identity(54, unused="ignored"), x)


@given(st.sampled_from([0.1, 0.5, 0.9]), seeds)
def test_dropout_is_inverted_bernoulli(p, seed):
    x = np.random.default_rng(seed).uniform(1, 2, (200, 50)).astype(np.float32)
    layer = nn.Dropout(p, rng=seed)
    y = layer(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(1 - p), rtol=1e-6)
    n = x.size  # kept fraction ~ Binomial(n, 1 - p) / n: 5 standard deviations
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    dy = np.random.default_rng(seed + 1).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(layer.backward(dy), np.where(kept, dy / np.float32(1 - p), 0), rtol=1e-6)


def test_dropout_matches_torch_on_the_same_mask(torch):
    """PyTorch's random stream differs; given our mask, its formula y = x * m / (1 - p) is the same."""
    x = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    y = nn.Dropout(0.3, rng=0)(x)
    mask = torch.from_numpy((y != 0).astype(np.float32))
    np.testing.assert_allclose(y, (torch.from_numpy(x) * mask / (1 - 0.3)).numpy(), rtol=1e-6)


def test_dropout_finite_differences_with_a_fixed_mask():
    x = np.random.default_rng(0).standard_normal((4, 5))
    dy = np.random.default_rng(1).standard_normal((4, 5))
    loss = lambda x: float(np.sum(dropout_forward(x, 0.4, np.random.default_rng(7))[0] * dy))  # noqa: E731
    _, mask = dropout_forward(x, 0.4, np.random.default_rng(7))
    assert rel_error(dropout_backward(dy, mask), numerical_grad(loss, x)) < 1e-6


def test_dropout_modes_seeds_and_edge_probabilities():
    x = np.ones((10, 10), np.float32)
    layer = nn.Dropout(0.5).eval()
    assert layer(x) is x and layer.backward(x) is x
    assert np.array_equal(nn.Dropout(0.5, rng=3)(x), nn.Dropout(0.5, rng=3)(x))
    seeded = nn.Dropout(0.5, rng=3)
    assert not np.array_equal(seeded(x), seeded(x))  # a fresh mask per call
    mc.manual_seed(5)
    first = nn.Dropout(0.5)(x)
    mc.manual_seed(5)
    assert np.array_equal(first, nn.Dropout(0.5)(x))
    assert np.array_equal(nn.Dropout(0.0)(x), x)
    assert np.array_equal(nn.Dropout(1.0)(x), np.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


def test_misc_reprs_match_torch(torch):
    for ours, theirs in [(nn.Flatten(), torch.nn.Flatten()), (nn.Flatten(0, 2), torch.nn.Flatten(0, 2)),
                         (nn.Dropout(), torch.nn.Dropout()), (nn.Dropout(0.2, True), torch.nn.Dropout(0.2, True)),
                         (nn.Identity(), torch.nn.Identity())]:
        assert repr(ours) == repr(theirs)


def test_flatten_bad_dims_name_layer_and_shape():
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=1, end_dim=-1\): cannot flatten dims 1..-1 of an "
                                         r"input of shape \(3,\)"):
        nn.Flatten()(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=2, end_dim=1\)"):
        nn.Flatten(2, 1)(np.zeros((2, 2, 2), np.float32))
