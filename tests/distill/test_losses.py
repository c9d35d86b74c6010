"""KDLoss / kd_loss: value and gradient against PyTorch autograd, finite differences, stability, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress.distill import KDLoss, kd_loss, kd_loss_backward, kd_loss_forward
from minicompress.distill.losses import soft_target_backward, soft_target_forward


@st.composite
def kd_case(draw, max_logit=100.0, t_range=(0.5, 20.0)):
    """(student, teacher, labels, T, alpha): float32 logits up to +-max_logit, T and alpha in range."""
    n = draw(st.integers(1, 6))
    c = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.floats(0.1, max_logit))
    rng = np.random.default_rng(seed)
    s = np.clip(rng.normal(0, scale, (n, c)), -max_logit, max_logit).astype(np.float32)
    t = np.clip(rng.normal(0, scale, (n, c)), -max_logit, max_logit).astype(np.float32)
    y = rng.integers(0, c, n)
    T = draw(st.floats(*t_range))
    alpha = draw(st.floats(0.0, 1.0))
    return s, t, y, T, alpha


def torch_kd(torch, s, t, y, T, alpha, label_smoothing=0.0):
    """The issue's reference: alpha kl_div(batchmean) T^2 + (1 - alpha) CE, value and d/ds by autograd."""
    F = torch.nn.functional
    st_ = torch.tensor(s, requires_grad=True)
    tt = torch.tensor(t)
    soft = F.kl_div(F.log_softmax(st_ / T, dim=1), F.softmax(tt / T, dim=1), reduction="batchmean") * T * T
    loss = alpha * soft
    if y is not None:
        loss = loss + (1 - alpha) * F.cross_entropy(st_, torch.tensor(y), label_smoothing=label_smoothing)
    loss.backward()
    return loss.item(), st_.grad.numpy()


def tolerances(s, t, T):
    """Float32 absolute tolerances for (value, gradient): the terms reach T^2 |logit / T| and T / N."""
    big = max(np.abs(s).max(), np.abs(t).max(), 1.0)
    return 2e-6 * (T * big + big), 2e-6 * max(T, 1.0) / len(s)


@given(kd_case())
def test_kd_loss_matches_torch(torch, case):
    s, t, y, T, alpha = case
    loss = KDLoss(T=T, alpha=alpha)
    value = loss(s, t, y)
    grad = loss.backward()
    ref_value, ref_grad = torch_kd(torch, s, t, y, T, alpha)
    value_atol, grad_atol = tolerances(s, t, T)
    assert grad.dtype == np.float32 and grad.shape == s.shape
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=value_atol)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=grad_atol)


@given(kd_case(), st.floats(0.0, 1.0))
def test_label_smoothing_on_hard_term_matches_torch(torch, case, smoothing):
    s, t, y, T, alpha = case
    loss = KDLoss(T=T, alpha=alpha, label_smoothing=smoothing)
    value = loss(s, t, y)
    grad = loss.backward()
    ref_value, ref_grad = torch_kd(torch, s, t, y, T, alpha, smoothing)
    value_atol, grad_atol = tolerances(s, t, T)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=value_atol)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=grad_atol)


@given(kd_case())
def test_hard_label_free_is_pure_soft_loss(torch, case):
    s, t, _, T, _ = case
    loss = KDLoss(T=T, alpha=0.3)                      # alpha is unused without labels
    value = loss(s, t)
    grad = loss.backward()
    ref_value, ref_grad = torch_kd(torch, s, t, None, T, 1.0)
    value_atol, grad_atol = tolerances(s, t, T)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=value_atol)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=grad_atol)


def tutorial_loss(torch, s, t, y, T, soft_target_loss_weight, ce_loss_weight):
    """The PyTorch knowledge-distillation tutorial's training-step loss, verbatim in substance."""
    student_logits = torch.tensor(s, requires_grad=True)
    teacher_logits = torch.tensor(t)
    labels = torch.tensor(y)
    soft_targets = torch.nn.functional.softmax(teacher_logits / T, dim=-1)
    soft_prob = torch.nn.functional.log_softmax(student_logits / T, dim=-1)
    soft_targets_loss = -torch.sum(soft_targets * soft_prob) / soft_prob.size()[0] * (T**2)
    label_loss = torch.nn.CrossEntropyLoss()(student_logits, labels)
    loss = soft_target_loss_weight * soft_targets_loss + ce_loss_weight * label_loss
    loss.backward()
    return loss.item(), student_logits.grad.numpy()


@given(kd_case())
def test_tutorial_variant_matches_tutorial_code(torch, case):
    s, t, y, T, alpha = case
    for loss, (T_, w_soft) in ((KDLoss.tutorial(), (2.0, 0.25)),
                               (KDLoss(T=T, alpha=alpha, soft="cross_entropy"), (T, alpha))):
        value = loss(s, t, y)
        grad = loss.backward()
        ref_value, ref_grad = tutorial_loss(torch, s, t, y, T_, w_soft, 1 - w_soft)
        value_atol, grad_atol = tolerances(s, t, T_)
        np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=value_atol)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=grad_atol)


