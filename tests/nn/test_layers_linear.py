import numpy as np
import pytest
from gradcheck import check_module_grads
from hypothesis import given, strategies as st
from oracle import compare_with_torch

from minicompress import nn

seeds = st.integers(0, 2**32 - 1)


@st.composite
def linear_cases(draw):
    lead = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))  # (*, in): 1 to 3 leading axes
    return dict(in_features=draw(st.integers(1, 40)), out_features=draw(st.integers(1, 40)),
                bias=draw(st.booleans())), tuple(lead), draw(seeds)


@given(linear_cases())
def test_linear_matches_torch(torch, case):
    kwargs, lead, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + (kwargs["in_features"],)).astype(np.float32)
    compare_with_torch(torch, nn.Linear(**kwargs, rng=rng), torch.nn.Linear(**kwargs), x)


@given(linear_cases())
def test_linear_finite_differences(case):
    kwargs, lead, seed = case
    kwargs.update(in_features=min(kwargs["in_features"], 6), out_features=min(kwargs["out_features"], 5))
    x = np.random.default_rng(seed).standard_normal(lead[:2] + (kwargs["in_features"],))
    check_module_grads(nn.Linear(**kwargs, rng=seed), x)


def test_linear_grads_accumulate_and_input_grad_can_be_skipped():
    layer = nn.Linear(3, 2, rng=0)
    x, dy = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    layer(x)
    layer.backward(dy)
    first = layer.weight.grad.copy()
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * first)
    layer.needs_input_grad = False
    layer(x)
    assert layer.backward(dy) is None
    np.testing.assert_allclose(layer.weight.grad, 3 * first)


def test_linear_without_bias_has_no_bias_key():
    assert list(nn.Linear(3, 2, bias=False).state_dict()) == ["weight"]


def test_linear_bad_inputs_name_layer_and_shapes():
    layer = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"Linear\(in_features=4, out_features=3, bias=True\): "
                                         r"expected input \(\*, 4\), got \(2, 5\)"):
        layer(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match=r"Linear\(.*float64.*\(2, 4\).*float32"):
        layer(np.zeros((2, 4)))
    with pytest.raises(TypeError, match=r"Linear\(.*floating-point input, got dtype int64"):
        layer(np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match=r"Linear\(.*expected a NumPy array, got list"):
        layer([[0.0] * 4])
    layer(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"Linear\(.*backward expected a gradient of shape \(2, 3\).*got \(2, 4\)"):
        layer.backward(np.zeros((2, 4), np.float32))


def test_linear_backward_without_forward_is_an_error():
    with pytest.raises(RuntimeError, match="Linear"):
        nn.Linear(2, 2).backward(np.zeros((1, 2), np.float32))
    layer = nn.Linear(2, 2)
    with nn.no_grad():
        layer(np.zeros((1, 2), np.float32))
    with pytest.raises(RuntimeError, match="no_grad"):
        layer.backward(np.zeros((1, 2), np.float32))
