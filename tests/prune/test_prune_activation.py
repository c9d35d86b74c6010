"""Activation importance (mean, APoZ) by forward hooks, and structured pruning by given scores."""
import copy

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minicompress.nn as mnn
from minicompress import prune
from minicompress.data import DataLoader


def _dead_channel_net():
    """Conv(2->4) -> BN-free ReLU -> Flatten -> Linear(64->5) -> ReLU -> Linear(5->3); conv channels
    1 and 3 and hidden neuron 2 are dead (zero weights, negative bias: the ReLU output is always 0)."""
    mnn_seed = np.random.default_rng(0)
    net = mnn.Sequential(mnn.Conv2d(2, 4, 3, padding=1), mnn.ReLU(), mnn.Flatten(), mnn.Linear(64, 5), mnn.ReLU(),
                         mnn.Linear(5, 3))
    net[0].weight.data[...] = mnn_seed.standard_normal(net[0].weight.data.shape).astype(np.float32)
    net[0].bias.data[...] = [0.5, -1.0, 0.5, -2.0]
    net[0].weight.data[[1, 3]] = 0
    net[3].weight.data[...] = np.abs(mnn_seed.standard_normal((5, 64))).astype(np.float32)  # live: >= 0.1
    net[3].bias.data[...] = 0.1
    net[3].weight.data[2] = 0
    net[3].bias.data[2] = -0.1
    net[5].weight.data[...] = mnn_seed.standard_normal((3, 5)).astype(np.float32)
    return net


def _batches(n=3, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, 2, 4, 4)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("criterion", ["apoz", "mean"])
def test_dead_channels_rank_lowest(criterion):
    net = _dead_channel_net()
    scores = prune.activation_importance(net, _batches(), criterion=criterion)
    assert list(scores) == ["1", "4"] and scores["1"].shape == (4,) and scores["4"].shape == (5,)
    assert set(np.argsort(scores["1"], kind="stable")[:2]) == {1, 3}
    assert scores["1"][[1, 3]].tolist() == [0.0, 0.0] and (scores["1"][[0, 2]] > 0).all()
    assert np.argmin(scores["4"]) == 2 and scores["4"][2] == 0.0
    assert (np.delete(scores["4"], 2) > 0).all()


@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.sampled_from(["apoz", "mean"]))
def test_values_equal_a_hand_computation(seed, n_batches, criterion):
    rng = np.random.default_rng(seed)
    net = mnn.Sequential(mnn.Linear(3, 4), mnn.ReLU())
    net[0].weight.data[...] = rng.integers(-2, 3, (4, 3))     # small integers: exact sums, many exact zeros
    net[0].bias.data[...] = rng.integers(-1, 2, 4)
    batches = [rng.integers(-2, 3, (int(rng.integers(1, 6)), 3)).astype(np.float32) for _ in range(n_batches)]
    ys = np.concatenate([np.maximum(x @ net[0].weight.data.T + net[0].bias.data, 0) for x in batches])  # (N, 4)
    expected = 1.0 - (ys == 0).sum(0) / ys.shape[0] if criterion == "apoz" else ys.sum(0, dtype=np.float64) / ys.shape[0]
    got = prune.activation_importance(net, batches, criterion=criterion)["1"]
    assert got.dtype == np.float64 and np.array_equal(got, expected)


def test_conv_statistic_counts_every_position_of_every_batch():
    net = mnn.Sequential(mnn.Conv2d(1, 2, 1), mnn.ReLU())
    net[0].weight.data[...] = 1.0
    net[0].bias.data[...] = [0.0, -1.0]
    batches = [np.array([[[[0.0, 2.0], [3.0, -1.0]]]], np.float32), np.zeros((2, 1, 2, 2), np.float32)]
    # batch 1: relu(x) = [0, 2, 3, 0], relu(x - 1) = [0, 1, 2, 0]; batch 2 (8 positions): all zeros
    assert prune.activation_importance(net, batches)["1"].tolist() == [1 - 10 / 12, 1 - 10 / 12]
    assert prune.activation_importance(net, batches, criterion="mean")["1"].tolist() == [5 / 12, 3 / 12]


