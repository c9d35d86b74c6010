"""The layers ONNX import adds: Reshape, Slice, Split, Take, Expand, ConstantOperand, Sub, MatMul, Erf.

Each against PyTorch (forward, d every input through autograd of L = sum(y * dout)) and float64 finite
differences, on hypothesis-drawn shapes and arguments.
"""
import numpy as np
from gradcheck import numerical_grad, rel_error
from hypothesis import given, strategies as st
from oracle import assert_close

from minicompress import nn, no_grad

seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def _outputs(y):
    return list(y) if isinstance(y, tuple) else [y]


def run_torch_parity(torch, module, fn, xs, seed):
    """Our forward / backward against ``fn`` (torch ops) on the same float32 inputs."""
    rng = np.random.default_rng(seed)
    out = module(*xs)
    ys = _outputs(out)
    douts = [rng.standard_normal(y.shape).astype(np.float32) for y in ys]
    grads = module.backward(tuple(douts) if isinstance(out, tuple) else douts[0])
    grads = list(grads) if isinstance(grads, tuple) else [grads]
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    yts = fn(*ts)
    yts = list(yts) if isinstance(yts, (tuple, list)) else [yts]
    sum((yt * torch.from_numpy(d)).sum() for yt, d in zip(yts, douts)).backward()
    for k, (y, yt) in enumerate(zip(ys, yts)):
        assert_close(y, yt.detach().numpy(), f"output {k}")
    for k, (g, t) in enumerate(zip(grads, ts)):
        assert_close(g, t.grad.numpy(), f"d input {k}")


def run_finite_differences(module, xs, seed):
    """d L / d every input from backward vs centred differences, in float64."""
    module.to(np.float64)
    xs = [np.array(x, np.float64) for x in xs]
    out = module(*xs)
    ys = _outputs(out)
    rng = np.random.default_rng(seed)
    douts = [rng.standard_normal(y.shape) for y in ys]
    grads = module.backward(tuple(douts) if isinstance(out, tuple) else douts[0])
    grads = list(grads) if isinstance(grads, tuple) else [grads]

    def loss(_):
        with no_grad():
            return float(sum(np.sum(y * d) for y, d in zip(_outputs(module(*xs)), douts)))

    for k, (x, g) in enumerate(zip(xs, grads)):
        assert rel_error(g, numerical_grad(loss, x)) < 1e-6, f"{module!r}: d input {k}"


def both(torch, module_factory, fn, xs, seed):
    run_torch_parity(torch, module_factory(), fn, [np.asarray(x, np.float32) for x in xs], seed)
    run_finite_differences(module_factory(), xs, seed)


@st.composite
def reshape_cases(draw):
    shape = draw(shapes)
    size = int(np.prod(shape))
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    first = draw(st.sampled_from(divisors))
    target = [first, -1] if draw(st.booleans()) else [0] + [-1]      # 0 copies axis 0
    return shape, target


@given(reshape_cases(), seeds)
def test_reshape(torch, case, seed):
    shape, target = case
    x = np.random.default_rng(seed).standard_normal(shape)
    torch_target = [shape[0] if t == 0 else t for t in target]
    both(torch, lambda: nn.Reshape(target), lambda t: t.reshape(torch_target), [x], seed)


@st.composite
def slice_cases(draw):
    shape = draw(shapes)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    start, end = draw(st.integers(-n - 1, n + 1)), draw(st.sampled_from([-n - 2, -1, 0, 1, n, 2**31]))
    step = draw(st.sampled_from([1, 2, -1, -2]))
    return shape, start, end, axis, step


@given(slice_cases(), seeds)
def test_slice(torch, case, seed):
    shape, start, end, axis, step = case
    x = np.random.default_rng(seed).standard_normal(shape)
    index = [slice(None)] * len(shape)
    index[axis] = slice(start, end, step)
    expected = x[tuple(index)]

    def fn(t):     # torch slicing has no negative steps: slice the numpy way through an index array
        idx = torch.from_numpy(np.arange(shape[axis])[slice(start, end, step)].copy())
        return t.index_select(axis, idx)

    if expected.size == 0:
        return
    both(torch, lambda: nn.Slice([start], [end], [axis], [step]), fn, [x], seed)


