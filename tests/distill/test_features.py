"""Hint (FitNets), attention transfer and RKD losses: value and d/d f_s against PyTorch implementations
of RepDistiller's formulas written here, and float64 finite differences."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress import nn
from minicompress.distill import ATLoss, HintLoss, RKDLoss
from minicompress.distill.features import (at_loss_backward, at_loss_forward, rkd_angle_backward,
                                           rkd_angle_forward, rkd_distance_backward, rkd_distance_forward)


# ---------------------------------------------------------------------------- PyTorch references
def torch_at_loss(torch, f_s, f_t, p):
    """Zagoruyko & Komodakis' AT, Q = sum_c |f_c|^p normalised per sample; a larger map is
    adaptive-average-pooled to the common (min H, min W) (RepDistiller pools the same way)."""
    F = torch.nn.functional

    def at(f):
        return F.normalize(f.abs().pow(p).sum(1).view(f.size(0), -1))
    size = (min(f_s.shape[2], f_t.shape[2]), min(f_s.shape[3], f_t.shape[3]))
    f_s = f_s if tuple(f_s.shape[2:]) == size else F.adaptive_avg_pool2d(f_s, size)
    f_t = f_t if tuple(f_t.shape[2:]) == size else F.adaptive_avg_pool2d(f_t, size)
    return (at(f_s) - at(f_t)).pow(2).mean()


def torch_pdist(torch, e, eps=1e-12):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps).sqrt()
    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def torch_rkd(torch, f_s, f_t):
    """RepDistiller ``RKDLoss`` terms: (distance loss, angle loss)."""
    F = torch.nn.functional
    student, teacher = f_s.view(f_s.shape[0], -1), f_t.view(f_t.shape[0], -1)
    with torch.no_grad():
        t_d = torch_pdist(torch, teacher)
        t_d = t_d / t_d[t_d > 0].mean()
    d = torch_pdist(torch, student)
    d = d / d[d > 0].mean()
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = teacher.unsqueeze(0) - teacher.unsqueeze(1)
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)
    sd = student.unsqueeze(0) - student.unsqueeze(1)
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)
    return loss_d, F.smooth_l1_loss(s_angle, t_angle)


def run_torch(torch, fn, f_s, f_t):
    """Value and d/d f_s of ``fn(f_s, f_t)`` by autograd (the (out * dout).sum() trick for scalars)."""
    s = torch.tensor(f_s, requires_grad=True)
    loss = fn(s, torch.tensor(f_t))
    loss.backward()
    return loss.item(), s.grad.numpy()


# ---------------------------------------------------------------------------- strategies
@st.composite
def at_case(draw):
    """Student/teacher maps (N, C, H, W); channel counts differ; sizes equal, 2x (equal blocks) or any
    (overlapping adaptive bins, and a side of one map larger while the other side is smaller)."""
    n, cs, ct = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sizes = draw(st.sampled_from(["same", "student 2x", "teacher 2x", "any"]))
    s_size, t_size = {"same": ((h, w), (h, w)), "student 2x": ((2 * h, 2 * w), (h, w)),
                      "teacher 2x": ((h, w), (2 * h, 2 * w))}.get(sizes, ((h, w), (draw(st.integers(1, 5)),
                                                                          draw(st.integers(1, 5)))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    f_s = rng.normal(0, draw(st.floats(0.1, 10)), (n, cs, *s_size))
    f_t = rng.normal(0, 1, (n, ct, *t_size))
    return f_s.astype(np.float32), f_t.astype(np.float32), draw(st.sampled_from([1.0, 2.0, 3.0, 4.0]))


@st.composite
def rkd_case(draw):
    """Student (N, D_s) or (N, C, H, W) and teacher (N, D_t) features of distinct, separated samples."""
    n, ds, dt = draw(st.integers(2, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n, ds) if draw(st.booleans()) else (n, ds, 2, 1)
    f_s = rng.normal(0, draw(st.floats(0.5, 5)), shape)
    f_t = rng.normal(0, 1, (n, dt)) + 3 * np.arange(n)[:, None]     # distinct rows
    return f_s.astype(np.float32), f_t.astype(np.float32)


# ---------------------------------------------------------------------------- attention transfer
@given(at_case())
def test_at_loss_matches_torch(torch, case):
    f_s, f_t, p = case
    loss = ATLoss(p=p)
    value, grad = loss(f_s, f_t), loss.backward()
    ref_value, ref_grad = run_torch(torch, lambda s, t: torch_at_loss(torch, s, t, p), f_s, f_t)
    assert grad.shape == f_s.shape and grad.dtype == np.float32
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6 * np.abs(ref_grad).max() + 1e-9)


@given(at_case())
def test_at_loss_finite_differences(fd, relerr, case):
    f_s, f_t, p = (v.astype(np.float64) if isinstance(v, np.ndarray) else v for v in case)
    _, cache = at_loss_forward(f_s, f_t, p)
    numeric = fd(lambda x: at_loss_forward(x, f_t, p)[0], f_s.copy())
    assert relerr(at_loss_backward(1.0, cache), numeric) < 1e-6


def test_at_loss_zero_map_follows_normalize_eps(torch):
    """An all-zero student map: normalize divides by eps, gradient of a^p is 0 for p = 2 at f = 0."""
    f_s = np.zeros((2, 3, 2, 2), np.float32)
    f_s[1] = 1.0
    f_t = np.random.default_rng(0).normal(size=(2, 1, 2, 2)).astype(np.float32)
    loss = ATLoss()
    value, grad = loss(f_s, f_t), loss.backward()
    ref_value, ref_grad = run_torch(torch, lambda s, t: torch_at_loss(torch, s, t, 2.0), f_s, f_t)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------- relational KD
@given(rkd_case())
def test_rkd_matches_torch(torch, case):
    f_s, f_t = case
    loss = RKDLoss()
    value, grad = loss(f_s, f_t), loss.backward()
    ref_value, ref_grad = run_torch(torch, lambda s, t: (lambda d, a: 25 * d + 50 * a)(*torch_rkd(torch, s, t)),
                                    f_s, f_t)
    assert grad.shape == f_s.shape and grad.dtype == np.float32
    np.testing.assert_allclose(value, ref_value, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-4, atol=1e-5 * np.abs(ref_grad).max() + 1e-9)


@given(rkd_case())
def test_rkd_terms_match_torch_separately(torch, case):
    f_s, f_t = case
    for i, (forward, backward) in enumerate(((rkd_distance_forward, rkd_distance_backward),
                                             (rkd_angle_forward, rkd_angle_backward))):
        value, cache = forward(f_s, f_t)
        ref_value, ref_grad = run_torch(torch, lambda s, t: torch_rkd(torch, s, t)[i], f_s, f_t)
        np.testing.assert_allclose(value, ref_value, rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(backward(1.0, cache), ref_grad, rtol=2e-4,
                                   atol=1e-5 * np.abs(ref_grad).max() + 1e-10)


@given(rkd_case())
def test_rkd_finite_differences(fd, relerr, case):
    f_s, f_t = (v.astype(np.float64) for v in case)
    for forward, backward in ((rkd_distance_forward, rkd_distance_backward),
                              (rkd_angle_forward, rkd_angle_backward)):
        _, cache = forward(f_s, f_t)
        numeric = fd(lambda x: forward(x, f_t)[0], f_s.copy())
        assert relerr(backward(1.0, cache), numeric) < 1e-6


# ---------------------------------------------------------------------------- FitNets hint
def torch_hint(torch, regressor, f_s, f_t):
    """Value, d/d f_s and regressor gradients of MSE(regressor(f_s), f_t) with our regressor's weights."""
    w = torch.tensor(regressor.weight.data, requires_grad=True)
    b = torch.tensor(regressor.bias.data, requires_grad=True)
    s = torch.tensor(f_s, requires_grad=True)
    out = torch.nn.functional.conv2d(s, w, b) if w.ndim == 4 else torch.nn.functional.linear(s, w, b)
    loss = torch.nn.functional.mse_loss(out, torch.tensor(f_t))
    loss.backward()
    return loss.item(), s.grad.numpy(), w.grad.numpy(), b.grad.numpy()


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.booleans(), st.integers(0, 2**32 - 1))
def test_hint_loss_matches_torch(torch, n, cs, ct, conv, seed):
    rng = np.random.default_rng(seed)
    hint = HintLoss(cs, ct, conv=conv, rng=rng)
    shape_s, shape_t = ((n, cs, 3, 2), (n, ct, 3, 2)) if conv else ((n, cs), (n, ct))
    f_s = rng.normal(size=shape_s).astype(np.float32)
    f_t = rng.normal(size=shape_t).astype(np.float32)
    value, grad = hint(f_s, f_t), hint.backward()
    ref_value, ref_grad, ref_dw, ref_db = torch_hint(torch, hint.regressor, f_s, f_t)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(hint.regressor.weight.grad, ref_dw, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(hint.regressor.bias.grad, ref_db, rtol=1e-4, atol=1e-7)


def test_hint_loss_finite_differences(fd, relerr):
    rng = np.random.default_rng(3)
    hint = HintLoss(3, 4, conv=True, rng=rng).to(np.float64)
    f_s, f_t = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 4, 2, 2))
    hint(f_s, f_t)
    grad = hint.backward()
    assert relerr(grad, fd(lambda x: hint(x, f_t), f_s.copy())) < 1e-6
    weight = hint.regressor.weight
    assert relerr(weight.grad, fd(lambda w: (setattr(weight, "data", w), hint(f_s, f_t))[1],
                                  weight.data.copy())) < 1e-6