@given(kd_case(max_logit=8.0))
def test_tutorial_variant_same_gradient_value_differs_by_teacher_entropy(case):
    s, t, y, T, alpha = [np.asarray(v, np.float64) if i < 2 else v for i, v in enumerate(case)]
    kl, ce = KDLoss(T, alpha), KDLoss(T, alpha, soft="cross_entropy")
    kl_value, ce_value = kl(s, t, y), ce(s, t, y)
    np.testing.assert_allclose(kl.backward(), ce.backward(), rtol=1e-12, atol=1e-15)
    p = np.exp(t / T - t.max(1, keepdims=True) / T)
    p /= p.sum(1, keepdims=True)
    entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(1).mean()
    np.testing.assert_allclose(ce_value - kl_value, alpha * T * T * entropy, rtol=1e-9, atol=1e-9)


@given(kd_case(max_logit=6.0, t_range=(0.5, 10.0)), st.floats(0.0, 0.5), st.sampled_from(["kl", "cross_entropy"]))
def test_kd_gradient_finite_differences(fd, relerr, case, smoothing, soft):
    s, t, y, T, alpha = case
    s, t = s.astype(np.float64), t.astype(np.float64)
    value, cache = kd_loss_forward(s, t, y, T, alpha, smoothing, soft)
    grad = kd_loss_backward(1.0, cache)
    numeric = fd(lambda x: kd_loss(x, t, y, T, alpha, smoothing, soft), s.copy(), h=1e-5)
    assert grad.dtype == np.float64
    assert relerr(grad, numeric) < 1e-6


@given(kd_case())
def test_soft_gradient_is_alpha_T_q_minus_p_over_n(case):
    """Eq. (5): the soft part of dL/ds is alpha * T * (softmax(s/T) - softmax(t/T)) / N."""
    s, t, _, T, alpha = case
    s, t = s.astype(np.float64), t.astype(np.float64)
    _, cache = soft_target_forward(s, t, T)
    grad = alpha * soft_target_backward(1.0, cache)

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(grad, alpha * T * (softmax(s / T) - softmax(t / T)) / len(s), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("T", [0.01, 0.5, 1.0])
def test_stable_for_small_T_and_large_logits(torch, T):
    rng = np.random.default_rng(1)
    s = rng.choice([-100.0, 100.0, 0.0, 37.5], size=(4, 6)).astype(np.float32)
    t = rng.choice([-100.0, 100.0, -3.0], size=(4, 6)).astype(np.float32)
    t[0] = [100, -100, -100, -100, -100, -100]          # teacher probability underflows to exactly 0
    y = np.array([0, 1, 2, 3])
    loss = KDLoss(T=T, alpha=0.7)
    value, grad = loss(s, t, y), loss.backward()
    assert np.isfinite(value) and np.isfinite(grad).all()
    ref_value, ref_grad = torch_kd(torch, s.astype(np.float64), t.astype(np.float64), y, T, 0.7)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6 / T)


def test_batchmean_not_elementwise_mean():
    """The 'batchmean' pitfall: the soft term divides by N only, so it does not shrink with C."""
    s = np.zeros((2, 4), np.float64)
    t = np.log(np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]]))
    kl_first = 0.7 * np.log(0.7 / 0.25) + 3 * 0.1 * np.log(0.1 / 0.25)
    np.testing.assert_allclose(kd_loss(s, t, T=1.0, alpha=1.0), kl_first / 2, rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"T": 0.0}, r"kd_loss: temperature T must be a finite number > 0, got 0\.0"),
    ({"T": -2.0}, r"T must be a finite number > 0, got -2\.0"),
    ({"alpha": 1.5}, r"kd_loss: alpha must be in \[0, 1\], got 1\.5"),
    ({"alpha": -0.1}, r"alpha must be in \[0, 1\], got -0\.1"),
])
def test_bad_hyper_parameters(kwargs, match):
    s = np.zeros((3, 4), np.float32)
    args = {"T": 4.0, "alpha": 0.9, **kwargs}
    with pytest.raises(ValueError, match=match):
        kd_loss(s, s, np.zeros(3, np.int64), **args)
    with pytest.raises(ValueError, match=match.replace("kd_loss", "KDLoss")):
        KDLoss(**args)


def test_bad_shapes_name_the_shapes():
    s = np.zeros((8, 10), np.float32)
    with pytest.raises(ValueError,
                       match=r"different class counts: teacher logits \(8, 100\), student logits \(8, 10\)"):
        KDLoss()(s, np.zeros((8, 100), np.float32), np.zeros(8, np.int64))
    with pytest.raises(ValueError, match=r"target labels of shape \(8,\) .* got \(8, 1\)"):
        KDLoss()(s, s, np.zeros((8, 1), np.int64))
    with pytest.raises(ValueError, match=r"teacher logits of shape \(8, C\) .* got \(4, 10\)"):
        KDLoss()(s, np.zeros((4, 10), np.float32), np.zeros(8, np.int64))
    with pytest.raises(ValueError, match=r"expected student logits \(N, C\), got shape \(8,\)"):
        KDLoss()(np.zeros(8, np.float32), np.zeros(8, np.float32))
    with pytest.raises(TypeError, match=r"floating-point student logits, got int64"):
        KDLoss()(np.zeros((8, 10), np.int64), s)
    with pytest.raises(ValueError, match=r"out of bounds for 10 classes"):
        KDLoss()(s, s, np.full(8, 10))
    with pytest.raises(RuntimeError, match=r"backward\(\) called without a forward"):
        KDLoss().backward()


