"""nn.GraphModule: forward in order, backward in reverse summing the gradients of fanned-out values."""
import numpy as np
import pytest
from gradcheck import numerical_grad, rel_error
from hypothesis import given, strategies as st
from oracle import assert_close

from minicompress import nn, no_grad


def diamond(features=3, seed=0):
    """x -> fc -> (relu, tanh) -> add(relu, tanh, x*) -> mul(scale) ; outputs (mul, fc): fan-out everywhere."""
    nn.manual_seed(seed)
    modules = {"fc": nn.Linear(features, features), "relu": nn.ReLU(), "tanh": nn.Tanh(), "add": nn.Add(),
               "mul": nn.Mul()}
    nodes = [("fc", ["x"], ["h"]), ("relu", ["h"], ["r"]), ("tanh", ["h"], ["t"]), ("add", ["r", "t", "x"], ["s"]),
             ("mul", ["s", "scale_value"], ["y"])]
    scale = np.random.default_rng(seed).standard_normal(features).astype(np.float32)
    return nn.GraphModule(modules, nodes, ["x"], ["y", "h"], {"scale_value": "scale"}, {"scale": scale})


def graph_loss(model, x, douts):
    with no_grad():
        return float(sum(np.sum(y * d) for y, d in zip(model(x), douts)))


@given(st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_fan_out_gradients_match_finite_differences(n, seed):
    model = diamond(seed=seed).to(np.float64)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    ys = model(x)
    douts = [rng.standard_normal(y.shape) for y in ys]
    model.zero_grad()
    dx = model.backward(tuple(douts))
    assert rel_error(dx, numerical_grad(lambda _: graph_loss(model, x, douts), x)) < 1e-6
    for name, p in model.named_parameters():
        assert rel_error(p.grad, numerical_grad(lambda _: graph_loss(model, x, douts), p.data)) < 1e-6, name


def test_matches_torch_autograd(torch):
    model = diamond()
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    ys = model(x)
    douts = [np.random.default_rng(2).standard_normal(y.shape).astype(np.float32) for y in ys]
    dx = model.backward(tuple(douts))
    sd = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    xt = torch.tensor(x, requires_grad=True)
    h = xt @ sd["fc.weight"].T + sd["fc.bias"]
    y = (torch.relu(h) + torch.tanh(h) + xt) * sd["scale"]
    ((y * torch.from_numpy(douts[0])).sum() + (h * torch.from_numpy(douts[1])).sum()).backward()
    assert_close(ys[0], y.detach().numpy(), "y")
    assert_close(dx, xt.grad.numpy(), "dx")
    for name, p in model.named_parameters():
        assert_close(p.grad, sd[name].grad.numpy(), name)


def test_backward_params_accumulates_what_backward_does():
    a, b = diamond(), diamond()
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    douts = tuple(np.ones(y.shape, np.float32) for y in a(x))
    b(x)
    a.backward(douts)
    assert b.backward_params(douts) is None
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    assert all(not m._caches for m in b.modules())        # every forward cache was consumed


def test_a_node_whose_output_gets_no_gradient_still_consumes_its_cache():
    modules = {"fc": nn.Linear(2, 2), "unused": nn.ReLU()}
    model = nn.GraphModule(modules, [("fc", ["x"], ["h"]), ("unused", ["h"], ["dead"])], ["x"], ["h"])
    model(np.ones((1, 2), np.float32))
    model.backward(np.ones((1, 2), np.float32))
    assert not modules["unused"]._caches


def test_trace_sees_every_node_and_the_graph_parameter():
    graph = nn.trace_graph(diamond(), np.zeros((2, 3), np.float32))
    assert [n.name for n in graph.nodes] == ["fc", "relu", "tanh", "add", "mul"]
    assert graph.params == ["scale"]


def test_wiring_out_of_order_is_refused_by_name():
    with pytest.raises(ValueError, match=r"node 'relu' reads \['h'\]"):
        nn.GraphModule({"relu": nn.ReLU(), "fc": nn.Linear(2, 2)}, [("relu", ["h"], ["r"]), ("fc", ["x"], ["h"])],
                       ["x"], ["r"])
    with pytest.raises(ValueError, match="expected 1 inputs"):
        diamond()(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32))


def test_backward_params_skips_d_input_behind_parameter_free_nodes():
    """x -> reshape -> fc: the fc reads data only, so it runs backward_params (no d input GEMM)."""
    calls = []

    class Recording(nn.Linear):
        def backward(self, grad_output):
            calls.append(self.needs_input_grad)
            return super().backward(grad_output)

    nn.manual_seed(0)
    fc = Recording(4, 2)
    model = nn.GraphModule({"flat": nn.Reshape((0, -1)), "fc": fc}, [("flat", ["x"], ["f"]), ("fc", ["f"], ["y"])],
                           ["x"], ["y"])
    model(np.ones((3, 2, 2), np.float32))
    model.backward_params(np.ones((3, 2), np.float32))
    model(np.ones((3, 2, 2), np.float32))
    assert model.backward(np.ones((3, 2), np.float32)).shape == (3, 2, 2)
    assert calls == [False, True]
