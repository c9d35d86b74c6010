"""StepLR, MultiStepLR, CosineAnnealingLR: lr sequences equal to PyTorch's get_last_lr()."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress.nn import Parameter
from minicompress.optim import SGD, CosineAnnealingLR, MultiStepLR, StepLR

EPOCHS = 40
LRS = [0.1, 0.03]                         # two param groups with their own base lr


def lr_sequences(torch, make_ours, make_theirs, epochs=EPOCHS):
    """(ours, theirs): get_last_lr() after construction and after each of ``epochs`` steps."""
    opt = SGD([{"params": [Parameter(np.zeros(1))], "lr": lr} for lr in LRS])
    topt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in LRS])
    sched, tsched = make_ours(opt), make_theirs(topt)
    ours, theirs = [sched.get_last_lr()], [tsched.get_last_lr()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # PyTorch warns that optimizer.step() was never called
        for _ in range(epochs):
            opt.step(), topt.step()
            sched.step(), tsched.step()
            ours.append(sched.get_last_lr())
            theirs.append(tsched.get_last_lr())
            assert [g["lr"] for g in opt.param_groups] == ours[-1]
    assert sched.last_epoch == tsched.last_epoch == epochs
    return ours, theirs


@given(step_size=st.integers(1, 7), gamma=st.floats(0.05, 0.99))
def test_step_lr_matches_torch(torch, step_size, gamma):
    ours, theirs = lr_sequences(torch, lambda o: StepLR(o, step_size, gamma),
                                lambda o: torch.optim.lr_scheduler.StepLR(o, step_size, gamma))
    assert ours == theirs                 # same float operations in the same order: exactly equal


@given(milestones=st.lists(st.integers(0, EPOCHS), max_size=5), gamma=st.floats(0.05, 0.99))
def test_multistep_lr_matches_torch(torch, milestones, gamma):
    ours, theirs = lr_sequences(torch, lambda o: MultiStepLR(o, milestones, gamma),
                                lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, gamma))
    assert ours == theirs


@given(t_max=st.integers(1, 15), eta_min=st.sampled_from([0.0, 1e-4, 0.01]))
def test_cosine_annealing_lr_matches_torch(torch, t_max, eta_min):
    # 40 epochs run past T_max: the rising half and the restart branch of the recursion are used too
    ours, theirs = lr_sequences(torch, lambda o: CosineAnnealingLR(o, t_max, eta_min),
                                lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, t_max, eta_min))
    assert ours == theirs
    closed_form = [[eta_min + (lr - eta_min) * (1 + np.cos(np.pi * t / t_max)) / 2 for lr in LRS]
                   for t in range(t_max + 1)]
    np.testing.assert_allclose(ours[:t_max + 1], closed_form, rtol=1e-9, atol=1e-15)


def test_chained_schedulers_match_torch(torch):
    """Two schedulers on one optimizer compose, because each updates the current lr."""
    lr = torch.optim.lr_scheduler
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    a, b = CosineAnnealingLR(opt, 10), StepLR(opt, 3, 0.5)
    ta, tb = lr.CosineAnnealingLR(topt, 10), lr.StepLR(topt, 3, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(15):
            opt.step(), topt.step()
            a.step(), b.step(), ta.step(), tb.step()
            assert b.get_last_lr() == tb.get_last_lr()


def test_scheduler_drives_the_optimizer_and_round_trips():
    p = Parameter(np.zeros(1))
    opt = SGD([p], lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    moves = []
    for _ in range(5):
        p.grad = np.ones(1)
        before = p.data.copy()
        opt.step()
        sched.step()
        moves.append(float(before[0] - p.data[0]))
    assert moves == [1.0, 1.0, 0.5, 0.5, 0.25]
    state = sched.state_dict()
    assert "optimizer" not in state and state["last_epoch"] == 5
    other = StepLR(SGD([Parameter(np.zeros(1))], lr=1.0), step_size=9)
    other.load_state_dict(state)
    assert other.step_size == 2 and other.get_last_lr() == sched.get_last_lr()


def test_bad_arguments_raise():
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        StepLR(object(), 2)
    with pytest.raises(ValueError, match="step_size must be a positive integer"):
        StepLR(opt, 0)
    with pytest.raises(ValueError, match="T_max must be a positive integer"):
        CosineAnnealingLR(opt, 0)
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(SGD([Parameter(np.zeros(1))], lr=0.1), 2, last_epoch=3)