def test_hooks_removed_and_modes_restored_even_on_error():
    net = _dead_channel_net()
    net.train()
    net[4].eval()
    before = [m.training for m in net.modules()]
    loader = DataLoader(np.concatenate(_batches()), np.zeros(12, np.int64), batch_size=5)
    prune.activation_importance(net, loader, layers=["1", "3"])  # (x, y) pairs; a Linear's output too
    assert [m.training for m in net.modules()] == before
    assert all(not m.forward_hooks() for m in net.modules())
    with pytest.raises(ValueError):
        prune.activation_importance(net, [np.zeros((2, 3, 4, 4), np.float32)])   # wrong input channels
    assert [m.training for m in net.modules()] == before
    assert all(not m.forward_hooks() for m in net.modules())


def test_eval_mode_during_calibration():
    net = mnn.Sequential(mnn.Linear(4, 4), mnn.Dropout(0.9), mnn.ReLU()).train()
    x = [np.ones((8, 4), np.float32)]
    a, b = prune.activation_importance(net, x, criterion="mean"), prune.activation_importance(net, x, criterion="mean")
    assert np.array_equal(a["2"], b["2"])  # no dropout draws


@pytest.mark.parametrize("kwargs, message", [
    (dict(criterion="l1"), "criterion must be one of"),
    (dict(layers=["9"]), r"no module named \['9'\]"),
    (dict(layers=["2"], channel_axis=0), "channel_axis=0 is not a channel axis of module '2'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune.activation_importance(_dead_channel_net(), _batches(1), **kwargs)
    with pytest.raises(ValueError, match="batches is empty"):
        prune.activation_importance(_dead_channel_net(), [])
    with pytest.raises(ValueError, match="no activation module"):
        prune.activation_importance(mnn.Sequential(mnn.Linear(2, 2)), [np.ones((1, 2), np.float32)])


def test_structured_from_activation_scores_prunes_dead_channels():
    net = _dead_channel_net()
    dense = copy.deepcopy(net)
    scores = prune.activation_importance(net, _batches())
    prune.structured_from_scores(net[0], "weight", scores["1"], amount=0.5, dim=0)
    assert net[0].weight_mask.reshape(4, -1).max(1).tolist() == [1, 0, 1, 0]
    prune.structured_from_scores(net[3], "weight", scores["4"], amount=1, dim=0)
    assert net[3].weight_mask.max(1).tolist() == [1, 1, 0, 1, 1]
    x = _batches(1)[0]
    assert np.array_equal(net(x), dense(x))          # dead channels: same function


def test_scores_amount_counts_alive_channels_and_ties_prune_lower_index_first():
    m = mnn.Linear(3, 6)
    scores = np.array([0.5, 0.1, 0.5, 0.5, 0.9, 0.1])
    prune.structured_from_scores(m, "weight", scores, amount=1)
    assert m.weight_mask[:, 0].tolist() == [1, 0, 1, 1, 1, 1]       # the tie 1 / 5: index 1 first
    prune.structured_from_scores(m, "weight", scores, amount=0.4)    # round(0.4 * 5 alive) = 2 more
    assert m.weight_mask[:, 0].tolist() == [0, 0, 1, 1, 1, 0]
    prune.structured_from_scores(m, "weight", np.arange(3.0)[::-1], amount=1, dim=1)  # columns
    assert m.weight_mask.tolist()[2] == [1, 1, 0]


def test_scores_errors_name_the_module():
    with pytest.raises(ValueError, match=r"Linear\(.*\.weight: ScoreStructured: 4 scores for 6 channels"):
        prune.structured_from_scores(mnn.Linear(3, 6), "weight", np.ones(4), amount=1)
    with pytest.raises(ValueError, match="1-D array of finite numbers"):
        prune.ScoreStructured(1, np.ones((2, 2)))
