"""N:M sparsity: masks equal to torch.ao.pruning.WeightNormSparsifier's, ties and padding included."""
import itertools

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minicompress.nn as mnn
from minicompress import prune
from minicompress.prune.selection import rank_keys, smallest_k

# Values with many exact ties: zeros of both signs, equal magnitudes of both signs, tiny values whose
# float32 squares underflow to 0 (so they tie with 0), and a few ordinary numbers.
TIE_VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 1e-23, -2e-23, 3.0]
BLOCKS = [((1, 4), 2), ((1, 4), 1), ((1, 4), 3), ((1, 8), 4), ((2, 2), 2), ((4, 1), 2), ((1, 2), 1), ((2, 3), 4)]


@st.composite
def weights(draw, ndim: int) -> np.ndarray:
    """A Linear (out, in) or Conv2d (out, in, kh, kw) weight, either tie-heavy or continuous."""
    shape = tuple(draw(st.integers(1, 6)) for _ in range(2)) + tuple(draw(st.integers(1, 3)) for _ in range(ndim - 2))
    n = int(np.prod(shape))
    if draw(st.booleans()):
        values = draw(st.lists(st.sampled_from(TIE_VALUES), min_size=n, max_size=n))
    else:
        values = draw(st.lists(st.floats(-4, 4, width=32), min_size=n, max_size=n))
    return np.array(values, np.float32).reshape(shape)


def torch_sparsifier_mask(torch, w2: np.ndarray, block_shape=(1, 4), zeros_per_block=2) -> np.ndarray:
    """The mask WeightNormSparsifier(sparsity_level=1) puts on a Linear holding ``w2`` (out, in),
    cropped to ``w2``'s shape (torch returns it padded to whole blocks)."""
    from torch.ao.pruning import WeightNormSparsifier
    t = torch.from_numpy(np.array(w2, copy=True))
    lin = torch.nn.Linear(w2.shape[1], w2.shape[0], bias=False, dtype=t.dtype)
    with torch.no_grad():
        lin.weight.copy_(t)
    model = torch.nn.Sequential(lin)
    sparsifier = WeightNormSparsifier(sparsity_level=1.0, sparse_block_shape=block_shape,
                                      zeros_per_block=zeros_per_block)
    sparsifier.prepare(model, [{"tensor_fqn": "0.weight"}])
    sparsifier.step()
    mask = model[0].parametrizations.weight[0].mask.numpy()
    return mask[:w2.shape[0], :w2.shape[1]]


@given(weights(2))
def test_2_4_linear_mask_is_torch_sparsifier(torch, w):
    ours = prune.NMStructured(2, 4).compute_mask(w, np.ones_like(w))
    assert ours.dtype == w.dtype
    assert np.array_equal(ours, torch_sparsifier_mask(torch, w))


@given(weights(4))
def test_2_4_conv_mask_is_torch_sparsifier_on_the_gemm_matrix(torch, w):
    ours = prune.NMStructured(2, 4).compute_mask(w, np.ones_like(w))
    assert np.array_equal(ours.reshape(w.shape[0], -1), torch_sparsifier_mask(torch, w.reshape(w.shape[0], -1)))


@given(weights(2), st.sampled_from(BLOCKS))
def test_other_blocks_and_zeros_per_block_are_torch_sparsifier(torch, w, block):
    shape, n = block
    m = shape[0] * shape[1]
    ours = prune.NMStructured(n, m, block_shape=shape).compute_mask(w, np.ones_like(w))
    assert np.array_equal(ours, torch_sparsifier_mask(torch, w, shape, m - n))


def test_float64_weights(torch):
    w = np.random.default_rng(0).integers(-2, 3, (5, 9)).astype(np.float64)
    assert np.array_equal(prune.NMStructured().compute_mask(w, np.ones_like(w)), torch_sparsifier_mask(torch, w))


