import numpy as np
import pytest

from minicompress.data import DataLoader, load_digits


def test_digits_shapes_dtypes_and_range():
    x_train, y_train, x_test, y_test = load_digits()
    assert x_train.shape == (1438, 1, 8, 8) and x_test.shape == (359, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))


def test_split_is_stratified_fixed_and_disjoint():
    a = load_digits()
    b = load_digits()
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    _, y_train, _, y_test = a
    counts_test, counts_all = np.bincount(y_test), np.bincount(np.concatenate([y_train, y_test]))
    assert np.all(np.abs(counts_test - 0.2 * counts_all) <= 0.5)
    x_train, _, x_test, _ = load_digits(flatten=True)
    assert x_train.shape[1] == 64
    # the 1,797 images are exactly partitioned (no sample in both parts)
    assert len(x_train) + len(x_test) == 1797


def test_loader_covers_every_sample_once_per_epoch():
    x = np.arange(10)[:, None].astype(np.float32)
    y = np.arange(10)
    loader = DataLoader(x, y, batch_size=3, shuffle=True, rng=1)
    seen = np.concatenate([yb for _, yb in loader])
    assert sorted(seen.tolist()) == list(range(10)) and len(loader) == 4
    assert [len(yb) for _, yb in DataLoader(x, y, 3, drop_last=True)] == [3, 3, 3]
    first, second = [np.concatenate([yb for _, yb in loader]) for _ in range(2)]
    assert not np.array_equal(first, second)          # a new permutation each epoch
    for xb, yb in loader:
        assert np.array_equal(xb[:, 0].astype(int), yb)


def test_loader_rejects_bad_input():
    with pytest.raises(ValueError, match="different lengths"):
        DataLoader(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros((3, 2)), np.zeros(3), batch_size=0)
