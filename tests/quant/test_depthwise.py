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


@pytest.mark.parametrize("seed", range(4))
def test_depthwise_kernel_equals_its_numpy_twin(seed):
    from minicompress.quant import depthwise, reference
    rng = np.random.default_rng(seed)
    m, c, k = int(rng.integers(1, 50)), int(rng.integers(1, 20)), int(rng.choice([1, 9, 25]))
    cols = rng.integers(0, 256, (m, c * k)).astype(np.uint8)
    w = rng.integers(-128, 128, (c, k)).astype(np.int8)
    w_zp = rng.integers(-5, 6, c).astype(np.int64)
    bias_term = rng.normal(0, 100, c).astype(np.float32)
    mult = rng.uniform(1e-4, 1e-2, c).astype(np.float32)
    a_zp, out_zp = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    for relu in (False, True):
        out = np.empty((m, c), np.uint8)
        depthwise.depthwise_requant(cols, w, a_zp, w_zp, bias_term, mult, out_zp, relu, out)
        np.testing.assert_array_equal(out, reference.depthwise_requant(cols, w, a_zp, w_zp, bias_term, mult,
                                                                       out_zp, relu))
