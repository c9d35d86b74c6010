"""Distiller: offline (cached teacher), mutual learning, born-again generations; wiring and gradients."""
import numpy as np
import pytest

from minicompress import nn
from minicompress.data import DataLoader, load_digits
from minicompress.distill import ATLoss, Distiller, HintLoss, KDLoss, RKDLoss
from minicompress.distill.losses import kd_loss
from minicompress.distill.offline import CachedTeacherStudent, OfflineObjective
from minicompress.distill.taps import FeatureTaps
from minicompress.distill.trainer import _MutualObjective
from minicompress.nn.losses import CrossEntropyLoss
from minicompress.optim import SGD, Adam
from minicompress.train import evaluate, fit, predict


@pytest.fixture(scope="module")
def digits():
    """A 400-sample slice of the digits (flattened) and the test split."""
    x, y, xt, yt = load_digits(flatten=True)
    return x[:400], y[:400], xt, yt


def mlp(hidden, seed, classes=10):
    rng = np.random.default_rng(seed)
    layers, width = [], 64
    for h in hidden:
        layers += [nn.Linear(width, h, rng=rng), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, classes, rng=rng))


@pytest.fixture(scope="module")
def teacher(digits):
    x, y, _, _ = digits
    model = mlp((64,), seed=0)
    fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=1e-2), DataLoader(x, y, 32, shuffle=True, rng=0),
        epochs=3, quiet=True)
    return model


