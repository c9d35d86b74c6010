"""The SGD update kernel against its NumPy twin, bit for bit, and the momentum buffer's independence."""
import numpy as np
import pytest

from minicompress import nn
from minicompress.optim import SGD
from minicompress.nn.module import Parameter


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, dampening, nesterov, weight_decay", [
    (0.0, 0.0, False, 0.0), (0.9, 0.0, False, 0.0), (0.9, 0.3, False, 1e-2), (0.8, 0.0, True, 1e-3),
])
def test_kernel_equals_numpy_twin_bit_for_bit(dtype, momentum, dampening, nesterov, weight_decay):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((7, 5)).astype(dtype)
    fast, twin = Parameter(data), Parameter(data)
    opt_fast = SGD([fast], lr=0.03, momentum=momentum, dampening=dampening, nesterov=nesterov,
                   weight_decay=weight_decay)
    opt_twin = SGD([twin], lr=0.03, momentum=momentum, dampening=dampening, nesterov=nesterov,
                   weight_decay=weight_decay)
    for _ in range(4):
        grad = rng.standard_normal(data.shape).astype(dtype)
        fast.grad, twin.grad = grad.copy(), grad.copy()
        opt_fast.step()
        group = opt_twin.param_groups[0]
        state = opt_twin.state[twin]
        g = twin.grad + weight_decay * twin.data if weight_decay else twin.grad
        first = momentum != 0 and "momentum_buffer" not in state
        if first:
            state["momentum_buffer"] = np.empty_like(twin.data)
        SGD._update_numpy(twin, g, state.get("momentum_buffer"), group, first)
        np.testing.assert_array_equal(fast.data, twin.data)
        if momentum:
            np.testing.assert_array_equal(opt_fast.state[fast]["momentum_buffer"], state["momentum_buffer"])


def test_momentum_buffer_and_grads_do_not_share_memory():
    layer = nn.Linear(3, 2, rng=0)
    opt = SGD(layer.parameters(), lr=0.1, momentum=0.9)
    x = np.ones((4, 3), np.float32)
    layer(x)
    layer.backward(np.ones((4, 2), np.float32))
    dW = layer.weight.grad.copy()
    opt.step()
    opt.zero_grad(set_to_none=False)                  # zeroes .grad in place: the buffer must keep dW
    np.testing.assert_array_equal(opt.state[layer.weight]["momentum_buffer"], dW)


def test_a_fresh_gradient_is_kept_without_a_copy_only_when_nothing_else_holds_it():
    layer = nn.Linear(3, 2, rng=0)
    grad = np.ones((2, 3), np.float32)
    layer.accumulate_grad("weight", grad, fresh=True)
    assert layer.weight.grad is grad
    layer.accumulate_grad("weight", grad, fresh=True)   # later accumulations add into it
    np.testing.assert_array_equal(layer.weight.grad, 2 * np.ones((2, 3)))
    other = np.ones((2,), np.float32)
    layer.accumulate_grad("bias", other)                # not fresh: copied
    assert layer.bias.grad is not other
    layer.bias.grad = None
    layer.accumulate_grad("bias", np.ones(2), fresh=True)   # another dtype: copied into float32
    assert layer.bias.grad.dtype == np.float32