def test_torch_facts_ties_padding_and_conv():
    """What the sparsifier does, written out: ties by nth_element, NaN padding, 2-D only."""
    keep = prune.nm_mask(np.zeros((1, 4), np.float32), 2, 4)
    assert keep.tolist() == [[True, True, False, False]]          # equal magnitudes: 2 and 3 pruned, not 0 and 1
    keep = prune.nm_mask(np.array([[1, 1, 1, 1, 5, 6]], np.float32), 2, 4)
    assert keep.tolist() == [[True, True, False, False, False, False]]  # a 2-entry tail block is pruned whole
    keep = prune.nm_mask(np.array([[1, 2, 3, 4, 7, 5, 6]], np.float32), 2, 4)
    assert keep.tolist() == [[False, False, True, True, True, False, False]]  # 3-entry tail: 1 kept
    keep = prune.nm_mask(np.array([[1e-23, 0.0, 2e-23, 1.0]], np.float32), 2, 4)
    assert keep.sum() == 2 and keep[0, 3]                          # squares 0, 0, 0: a three-way tie


def test_torch_sparsifier_pads_the_mask_and_fails_on_conv(torch):
    from torch.ao.pruning import WeightNormSparsifier
    model = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.Conv2d(4, 2, 3))
    sparsifier = WeightNormSparsifier(sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2)
    sparsifier.prepare(model, [{"tensor_fqn": "0.weight"}])
    sparsifier.step()
    assert tuple(model[0].parametrizations.weight[0].mask.shape) == (3, 8)
    conv = WeightNormSparsifier(sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2)
    conv.prepare(model, [{"tensor_fqn": "1.weight"}])
    with pytest.raises(RuntimeError):
        conv.step()


def test_selection_replays_torch_topk_on_every_tie_pattern(torch):
    for values in itertools.product([0.0, 1.0, 2.0, float("nan")], repeat=4):
        row = np.array(values, np.float32)
        for k in range(1, 5):
            _, idx = torch.topk(torch.from_numpy(row), k, largest=False)
            assert smallest_k(rank_keys(row), k) == sorted(idx.tolist()), (values, k)


@given(st.integers(1, 300), st.integers(0, 2**31 - 1), st.data())
def test_selection_long_rows_heap_and_introselect(torch, length, seed, data):
    rng = np.random.default_rng(seed)
    row = rng.integers(0, 4, length).astype(np.float32)
    k = data.draw(st.integers(1, length))
    _, idx = torch.topk(torch.from_numpy(row), k, largest=False)
    assert smallest_k(rank_keys(row), k) == sorted(idx.tolist())


def test_reparametrisation_on_linear_and_conv():
    for layer in (mnn.Linear(10, 3), mnn.Conv2d(3, 4, 3)):
        param = layer.weight
        prune.nm_structured(layer, "weight")
        assert layer.weight_orig is param and sorted(layer.state_dict()) == ["bias", "weight_mask", "weight_orig"]
        groups = layer.weight_mask.reshape(layer.weight_mask.shape[0], -1)
        full = groups[:, :groups.shape[1] // 4 * 4].reshape(groups.shape[0], -1, 4)
        assert (full.sum(-1) == 2).all()
        assert np.array_equal(layer.weight, layer.weight_mask * param.data)
        prune.remove(layer, "weight")
        assert layer.weight is param


def test_after_l1_the_pruned_entries_are_chosen_first_and_never_revived():
    layer = mnn.Linear(8, 4)
    prune.l1_unstructured(layer, "weight", amount=3)
    first = layer.weight_mask.copy()
    hook = prune.NMStructured.apply(layer, "weight", 2, 4)
    assert isinstance(hook, prune.PruningContainer)
    assert np.all(layer.weight_mask <= first)
    assert (layer.weight_mask.reshape(4, 2, 4).sum(-1) == 2).all()  # at most 2 per group were zero already


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=4, m=4), r"1 <= n < m, got n=4, m=4"),
    (dict(n=0, m=4), r"got n=0, m=4"),
    (dict(n=2, m=4, block_shape=(2, 3)), r"block_shape \(2, 3\) must hold m=4"),
])
def test_bad_arguments_name_the_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune.nm_structured(mnn.Linear(8, 2), "weight", **kwargs)
    with pytest.raises(TypeError, match="integers"):
        prune.NMStructured(2.0, 4)


def test_one_dimensional_tensor_is_refused_with_the_module_name():
    with pytest.raises(ValueError, match=r"Linear\(in_features=8.*\.bias: .*>= 2 dims.*\(2,\)"):
        prune.nm_structured(mnn.Linear(8, 2), "bias")
