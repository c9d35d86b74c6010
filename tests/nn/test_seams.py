"""The engine's seams: reused modules (a cache per call), forward hooks, weight parametrizations.

Reuse is what torchvision's BasicBlock does with its ``relu``; the gradients of a reused ReLU, a
reused Conv2d (shared weights: the gradients of both calls add up) and a reused BatchNorm in train
mode are checked against torch autograd, and the reused Conv against float64 finite differences.
"""
import numpy as np
import pytest

from minicompress import nn
from minicompress.nn import Module


class ReusedBlock(Module):
    """y = relu(bn(conv(relu(bn(conv(x)))))) with ONE conv, ONE bn and ONE relu, each called twice."""

    def __init__(self, c: int, rng: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, rng=rng)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        return self.relu(self.bn(self.conv(h)))

    def backward(self, dy):                    # the forward in reverse: the last call's caches first
        dh = self.conv.backward(self.bn.backward(self.relu.backward(dy)))
        return self.conv.backward(self.bn.backward(self.relu.backward(dh)))


def _torch_block(torch, ours):
    conv = torch.nn.Conv2d(ours.conv.in_channels, ours.conv.out_channels, 3, padding=1)
    bn = torch.nn.BatchNorm2d(ours.bn.num_features)
    conv.weight.data = torch.from_numpy(ours.conv.weight.data.copy())
    conv.bias.data = torch.from_numpy(ours.conv.bias.data.copy())
    bn.weight.data = torch.from_numpy(np.linspace(0.5, 1.5, ours.bn.num_features, dtype=np.float32))
    ours.bn.weight.data[...] = bn.weight.data.numpy()
    return lambda x: torch.relu(bn(conv(torch.relu(bn(conv(x)))))), conv, bn


def test_reused_conv_bn_relu_match_torch_autograd(torch):
    rng = np.random.default_rng(0)
    block = ReusedBlock(3, rng=1)
    tblock, tconv, tbn = _torch_block(torch, block)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    y = block(x)
    dx = block.backward(dy)
    tx = torch.from_numpy(x).requires_grad_()
    ty = tblock(tx)
    (ty * torch.from_numpy(dy)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(block.conv.weight.grad, tconv.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(block.conv.bias.grad, tconv.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(block.bn.weight.grad, tbn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(block.bn.running_mean, tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    assert int(block.bn.num_batches_tracked) == int(tbn.num_batches_tracked) == 2


def test_reused_conv_gradients_add_up_finite_differences():
    rng = np.random.default_rng(1)
    conv = nn.Conv2d(2, 2, 3, padding=1, rng=2).to(np.float64)
    relu = nn.Tanh()
    model = nn.Sequential(conv, relu, conv)           # the same conv twice: shared weights
    x = rng.standard_normal((2, 2, 4, 4))
    dy = rng.standard_normal((2, 2, 4, 4))
    model(x)
    model.backward(dy)
    analytic = conv.weight.grad.copy()
    numeric = np.zeros_like(analytic)
    w = conv.weight.data
    for i in np.ndindex(w.shape):
        old = w[i]
        w[i] = old + 1e-6
        plus = (model(x) * dy).sum()
        w[i] = old - 1e-6
        minus = (model(x) * dy).sum()
        w[i] = old
        numeric[i] = (plus - minus) / 2e-6
    model.clear_caches()
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_backward_pops_one_cache_per_call_and_then_refuses():
    relu = nn.ReLU()
    a, b = np.array([-1.0, 2.0], np.float32), np.array([3.0, -4.0], np.float32)
    relu(a), relu(b)
    np.testing.assert_array_equal(relu.backward(np.ones(2, np.float32)), [1, 0])   # b's call first
    np.testing.assert_array_equal(relu.backward(np.ones(2, np.float32)), [0, 1])   # then a's
    with pytest.raises(RuntimeError, match=r"ReLU\(\): backward\(\) called without a forward\(\)"):
        relu.backward(np.ones(2, np.float32))


def test_no_grad_keeps_no_cache_and_copies_carry_none():
    import copy
    lin = nn.Linear(3, 2, rng=0)
    with nn.no_grad():
        lin(np.ones((1, 3), np.float32))
    with pytest.raises(RuntimeError, match="backward"):
        lin.backward(np.ones((1, 2), np.float32))
    lin(np.ones((1, 3), np.float32))
    with pytest.raises(RuntimeError, match="backward"):
        copy.deepcopy(lin).backward(np.ones((1, 2), np.float32))


def test_forward_hook_replaces_output_and_its_backward_runs_first():
    lin = nn.Linear(3, 2, rng=0)
    calls = []
    handle = lin.register_forward_hook(lambda m, inputs, out: 3 * out,
                                       backward=lambda m, grad: (calls.append("hook"), 3 * grad)[1])
    x = np.ones((2, 3), np.float32)
    y = lin(x)
    with nn.no_grad():
        handle_free = nn.Linear(3, 2, rng=0)(x)
    np.testing.assert_allclose(y, 3 * handle_free, rtol=1e-6)
    lin.backward(np.ones((2, 2), np.float32))
    np.testing.assert_allclose(lin.weight.grad, 3 * 2 * np.ones((2, 3)), rtol=1e-6)
    assert calls == ["hook"] and lin.forward_hooks()
    handle.remove()
    assert not lin.forward_hooks()
    np.testing.assert_allclose(lin(x), handle_free, rtol=1e-6)


class Scale:
    """A parametrization for the tests: value = k * w, d value / d w = k."""

    def __init__(self, k):
        self.k = k

    def value(self, module, w):
        return self.k * w

    def backward(self, module, grad):
        return self.k * grad


def test_parametrizations_stack_and_route_gradients_to_the_original():
    lin = nn.Linear(3, 2, bias=False, rng=0)
    w = lin.weight.data.copy()
    lin.register_parametrization("weight", Scale(2.0))
    lin.register_parametrization("weight", Scale(3.0))
    assert isinstance(lin.weight, nn.Parameter) and list(lin.state_dict()) == ["weight"]
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(lin(x), x @ (6 * w).T, rtol=1e-6)
    lin.backward(np.ones((1, 2), np.float32))
    np.testing.assert_allclose(lin.weight.grad, 6 * np.ones((2, 3)), rtol=1e-6)
    first = lin.parametrizations()["weight"].chain[0]
    lin.remove_parametrization("weight", first, bake=True)
    np.testing.assert_allclose(lin.weight.data, 2 * w, rtol=1e-6)
    with pytest.raises(ValueError, match="does not parametrize"):
        lin.remove_parametrization("weight", first)


def test_a_moved_original_keeps_its_key_and_the_name_reads_the_value():
    lin = nn.Linear(2, 2, bias=False, rng=0)
    lin.register_parametrization("weight", Scale(0.5), original="weight_orig")
    assert list(lin.state_dict()) == ["weight_orig"]
    np.testing.assert_allclose(lin.weight, 0.5 * lin.weight_orig.data)
    with pytest.raises(AttributeError, match="assign to 'weight_orig'"):
        lin.weight = np.zeros((2, 2), np.float32)


def test_module_subclass_is_its_base_kind():
    from minicompress.nn.kinds import layer_kind

    class MyLinear(nn.Linear):
        pass
    assert layer_kind(MyLinear(2, 2)) == "linear" and layer_kind(nn.Softmax(1)) == "other"
