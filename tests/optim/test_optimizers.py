"""SGD, Adam, AdamW: parameter trajectories identical to PyTorch's, step by step.

Both libraries start from the same random parameters and receive the same random gradients for
25 steps (some gradients None, which both skip); every intermediate parameter must agree.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress.nn import Parameter
from minicompress.optim import SGD, Adam, AdamW

STEPS = 25
SHAPES = [(3, 4), (5,), ()]
# PyTorch's vectorised CPU kernels fuse multiply-adds (p + alpha * g in one rounding) where NumPy
# rounds twice, so float32 trajectories agree to a few units in the last place, not bit for bit.
# Errors are relative to the largest magnitude a parameter has had (an update can cancel it).
RTOL = {np.float32: 1e-6, np.float64: 1e-12}

seeds = st.integers(0, 2**32 - 1)
dtypes = pytest.mark.parametrize("dtype", [np.float32, np.float64])


def run_both(torch, make_ours, make_theirs, seed, dtype, groups=None, steps=STEPS):
    """Step both optimizers on identical gradients; compare every parameter after every step."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    ours = [Parameter(a) for a in init]
    theirs = [torch.tensor(a, requires_grad=True) for a in init]
    arrays = [p.data for p in ours]
    split = (lambda ps: [{"params": ps[:2], **groups[0]}, {"params": ps[2:], **groups[1]}]) if groups else list
    opt, topt = make_ours(split(ours)), make_theirs(split(theirs))
    scale = [np.abs(a).max() for a in init]          # largest magnitude each parameter has had
    for _ in range(steps):
        for p, tp in zip(ours, theirs):
            if rng.random() < 0.15:                          # no gradient: the step must skip p
                p.grad, tp.grad = None, None
            else:
                g = (rng.standard_normal(p.shape) * rng.choice([1e-3, 1.0, 10.0])).astype(dtype)
                p.grad, tp.grad = g.copy(), torch.tensor(g)
        opt.step()
        topt.step()
        for i, (p, tp) in enumerate(zip(ours, theirs)):
            expected = tp.detach().numpy()
            scale[i] = max(scale[i], np.abs(expected).max())
            np.testing.assert_allclose(p.data, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale[i])
    assert all(p.data is a and p.data.dtype == dtype for p, a in zip(ours, arrays))   # in place
    return opt, topt


SGD_OPTIONS = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3},
    {"momentum": 0.9, "nesterov": True},
    {"weight_decay": 0.1},
    {"momentum": 0.5, "weight_decay": 0.01, "maximize": True},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05, "maximize": True},
]


@dtypes
@pytest.mark.parametrize("options", SGD_OPTIONS)
@given(seed=seeds, lr=st.sampled_from([1e-3, 0.05, 0.3]))
def test_sgd_trajectory_matches_torch(torch, dtype, options, seed, lr):
    run_both(torch, lambda ps: SGD(ps, lr=lr, **options),
             lambda ps: torch.optim.SGD(ps, lr=lr, foreach=False, **options), seed, dtype)


ADAM_OPTIONS = [
    {},
    {"amsgrad": True},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "amsgrad": True},
    {"maximize": True, "weight_decay": 0.01},
    {"betas": (0.3, 0.6), "eps": 1e-4},            # 1 - beta1 >= 0.5: lerp's other branch
]


@dtypes
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("options", ADAM_OPTIONS)
@given(seed=seeds, lr=st.sampled_from([1e-3, 0.01, 0.1]))
def test_adam_trajectory_matches_torch(torch, dtype, name, options, seed, lr):
    ours, theirs = {"Adam": Adam, "AdamW": AdamW}[name], getattr(torch.optim, name)
    run_both(torch, lambda ps: ours(ps, lr=lr, **options),
             lambda ps: theirs(ps, lr=lr, foreach=False, **options), seed, dtype)


def test_param_groups_override_defaults(torch):
    groups = [{"lr": 0.2, "momentum": 0.9}, {"weight_decay": 0.5}]
    run_both(torch, lambda ps: SGD(ps, lr=0.01), lambda ps: torch.optim.SGD(ps, lr=0.01), 3, np.float32, groups)
    groups = [{"lr": 0.05, "amsgrad": True}, {"betas": (0.5, 0.9)}]
    run_both(torch, lambda ps: AdamW(ps), lambda ps: torch.optim.AdamW(ps), 4, np.float32, groups)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: Adam(ps, lr=0.01, amsgrad=True)])
def test_state_dict_round_trip_continues_identically(torch, make):
    rng = np.random.default_rng(0)
    a = [Parameter(rng.standard_normal((2, 3)).astype(np.float32)), Parameter(np.zeros(3, np.float32))]
    opt = make(a)
    for _ in range(3):
        for p in a:
            p.grad = rng.standard_normal(p.shape).astype(np.float32)
        opt.step()
    b = [Parameter(p.data) for p in a]
    opt_b = make(b)
    opt_b.load_state_dict(opt.state_dict())
    assert opt_b.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    for _ in range(3):
        for p, q in zip(a, b):
            p.grad = rng.standard_normal(p.shape).astype(np.float32)
            q.grad = p.grad.copy()
        opt.step()
        opt_b.step()
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("name, options", [("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.1, "momentum": 0.9}),
                                           ("Adam", {"amsgrad": True}), ("AdamW", {})])
def test_state_dict_layout_matches_torch(torch, name, options):
    """Same per-parameter state names, parameter numbering and group options as PyTorch."""
    ours = [Parameter(np.zeros(2, np.float32)), Parameter(np.zeros(3, np.float32)), Parameter(np.zeros(1))]
    theirs = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True),
              torch.zeros(1, requires_grad=True)]
    opt = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[name]([{"params": ours[:2]}, {"params": ours[2:]}], **options)
    topt = getattr(torch.optim, name)([{"params": theirs[:2]}, {"params": theirs[2:]}], **options)
    for p, tp in zip(ours[:2], theirs[:2]):                # the third parameter gets no gradient
        p.grad, tp.grad = np.ones(p.shape, np.float32), torch.ones(tp.shape)
    opt.step(), topt.step()
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert {i: set(s) for i, s in sd["state"].items()} == {i: set(s) for i, s in tsd["state"].items()}
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]
    for group, tgroup in zip(sd["param_groups"], tsd["param_groups"]):
        assert set(group) <= set(tgroup)
        assert {k: group[k] for k in group} == {k: tgroup[k] for k in group}


def test_zero_grad():
    p = Parameter(np.ones(3, np.float32))
    opt = SGD([p], lr=0.1)
    p.grad = np.ones(3, np.float32)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, 0)
    opt.zero_grad()
    assert p.grad is None
    opt.step()                                            # no gradient: nothing moves
    np.testing.assert_array_equal(p.data, 1)


def test_bad_arguments_raise():
    p = Parameter(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Parameters.*ndarray"):
        SGD([np.ones(3)], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Parameters"):
        SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="invalid learning rate: -1"):
        Adam([p], lr=-1)
    with pytest.raises(ValueError, match="invalid beta parameter at index 1: 1.0"):
        AdamW([p], betas=(0.9, 1.0))
    p.grad = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"gradient of shape \(4,\) for a parameter of shape \(3,\)"):
        SGD([p], lr=0.1).step()
