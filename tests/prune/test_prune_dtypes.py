"""Mask and result dtypes of ``compute_mask`` / ``prune`` for every default_mask dtype, as PyTorch's."""
import numpy as np
import pytest

from minicompress import prune
from prune_testing import channel_tensor

MASK_DTYPES = [np.int64, np.int32, np.uint8, np.bool_, np.float32, np.float64]


def _methods(torch, tprune, t):
    return [
        (prune.L1Unstructured(0.5), tprune.L1Unstructured(0.5)),
        (prune.RandomUnstructured(0.5, rng=0), tprune.RandomUnstructured(0.5)),
        (prune.LnStructured(0.5, 1, 0), tprune.LnStructured(0.5, 1, 0)),
        (prune.RandomStructured(0.5, 0, rng=0), tprune.RandomStructured(0.5, 0)),
        (prune.Identity(), tprune.Identity()),
        (prune.CustomFromMask(t > 0), tprune.CustomFromMask(torch.from_numpy(t > 0))),
    ]


@pytest.mark.parametrize("t_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask_dtype", MASK_DTYPES)
def test_dtypes_follow_torch(torch, t_dtype, mask_dtype):
    from torch.nn.utils import prune as tprune
    t = channel_tensor((4, 3), 0, 0, t_dtype)
    default = np.ones(t.shape, mask_dtype)
    tt, td = torch.from_numpy(t.copy()), torch.from_numpy(default.copy())
    for ours, theirs in _methods(torch, tprune, t):
        ours_mask, theirs_mask = ours.compute_mask(t, default.copy()), theirs.compute_mask(tt, td.clone())
        ours_out, theirs_out = ours.prune(t, default_mask=default.copy()), theirs.prune(tt, default_mask=td.clone())
        name = type(ours).__name__
        assert ours_mask.dtype == theirs_mask.numpy().dtype, name
        assert ours_out.dtype == theirs_out.numpy().dtype, name
        if "Random" not in name:
            assert np.array_equal(ours_out, theirs_out.numpy()), name


def test_integer_mask_on_float32_keeps_float32():
    """The regression: NumPy's float32 * int64 is float64; PyTorch's is float32."""
    t = np.array([[0.5, -2.0], [3.0, -0.1]], np.float32)
    out = prune.L1Unstructured(2).prune(t, default_mask=np.ones((2, 2), np.int64))
    assert out.dtype == np.float32 and out.tolist() == [[0.0, -2.0], [3.0, -0.0]]


@pytest.mark.parametrize("a, b, expected", [
    (np.float32, np.int64, np.float32), (np.int64, np.float32, np.float32), (np.float32, np.bool_, np.float32),
    (np.float32, np.float64, np.float64), (np.int32, np.int64, np.int64), (np.uint8, np.bool_, np.uint8),
])
def test_torch_result_type(torch, a, b, expected):
    from minicompress.prune.base import torch_result_type
    assert torch_result_type(a, b) == expected
    assert torch.result_type(torch.ones(1, dtype=torch.from_numpy(np.ones(1, a)).dtype),
                             torch.ones(1, dtype=torch.from_numpy(np.ones(1, b)).dtype)) \
        == torch.from_numpy(np.ones(1, expected)).dtype
