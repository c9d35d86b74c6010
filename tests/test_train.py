import numpy as np
import pytest

import minicompress as mc
from minicompress import models, nn, optim
from minicompress.data import DataLoader, load_digits
from minicompress.nn.losses import CrossEntropyLoss
from minicompress.train import evaluate, fit


def _train(model, epochs, lr, seed, batch_size=64):
    rng = mc.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits()
    opt = optim.Adam(model.parameters(), lr=lr)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    history = fit(model, CrossEntropyLoss(), opt, DataLoader(x_train, y_train, batch_size, shuffle=True, rng=rng),
                  epochs=epochs, scheduler=sched, quiet=True)
    return history, evaluate(model, x_test, y_test)


def test_small_cnn_reaches_98_percent_on_digits():
    history, result = _train(models.digits_cnn(rng=np.random.default_rng(0)), epochs=15, lr=3e-3, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    assert result["accuracy"] >= 0.98, result


def test_mlp_reaches_97_percent_on_digits():
    _, result = _train(models.digits_mlp(rng=np.random.default_rng(0)), epochs=20, lr=3e-3, seed=0, batch_size=32)
    assert result["accuracy"] >= 0.97, result


def test_callbacks_are_called_in_order():
    events = []

    class Recorder:
        def on_fit_begin(self, model, optimizer):
            events.append("begin")

        def on_after_backward(self, step, model, optimizer):
            assert all(p.grad is not None for p in model.parameters())
            events.append(("backward", step))

        def on_batch_end(self, step, model, optimizer, loss):
            events.append(("batch", step))

        def on_epoch_end(self, epoch, model, optimizer, logs):
            events.append(("epoch", epoch, sorted(logs)))

    model = models.digits_mlp(hidden=(8,), rng=np.random.default_rng(0))
    x, y = np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32), np.arange(10) % 3
    fit(model, CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), DataLoader(x, y, 5),
        epochs=2, callbacks=[Recorder()], quiet=True)
    assert events[0] == "begin"
    assert events[1:4] == [("backward", 0), ("batch", 0), ("backward", 1)]
    assert events[-1] == ("epoch", 1, ["accuracy", "loss", "lr", "seconds"])


def test_nan_loss_is_a_clear_error():
    model = models.digits_mlp(hidden=(8,), rng=np.random.default_rng(0))
    x = np.full((4, 1, 8, 8), np.nan, dtype=np.float32)
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 0, step 0"):
        fit(model, CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
            DataLoader(x, np.zeros(4, dtype=np.int64), 4), quiet=True)


def test_evaluate_checks_lengths():
    model = models.digits_mlp(hidden=(8,))
    with pytest.raises(ValueError, match="different lengths"):
        evaluate(model, np.zeros((3, 1, 8, 8), np.float32), np.zeros(2, np.int64))
