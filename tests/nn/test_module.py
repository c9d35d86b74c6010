"""Module, Parameter and Sequential: registration, traversal, modes, hooks, state dicts vs PyTorch.

Most tests use ``Affine``, a two-line layer defined here, so that they exercise the engine core alone;
the state-dict round trips with PyTorch use the real Conv2d / BatchNorm2d / Linear layers.
"""
from collections import OrderedDict

import numpy as np
import pytest

from minicompress.nn import (BatchNorm2d, Conv2d, Flatten, IncompatibleKeys, Linear, Module, Parameter, ReLU,
                             Sequential, no_grad)


class Affine(Module):
    """y = x * weight + bias (elementwise), with a persistent and a non-persistent buffer."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = Parameter(np.arange(1, n + 1, dtype=np.float32))
        self.bias = Parameter(np.zeros(n, np.float32))
        self.register_buffer("calls", np.zeros((), np.int64))
        self.register_buffer("scratch", np.zeros(n, np.float32), persistent=False)
        self.n = n

    def forward(self, x):
        self._save_for_backward(x)
        return x * self.array("weight") + self.array("bias")

    def backward(self, grad_output):
        x = self._saved()
        self.accumulate_grad("weight", (grad_output * x).sum(axis=0))
        self.accumulate_grad("bias", grad_output.sum(axis=0))
        return grad_output * self.array("weight")

    def extra_repr(self):
        return f"n={self.n}"


def nested():
    return Sequential(OrderedDict(features=Sequential(Affine(2), Affine(2)), head=Affine(2)))


# ---------------------------------------------------------------------------- registration, traversal
def test_attributes_are_registered_by_kind():
    m = Affine(3)
    assert list(m._parameters) == ["weight", "bias"]
    assert list(m._buffers) == ["calls", "scratch"]
    assert "weight" not in m.__dict__ and m.n == 3
    with pytest.raises(TypeError, match=r"Affine\(n=3\): cannot assign ndarray to parameter 'weight'"):
        m.weight = np.zeros(3)
    m.bias = None                                         # allowed, as in PyTorch
    assert [name for name, _ in m.named_parameters()] == ["weight"]
    with pytest.raises(AttributeError, match="call Module.__init__"):
        class Broken(Module):
            def __init__(self):
                self.weight = Parameter(np.zeros(1))
        Broken()


def test_named_modules_parameters_buffers_and_dedup():
    m = nested()
    assert [name for name, _ in m.named_modules()] == ["", "features", "features.0", "features.1", "head"]
    assert [name for name, _ in m.named_parameters()] == [
        "features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias", "head.weight", "head.bias"]
    assert [name for name, _ in m.named_buffers()] == [
        "features.0.calls", "features.0.scratch", "features.1.calls", "features.1.scratch",
        "head.calls", "head.scratch"]
    assert [name for name, _ in m.features.named_parameters(prefix="features")][0] == "features.0.weight"
    m.head.weight = m.features[0].weight                  # shared (tied) parameter: listed once
    assert len(list(m.parameters())) == 5
    assert len(list(m.parameters(recurse=False))) == 0


def test_train_eval_propagate_and_zero_grad():
    m = nested()
    assert m.eval() is m
    assert not any(module.training for module in m.modules())
    m.features.train()
    assert m.features[1].training and not m.head.training and not m.training
    x = np.ones((4, 2), np.float32)
    m.train()
    m(x)
    m.backward(np.ones((4, 2), np.float32))
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(np.array_equal(p.grad, np.zeros_like(p.data)) for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_backward_accumulates_and_sequential_runs_in_reverse():
    m = Sequential(Affine(2), Affine(2))
    x = np.array([[1.0, 2.0]], np.float32)
    y = m(x)
    np.testing.assert_array_equal(y, x * [1, 2] * [1, 2])
    dx = m.backward(np.ones_like(y))
    np.testing.assert_array_equal(dx, [[1, 4]])            # d(x w1 w2)/dx = w1 w2
    np.testing.assert_array_equal(m[0].weight.grad, [1, 4])  # x * w2
    m(x)
    m.backward(np.ones_like(y))
    np.testing.assert_array_equal(m[0].weight.grad, [2, 8])  # accumulated, not overwritten


def test_sequential_container_protocol():
    a, b, c = Affine(1), Affine(1), Affine(1)
    m = Sequential(a, b)
    assert len(m) == 2 and list(m) == [a, b] and m[-1] is b
    part = m[1:]
    assert isinstance(part, Sequential) and list(part._modules) == ["1"] and part[0] is b
    m.append(c)
    m[0] = Affine(1)
    assert list(m._modules) == ["0", "1", "2"] and m[2] is c and m[0] is not a
    assert repr(m).startswith("Sequential(\n  (0): Affine(n=1)")


# ---------------------------------------------------------------------------- dtype, grad mode
def test_to_float64_casts_floating_parameters_grads_and_buffers_only():
    m = nested()
    m.head.weight.grad = np.ones(2, np.float32)
    assert m.to(np.float64) is m
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert m.head.weight.grad.dtype == np.float64
    assert m.head.scratch.dtype == np.float64
    assert m.head.calls.dtype == np.int64                  # integer buffers keep their dtype
    y = m(np.ones((1, 2)))
    assert y.dtype == np.float64
    with pytest.raises(TypeError, match="expected a floating dtype, got int32"):
        m.to(np.int32)


def test_no_grad_keeps_no_cache_and_backward_raises():
    m = Sequential(Affine(2))
    x = np.ones((1, 2), np.float32)
    with no_grad():
        y = m(x)
    np.testing.assert_array_equal(y, [[1, 2]])
    assert m[0].__dict__.get("_cache") is None
    with pytest.raises(RuntimeError, match=r"Affine\(n=2\): backward\(\) called without a forward\(\)"):
        m.backward(np.ones_like(y))
    m(x)                                                   # outside no_grad the cache is back
    m.backward(np.ones_like(y))


# ---------------------------------------------------------------------------- hooks
def test_forward_pre_hook_replaces_inputs_and_can_be_removed():
    m = Affine(2)
    calls = []
    handle = m.register_forward_pre_hook(lambda mod, inputs: calls.append(mod) or (inputs[0] * 10,))
    np.testing.assert_array_equal(m(np.ones((1, 2), np.float32)), [[10, 20]])
    assert calls == [m]
    handle.remove()
    np.testing.assert_array_equal(m(np.ones((1, 2), np.float32)), [[1, 2]])


def test_reparametrisation_with_pre_hook_and_grad_hook():
    """The pruning pattern: weight = weight_orig * mask recomputed before forward; grads go to weight_orig."""
    m = Affine(3)
    orig = m.weight
    del m.weight
    m.weight_orig = orig
    m.register_buffer("weight_mask", np.array([1, 0, 1], np.float32))
    m.register_forward_pre_hook(lambda mod, inputs: setattr(mod, "weight", mod.weight_orig.data * mod.weight_mask))

    def to_orig(grad):
        orig.grad = grad * m.weight_mask if orig.grad is None else orig.grad + grad * m.weight_mask
    m.register_grad_hook("weight", to_orig)
    with pytest.raises(ValueError, match="a gradient hook for 'weight' is already registered"):
        m.register_grad_hook("weight", to_orig)
    y = m(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(y, [[1, 0, 3]] * 2)
    m.backward(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(orig.grad, [2, 0, 2])
    assert [name for name, _ in m.named_parameters()] == ["bias", "weight_orig"]
    assert list(m.state_dict()) == ["bias", "weight_orig", "calls", "weight_mask"]
    with pytest.raises(RuntimeError, match="no parameter or gradient hook named 'nothing'"):
        m.accumulate_grad("nothing", np.ones(3))


# ---------------------------------------------------------------------------- state dicts
def test_state_dict_is_a_copy_and_skips_non_persistent_buffers():
    m = nested()
    sd = m.state_dict()
    assert list(sd) == ["features.0.weight", "features.0.bias", "features.0.calls", "features.1.weight",
                        "features.1.bias", "features.1.calls", "head.weight", "head.bias", "head.calls"]
    sd["head.weight"][:] = 99
    assert not np.any(m.head.weight.data == 99)


def test_load_state_dict_errors_name_keys_and_shapes_and_change_nothing():
    m = nested()
    good = m.state_dict()
    bad = dict(good)
    del bad["head.bias"]
    bad["head.extra"] = np.zeros(1)
    bad["features.1.weight"] = np.zeros((3, 2), np.float32)
    bad["features.0.weight"] = np.full(2, 7, np.float32)
    with pytest.raises(ValueError) as info:
        m.load_state_dict(bad)
    message = str(info.value)
    assert "size mismatch for 'features.1.weight'" in message and "(3, 2)" in message and "(2,)" in message
    assert "missing keys: ['head.bias']" in message and "unexpected keys: ['head.extra']" in message
    np.testing.assert_array_equal(m.features[0].weight.data, good["features.0.weight"])   # untouched
    bad["features.1.weight"] = good["features.1.weight"]
    result = m.load_state_dict(bad, strict=False)
    assert result == IncompatibleKeys(missing_keys=["head.bias"], unexpected_keys=["head.extra"])
    np.testing.assert_array_equal(m.features[0].weight.data, [7, 7])
    with pytest.raises(ValueError, match="size mismatch"):        # shapes are checked even when not strict
        m.load_state_dict({"head.weight": np.zeros(5)}, strict=False)


def test_load_state_dict_casts_to_the_model_dtype():
    m = Affine(2)
    m.load_state_dict({"weight": np.array([0.5, 0.25]), "bias": np.zeros(2), "calls": np.array(3)})
    assert m.weight.dtype == np.float32 and m.calls.dtype == np.int64 and int(m.calls) == 3


def small_cnn():
    return Sequential(Conv2d(2, 3, 3, padding=1), BatchNorm2d(3), ReLU(), Flatten(), Linear(3 * 5 * 5, 4))


def small_torch_cnn(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(75, 4))


def test_state_dict_round_trip_with_torch_both_ways(torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    ours, theirs = small_cnn(), small_torch_cnn(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())

    ours(x)                                                # train-mode forward: non-trivial running stats
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()}, strict=True)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)

    other = small_torch_cnn(torch)
    other.train()(torch.from_numpy(x) * 3)               # PyTorch's own running statistics
    other(torch.from_numpy(x))
    other.eval()
    back = small_cnn()
    result = back.load_state_dict({k: v.numpy() for k, v in other.state_dict().items()})
    assert result == IncompatibleKeys([], [])
    assert back[1].num_batches_tracked.dtype == np.int64 and int(back[1].num_batches_tracked) == 2
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value.numpy())
    back.eval()
    np.testing.assert_allclose(back(x), other(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_nested_state_dict_keys_match_torch(torch):
    nn = torch.nn
    ours = Sequential(OrderedDict(features=small_cnn()[:3], classifier=Sequential(Flatten(), Linear(75, 4))))
    theirs = nn.Sequential(OrderedDict(features=small_torch_cnn(torch)[:3],
                                       classifier=nn.Sequential(nn.Flatten(), nn.Linear(75, 4))))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "features.1.running_var" in ours.state_dict()
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].shape == tuple(value.shape), key
