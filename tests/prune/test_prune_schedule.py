"""Gradual sparsity schedule, prune-to-sparsity, rewinding, iterative pruning, sparsity reports."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minicompress.nn as mnn
from minicompress import prune
from prune_testing import Holder, distinct_tensor


@given(st.floats(0, 0.5), st.floats(0.5, 1), st.integers(0, 50), st.integers(1, 20), st.integers(1, 20),
       st.integers(0, 600), st.booleans())
def test_polynomial_sparsity_is_torch_cubic_sl(torch, s0, sf, t0, dt, n, t, zero):
    from torch.ao.pruning.scheduler.cubic_scheduler import CubicSL
    ours = prune.polynomial_sparsity(t, s0, sf, t0, dt, n, initially_zero=zero)
    assert ours == CubicSL.sparsity_compute_fn(s0, sf, t, t0, dt, n, initially_zero=zero)


def test_polynomial_sparsity_formula():
    s = [prune.polynomial_sparsity(t, 0.0, 0.9, 10, 5, 4) for t in range(0, 40, 5)]
    expected = [0.0, 0.0] + [0.9 * (1 - (1 - k / 4) ** 3) for k in range(5)] + [0.9]
    np.testing.assert_allclose(s, expected, rtol=0, atol=1e-15)
    assert all(b >= a for a, b in zip(s, s[1:]))
    assert prune.polynomial_sparsity(12, 0.0, 0.9, 10, 5, 4, power=1) == pytest.approx(0.9 * 2 / 20)
    with pytest.raises(ValueError):
        prune.polynomial_sparsity(0, 0, 0.5, 0, 0, 4)


def _net(seed=0):
    return mnn.Sequential(Holder(distinct_tensor((6, 5), seed)), Holder(distinct_tensor((4, 3, 2), seed + 1)),
                          Holder(distinct_tensor((7,), seed + 2)))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_to_sparsity_exact_counts_and_never_revives(scope):
    net = _net()
    targets = prune.prunable_weights(net)
    assert [m for m, _ in targets] == [net[0], net[1]]  # the 1-D tensor is not a target
    previous = None
    for s in (0.1, 0.4, 0.3, 0.77, 1.0):
        prune.prune_to_sparsity(targets, s, scope)
        masks = [m.weight_mask.copy() for m, _ in targets]
        zeros = [int((mk == 0).sum()) for mk in masks]
        if scope == "layer":
            assert zeros == [max(round(max(s, 0.4 if s == 0.3 else 0) * mk.size), z0)
                             for mk, z0 in zip(masks, previous or [0, 0])]
        else:
            assert sum(zeros) == max(round(s * 54), sum(previous or [0]))
        if previous is not None:
            assert all(np.all(a <= b) for a, b in zip(masks, prev_masks))
        previous, prev_masks = zeros, masks


def test_global_prune_to_sparsity_picks_smallest_overall():
    net = _net()
    targets = prune.prunable_weights(net)
    prune.prune_to_sparsity(targets, 0.5, "global")
    alive = np.concatenate([np.abs(m.weight[m.weight_mask == 1]) for m, _ in targets])
    dead = np.concatenate([np.abs(m.weight_orig.data[m.weight_mask == 0]) for m, _ in targets])
    assert dead.max() < alive.min() and dead.size == 27


def test_gradual_pruning_callback_prunes_on_schedule():
    net = _net()
    cb = prune.GradualPruning(final_sparsity=0.8, begin_step=2, frequency=3, n_steps=4)
    cb.on_fit_begin(net, None)
    for step in range(30):
        for m, _ in cb.targets:  # stand-in for an optimizer step
            (m.weight_orig if prune.is_pruned(m) else m.weight).data *= 1.01
        cb.on_batch_end(step, net, None, 0.0)
        expected = cb.sparsity_at(step) if step >= 2 else 0.0
        if step >= 2 and (step - 2) % 3 == 0 and step <= 14:
            for m, _ in cb.targets:
                assert (m.weight_mask == 0).sum() == round(expected * m.weight_mask.size)
    assert [s for s, _ in cb.history_] == [2, 5, 8, 11, 14] and cb.history_[-1][1] == 0.8
    report = prune.sparsity_report(net, weights_only=True)
    assert report["total"]["zeros"] == round(0.8 * 30) + round(0.8 * 24)


def test_snapshot_and_rewind_keep_masks():
    net = _net()
    snap = prune.snapshot_weights(net)
    assert set(snap) == {"0.weight", "1.weight", "2.weight"}
    prune.l1_unstructured(net[0], "weight", 0.5)
    net[0].weight_orig.data += 1.0
    net[2].weight.data -= 1.0
    prune.rewind_weights(net, snap)
    assert np.array_equal(net[0].weight_orig.data, snap["0.weight"])
    assert np.array_equal(net[0].weight, net[0].weight_mask * snap["0.weight"])
    assert np.array_equal(net[2].weight.data, snap["2.weight"])
    with pytest.raises(ValueError, match="snapshot"):
        prune.rewind_weights(net, {"0.weight": snap["0.weight"]})


def test_rewind_point_callback():
    net = _net()
    cb = prune.RewindPoint(step=3)
    cb.on_fit_begin(net, None)
    for step in range(6):
        net[2].weight.data[...] = step + 1  # the value after step + 1 updates
        cb.on_batch_end(step, net, None, 0.0)
    np.testing.assert_array_equal(cb.snapshot_["2.weight"], np.full(7, 3.0, np.float32))


@pytest.mark.parametrize("rewind", [False, True])
def test_iterative_pruning_rounds(rewind):
    net = _net()
    snap = prune.snapshot_weights(net)
    calls = []
    sparsities = prune.iterative_pruning(net, lambda m, r: calls.append(r), rounds=3, amount=0.5,
                                         rewind_to=snap if rewind else None)
    assert calls == [0, 1, 2]
    np.testing.assert_allclose(sparsities, [27 / 54, 40 / 54, 47 / 54])  # round(40.5) = 40
    if rewind:
        alive = net[0].weight_mask == 1
        np.testing.assert_array_equal(net[0].weight_orig.data[alive], snap["0.weight"][alive])


def test_sparsity_report_counts_bytes_and_negative_zeros():
    net = _net()
    prune.l1_unstructured(net[0], "weight", 10)
    net[1].weight.data[0, 0, 0] = -0.0
    rep = prune.sparsity_report(net)
    rows = {r["name"]: r for r in rep["layers"]}
    assert rows["0.weight"]["zeros"] == 10 and rows["0.weight"]["nonzeros"] == 20
    assert rows["1.weight"]["zeros"] == 1 and rows["2.weight"]["shape"] == (7,)
    assert rows["0.weight"]["dense_bytes"] == 120 and rows["0.weight"]["sparse_bytes"] == 20 * 8 + 7 * 4
    assert rows["2.weight"]["sparse_bytes"] == 7 * 8 + 2 * 4
    assert rep["total"]["numel"] == 61 and rep["total"]["zeros"] == 11
    assert rep["total"]["sparsity"] == pytest.approx(11 / 61)
    text = prune.format_report(rep)
    assert "0.weight" in text and "total" in text
