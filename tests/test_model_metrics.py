import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from minicompress import metrics, nn

labels = st.integers(1, 40).flatmap(lambda n: st.tuples(
    hnp.arrays(np.int64, n, elements=st.integers(0, 4)), hnp.arrays(np.int64, n, elements=st.integers(0, 4))))


@given(labels)
def test_confusion_and_prf_against_definitions(pair):
    y_true, y_pred = pair
    cm = metrics.confusion_matrix(y_true, y_pred, num_classes=5)
    assert cm.sum() == len(y_true)
    for i in range(5):
        for j in range(5):
            assert cm[i, j] == np.sum((y_true == i) & (y_pred == j))
    prf = metrics.precision_recall_f1(y_true, y_pred, num_classes=5)
    for c in range(5):
        tp = np.sum((y_true == c) & (y_pred == c))
        fp = np.sum((y_true != c) & (y_pred == c))
        fn = np.sum((y_true == c) & (y_pred != c))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        assert prf["precision"][c] == pytest.approx(p) and prf["recall"][c] == pytest.approx(r)
        assert prf["f1"][c] == pytest.approx(f)
    assert prf["macro_f1"] == pytest.approx(np.mean(prf["f1"]))
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(np.trace(cm) / len(y_true))


def test_top_k_accuracy():
    scores = np.array([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]])
    assert metrics.top_k_accuracy([2, 2], scores, k=1) == 0.0
    assert metrics.top_k_accuracy([2, 2], scores, k=2) == 0.5
    assert metrics.top_k_accuracy([2, 2], scores, k=3) == 1.0


def test_metric_input_errors():
    with pytest.raises(ValueError, match="equal length"):
        metrics.accuracy([1, 2], [1])


def test_params_macs_size_of_a_cnn():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=4),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    assert metrics.count_params(model) == 8 * 3 * 9 + 8 + 8 * 2 * 9 + 8 + 288 * 10 + 10
    expected = 8 * 8 * 8 * (3 * 9) + 8 * 6 * 6 * (2 * 9) + 288 * 10
    assert metrics.count_macs(model, (3, 8, 8)) == expected
    assert metrics.model_size_bytes(model) == 4 * metrics.count_params(model)
    model[0].weight.data[:4] = 0
    assert metrics.count_params(model, nonzero=True) == sum(int(np.count_nonzero(p.data)) for p in model.parameters())
    assert metrics.count_params(model, nonzero=True) <= metrics.count_params(model) - 4 * 27
    assert metrics.measure_latency(model, np.zeros((2, 3, 8, 8), np.float32), repeats=2) > 0
