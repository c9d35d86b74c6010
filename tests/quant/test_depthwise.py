"""The depthwise int8 kernel (``quant/depthwise.py``) gives the per-group GEMM path's codes bit for bit."""
import numpy as np
import pytest

from minicompress import quant
from minicompress.quant import functional as QF


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_kernel_equals_per_group_gemms(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 40))
    k = int(rng.choice([1, 3, 5]))
    stride, padding, dilation = int(rng.integers(1, 3)), int(rng.integers(0, 3)), int(rng.integers(1, 3))
    size = int(rng.integers(dilation * (k - 1) + 1, 12))
    x = quant.quantize_per_tensor(rng.standard_normal((2, c, size, size)).astype(np.float32), 0.05,
                                  int(rng.integers(0, 256)), "quint8")
    w = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    per_channel = bool(seed % 2)
    if per_channel:
        wq = quant.quantize_per_channel(w, np.abs(w).reshape(c, -1).max(1) / 127.5 + 1e-3, np.zeros(c, np.int64), 0,
                                        "qint8")
    else:
        wq = quant.quantize_per_tensor(w, float(np.abs(w).max() / 127.5), 0, "qint8")
    bias = rng.standard_normal(c).astype(np.float32)
    packs = QF.pack_weight(wq, c)
    assert hasattr(packs, "whole")
    for relu in (False, True):
        args = (bias, stride, padding, dilation, c, 0.07, int(rng.integers(0, 256)))
        fast = QF.conv2d(x, packs, *args, relu=relu)
        loop = QF.conv2d(x, list(packs), *args, relu=relu)           # a plain list: one GEMM per group
        np.testing.assert_array_equal(fast.int_repr, loop.int_repr)
        assert fast.channels_last and (fast.scale, fast.zero_point) == (loop.scale, loop.zero_point)
