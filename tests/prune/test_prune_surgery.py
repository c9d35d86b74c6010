"""Channel surgery: the smaller model equals the masked one, and really is smaller."""
import copy

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicompress.nn as mnn
from minicompress import metrics, prune
from tests.oracle import randomise_batchnorm as _randomise_bn
from tests.prune.prune_testing import mask_planned


def cnn(seed=0, c1=8, c2=12, hidden=20):
    rng = np.random.default_rng(seed)
    model = mnn.Sequential(
        mnn.Conv2d(1, c1, 3, padding=1, rng=rng), mnn.BatchNorm2d(c1), mnn.ReLU(),
        mnn.Sequential(mnn.Conv2d(c1, c2, 3, padding=1, rng=rng), mnn.BatchNorm2d(c2), mnn.ReLU(), mnn.MaxPool2d(2)),
        mnn.Flatten(), mnn.Linear(c2 * 16, hidden, rng=rng), mnn.BatchNorm1d(hidden), mnn.ReLU(),
        mnn.Linear(hidden, 10, rng=rng))
    _randomise_bn(model, rng)
    return model.eval()


def _x(seed=1, shape=(4, 1, 8, 8)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _mask_channels(model, x, amount):
    """Zero the channels channel_prune removes (rows, biases, BatchNorm scale and shift, consumer columns)."""
    return mask_planned(model, x, amount)


def _state_bytes(model):
    return {k: v.tobytes() for k, v in model.state_dict().items()}


def _count_params(model):
    return sum(p.size for p in model.parameters())


@settings(max_examples=6)
@given(st.sampled_from([0.25, 0.5, 0.75, 1.0, 2]), st.integers(0, 1000))
def test_surgered_model_equals_the_masked_model(amount, seed):
    model = cnn(seed)
    x = _x(seed)
    _mask_channels(model, x, amount)
    before = _state_bytes(model)
    small = prune.channel_prune(model, x, amount)
    assert _state_bytes(model) == before and prune.is_pruned(model)  # input model untouched
    assert not prune.is_pruned(small)
    with mnn.no_grad():
        expected, got = model(x), small(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    k = lambda c: c - min(amount if isinstance(amount, int) else c - int(c * (1 - amount)), c - 1)  # noqa: E731
    k1, k2, h = k(8), k(12), k(20)
    assert (small[0].out_channels, small[3][0].in_channels, small[3][0].out_channels) == (k1, k1, k2)
    assert (small[5].in_features, small[5].out_features, small[6].num_features, small[8].in_features,
            small[8].out_features) == (k2 * 16, h, h, h, 10)
    expected_params = (9 * k1 + k1) + 2 * k1 + (9 * k1 * k2 + k2) + 2 * k2 + (16 * k2 * h + h) + 2 * h + (10 * h + 10)
    assert _count_params(small) == expected_params
    assert metrics.count_macs(small, (1, 8, 8)) == 64 * 9 * k1 + 64 * 9 * k1 * k2 + 16 * k2 * h + 10 * h


def test_macs_drop_at_least_3x_at_half_the_channels():
    model, x = cnn(), _x()
    small = prune.channel_prune(model, x, 0.5)
    assert metrics.count_macs(model, (1, 8, 8)) >= 3 * metrics.count_macs(small, (1, 8, 8))
    assert _count_params(small) < _count_params(model) / 2.5


def test_flatten_linear_column_mapping():
    model, x = cnn(3), _x()
    first = prune.MagnitudeImportance(p=2, reduction="first")      # the producer's rows only
    plan = prune.plan_channel_prune(model, x, 0.5, importance=first)
    small = prune.channel_prune(model, x, 0.5, importance=first)
    keep2, keep_h = plan["3.0"], plan["5"]
    cols = (keep2[:, None] * 16 + np.arange(16)).ravel()  # channel c owns columns c*16 .. c*16+15
    np.testing.assert_array_equal(small[5].weight.data, model[5].weight.data[keep_h][:, cols])
    np.testing.assert_array_equal(small[3][0].weight.data, model[3][0].weight.data[keep2][:, plan["0"]])
    np.testing.assert_array_equal(small[6].running_var, model[6].running_var[keep_h])
    np.testing.assert_array_equal(small[8].weight.data, model[8].weight.data[:, keep_h])
    norms = np.sqrt((model[0].weight.data.astype(np.float64) ** 2).reshape(8, -1).sum(1))
    assert set(plan["0"]) == set(np.argsort(norms)[4:])


def test_classifier_kept_and_at_least_one_channel():
    model, x = cnn(), _x()
    dg = prune.dependency_graph(model, x)
    assert [g.root for g in dg.prunable()] == ["0", "3.0", "5"] and "8" in dg.refused()
    small = prune.channel_prune(model, x, 1.0)
    assert small[0].out_channels == 1 and small[5].out_features == 1 and small[8].out_features == 10
    with pytest.raises(ValueError, match="keeps its width"):
        prune.channel_prune(model, x, 0.5, layers=["8"])
    with pytest.raises(ValueError, match="not a Linear/conv"):
        prune.channel_prune(model, x, 0.5, layers=["1"])
    only = prune.channel_prune(model, x, 0.5, layers=["3.0"])
    assert only[0].out_channels == 8 and only[3][0].out_channels == 6 and only[5].out_features == 20


def test_bn_scale_importance_and_global_scope():
    model, x = cnn(), _x()
    model[1].weight.data[[2, 5]] = [0.01, -0.02]
    model[3][1].weight.data[[0, 7, 9]] = [0.03, 0.001, -0.015]
    plan = prune.plan_channel_prune(model, x, 2, importance="bn_scale")
    assert set(range(8)) - set(plan["0"]) == {2, 5} and set(range(12)) - set(plan["3.0"]) == {7, 9}
    plan = prune.plan_channel_prune(model, x, 5, importance="bn_scale", global_pruning=True, layers=["0", "3.0"])
    assert set(range(8)) - set(plan["0"]) == {2, 5} and set(range(12)) - set(plan["3.0"]) == {0, 7, 9}
    no_bn = mnn.Sequential(mnn.Linear(4, 6), mnn.ReLU(), mnn.Linear(6, 2))
    with pytest.raises(ValueError, match="bn_scale"):
        prune.channel_prune(no_bn, np.ones((2, 4), np.float32), 0.5, importance="bn_scale", layers=["0"])
    assert prune.plan_channel_prune(no_bn, np.ones((2, 4), np.float32), 0.5, importance="bn_scale") == {}
    assert set(prune.plan_channel_prune(model, x, 0.5, importance="bn_scale")) == {"0", "3.0", "5"}
    with pytest.raises(ValueError, match="unknown importance"):
        prune.channel_prune(no_bn, np.ones((2, 4), np.float32), 0.5, importance="l3")


def test_depthwise_followers_and_grouped_barrier():
    rng = np.random.default_rng(0)
    model = mnn.Sequential(
        mnn.Conv2d(3, 6, 3, padding=1, rng=rng), mnn.BatchNorm2d(6), mnn.ReLU(),
        mnn.Conv2d(6, 6, 3, padding=1, groups=6, rng=rng), mnn.BatchNorm2d(6), mnn.ReLU(),
        mnn.Conv2d(6, 8, 1, rng=rng), mnn.ReLU(), mnn.AdaptiveAvgPool2d(1), mnn.Flatten(), mnn.Linear(8, 3, rng=rng))
    _randomise_bn(model, rng)
    model.eval()
    x = _x(0, (2, 3, 6, 6))
    chosen = _mask_channels(model, x, 0.5)
    assert [len(g.members) for g, _ in chosen] == [5, 2]   # conv, BN, depthwise, BN, 1x1 conv in | 1x1 conv, head
    small = prune.channel_prune(model, x, 0.5)
    assert small[3].groups == small[3].in_channels == small[3].out_channels == 3 and small[6].out_channels == 4
    with mnn.no_grad():
        np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-6)

    grouped = mnn.Sequential(mnn.Conv2d(4, 8, 1), mnn.ReLU(), mnn.Conv2d(8, 8, 3, groups=2), mnn.Flatten(),
                             mnn.Linear(8 * 16, 2))
    xg = _x(0, (2, 4, 6, 6))
    with pytest.raises(ValueError, match="grouped convolution"):
        prune.channel_prune(grouped, xg, 0.5, layers=["0"])
    assert prune.plan_channel_prune(grouped, xg, 0.5) == {}  # nothing it can cut safely


class Residual(mnn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = mnn.Linear(4, 4), mnn.Linear(4, 4)

    def forward(self, x):
        y = self.a(x)
        return y + self.b(y)


class Reshaper(mnn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = mnn.Linear(4, 6), mnn.Linear(3, 2)

    def forward(self, x):
        return self.b(self.a(x).reshape(-1, 3))


@pytest.mark.parametrize("model", [Residual(), Reshaper(), mnn.Sequential(Residual(), mnn.Linear(4, 2))])
def test_refuses_what_it_cannot_follow_and_leaves_the_model_alone(model):
    before = _state_bytes(model)
    with pytest.raises(ValueError, match="channel_prune"):
        prune.channel_prune(model, np.ones((2, 4), np.float32), 0.5)
    assert _state_bytes(model) == before and model.training


def test_mlp_and_training_mode_restored():
    rng = np.random.default_rng(0)
    model = mnn.Sequential(mnn.Flatten(), mnn.Linear(16, 12, rng=rng), mnn.ReLU(), mnn.Dropout(0.5),
                           mnn.Linear(12, 6, rng=rng), mnn.Tanh(), mnn.Linear(6, 3, rng=rng))
    x = _x(0, (5, 4, 4))
    small = prune.channel_prune(model, x, 0.5)
    assert model.training and small.training
    assert [m.weight.shape for m in small if isinstance(m, mnn.Linear)] == [(6, 16), (3, 6), (3, 3)]
    out = small(x)
    small.backward(np.ones_like(out))  # the smaller model trains
    assert small[1].weight.grad.shape == (6, 16)


def test_bn_scale_penalty_callback():
    model = cnn()
    cb = prune.BNScalePenalty(1e-2)
    prune.l1_unstructured(model[1], "weight", 2)
    model[6].weight.grad = np.ones(20, np.float32)
    cb.on_after_backward(0, model, None)
    np.testing.assert_array_equal(model[6].weight.grad, 1 + 1e-2 * np.sign(model[6].weight.data))
    np.testing.assert_array_equal(model[1].weight_orig.grad, 1e-2 * np.sign(model[1].weight) * model[1].weight_mask)
    scales = (model[1].weight, model[3][1].weight.data, model[6].weight.data)
    assert prune.bn_scale_l1(model) == pytest.approx(sum(np.abs(g).sum() for g in scales))
    with pytest.raises(ValueError):
        prune.BNScalePenalty(-1)
