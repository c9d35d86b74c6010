"""The data boundary: ``backward_params`` accumulates exactly the parameter gradients of ``backward``
and skips the first layer's d input (which ``train.fit`` relies on)."""
import numpy as np
import pytest

from minicompress import models, nn, train
from minicompress.data import DataLoader
from minicompress.nn.functional import conv as conv_functional
from minicompress.nn.layers import linear as linear_layer
from minicompress.optim import SGD


def _grads(model, x, dy, method):
    model.zero_grad()
    model(x)
    result = getattr(model, method)(dy)
    return result, {name: p.grad.copy() for name, p in model.named_parameters()}


def _models():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    return [
        ("mlp", nn.Sequential(nn.Linear(6, 5, rng=0), nn.ReLU(), nn.Linear(5, 3, rng=1)),
         rng.standard_normal((4, 6)).astype(np.float32)),
        ("digits_cnn", models.digits_cnn(rng=0), img),
        ("digits_mlp", models.digits_mlp(rng=0), img),
        ("resnet20", models.resnet20(num_classes=10, in_channels=1, rng=0), img),
        ("mobilenet_v2", models.mobilenet_v2(num_classes=10, width_mult=0.25, dropout=0.0, in_channels=1,
                                             small_input=True, rng=0), img),
        ("vit", models.VisionTransformer(8, 4, 1, 2, 8, 16, num_classes=10, in_channels=1, rng=0), img),
    ]


@pytest.mark.parametrize("name, model, x", _models(), ids=[m[0] for m in _models()])
def test_backward_params_gives_the_gradients_of_backward(name, model, x):
    out = model(x)
    model.clear_caches()
    dy = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    dx, full = _grads(model, x, dy, "backward")
    assert dx.shape == x.shape
    result, params_only = _grads(model, x, dy, "backward_params")
    assert result is None
    assert full.keys() == params_only.keys()
    for key in full:
        np.testing.assert_array_equal(params_only[key], full[key], err_msg=key)
    assert not any(m._caches for m in model.modules())          # every forward cache was consumed
    assert all(m.needs_input_grad for m in model.modules() if hasattr(m, "needs_input_grad"))


def _record(monkeypatch, owner, name, asked):
    """Replace ``owner.name`` (a functional backward) by one that records its ``needs_input_grad``."""
    real = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda dy, cache, need=True: asked.append(need) or real(dy, cache, need))


def test_the_first_linear_or_conv_skips_its_input_gradient(monkeypatch):
    asked = []
    _record(monkeypatch, linear_layer, "linear_backward", asked)
    _record(monkeypatch, conv_functional, "conv2d_backward", asked)
    mlp = nn.Sequential(nn.Linear(6, 5, rng=0), nn.ReLU(), nn.Linear(5, 3, rng=1))
    mlp(np.ones((2, 6), np.float32))
    mlp.backward_params(np.ones((2, 3), np.float32))
    assert asked == [True, False]                 # the last layer's d input is needed, the first's is not
    asked.clear()
    resnet = models.resnet20(num_classes=10, in_channels=1, rng=0)
    resnet(np.ones((2, 1, 8, 8), np.float32))
    resnet.backward_params(np.ones((2, 10), np.float32))
    assert asked[-1] is False and all(asked[:-1])         # only conv1 (the last backward) skips d input
    mlp(np.ones((2, 6), np.float32))
    assert mlp.backward(np.ones((2, 3), np.float32)).shape == (2, 6)    # direct calls still return d input


def test_backward_params_goes_through_forward_hooks_and_the_default_runs_backward():
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    model.register_forward_hook(lambda m, inputs, out: 2 * out, backward=lambda m, grad: 2 * grad)
    x, dy = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    _, hooked = _grads(model, x, dy, "backward_params")
    _, plain = _grads(model, x, dy, "backward")
    np.testing.assert_array_equal(hooked["0.weight"], plain["0.weight"])
    np.testing.assert_array_equal(plain["0.weight"], 2 * dy.T @ x)

    class Scale(nn.Module):                       # a module without its own backward_params
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2, rng=0)

        def forward(self, x):
            return self.fc(x)

        def backward(self, grad_output):
            return self.fc.backward(grad_output)

    scale = Scale()
    _, grads = _grads(scale, x, dy, "backward_params")
    np.testing.assert_array_equal(grads["fc.weight"], dy.T @ x)


def test_fit_skips_the_input_gradient(monkeypatch):
    asked = []
    _record(monkeypatch, linear_layer, "linear_backward", asked)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8)
    model = nn.Sequential(nn.Linear(4, 3, rng=0))
    loader = DataLoader(x, y, batch_size=4)
    train.fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), loader, quiet=True)
    assert asked == [False, False]
    assert model[0].needs_input_grad
