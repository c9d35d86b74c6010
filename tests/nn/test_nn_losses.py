"""Losses: value and d input against PyTorch, float64 finite differences, and bad input.

Every loss is run through one helper that computes the minicompress value and gradient (with a
random upstream gradient for reduction='none') and PyTorch's, via ``(loss * dout).sum().backward()``.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gradcheck import numerical_grad, rel_error
from minicompress.nn import no_grad
from minicompress.nn.losses import CrossEntropyLoss, KLDivLoss, MSELoss, NLLLoss

RTOL, ATOL = 1e-5, 1e-6            # float32 parity
FD_RTOL = 1e-6                     # float64 finite differences: ||analytic - numeric|| / ||analytic||

seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------- helpers
def run_ours(loss, x, target, dout):
    value = loss(x, target)
    grad = loss.backward(dout if loss.reduction == "none" else None)
    return np.asarray(value), grad


def run_torch(torch, torch_loss, x, target, dout):
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(target)
    value = torch_loss(xt, tt)
    (value * torch.as_tensor(dout)).sum().backward()
    return value.detach().numpy(), xt.grad.numpy()


def check_parity(torch, ours, theirs, x, target):
    rng = np.random.default_rng(x.size)
    value = ours(x, target)
    dout = rng.standard_normal(np.shape(value)).astype(x.dtype) if ours.reduction == "none" else 1.0
    v, g = run_ours(ours, x, target, dout)
    tv, tg = run_torch(torch, theirs, x, target, dout)
    assert isinstance(ours(x, target), np.ndarray if ours.reduction == "none" else float)
    assert g.dtype == x.dtype and g.shape == x.shape
    np.testing.assert_allclose(v, tv, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g, tg, rtol=RTOL, atol=ATOL)


def check_finite_differences(loss, x, target, rng):
    x = x.astype(np.float64)
    target = target.astype(np.float64) if target.dtype.kind == "f" else target
    loss.to(np.float64)
    value = loss(x, target)
    dout = rng.standard_normal(np.shape(value)) if loss.reduction == "none" else 1.0
    analytic = loss.backward(dout if loss.reduction == "none" else None)
    numeric = numerical_grad(lambda z: float(np.sum(np.asarray(loss(z, target)) * dout)), x.copy())
    assert rel_error(analytic, numeric) < FD_RTOL


# ---------------------------------------------------------------------------- strategies
@st.composite
def class_problems(draw, weighted=None, spatial=True):
    """Logits (N, C[, d1[, d2]]) float32, integer targets with some ignored, optional class weight."""
    rng = np.random.default_rng(draw(seeds))
    n, c = draw(st.integers(1, 5)), draw(st.integers(2, 6))
    extra = tuple(draw(st.lists(st.integers(1, 3), max_size=2))) if spatial else ()
    x = (rng.standard_normal((n, c) + extra) * draw(st.sampled_from([0.5, 3.0]))).astype(np.float32)
    target = rng.integers(0, c, (n,) + extra)
    ignore_index = draw(st.sampled_from([-100, 0, 1]))
    if draw(st.booleans()):
        target[rng.random(target.shape) < 0.3] = ignore_index
    weighted = draw(st.booleans()) if weighted is None else weighted
    weight = rng.uniform(0.2, 2.0, c).astype(np.float32) if weighted else None
    return x, target, weight, ignore_index


def probabilities(rng, shape, axis=1, zeros=False, dtype=np.float32):
    p = rng.random(shape) * (rng.random(shape) > 0.3 if zeros else 1) + 1e-12 * (not zeros)
    p = p / np.maximum(p.sum(axis=axis, keepdims=True), 1e-12)
    return p.astype(dtype)


# ---------------------------------------------------------------------------- PyTorch parity
# Reductions and weighting are parametrised so that every combination is certainly exercised.
REDUCTIONS = ["none", "mean", "sum"]
WEIGHTED = [False, True]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", WEIGHTED)
@given(data=st.data(), smoothing=st.sampled_from([0.0, 0.1, 0.45, 1.0]))
def test_cross_entropy_class_targets_match_torch(torch, reduction, weighted, data, smoothing):
    x, target, weight, ignore_index = data.draw(class_problems(weighted))
    ours = CrossEntropyLoss(weight, ignore_index, reduction, smoothing)
    theirs = torch.nn.CrossEntropyLoss(None if weight is None else torch.tensor(weight),
                                       ignore_index=ignore_index, reduction=reduction,
                                       label_smoothing=smoothing)
    check_parity(torch, ours, theirs, x, target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", WEIGHTED)
@given(seed=seeds, n=st.integers(1, 5), c=st.integers(2, 6), smoothing=st.sampled_from([0.0, 0.2]))
def test_cross_entropy_probability_targets_match_torch(torch, reduction, weighted, seed, n, c, smoothing):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)).astype(np.float32)
    target = probabilities(rng, (n, c))
    weight = rng.uniform(0.2, 2.0, c).astype(np.float32) if weighted else None
    ours = CrossEntropyLoss(weight, reduction=reduction, label_smoothing=smoothing)
    theirs = torch.nn.CrossEntropyLoss(None if weight is None else torch.tensor(weight),
                                       reduction=reduction, label_smoothing=smoothing)
    check_parity(torch, ours, theirs, x, target)


def test_cross_entropy_unbatched_and_all_ignored_match_torch(torch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(5).astype(np.float32)
    check_parity(torch, CrossEntropyLoss(label_smoothing=0.1), torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                 x, np.array(3))
    x = rng.standard_normal((3, 4)).astype(np.float32)
    ignored = np.full(3, -100)
    loss = CrossEntropyLoss(label_smoothing=0.2)
    assert math.isnan(loss(x, ignored))                 # 0 / 0, as PyTorch
    np.testing.assert_array_equal(loss.backward(), np.zeros_like(x))
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(xt, torch.tensor(ignored), label_smoothing=0.2).backward()
    np.testing.assert_array_equal(xt.grad.numpy(), 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", WEIGHTED)
@given(data=st.data())
def test_nll_loss_matches_torch(torch, reduction, weighted, data):
    x, target, weight, ignore_index = data.draw(class_problems(weighted))
    logp = (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)
    ours = NLLLoss(weight, ignore_index, reduction)
    theirs = torch.nn.NLLLoss(None if weight is None else torch.tensor(weight),
                              ignore_index=ignore_index, reduction=reduction)
    check_parity(torch, ours, theirs, logp, target)


@pytest.mark.filterwarnings("ignore:.*reduction.*'mean' divides")
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
@given(seed=seeds, shape=st.lists(st.integers(1, 5), min_size=1, max_size=3))
def test_kl_div_matches_torch(torch, reduction, log_target, seed, shape):
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    axis = 1 if len(shape) > 1 else 0
    logq = np.log(probabilities(rng, shape, axis)).astype(np.float32)
    p = probabilities(rng, shape, axis, zeros=not log_target)        # exact zeros: the xlogy branch
    target = np.log(p).astype(np.float32) if log_target else p
    theirs = torch.nn.KLDivLoss(reduction=reduction, log_target=log_target)
    check_parity(torch, KLDivLoss(reduction, log_target), theirs, logq, target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(seed=seeds, shape=st.lists(st.integers(1, 5), min_size=1, max_size=3))
def test_mse_loss_matches_torch(torch, reduction, seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    target = rng.standard_normal(shape).astype(np.float32)
    check_parity(torch, MSELoss(reduction), torch.nn.MSELoss(reduction=reduction), x, target)


# ---------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", WEIGHTED)
@given(data=st.data(), smoothing=st.sampled_from([0.0, 0.3]), seed=seeds)
def test_cross_entropy_finite_differences(reduction, weighted, data, smoothing, seed):
    x, target, weight, ignore_index = data.draw(class_problems(weighted))
    assume(reduction != "mean" or np.any(target != ignore_index))      # else nan (tested above)
    rng = np.random.default_rng(seed)
    check_finite_differences(CrossEntropyLoss(weight, ignore_index, reduction, smoothing), x, target, rng)
    probs = probabilities(rng, x.shape)
    check_finite_differences(CrossEntropyLoss(weight, reduction=reduction, label_smoothing=smoothing),
                             x, probs, rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", WEIGHTED)
@given(data=st.data(), seed=seeds)
def test_nll_loss_finite_differences(reduction, weighted, data, seed):
    x, target, weight, ignore_index = data.draw(class_problems(weighted, spatial=False))
    assume(reduction != "mean" or np.any(target != ignore_index))
    check_finite_differences(NLLLoss(weight, ignore_index, reduction), x, target, np.random.default_rng(seed))


@pytest.mark.filterwarnings("ignore:.*reduction='mean' divides")
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@given(seed=seeds, log_target=st.booleans())
def test_kl_div_finite_differences(reduction, seed, log_target):
    rng = np.random.default_rng(seed)
    logq = np.log(probabilities(rng, (3, 4)))
    p = probabilities(rng, (3, 4), zeros=not log_target)
    target = np.log(p) if log_target else p
    check_finite_differences(KLDivLoss(reduction, log_target), logq, target, rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(seed=seeds)
def test_mse_loss_finite_differences(reduction, seed):
    rng = np.random.default_rng(seed)
    check_finite_differences(MSELoss(reduction), rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng)


# ---------------------------------------------------------------------------- interface
def test_scalar_loss_is_a_float_and_nan_passes_through():
    x = np.array([[0.0, np.nan]], dtype=np.float32)
    value = CrossEntropyLoss()(x, np.array([0]))
    assert isinstance(value, float) and math.isnan(value)
    assert isinstance(MSELoss()(np.ones(3, np.float32), np.zeros(3, np.float32)), float)


def test_backward_scales_by_grad_output_and_keeps_dtype():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    loss = CrossEntropyLoss()
    loss(x, np.array([0, 1, 2, 0]))
    g1 = loss.backward()
    np.testing.assert_allclose(loss.backward(2.5), 2.5 * g1, rtol=1e-6)
    assert g1.dtype == np.float32


def test_weight_is_a_buffer_in_state_dict():
    loss = CrossEntropyLoss(weight=np.array([1.0, 2.0], np.float32))
    assert list(loss.state_dict()) == ["weight"]
    assert list(CrossEntropyLoss().state_dict()) == []
    assert list(loss.parameters()) == []


def test_no_grad_keeps_no_cache():
    loss = MSELoss()
    with no_grad():
        loss(np.ones(3, np.float32), np.zeros(3, np.float32))
    with pytest.raises(RuntimeError, match="MSELoss.*backward"):
        loss.backward()


# ---------------------------------------------------------------------------- bad input
X = np.zeros((4, 3), np.float32)


@pytest.mark.parametrize("make, target, error, message", [
    (CrossEntropyLoss, np.array([0, 1, 2]), ValueError, r"expected target \(N,\) = \(4,\).*got target \(3,\)"),
    (CrossEntropyLoss, np.array([0, 1, 2, 3]), ValueError, "target 3 is out of bounds for 3 classes"),
    (CrossEntropyLoss, np.array([0, -1, 2, 0]), ValueError, "target -1 is out of bounds"),
    (CrossEntropyLoss, np.array([0.0, 1.0, 2.0, 0.0]), TypeError, "class-index targets must be integers, got float64"),
    (CrossEntropyLoss, np.zeros((4, 3), np.int64), TypeError, "probabilities and must be floating-point"),
    (lambda: CrossEntropyLoss(ignore_index=0), np.full((4, 3), 1 / 3), ValueError, "ignore_index=0 is not supported"),
    (lambda: CrossEntropyLoss(weight=np.ones(4)), np.array([0, 1, 2, 0]), ValueError,
     r"class weight of shape \(3,\), got \(4,\)"),
    (NLLLoss, np.array([[0], [1], [2], [0]]), ValueError, r"got target \(4, 1\)"),
    (KLDivLoss, np.zeros((4, 2), np.float32), ValueError, r"same shape, got input \(4, 3\) and target \(4, 2\)"),
    (MSELoss, np.zeros(4, np.float32), ValueError, r"input \(4, 3\) and target \(4,\)"),
])
def test_bad_input_raises_naming_the_loss_and_shapes(make, target, error, message):
    loss = make()
    with pytest.raises(error, match=message) as info:
        loss(X, target)
    assert type(loss).__name__ in str(info.value)


def test_kl_div_mean_warns_like_torch():
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        KLDivLoss()(X, X)


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match=r"CrossEntropyLoss.*floating-point input.*int64"):
        CrossEntropyLoss()(np.zeros((2, 3), np.int64), np.array([0, 1]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        MSELoss("average")
    with pytest.raises(ValueError, match="reduction must be one of"):
        CrossEntropyLoss(reduction="batchmean")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        CrossEntropyLoss(label_smoothing=1.5)
    loss = MSELoss("none")
    loss(X, X)
    with pytest.raises(ValueError, match="reduction='none'.*backward\\(grad_output\\)"):
        loss.backward()
    with pytest.raises(ValueError, match=r"upstream gradient of shape \(4, 3\).*got \(4,\)"):
        loss.backward(np.ones(4))
    loss = MSELoss()
    loss(X, X)
    with pytest.raises(ValueError, match="expected a scalar upstream gradient"):
        loss.backward(np.ones(3))
