import math

import numpy as np
import pytest
from gradcheck import check_module_grads
from hypothesis import given, strategies as st
from oracle import compare_with_torch

from minicompress import nn
from minicompress.nn.functional import activation as F

seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)

# (name, constructor kwargs) of every elementwise / along-dim activation
activations = st.one_of(
    st.just(("ReLU", {})), st.just(("Tanh", {})), st.just(("Sigmoid", {})),
    st.builds(lambda s: ("LeakyReLU", {"negative_slope": s}), st.sampled_from([0.0, 0.01, 0.2, 1.5])),
    st.builds(lambda a: ("GELU", {"approximate": a}), st.sampled_from(["none", "tanh"])),
    st.builds(lambda n, d: (n, {"dim": d}), st.sampled_from(["Softmax", "LogSoftmax"]), st.integers(-1, 0)),
)


def _data(shape, seed, scale):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@given(activations, shapes, seeds, st.sampled_from([1.0, 4.0, 20.0]))
def test_activation_matches_torch(torch, layer, shape, seed, scale):
    name, kwargs = layer
    compare_with_torch(torch, getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs), _data(shape, seed, scale))


@given(activations, shapes, seeds)
def test_activation_finite_differences(layer, shape, seed):
    name, kwargs = layer
    x = np.random.default_rng(seed).standard_normal(shape)
    x[np.abs(x) < 1e-3] = 0.5  # away from the kinks of ReLU / LeakyReLU
    check_module_grads(getattr(nn, name)(**kwargs), x)


@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
def test_softmax_implicit_dim_is_pytorchs_legacy_choice(torch, name, ndim):
    x = _data((2, 3, 4, 5)[:ndim], 0, 1.0)
    with pytest.warns(UserWarning):
        expected = getattr(torch.nn, name)()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(getattr(nn, name)()(x), expected, rtol=1e-6, atol=1e-6)


def test_erf_is_exact_to_float64():
    x = np.linspace(-6, 6, 1001)
    np.testing.assert_array_equal(F._erf(x), [math.erf(v) for v in x])


def test_sigmoid_has_no_overflow_warnings():
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        y, _ = F.sigmoid_forward(np.array([-1000.0, 0.0, 1000.0], np.float32))
    np.testing.assert_array_equal(y, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("layer", [nn.ReLU(inplace=True), nn.LeakyReLU(0.1, inplace=True)])
def test_inplace_activations_overwrite_the_input(layer):
    x = np.array([-2.0, 3.0], np.float32)
    y = layer(x)
    assert y is x or np.shares_memory(x, y)
    np.testing.assert_allclose(x, [-2.0 * getattr(layer, "negative_slope", 0.0), 3.0])
    np.testing.assert_allclose(layer.backward(np.ones(2, np.float32)), [getattr(layer, "negative_slope", 0.0), 1.0])


def test_activation_reprs_match_torch(torch):
    for name, kwargs in [("ReLU", {}), ("ReLU", {"inplace": True}), ("LeakyReLU", {}),
                         ("LeakyReLU", {"negative_slope": 0.2, "inplace": True}), ("Tanh", {}), ("Sigmoid", {}),
                         ("GELU", {}), ("GELU", {"approximate": "tanh"}), ("Softmax", {"dim": 1}),
                         ("LogSoftmax", {"dim": -1}), ("Softmax", {})]:
        assert repr(getattr(nn, name)(**kwargs)) == repr(getattr(torch.nn, name)(**kwargs))


def test_activation_bad_inputs():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        nn.GELU("fast")
    with pytest.raises(ValueError, match=r"Softmax\(dim=2\): dim 2 is out of range for input of shape \(3, 4\)"):
        nn.Softmax(dim=2)(np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match=r"ReLU\(\): expected a floating-point input, got dtype int64 "
                                        r"with shape \(2,\)"):
        nn.ReLU()(np.array([1, 2]))
    relu = nn.ReLU()
    relu(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"ReLU\(\): backward expected a gradient of shape \(2, 3\).*got \(3, 2\)"):
        relu.backward(np.zeros((3, 2), np.float32))
