"""Threshold pruning (absolute, and Han et al.'s s * std): exact masks, iteration, global, schedules."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minicompress.nn as mnn
from minicompress import prune
from prune_testing import Holder, distinct_tensor, shapes

seeds = st.integers(0, 2**31 - 1)


def tie_tensor(shape, seed):
    """Few distinct magnitudes (many exact ties), both signs, zeros of both signs."""
    rng = np.random.default_rng(seed)
    return (rng.choice([-1.0, 1.0], shape) * rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, 1.5], shape)).astype(np.float32)


@given(shapes(), seeds, st.data())
def test_absolute_threshold_mask_is_abs_ge_tau(shape, seed, data):
    w = tie_tensor(shape, seed)
    tau = data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.6, 1.5, 2.0]))  # mostly equal to some |w|: ties kept
    mask = prune.ThresholdPruning(threshold=tau).compute_mask(w, np.ones_like(w))
    assert mask.dtype == w.dtype
    assert np.array_equal(mask, (np.abs(w) >= tau).astype(np.float32))


def test_threshold_compared_in_float64_not_rounded_to_float32():
    w = np.array([0.1], np.float32)                 # float32(0.1) = 0.100000001490116...
    assert prune.ThresholdPruning(threshold=0.1).compute_mask(w, np.ones(1, np.float32))[0] == 1
    assert prune.ThresholdPruning(threshold=float(w[0]) + 1e-12).compute_mask(w, np.ones(1, np.float32))[0] == 0


@given(shapes(), seeds, st.floats(0, 3))
def test_sensitivity_threshold_is_s_times_std_of_survivors(shape, seed, s):
    w = distinct_tensor(shape, seed)
    default = (np.random.default_rng(seed).random(shape) < 0.7).astype(np.float32)
    method = prune.ThresholdPruning(sensitivity=s)
    tau = method.tau(w, default)
    alive = w[default == 1].astype(np.float64)
    assert tau == (s * np.std(alive) if alive.size else 0.0)
    assert np.array_equal(method.compute_mask(w, default), default * (np.abs(w) >= tau))


@given(shapes(), seeds, st.lists(st.floats(0, 2), min_size=1, max_size=5))
def test_iterating_never_revives_and_std_is_over_survivors(shape, seed, sensitivities):
    m = Holder(distinct_tensor(shape, seed))
    previous = np.ones(shape, np.float32)
    for s in sensitivities:
        alive = m.weight_orig.data[previous == 1] if prune.is_pruned(m) else m.weight.data.ravel()
        tau = s * float(np.std(alive.astype(np.float64))) if alive.size else 0.0
        prune.threshold_pruning(m, "weight", sensitivity=s)
        assert np.all(m.weight_mask <= previous)
        assert np.array_equal(m.weight_mask, previous * (np.abs(m.weight_orig.data) >= tau))
        previous = m.weight_mask.copy()
    assert np.array_equal(m.weight, m.weight_mask * m.weight_orig.data)


def _torch_threshold_method(torch):
    from torch.nn.utils import prune as tprune

    class TorchThreshold(tprune.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def __init__(self, threshold=None, sensitivity=None):
            self.threshold, self.sensitivity = threshold, sensitivity

        def compute_mask(self, t, default_mask):
            tau = self.threshold
            if tau is None:
                alive = t.detach().double()[default_mask != 0]
                tau = self.sensitivity * float(alive.std(unbiased=False)) if alive.numel() else 0.0
            mask = default_mask.clone()
            mask[t.abs().double() < tau] = 0
            return mask
    return TorchThreshold


@pytest.mark.parametrize("kwargs", [dict(threshold=0.9), dict(sensitivity=0.8)])
def test_global_and_iterated_match_torch_custom_method_pruning(torch, kwargs):
    from torch.nn.utils import prune as tprune
    TorchThreshold = _torch_threshold_method(torch)
    weights = [distinct_tensor((5, 4), 1), distinct_tensor((3, 2, 2), 2)]
    ours = [Holder(w) for w in weights]
    theirs = [torch.nn.Module() for _ in weights]
    for t, w in zip(theirs, weights):
        t.weight = torch.nn.Parameter(torch.from_numpy(w.copy()))
    prune.l1_unstructured(ours[0], "weight", amount=3)               # an earlier prune to respect
    tprune.l1_unstructured(theirs[0], "weight", amount=3)
    for _ in range(2):                                               # global, twice (a container)
        prune.global_unstructured([(m, "weight") for m in ours], prune.ThresholdPruning, **kwargs)
        tprune.global_unstructured([(m, "weight") for m in theirs], TorchThreshold, **kwargs)
        for m, t in zip(ours, theirs):
            assert np.array_equal(m.weight_mask, t.weight_mask.numpy())
    for m, t in zip(ours, theirs):                                   # then per layer
        prune.ThresholdPruning.apply(m, "weight", **kwargs)
        TorchThreshold.apply(t, "weight", **kwargs)
        assert np.array_equal(m.weight_mask, t.weight_mask.numpy())


def test_global_sensitivity_uses_one_std_over_all_tensors():
    a, b = Holder(distinct_tensor((4, 4), 0)), Holder(10 * distinct_tensor((4, 4), 1))
    prune.global_unstructured([(a, "weight"), (b, "weight")], prune.ThresholdPruning, sensitivity=0.5)
    tau = 0.5 * np.std(np.concatenate([a.weight_orig.data.ravel(), b.weight_orig.data.ravel()]).astype(np.float64))
    for m in (a, b):
        assert np.array_equal(m.weight_mask, (np.abs(m.weight_orig.data) >= tau).astype(np.float32))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gradual_threshold_raises_sensitivity_on_schedule(scope):
    net = mnn.Sequential(mnn.Linear(6, 5), mnn.ReLU(), mnn.Linear(5, 3))
    cb = prune.GradualThreshold(final=1.0, begin_step=1, frequency=2, n_steps=3, scope=scope)
    cb.on_fit_begin(net, None)
    masks = None
    for step in range(10):
        cb.on_batch_end(step, net, None, 0.0)
        if prune.is_pruned(net):
            now = [m.weight_mask.copy() for m, _ in cb.targets]
            assert masks is None or all(np.all(x <= y) for x, y in zip(now, masks))
            masks = now
    assert [s for s, _ in cb.history_] == [1, 3, 5, 7]
    values = [v for _, v in cb.history_]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0
    assert 0 < sum(int((mk == 0).sum()) for mk in masks) < sum(mk.size for mk in masks)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "exactly one of threshold= and sensitivity="),
    (dict(threshold=0.1, sensitivity=1.0), "exactly one"),
    (dict(threshold=-0.5), r"threshold must be a finite number >= 0, got -0.5"),
    (dict(sensitivity=float("nan")), "sensitivity must be a finite number"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune.threshold_pruning(mnn.Linear(3, 2), "weight", **kwargs)


def test_gradual_threshold_bad_arguments():
    with pytest.raises(ValueError, match="kind must be"):
        prune.GradualThreshold(final=1.0, kind="std")
    with pytest.raises(ValueError, match=r"0 <= initial <= final < inf, got 2.0, 1.0"):
        prune.GradualThreshold(final=1.0, initial=2.0)
