"""Pruning inside minicompress.train.fit on the bundled digits: callbacks keep masked weights at zero."""
import numpy as np
import pytest

from minicompress import data, models, optim, prune, train
from minicompress.nn.losses import CrossEntropyLoss


class ZeroWatcher:
    """Checks after every optimizer step that every masked effective weight is exactly zero."""

    def __init__(self):
        self.checks = 0

    def on_batch_end(self, step, model, optimizer, loss):
        for module in model.modules():
            for name in ("weight", "bias"):
                if prune.pruning_hook(module, name) is not None:
                    w = prune.effective_weight(module, name)
                    assert np.all(w[module._buffers[name + "_mask"] == 0] == 0)
                    self.checks += 1


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, y_test = data.load_digits()
    return x_train[:512], y_train[:512], x_test, y_test


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_gradual_pruning_during_fit(digits, opt):
    x, y, x_test, y_test = digits
    model = models.digits_mlp(hidden=(32,), rng=np.random.default_rng(0))
    o = (optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) if opt == "sgd"
         else optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3))
    gradual = prune.GradualPruning(final_sparsity=0.8, begin_step=2, frequency=4, n_steps=5, scope="global")
    watcher = ZeroWatcher()
    loader = data.DataLoader(x, y, batch_size=64, shuffle=True, rng=np.random.default_rng(0))
    train.fit(model, CrossEntropyLoss(), o, loader, epochs=4, callbacks=[gradual, watcher], quiet=True)
    assert [s for s, _ in gradual.history_] == [2, 6, 10, 14, 18, 22] and watcher.checks > 0
    total = prune.sparsity_report(model, weights_only=True)["total"]
    assert total["zeros"] == round(0.8 * total["numel"])
    assert train.evaluate(model, x_test, y_test)["accuracy"] > 0.6


def test_network_slimming_then_channel_prune(digits):
    x, y, x_test, y_test = digits
    model = models.digits_cnn(channels=(8, 16), hidden=32, rng=np.random.default_rng(0))
    o = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = data.DataLoader(x, y, batch_size=64, shuffle=True, rng=np.random.default_rng(0))
    before = prune.bn_scale_l1(model)
    train.fit(model, CrossEntropyLoss(), o, loader, epochs=1, callbacks=[prune.BNScalePenalty(1e-2)], quiet=True)
    assert prune.bn_scale_l1(model) < before  # the penalty shrinks the scales
    small = prune.channel_prune(model, x[:8], 0.5, importance="bn_scale", global_pruning=True)
    assert sum(p.size for p in small.parameters()) < sum(p.size for p in model.parameters())
    assert small(x_test).shape == (len(x_test), 10)