@given(shapes, st.data(), seeds)
def test_split(torch, shape, data, seed):
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    cuts = sorted(data.draw(st.lists(st.integers(1, n), max_size=2, unique=True)) + [0, n]) if n > 1 else [0, n]
    sizes = [b - a for a, b in zip(cuts, cuts[1:]) if b > a]
    x = np.random.default_rng(seed).standard_normal(shape)
    both(torch, lambda: nn.Split(sizes, axis), lambda t: t.split(sizes, axis), [x], seed)


@given(shapes, st.data(), seeds)
def test_take(torch, shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    scalar = data.draw(st.booleans())
    indices = data.draw(st.integers(-n, n - 1)) if scalar else data.draw(st.lists(st.integers(-n, n - 1), min_size=1,
                                                                                  max_size=4))
    x = np.random.default_rng(seed).standard_normal(shape)

    def fn(t):
        idx = torch.tensor(np.asarray(indices) % n)
        return t.select(axis, int(idx)) if scalar else t.index_select(axis, idx)

    both(torch, lambda: nn.Take(indices, axis), fn, [x], seed)


@given(shapes, st.data(), seeds)
def test_expand(torch, shape, data, seed):
    ones = tuple(1 if data.draw(st.booleans()) else s for s in shape)
    lead = data.draw(st.lists(st.integers(1, 3), max_size=2))
    target = tuple(lead) + shape
    x = np.random.default_rng(seed).standard_normal(ones)
    both(torch, lambda: nn.Expand(target), lambda t: t.expand(*target), [x], seed)


def test_expand_batch_from_input_gives_no_gradient_to_the_reference():
    m = nn.Expand((1, 1, 4), batch_from_input=True)
    y = m(np.ones((1, 1, 4), np.float32), np.zeros((5, 3), np.float32))
    assert y.shape == (5, 1, 4)
    dx, dref = m.backward(np.ones((5, 1, 4), np.float32))
    assert dref is None and np.array_equal(dx, np.full((1, 1, 4), 5, np.float32))


@given(shapes, st.sampled_from(["add", "sub", "mul", "div"]), st.booleans(), st.booleans(), seeds)
def test_constant_operand(torch, shape, op, constant_first, per_axis, seed):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.5, 2.0, shape[-1:] if per_axis else ()) * rng.choice([-1, 1])
    x = rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)    # away from 0 for c / x
    fns = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b}
    ct = c.astype(np.float32)

    def fn(t):
        cc = torch.from_numpy(np.array(ct))
        return fns[op](cc, t) if constant_first else fns[op](t, cc)

    both(torch, lambda: nn.ConstantOperand(op, c.astype(np.float32), constant_first), fn, [x], seed)


@given(shapes, st.data(), seeds)
def test_sub(torch, shape, data, seed):
    other = tuple(1 if data.draw(st.booleans()) else s for s in shape)
    rng = np.random.default_rng(seed)
    both(torch, nn.Sub, lambda a, b: a - b, [rng.standard_normal(shape), rng.standard_normal(other)], seed)


@given(st.lists(st.integers(1, 3), max_size=2).map(tuple), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4),
       st.booleans(), seeds)
def test_matmul(torch, batch, m, k, n, broadcast_b, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(batch + (m, k))
    b = rng.standard_normal(((1,) * len(batch) if broadcast_b else batch) + (k, n))
    both(torch, nn.MatMul, torch.matmul, [a, b], seed)


@given(shapes, seeds)
def test_erf(torch, shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape) * 2
    both(torch, nn.Erf, torch.erf, [x], seed)


def test_reshape_refuses_an_impossible_target_by_name():
    import pytest
    with pytest.raises(ValueError, match=r"Reshape\(shape=\(4, -1\)\).*\(3, 2\)"):
        nn.Reshape((4, -1))(np.zeros((3, 2), np.float32))
