"""Masks byte-for-byte equal to torch.nn.utils.prune's, on tie-free tensors."""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from minicompress import prune
from minicompress.prune.norms import channel_norms
from prune_testing import NORMS, channel_tensor, distinct_tensor, same_bytes, shapes

amounts = st.one_of(st.floats(0, 1), st.integers(0, 4))
seeds = st.integers(0, 2**31 - 1)


def tt(torch, a):
    return torch.from_numpy(np.array(a, copy=True))


@given(shapes(), seeds, amounts, st.sampled_from([np.float32, np.float64]))
def test_l1_unstructured_mask_and_pruned_tensor(torch, shape, seed, amount, dtype):
    from torch.nn.utils import prune as tprune
    t = distinct_tensor(shape, seed, dtype)
    assume(not isinstance(amount, int) or amount <= t.size)
    ours = prune.L1Unstructured(amount)
    theirs = tprune.L1Unstructured(amount)
    ones = torch.ones(shape, dtype=tt(torch, t).dtype)
    assert same_bytes(ours.compute_mask(t, np.ones_like(t)), theirs.compute_mask(tt(torch, t), ones))
    assert same_bytes(ours.prune(t), theirs.prune(tt(torch, t)))


@given(shapes(min_dims=2), seeds, amounts, st.sampled_from(NORMS), st.data())
def test_ln_structured_mask(torch, shape, seed, amount, n, data):
    from torch.nn.utils import prune as tprune
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    assume(not isinstance(amount, int) or amount <= shape[dim])
    assume(n != "fro" or len(shape) <= 3)  # torch.norm('fro') refuses > 2 reduced axes; ours is L2
    t = channel_tensor(shape, dim, seed)
    default = (distinct_tensor(shape, seed + 1) > -1.0).astype(np.float32)  # some entries already masked
    ours = prune.LnStructured(amount, n, dim).compute_mask(t, default)
    theirs = tprune.LnStructured(amount, n, dim).compute_mask(tt(torch, t), tt(torch, default))
    assert same_bytes(ours, theirs)


@given(shapes(min_dims=2), seeds, st.sampled_from(NORMS + [0]), st.data())
def test_channel_norms_match_torch_norm(torch, shape, seed, n, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    assume(n != "fro" or len(shape) <= 3)
    t = distinct_tensor(shape, seed, np.float64)
    others = [d for d in range(len(shape)) if d != dim]
    np.testing.assert_allclose(channel_norms(t, n, dim), torch.norm(tt(torch, t), p=n, dim=others).numpy(),
                               rtol=1e-12)


def test_nuclear_norm(torch):
    t = distinct_tensor((4, 3, 5), 0, np.float64)
    np.testing.assert_allclose(channel_norms(t, "nuc", 1), torch.norm(tt(torch, t), p="nuc", dim=[0, 2]).numpy())
    with pytest.raises(ValueError, match="nuclear"):
        channel_norms(t[0], "nuc", 0)
    with pytest.raises(ValueError):
        channel_norms(t, "max", 0)


@given(shapes(), seeds, st.integers(0, 1))
def test_custom_from_mask(torch, shape, seed, bool_mask):
    from torch.nn.utils import prune as tprune
    rng = np.random.default_rng(seed)
    t = distinct_tensor(shape, seed)
    mask = rng.random(shape) < 0.5
    mask = mask if bool_mask else mask.astype(np.float32)
    default = (rng.random(shape) < 0.7).astype(np.float32)
    ours = prune.CustomFromMask(mask).compute_mask(t, default)
    theirs = tprune.CustomFromMask(tt(torch, mask)).compute_mask(tt(torch, t), tt(torch, default))
    assert same_bytes(ours, theirs)


@given(shapes(), seeds, amounts)
def test_random_unstructured_counts_monotone(shape, seed, amount):
    t = distinct_tensor(shape, seed)
    default = (np.random.default_rng(seed).random(shape) < 0.8).astype(np.float32)
    assume(not isinstance(amount, int) or amount <= t.size)
    mask = prune.RandomUnstructured(amount, rng=seed).compute_mask(t, default)
    k = amount if isinstance(amount, int) else round(amount * t.size)
    flat = np.ones(t.size, np.float32)
    flat[np.flatnonzero(prune.RandomUnstructured(amount, rng=seed).compute_mask(t, np.ones_like(t)) == 0)] = 0
    assert (flat == 0).sum() == k  # exactly k entries chosen on a fresh mask
    assert np.all(mask <= default)  # never revives
    assert np.array_equal(mask, default * flat.reshape(shape))  # same draws -> same choice


@given(shapes(min_dims=2), seeds, amounts, st.data())
def test_random_structured_counts_monotone(shape, seed, amount, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    assume(not isinstance(amount, int) or amount <= shape[dim])
    t = distinct_tensor(shape, seed)
    mask = prune.RandomStructured(amount, dim, rng=seed).compute_mask(t, np.ones_like(t))
    others = tuple(d for d in range(len(shape)) if d != dim % len(shape))
    channel_sums = mask.sum(axis=others)
    k = amount if isinstance(amount, int) else round(amount * shape[dim])
    assert (channel_sums == 0).sum() == k
    assert set(np.unique(channel_sums)) <= {0.0, mask.size / shape[dim]}  # whole channels only


@given(shapes(), seeds)
def test_identity_is_idempotent(shape, seed):
    default = (distinct_tensor(shape, seed) > 0).astype(np.float32)
    once = prune.Identity().compute_mask(distinct_tensor(shape, seed), default)
    assert same_bytes(once, default) and once is not default
    assert same_bytes(prune.Identity().compute_mask(default, once), default)


@given(shapes(), seeds, st.floats(0, 1), st.floats(0, 1))
def test_container_unstructured_counts_only_unpruned(torch, shape, seed, a1, a2):
    from torch.nn.utils import prune as tprune
    t = distinct_tensor(shape, seed)
    first, second = prune.L1Unstructured(a1), prune.L1Unstructured(a2)
    first._tensor_name = second._tensor_name = "w"
    m1 = first.compute_mask(t, np.ones_like(t))
    m2 = prune.PruningContainer(first, second).compute_mask(t * m1, m1)
    remaining = t.size - round(a1 * t.size)
    assert (m2 == 0).sum() == t.size - remaining + round(a2 * remaining)
    tf, ts = tprune.L1Unstructured(a1), tprune.L1Unstructured(a2)
    tf._tensor_name = ts._tensor_name = "w"
    tm1 = tf.compute_mask(tt(torch, t), torch.ones(shape))
    container = tprune.PruningContainer(tf)
    container.add_pruning_method(ts)
    tm2 = container.compute_mask(tt(torch, t) * tm1, tm1)
    assert same_bytes(m2, tm2)
