"""Pruned Linear / Conv2d: forward, masked gradients, optimizers and state dicts against torch."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minicompress.nn as mnn
from minicompress import prune
from prune_testing import distinct_tensor, same_bytes

seeds = st.integers(0, 2**31 - 1)


def _twins(torch, kind, seed):
    if kind == "linear":
        ours = mnn.Linear(6, 5, rng=seed)
        theirs = torch.nn.Linear(6, 5)
        x = np.random.default_rng(seed).standard_normal((4, 6)).astype(np.float32)
    else:
        ours = mnn.Conv2d(3, 4, 3, padding=1, rng=seed)
        theirs = torch.nn.Conv2d(3, 4, 3, padding=1)
        x = np.random.default_rng(seed).standard_normal((2, 3, 5, 5)).astype(np.float32)
    ours.weight.data = distinct_tensor(ours.weight.shape, seed)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return ours, theirs, x


def _prune_both(torch, ours, theirs, how):
    tp = torch.nn.utils.prune
    if how == "l1":
        prune.l1_unstructured(ours, "weight", 0.4)
        tp.l1_unstructured(theirs, "weight", 0.4)
    else:
        prune.ln_structured(ours, "weight", 0.5, n=2, dim=0)
        tp.ln_structured(theirs, "weight", 0.5, n=2, dim=0)
        prune.l1_unstructured(ours, "weight", 0.2)
        tp.l1_unstructured(theirs, "weight", 0.2)
    prune.l1_unstructured(ours, "bias", 1)
    tp.l1_unstructured(theirs, "bias", 1)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("how", ["l1", "ln"])
@given(seed=seeds)
def test_forward_and_masked_gradients_match_torch(torch, kind, how, seed):
    ours, theirs, x = _twins(torch, kind, seed)
    _prune_both(torch, ours, theirs, how)
    assert same_bytes(ours.weight, theirs.weight) and same_bytes(ours.weight_mask, theirs.weight_mask)
    y = ours(x)
    tx = torch.from_numpy(x)
    ty = theirs(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6 * np.abs(y).max())
    dout = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(np.float32)
    ours.backward(dout)
    (ty * torch.from_numpy(dout)).sum().backward()
    for name in ("weight_orig", "bias_orig"):
        g, tg = getattr(ours, name).grad, getattr(theirs, name).grad.numpy()
        np.testing.assert_allclose(g, tg, rtol=1e-5, atol=1e-6 * np.abs(tg).max())  # long sums
        mask = getattr(ours, name.replace("orig", "mask"))
        assert np.all(g[mask == 0] == 0)


def test_finite_differences_through_the_mask():
    m = mnn.Linear(4, 3, rng=0).to(np.float64)
    prune.l1_unstructured(m, "weight", 5)
    x = np.random.default_rng(1).standard_normal((2, 4))
    dout = np.random.default_rng(2).standard_normal((2, 3))
    m(x)
    m.backward(dout)
    orig = m.weight_orig.data
    numeric = np.zeros_like(orig)
    for idx in np.ndindex(orig.shape):
        old = orig[idx]
        orig[idx] = old + 1e-6
        plus = (m(x) * dout).sum()
        orig[idx] = old - 1e-6
        minus = (m(x) * dout).sum()
        orig[idx] = old
        numeric[idx] = (plus - minus) / 2e-6
    np.testing.assert_allclose(m.weight_orig.grad, numeric, rtol=1e-6, atol=1e-9)
    assert np.all(m.weight_orig.grad[m.weight_mask == 0] == 0)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_masked_weights_stay_zero_through_optimizer_steps(torch, opt):
    """Momentum and weight decay move masked weight_orig entries, never the effective weight."""
    from minicompress import optim
    ours, theirs, x = _twins(torch, "linear", 3)
    _prune_both(torch, ours, theirs, "l1")
    if opt == "sgd":
        o = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
        t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    else:
        o = optim.Adam(ours.parameters(), lr=0.05, weight_decay=0.1)
        t = torch.optim.Adam(theirs.parameters(), lr=0.05, weight_decay=0.1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        dout = rng.standard_normal((4, 5)).astype(np.float32)
        o.zero_grad()
        t.zero_grad()
        ours(x)
        ours.backward(dout)
        (theirs(torch.from_numpy(x)) * torch.from_numpy(dout)).sum().backward()
        o.step()
        t.step()
        ours(x), theirs(torch.from_numpy(x))  # both recompute weight = mask * orig
        assert np.all(ours.weight[ours.weight_mask == 0] == 0) and np.all(ours.bias[ours.bias_mask == 0] == 0)
    assert np.any(ours.weight_orig.data[ours.weight_mask == 0] != distinct_tensor((5, 6), 3)[ours.weight_mask == 0])
    np.testing.assert_allclose(ours.weight_orig.data, theirs.weight_orig.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.weight, theirs.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_state_dicts_travel_both_ways(torch, kind):
    tp = torch.nn.utils.prune
    ours, theirs, x = _twins(torch, kind, 5)
    _prune_both(torch, ours, theirs, "ln")
    fresh = torch.nn.Linear(6, 5) if kind == "linear" else torch.nn.Conv2d(3, 4, 3, padding=1)
    tp.identity(fresh, "weight")
    tp.identity(fresh, "bias")
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    y = fresh(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y, ours(x), rtol=1e-5, atol=1e-6)
    assert list(fresh.state_dict()) == list(ours.state_dict())

    back = mnn.Linear(6, 5) if kind == "linear" else mnn.Conv2d(3, 4, 3, padding=1)
    prune.identity(back, "weight")
    prune.identity(back, "bias")
    back.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert same_bytes(back(x), ours(x))
    assert same_bytes(back.weight, theirs.weight) and same_bytes(back.weight_mask, theirs.weight_mask)


def test_remove_restores_the_parameter_object_and_keeps_negative_zeros(torch):
    ours, theirs, x = _twins(torch, "linear", 7)
    param = ours.weight
    _prune_both(torch, ours, theirs, "l1")
    prune.remove(ours, "weight")
    torch.nn.utils.prune.remove(theirs, "weight")
    assert ours.weight is param and same_bytes(ours.weight.data, theirs.weight)
    assert np.signbit(ours.weight.data[ours.weight.data == 0]).any()
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["bias_orig", "weight", "bias_mask"]
    assert "weight" not in ours._grad_hooks and prune.is_pruned(ours)
    ours(x)
    ours.backward(np.ones((4, 5), np.float32))
    assert ours.weight.grad is not None and ours.bias_orig.grad is not None