class CountingTeacher(nn.Module):
    """Counts the samples the wrapped model is run on; refuses backward."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.samples, self.calls = inner, 0, 0

    def forward(self, x):
        self.samples += len(x)
        self.calls += 1
        return self.inner(x)

    def backward(self, grad_output):
        raise AssertionError("the teacher must never run backward")


def test_offline_teacher_runs_once_per_sample_and_is_never_updated(digits, teacher):
    x, y, _, _ = digits
    counting = CountingTeacher(teacher)
    before = teacher.state_dict()
    distiller = Distiller(KDLoss(T=4, alpha=0.9), epochs=2, batch_size=50, quiet=True, rng=0)
    distiller.fit(mlp((16,), seed=1), x, y, teacher=counting)
    assert counting.samples == len(x)                       # logits computed once, cached for 2 epochs
    for key, value in teacher.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    np.testing.assert_array_equal(distiller.teacher_logits_, predict(teacher, x))
    assert len(distiller.history_) == 1 and len(distiller.history_[0]["loss"]) == 2
    assert distiller.students_ == [distiller.student_]


def test_offline_equals_a_plain_loop_that_runs_the_teacher_every_batch(digits, teacher):
    """The index-and-cache wiring changes nothing: same batches, same teacher logits, same updates."""
    x, y, _, _ = digits
    loss = KDLoss(T=3.0, alpha=0.7)
    student = mlp((16,), seed=2)
    Distiller(loss, epochs=2, batch_size=64, optimizer=lambda p: SGD(p, lr=0.1, momentum=0.9),
              quiet=True, rng=7).fit(student, x, y, teacher=teacher)

    reference = mlp((16,), seed=2)
    opt = SGD(reference.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(x, y, 64, shuffle=True, rng=7)
    for _ in range(2):
        for xb, yb in loader:
            out = reference(xb)
            loss(out, predict(teacher, xb), yb)
            opt.zero_grad()
            reference.backward(loss.backward())
            opt.step()
    for (name, p), q in zip(student.named_parameters(), reference.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-4, atol=1e-6, err_msg=name)


def test_cached_teacher_student_serves_the_batch_of_the_indices(digits, teacher):
    x, y, _, _ = digits
    logits = predict(teacher, x)
    student = mlp((8,), seed=3)
    model = CachedTeacherStudent(student, x, logits)
    idx = np.array([5, 0, 399, 17])
    student_logits, teacher_logits = model(idx)       # the teacher's part of the batch is an output now
    np.testing.assert_array_equal(student_logits, student(x[idx]))
    np.testing.assert_array_equal(teacher_logits, logits[idx])


@pytest.mark.parametrize("make_loss, s_layer, t_layer", [
    (lambda: HintLoss(8, 64, conv=False, rng=0).to(np.float64), 2, 2),
    (lambda: RKDLoss(), 2, 2),
    (lambda: RKDLoss(w_d=1.0, w_a=2.0), 1, 1),
])
def test_feature_distillation_gradient_finite_differences(fd, relerr, digits, teacher, make_loss, s_layer, t_layer):
    """d(kd + w * feature loss)/d weights, the feature gradient entering through the tap's hook, against
    finite differences (int layers: the output of ``model[:k]``, i.e. of child k - 1)."""
    x, y, _, _ = digits
    x, y = x[:6].astype(np.float64), y[:6]
    teacher64 = mlp((64,), seed=0).to(np.float64)
    teacher64.load_state_dict(teacher.state_dict())
    feats = predict(teacher64[:t_layer], x)
    logits = predict(teacher64[t_layer:], feats)
    student = mlp((8,), seed=4).to(np.float64)
    feature_loss = make_loss()
    model = CachedTeacherStudent(student, x, logits, [feature_loss], FeatureTaps(student, [str(s_layer - 1)]),
                                 [feats])
    objective = OfflineObjective(model, KDLoss(T=2.0, alpha=0.6), weights=[0.3])
    idx = np.arange(6)

    def total(_w=None):
        return objective(model(idx), y)
    total()
    model.zero_grad()
    model.backward(objective.backward())
    weight = student[0].weight
    numeric = fd(lambda w: (setattr(weight, "data", w), total())[1], weight.data.copy())
    assert relerr(weight.grad, numeric) < 1e-6
    if isinstance(feature_loss, HintLoss):                  # the regressor learns too
        assert feature_loss.regressor.weight.grad is not None


def test_offline_with_hint_trains_the_regressor(digits, teacher):
    x, y, _, _ = digits
    hint = HintLoss(8, 64, conv=False, rng=0)
    before = hint.regressor.weight.data.copy()
    distiller = Distiller(epochs=1, feature_loss=hint, feature_weight=0.5, student_layer=2, teacher_layer=2,
                          quiet=True, rng=0)
    teacher.eval()
    try:
        distiller.fit(mlp((8,), seed=5), x, y, teacher=teacher)
        assert not any(m.training for m in teacher.modules())     # the teacher's mode is left alone
    finally:
        teacher.train()
    assert not np.allclose(hint.regressor.weight.data, before)
    assert np.isfinite(distiller.history_[0]["loss"]).all()


def test_mutual_objective_gradient_is_each_students_own_loss(fd, relerr):
    """Student k gets d loss_k / d s_k, loss_k = mean over peers of kd(s_k, s_peer, y); peers constant."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 4)) * 3
    y = rng.integers(0, 4, 5)
    kd = KDLoss(T=2.0, alpha=0.5)
    objective = _MutualObjective(kd, 3)
    total = objective(logits, y)
    grads = objective.backward()
    own = [np.mean([kd_loss(logits[k], logits[l], y, 2.0, 0.5) for l in range(3) if l != k]) for k in range(3)]
    np.testing.assert_allclose(total, sum(own), rtol=1e-12)
    for k in range(3):
        def loss_k(s, k=k):
            return np.mean([kd_loss(s, logits[l], y, 2.0, 0.5) for l in range(3) if l != k])
        assert relerr(grads[k], fd(loss_k, logits[k].copy())) < 1e-6


def test_mutual_learning_improves_both_students(digits):
    x, y, xt, yt = digits
    students = [mlp((16,), seed=10), mlp((24,), seed=11)]
    before = [evaluate(s, xt, yt)["accuracy"] for s in students]
    distiller = Distiller(KDLoss(T=1.0, alpha=0.5), mode="mutual", epochs=2, batch_size=32,
                          optimizer=lambda p: Adam(p, lr=1e-2), quiet=True, rng=0).fit(students, x, y)
    after = [evaluate(s, xt, yt)["accuracy"] for s in students]
    assert all(a > b + 0.3 for a, b in zip(after, before)), (before, after)
    history = distiller.history_[0]
    assert np.shape(history["student_accuracy"]) == (2, 2) and np.shape(history["student_loss"]) == (2, 2)
    assert history["student_loss"][1][0] < history["student_loss"][0][0]
    assert distiller.students_ == students and distiller.student_ is students[0]