# ---------------------------------------------------------------------------- teacher-confidence thresholding
trust_options = st.fixed_dictionaries({
    "confidence_threshold": st.one_of(st.none(), st.floats(0.0, 1.0)),
    "drop_wrong_teacher": st.booleans(),
    "below_threshold_weight": st.floats(0.0, 1.0),
})


def torch_trusted_kd(torch, s, t, y, T, alpha, soft, confidence_threshold, drop_wrong_teacher, below_threshold_weight):
    """Eq. (6) written in torch: per-sample soft terms weighted by the teacher's trust, summed / N."""
    F = torch.nn.functional
    st_, tt = torch.tensor(s, requires_grad=True), torch.tensor(t)
    trusted = torch.ones(len(s), dtype=torch.bool)
    if confidence_threshold is not None:
        trusted &= F.softmax(tt, dim=1).max(dim=1).values >= confidence_threshold
    if drop_wrong_teacher:
        trusted &= tt.argmax(dim=1) == torch.tensor(y)
    w = torch.where(trusted, 1.0, below_threshold_weight).to(tt.dtype)
    log_q, p = F.log_softmax(st_ / T, dim=1), F.softmax(tt / T, dim=1)
    if soft == "kl":
        per_sample = F.kl_div(log_q, F.log_softmax(tt / T, dim=1), reduction="none", log_target=True).sum(1)
    else:
        per_sample = -(p * log_q).sum(1)
    loss = alpha * T * T * (w * per_sample).sum() / len(s) + (1 - alpha) * F.cross_entropy(st_, torch.tensor(y))
    loss.backward()
    return loss.item(), st_.grad.numpy()


@given(kd_case(max_logit=20.0), trust_options, st.sampled_from(["kl", "cross_entropy"]))
def test_trusted_teacher_kd_matches_torch(torch, case, trust, soft):
    s, t, y, T, alpha = case
    loss = KDLoss(T=T, alpha=alpha, soft=soft, **trust)
    value, grad = loss(s, t, y), loss.backward()
    ref_value, ref_grad = torch_trusted_kd(torch, s, t, y, T, alpha, soft, **trust)
    value_atol, grad_atol = tolerances(s, t, T)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=value_atol)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=grad_atol)


@given(kd_case(max_logit=6.0, t_range=(0.5, 10.0)), trust_options, st.sampled_from(["kl", "cross_entropy"]))
def test_trusted_teacher_kd_finite_differences(fd, relerr, case, trust, soft):
    s, t, y, T, alpha = case
    s, t = s.astype(np.float64), t.astype(np.float64)
    _, cache = kd_loss_forward(s, t, y, T, alpha, 0.0, soft, **trust)
    numeric = fd(lambda x: kd_loss(x, t, y, T, alpha, 0.0, soft, **trust), s.copy(), h=1e-5)
    assert relerr(kd_loss_backward(1.0, cache), numeric) < 1e-6


def test_untrusted_samples_lose_their_soft_term_only():
    """Teacher wrong on sample 0, unsure on sample 1, right and sure on sample 2: only row 2 keeps the soft
    gradient; weight 1 everywhere is plain KD."""
    t = np.array([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 5.0]])
    y = np.array([1, 0, 2])
    s = np.random.default_rng(0).normal(size=(3, 3))
    _, cache = kd_loss_forward(s, t, y, 2.0, 1.0, confidence_threshold=0.6, drop_wrong_teacher=True)
    grad = kd_loss_backward(1.0, cache)
    np.testing.assert_array_equal(grad[:2], 0.0)
    _, plain = kd_loss_forward(s, t, y, 2.0, 1.0)
    np.testing.assert_allclose(grad[2], kd_loss_backward(1.0, plain)[2])
    kept = kd_loss(s, t, y, 2.0, 1.0, confidence_threshold=0.6, drop_wrong_teacher=True, below_threshold_weight=1.0)
    assert kept == pytest.approx(kd_loss(s, t, y, 2.0, 1.0))
    assert "confidence_threshold=0.6, drop_wrong_teacher=True, below_threshold_weight=0.0" in repr(
        KDLoss(confidence_threshold=0.6, drop_wrong_teacher=True))


def test_trust_options_are_checked():
    s = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"kd_loss: drop_wrong_teacher=True needs the target labels, got target=None"):
        KDLoss(drop_wrong_teacher=True)(s, s)
    with pytest.raises(ValueError, match=r"KDLoss: confidence_threshold must be None or a probability in \[0, 1\], "
                                         r"got 1\.5"):
        KDLoss(confidence_threshold=1.5)
    with pytest.raises(ValueError, match=r"KDLoss: below_threshold_weight must be in \[0, 1\], got -1"):
        KDLoss(below_threshold_weight=-1)
