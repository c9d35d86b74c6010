"""Whole models: layers chained in a Sequential agree with the same PyTorch model, weights via state_dict.

Layers followed by BatchNorm have no bias: in training its gradient is exactly zero (BN removes the
mean), so both libraries would only be comparing rounding noise."""
import numpy as np
import pytest
from gradcheck import check_module_grads
from oracle import compare_with_torch

from minicompress import nn


def _cnn(lib, **kw):
    return lib.Sequential(
        lib.Conv2d(2, 6, 3, padding=1, bias=False, **kw), lib.BatchNorm2d(6), lib.ReLU(), lib.MaxPool2d(2),
        lib.Conv2d(6, 8, 3, groups=2, padding="same", **kw), lib.GELU(), lib.AdaptiveAvgPool2d((2, 3)),
        lib.Flatten(), lib.Dropout(0.5), lib.Linear(48, 5, **kw), lib.LogSoftmax(dim=1))


def _mlp(lib, **kw):
    return lib.Sequential(lib.Linear(12, 16, bias=False, **kw), lib.BatchNorm1d(16), lib.LeakyReLU(0.1),
                          lib.Linear(16, 8, **kw), lib.Tanh(), lib.Linear(8, 4, **kw), lib.Sigmoid())


@pytest.mark.parametrize("train", [True, False])
def test_cnn_matches_torch(torch, train):
    x = np.random.default_rng(0).standard_normal((4, 2, 9, 10)).astype(np.float32)
    ours = _cnn(nn, rng=0)
    ours[8].p = 0.0 if train else 0.5  # dropout's random stream is not PyTorch's: identity in training here
    theirs = _cnn(torch.nn)
    theirs[8].p = ours[8].p
    compare_with_torch(torch, ours, theirs, x, train=train, check_repr=False)


def test_mlp_matches_torch(torch):
    x = np.random.default_rng(1).standard_normal((6, 12)).astype(np.float32)
    ours, theirs = _mlp(nn, rng=1), _mlp(torch.nn)
    compare_with_torch(torch, ours, theirs, x)
    assert repr(ours) == repr(theirs)


def test_cnn_finite_differences():
    model = _cnn(nn, rng=2)
    model[8].p = 0.0
    check_module_grads(model, np.random.default_rng(2).standard_normal((2, 2, 6, 6)))