def test_born_again_generations(digits):
    x, y, xt, yt = digits
    seeds = iter(range(20, 30))
    distiller = Distiller(KDLoss(T=2.0, alpha=0.5), mode="self", generations=2, epochs=3, batch_size=32,
                          optimizer=lambda p: Adam(p, lr=1e-2), quiet=True, rng=0)
    distiller.fit(lambda: mlp((16,), seed=next(seeds)), x, y)
    assert len(distiller.students_) == 3 and len(distiller.history_) == 3
    assert len({id(m) for m in distiller.students_}) == 3 and distiller.student_ is distiller.students_[-1]
    # generation 2 was distilled from generation 1: the cached logits are generation 1's
    np.testing.assert_array_equal(distiller.teacher_logits_, predict(distiller.students_[1], x))
    for model in distiller.students_:
        assert evaluate(model, xt, yt)["accuracy"] > 0.7
    with_teacher = Distiller(mode="self", generations=1, epochs=1, quiet=True).fit(
        lambda: mlp((8,), seed=next(seeds)), x, y, teacher=distiller.student_)
    assert len(with_teacher.students_) == 1


def test_bad_arguments_give_clear_errors(digits, teacher):
    x, y, _, _ = digits
    with pytest.raises(ValueError,
                       match=r"different class counts: teacher logits \(400, 10\), student logits \(2, 7\)"):
        Distiller(epochs=1, quiet=True).fit(mlp((8,), 0, classes=7), x, y, teacher=teacher)
    with pytest.raises(ValueError, match=r"mode must be one of"):
        Distiller(mode="online").fit(mlp((8,), 0), x, y, teacher=teacher)
    with pytest.raises(ValueError,
                       match=r"expected x \(N, \.\.\.\) and labels y \(N,\), got x \(400, 64\) and y \(399,\)"):
        Distiller().fit(mlp((8,), 0), x, y[:-1], teacher=teacher)
    with pytest.raises(TypeError, match=r"a student Module and a teacher Module, got Sequential and NoneType"):
        Distiller().fit(mlp((8,), 0), x, y)
    with pytest.raises(TypeError, match=r"list of >= 2 student Modules"):
        Distiller(mode="mutual").fit([mlp((8,), 0)], x, y)
    with pytest.raises(ValueError, match=r"same class count, got \[7, 10\]"):
        Distiller(mode="mutual").fit([mlp((8,), 0), mlp((8,), 0, classes=7)], x, y)
    with pytest.raises(TypeError, match=r"zero-argument factory"):
        Distiller(mode="self").fit(mlp((8,), 0), x, y)
    with pytest.raises(ValueError, match=r"needs student_layer and teacher_layer"):
        Distiller(feature_loss=ATLoss()).fit(mlp((8,), 0), x, y, teacher=teacher)


def test_distillation_recovers_a_pruned_student_and_keeps_it_pruned(digits, teacher):
    """A student pruned to 80% sparsity trains through weight_orig; its mask is untouched."""
    from minicompress import prune
    x, y, xt, yt = digits
    student = mlp((64,), seed=0)
    student.load_state_dict(teacher.state_dict())
    prune.l1_unstructured(student[0], "weight", amount=0.8)
    mask = student[0].weight_mask.copy()
    orig = student[0].weight_orig.data.copy()
    Distiller(KDLoss(T=2.0, alpha=0.5), epochs=2, optimizer=lambda p: Adam(p, lr=1e-3), quiet=True,
              rng=0).fit(student, x, y, teacher=teacher)
    np.testing.assert_array_equal(student[0].weight_mask, mask)
    assert not np.allclose(student[0].weight_orig.data, orig)
    weight = prune.effective_weight(student[0], "weight")
    assert np.count_nonzero(weight) == np.count_nonzero(mask)
    assert evaluate(student, xt, yt)["accuracy"] > 0.8


def test_distillation_trains_a_fake_quantized_student(digits, teacher):
    """A QAT-prepared student (fake-quantized weights and activations) trains through the Distiller."""
    from minicompress.quant.qat import get_default_qat_qconfig, prepare_qat
    x, y, xt, yt = digits
    student = mlp((16,), seed=6)
    student.qconfig = get_default_qat_qconfig("x86")
    student = prepare_qat(student)
    before = evaluate(student, xt, yt)["accuracy"]
    Distiller(KDLoss(T=2.0, alpha=0.5), epochs=5, optimizer=lambda p: Adam(p, lr=1e-2), quiet=True,
              rng=0).fit(student, x, y, teacher=teacher)
    assert evaluate(student, xt, yt)["accuracy"] > max(before + 0.4, 0.75)