def test_hint_loss_takes_a_custom_regressor():
    rng = np.random.default_rng(0)
    regressor = nn.Sequential(nn.Linear(3, 5, rng=rng), nn.ReLU(), nn.Linear(5, 4, rng=rng))
    hint = HintLoss(3, 4, regressor=regressor)
    assert len(list(hint.parameters())) == 4
    assert "regressor.0.weight" in hint.state_dict()


# ---------------------------------------------------------------------------- errors
def test_feature_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"at_loss: student and teacher features have different batch sizes: "
                                         r"student \(2, 3, 4, 4\), teacher \(3, 3, 4, 4\)"):
        ATLoss()(np.ones((2, 3, 4, 4), np.float32), np.ones((3, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"at_loss: expected the teacher feature as a map \(N, C, H, W\) or "
                                         r"tokens \(N, S, D\), got \(2, 3\)"):
        ATLoss()(np.ones((2, 3, 5, 5), np.float32), np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"cannot lay 6 tokens on a square grid: expected S - 1 patch tokens"):
        ATLoss()(np.ones((2, 6, 4), np.float32), np.ones((2, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"rkd_distance: expected student and teacher features with the same "
                                         r"N >= 2, got \(1, 4\) and \(1, 4\)"):
        RKDLoss()(np.ones((1, 4), np.float32), np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match=r"HintLoss\(3, 4\): regressed student feature \(2, 4, 2, 2\) does "
                                         r"not match the teacher feature \(2, 5, 2, 2\)"):
        HintLoss(3, 4)(np.ones((2, 3, 2, 2), np.float32), np.ones((2, 5, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"ATLoss: p must be >= 1, got 0"):
        ATLoss(p=0)
