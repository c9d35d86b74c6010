"""Student-versus-teacher metrics: agreement, KL to the teacher, and the compare() report."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress import nn
from minicompress.distill import compare, kl_to_teacher, top1_agreement


@given(st.integers(1, 8), st.integers(2, 6), st.floats(0.5, 10), st.integers(0, 2**32 - 1))
def test_kl_to_teacher_matches_torch_batchmean(torch, n, c, T, seed):
    rng = np.random.default_rng(seed)
    s, t = rng.normal(0, 5, (2, n, c)).astype(np.float32)
    F = torch.nn.functional
    ref = F.kl_div(F.log_softmax(torch.tensor(s) / T, 1), F.softmax(torch.tensor(t) / T, 1), reduction="batchmean")
    np.testing.assert_allclose(kl_to_teacher(s, t, T), ref.item(), rtol=1e-5, atol=1e-6)


def test_top1_agreement_counts_matching_argmax():
    s = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 3.0], [5.0, -1.0]])
    t = np.array([[3.0, 1.0], [1.0, 0.0], [0.0, 9.0], [0.0, 1.0]])
    assert top1_agreement(s, t) == 0.5
    with pytest.raises(ValueError, match=r"top1_agreement: teacher and student have different class counts"):
        top1_agreement(s, np.zeros((4, 3)))


def test_compare_reports_accuracy_agreement_and_ratios():
    rng = np.random.default_rng(0)
    teacher = nn.Sequential(nn.Linear(8, 64, rng=rng), nn.ReLU(), nn.Linear(64, 3, rng=rng))
    student = nn.Sequential(nn.Linear(8, 3, rng=rng))
    x = rng.normal(size=(50, 8)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    report = compare(student, teacher, x, y, repeats=2)
    assert report["param_ratio"] == (8 * 64 + 64 + 64 * 3 + 3) / (8 * 3 + 3)
    assert report["size_ratio"] == pytest.approx(report["param_ratio"])
    assert report["latency_ratio"] > 0 and report["kl_to_teacher"] >= 0
    assert compare(teacher, teacher, x, y, repeats=1)["agreement"] == 1.0
