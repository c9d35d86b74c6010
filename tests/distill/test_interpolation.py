"""Parameter-interpolation distillation (theta_s <- lam theta_t + (1 - lam) theta_s) and optim.update_bn."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress import nn
from minicompress.data import DataLoader
from minicompress.distill import Distiller, KDLoss, ParameterInterpolation
from minicompress.models import digits_cnn
from minicompress.nn.losses import CrossEntropyLoss
from minicompress.optim import SGD, update_bn
from minicompress.train import fit


def _mlp(seed, dtype=np.float64):
    return nn.Sequential(nn.Linear(6, 5, rng=np.random.default_rng(seed)), nn.BatchNorm1d(5), nn.ReLU(),
                         nn.Linear(5, 3, rng=np.random.default_rng(seed + 1))).to(dtype)


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.integers(0, 3, n)


@given(lam=st.floats(0.0, 1.0), every=st.integers(1, 3), schedule=st.sampled_from(["constant", "linear"]),
       epochs=st.integers(1, 3))
def test_with_no_gradient_steps_the_student_follows_eq_1_exactly(lam, every, schedule, epochs):
    """lr = 0: only eq. (1) moves the student, so theta_s = theta_t + prod_k (1 - lam_k) (theta_s0 - theta_t)."""
    teacher, student = _mlp(0), _mlp(10)
    x, y = _data()
    start = {k: v.copy() for k, v in student.state_dict().items()}
    loader = DataLoader(x, y, 8)
    total = epochs * len(loader)
    cb = ParameterInterpolation(teacher, lam, every, schedule, total_steps=total)
    fit(student, CrossEntropyLoss(), SGD(student.parameters(), lr=0.0), loader, epochs=epochs, quiet=True,
        callbacks=[cb])
    expected_lams = [cb.lam_at(k) for k in range(total) if (k + 1) % every == 0]
    assert cb.lams_ == expected_lams
    if schedule == "linear":
        assert expected_lams == [lam * (1 - k / total) for k in range(total) if (k + 1) % every == 0]
    keep = float(np.prod([1 - a for a in expected_lams]))
    t = teacher.state_dict()
    for name, value in student.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if name.endswith(("running_mean", "running_var")):
            continue                         # the student's own BN updates mix in (training mode forward)
        np.testing.assert_allclose(value, t[name] + keep * (start[name] - t[name]), rtol=1e-12, atol=1e-12)


def test_lam_one_copies_the_teacher_including_batchnorm_statistics():
    teacher, student = _mlp(0), _mlp(10)
    x, y = _data()
    teacher.train()
    teacher(x)                               # non-trivial running statistics
    cb = ParameterInterpolation(teacher, lam=1.0)
    fit(student, CrossEntropyLoss(), SGD(student.parameters(), lr=0.1), DataLoader(x, y, 24), epochs=1, quiet=True,
        callbacks=[cb])
    for (k, a), b in zip(student.state_dict().items(), teacher.state_dict().values()):
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(a, b)


def test_recompute_leaves_batchnorm_statistics_to_update_bn():
    teacher, student = _mlp(0), _mlp(10)
    x, y = _data()
    teacher.train()
    teacher(x)
    d = Distiller(mode="interpolate", lam=1.0, batchnorm="recompute", optimizer=lambda p: SGD(p, lr=0.0),
                  epochs=1, batch_size=24, quiet=True, rng=0).fit(student, x, y, teacher=teacher)
    s, t = d.student_.state_dict(), teacher.state_dict()
    np.testing.assert_array_equal(s["0.weight"], t["0.weight"])
    h = x @ t["0.weight"].T + t["0.bias"]    # one batch of all 24: the cumulative average is that batch's stats
    np.testing.assert_allclose(s["1.running_mean"], h.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s["1.running_var"], h.var(0, ddof=1), rtol=1e-12)
    assert int(s["1.num_batches_tracked"]) == 1 and d.student_.training


def test_update_bn_matches_torch(torch):
    model = digits_cnn((4, 6), 8, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((20, 1, 8, 8)).astype(np.float32)
    tm = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                             torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                             torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(6 * 16, 8), torch.nn.ReLU(),
                             torch.nn.Linear(8, 10))
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    model.eval()
    tm.eval()
    update_bn(DataLoader(x, np.zeros(20, np.int64), 6), model)
    torch.optim.swa_utils.update_bn([(torch.from_numpy(x[i:i + 6]),) for i in range(0, 20, 6)], tm)
    for k, v in tm.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6)
    assert not model.training and model[1].momentum == 0.1


def test_distiller_interpolate_with_kd_and_errors():
    teacher, student = _mlp(0, np.float32), _mlp(10, np.float32)
    x, y = _data()
    x = x.astype(np.float32)
    d = Distiller(KDLoss(), mode="interpolate", lam=0.2, lam_schedule="linear", interpolate_every=2, epochs=2,
                  batch_size=8, quiet=True, rng=0).fit(student, x, y, teacher=teacher)
    assert len(d.interpolation_.lams_) == 3 and d.teacher_logits_ is not None
    other = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        Distiller(mode="interpolate", epochs=1, quiet=True).fit(other, x, y, teacher=nn.Sequential(
            nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)))
    with pytest.raises(ValueError, match="only one of the two models"):
        Distiller(mode="interpolate", epochs=1, quiet=True).fit(other, x, y, teacher=teacher)
    with pytest.raises(ValueError, match="lam must be in"):
        ParameterInterpolation(teacher, lam=1.5)
    with pytest.raises(ValueError, match="total_steps"):
        ParameterInterpolation(teacher, schedule="linear")
