"""int32 accumulator overflow: reproduced as PyTorch's fbgemm computes it, and said (issue 12, item 1);
gemmlowp's int32 bias; observers' defaults and infinite ranges (item 4)."""
import warnings

import numpy as np
import pytest

from minicompress import nn, quant
from minicompress.quant import functional as QF


def test_dynamic_linear_that_wraps_matches_torch_and_warns(torch):
    """The issue's case: Linear(2**18, 2) with all weights -1 on ones gives +4128.25, not -262144, in
    PyTorch 2.13 as here; here it also warns (and raises with overflow='raise')."""
    k = 2 ** 18
    lin = nn.Linear(k, 2, rng=0)
    lin.weight.data[...] = -1
    lin.bias.data[...] = 0
    x = np.ones((1, k), np.float32)
    dyn = quant.quantize_dynamic(nn.Sequential(lin).eval(), {nn.Linear})
    with pytest.warns(quant.Int32OverflowWarning, match=r"K = 262144.*PyTorch's fbgemm wraps the same way"):
        ours = dyn(x)
    t = torch.nn.Linear(k, 2)
    t.weight.data.fill_(-1)
    t.bias.data.zero_()
    theirs = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(t).eval(), {torch.nn.Linear},
                                                    dtype=torch.qint8)(torch.from_numpy(x))
    np.testing.assert_array_equal(ours, theirs.detach().numpy())
    assert abs(ours[0, 0] - (-k)) > 1e5                      # wrapped: far from the true -262144
    with pytest.raises(OverflowError, match="linear_dynamic: the int32 accumulator may wrap"):
        QF.linear_dynamic(x, dyn[0].weight_qtensor(), None, overflow="raise")


def _static(k, a_code, a_zp, w_code, w_zp):
    x = quant.QTensor(np.full((1, k), a_code, np.uint8), 0.1, a_zp, None, "quint8")
    w = quant.QTensor(np.full((1, k), w_code, np.int8), 0.1, w_zp, None, "qint8")
    return x, w


@pytest.mark.parametrize("k, wraps", [(33_025, False), (33_026, True)])
def test_static_linear_warns_exactly_from_the_first_k_that_can_wrap(k, wraps):
    """Worst-case codes and zero points: (255 - 0) * |-128 - 127| * K leaves int32 from K = 33 026."""
    x, w = _static(k, 255, 0, -128, 127)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        QF.linear(x, w, None, 1.0, 0)
    assert any(issubclass(c.category, quant.Int32OverflowWarning) for c in caught) == wraps


def test_the_bound_uses_the_actual_input_before_warning():
    x, w = _static(40_000, 10, 0, -128, 127)                 # the code range could wrap, this input cannot
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QF.linear(x, w, None, 1.0, 0)
    with pytest.raises(ValueError, match="overflow must be one of"):
        QF.linear(x, w, None, 1.0, 0, overflow="ignore")


def test_usual_layers_never_warn():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(512, 64, rng=0)).eval()
    dyn = quant.quantize_dynamic(model, {nn.Linear})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dyn(rng.standard_normal((8, 512)).astype(np.float32))


def test_gemmlowp_refuses_a_bias_beyond_int32():
    x, w = _static(4, 3, 0, 5, 0)
    with pytest.raises(OverflowError, match=r"requant='gemmlowp': bias\[0\] = 1e\+30 .* outside int32"):
        QF.linear(x, w, np.array([1e30], np.float32), 1.0, 0, requant="gemmlowp")


def test_an_observer_that_saw_nothing_warns_as_pytorch(torch):
    with pytest.warns(UserWarning, match="must run observer before calling calculate_qparams"):
        scale, zp = quant.MinMaxObserver().calculate_qparams()
    with pytest.warns(UserWarning, match="must run observer before calling calculate_qparams"):
        tscale, tzp = torch.ao.quantization.MinMaxObserver().calculate_qparams()
    assert scale.tolist() == tscale.tolist() and zp.tolist() == tzp.tolist()


def test_infinite_ranges_raise_instead_of_giving_inf_scales():
    from minicompress.quant.qparams import calculate_qparams
    with pytest.raises(ValueError, match="the observed range is not finite"):
        calculate_qparams(np.float32(-np.inf), np.float32(1.0), 0, 255, "per_tensor_affine", "quint8")
    with pytest.raises(ValueError, match="not finite"):
        calculate_qparams(np.array([0.0, np.nan], np.float32), np.array([1.0, 2.0], np.float32), -128, 127,
                          "per_channel_symmetric", "qint8")
