"""Observers and qparam choosers vs PyTorch 2.13.0: running statistics and calculate_qparams, bit for bit.

HistogramObserver: exact for one calibration batch and across batches (PyTorch re-buckets the old
histogram through float32 ``linspace`` -- FMAs from both ends -- ``bucketize`` and a float32
``bincount``; ``histogram.linspace32`` / ``bincount32`` reproduce them). Zero points carry PyTorch's
dtypes: int32 for affine qschemes, int64 for symmetric ones and the un-observed default.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress.quant.histogram import linspace32
from minicompress.quant import (HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
                                MovingAveragePerChannelMinMaxObserver, PerChannelMinMaxObserver, PlaceholderObserver,
                                QConfig, calculate_qmin_qmax, choose_quantization_params, default_observer,
                                quantize_multiplier)

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@st.composite
def configs(draw, per_channel=False):
    dtype = draw(st.sampled_from(["quint8", "qint8"]))
    sym = draw(st.booleans())
    qscheme = ("per_channel_" if per_channel else "per_tensor_") + ("symmetric" if sym else "affine")
    kw = dict(dtype=dtype, qscheme=qscheme, reduce_range=draw(st.booleans()))
    if dtype == "quint8" and sym:
        kw["reduce_range"] = False
    if draw(st.booleans()):
        if dtype == "quint8":
            kw["quant_min"], kw["quant_max"] = 0, draw(st.integers(1, 255))
        else:
            lo = draw(st.integers(-128, 0))
            kw["quant_min"], kw["quant_max"] = lo, draw(st.integers(max(lo + 1, 0), min(127, lo + 255)))
            if kw["quant_max"] == 0 and lo == 0:
                kw["quant_max"] = 1
    kw["eps"] = draw(st.sampled_from([float(np.finfo(np.float32).eps), 2.0 ** -12, 0.05]))
    return kw


def batches(draw, shape_fn, n):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        kind = rng.integers(0, 4)
        x = rng.normal(size=shape_fn()) * 10.0 ** rng.integers(-3, 2) + rng.normal() * (kind == 1)
        x = np.abs(x) if kind == 2 else (-np.abs(x) if kind == 3 else x)
        out.append(x.astype(np.float32))
    return out


def torch_kwargs(torch, kw):
    t = dict(kw)
    t["dtype"], t["qscheme"] = getattr(torch, kw["dtype"]), getattr(torch, kw["qscheme"])
    return t


def assert_same_qparams(ours, theirs):
    s, z = ours.calculate_qparams()
    ts, tz = theirs.calculate_qparams()
    assert s.dtype == np.float32 and z.dtype == tz.numpy().dtype    # int32 affine, int64 symmetric
    np.testing.assert_array_equal(s.view(np.int32), ts.numpy().astype(np.float32).view(np.int32))
    np.testing.assert_array_equal(z, tz.numpy())


@pytest.mark.parametrize("dtype", ["quint8", "qint8", "qint32"])
@pytest.mark.parametrize("reduce_range", [False, True])
@pytest.mark.parametrize("custom", [None, (0, 15), (-8, 7), (-100, 100)])
def test_qmin_qmax(torch, dtype, reduce_range, custom):
    from torch.ao.quantization.utils import calculate_qmin_qmax as t_calc
    if dtype == "quint8" and custom is not None and custom[0] < 0:
        return
    lo, hi = custom if custom else (None, None)
    ours = calculate_qmin_qmax(lo, hi, custom is not None, dtype, reduce_range)
    assert ours == t_calc(lo, hi, custom is not None, getattr(torch, dtype), reduce_range)


@given(configs(), st.data(), st.sampled_from([MinMaxObserver, MovingAverageMinMaxObserver]),
       st.sampled_from([0.01, 0.5, 1.0]))
def test_per_tensor_observers_match_torch(torch, kw, data, cls, c):
    from torch.ao.quantization import observer as tobs
    args = dict(kw, averaging_constant=c) if cls is MovingAverageMinMaxObserver else dict(kw)
    ours, theirs = cls(**args), getattr(tobs, cls.__name__)(**torch_kwargs(torch, args))
    for x in batches(data.draw, lambda: (3, 17), data.draw(st.integers(1, 4))):
        assert ours(x) is x
        theirs(torch.from_numpy(x))
    np.testing.assert_array_equal(ours.min_val, theirs.min_val.numpy())
    np.testing.assert_array_equal(ours.max_val, theirs.max_val.numpy())
    assert_same_qparams(ours, theirs)
    assert set(ours.state_dict()) == set(theirs.state_dict())


@given(configs(per_channel=True), st.data(), st.integers(0, 2),
       st.sampled_from([PerChannelMinMaxObserver, MovingAveragePerChannelMinMaxObserver]))
def test_per_channel_observers_match_torch(torch, kw, data, ch_axis, cls):
    from torch.ao.quantization import observer as tobs
    args = dict(kw, ch_axis=ch_axis)
    if cls is MovingAveragePerChannelMinMaxObserver:
        args["averaging_constant"] = 0.25
    ours, theirs = cls(**args), getattr(tobs, cls.__name__)(**torch_kwargs(torch, args))
    for x in batches(data.draw, lambda: (4, 3, 5), data.draw(st.integers(1, 3))):
        ours(x)
        theirs(torch.from_numpy(x))
    np.testing.assert_array_equal(ours.min_val, theirs.min_val.numpy())
    assert_same_qparams(ours, theirs)


def test_unobserved_defaults(torch):
    from torch.ao.quantization import observer as tobs
    for ours, theirs in ((MinMaxObserver(), tobs.MinMaxObserver()),
                         (PerChannelMinMaxObserver(), tobs.PerChannelMinMaxObserver())):
        assert_same_qparams(ours, theirs)


@given(configs(), st.sampled_from([2048, 256, 100]), st.integers(0, 2 ** 32 - 1), st.integers(1, 4000))
def test_histogram_observer_single_batch_exact(torch, kw, bins, seed, size):
    from torch.ao.quantization import HistogramObserver as THist
    kw = {k: v for k, v in kw.items() if k != "eps"}
    rng = np.random.default_rng(seed)
    kind = seed % 3
    x = rng.standard_t(2, size) if kind == 0 else (rng.normal(size=size) if kind == 1 else rng.uniform(-1, 3, size))
    x = (x * 10.0 ** rng.integers(-2, 2)).astype(np.float32)
    ours, theirs = HistogramObserver(bins=bins, **kw), THist(bins=bins, **torch_kwargs(torch, kw))
    ours(x)
    theirs(torch.from_numpy(x))
    np.testing.assert_array_equal(ours.histogram, theirs.histogram.numpy())
    assert_same_qparams(ours, theirs)


@given(st.integers(0, 2 ** 32 - 1), st.integers(2, 4))
def test_histogram_observer_multi_batch_exact(torch, seed, n_batches):
    """Regression (issue 15): merged histograms used a float32 linspace without PyTorch's FMAs and a
    float64 bincount, and differed from PyTorch's by up to 0.42 counts in a few bins."""
    from torch.ao.quantization import HistogramObserver as THist
    rng = np.random.default_rng(seed)
    ours, theirs = HistogramObserver(bins=512, reduce_range=True), THist(bins=512, reduce_range=True)
    for _ in range(n_batches):
        x = (rng.normal(size=int(rng.integers(10, 400))) * rng.uniform(0.1, 3) + rng.uniform(-1, 1)).astype(np.float32)
        ours(x)
        theirs(torch.from_numpy(x))
    np.testing.assert_array_equal(ours.histogram, theirs.histogram.numpy())
    assert_same_qparams(ours, theirs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_observer_ten_batches_of_1000_exact(torch, seed):
    from torch.ao.quantization import HistogramObserver as THist
    rng = np.random.default_rng(seed)
    ours, theirs = HistogramObserver(reduce_range=True), THist(reduce_range=True)
    for _ in range(10):
        x = (rng.normal(size=1000) * rng.uniform(0.5, 3) + rng.normal()).astype(np.float32)
        ours(x)
        theirs(torch.from_numpy(x))
    np.testing.assert_array_equal(ours.histogram, theirs.histogram.numpy())
    np.testing.assert_array_equal(ours.min_val, theirs.min_val.numpy())
    assert_same_qparams(ours, theirs)


@given(st.floats(-100, 100, width=32), st.floats(2.0 ** -20, 100, width=32), st.sampled_from([2, 3, 7, 2049, 32769]))
def test_linspace32_is_torch_linspace(torch, start, width, steps):
    end = np.float32(start + width)
    expected = torch.linspace(torch.tensor(np.float32(start)), torch.tensor(end), steps).numpy()
    np.testing.assert_array_equal(linspace32(start, end, steps), expected)


def test_histogram_ignores_infinities():
    obs = HistogramObserver(bins=16)
    with pytest.warns(UserWarning, match="inf"):
        obs(np.array([np.inf, 1.0, 2.0, -np.inf], np.float32))
    assert (obs.min_val, obs.max_val) == (1.0, 2.0)


@given(st.floats(-50, 50, width=32), st.floats(-50, 50, width=32), st.booleans(), st.integers(-8, 0))
def test_choose_quantization_params_matches_torch(torch, a, b, reduce_range, tiny):
    """fbgemm's dynamic-activation chooser; tiny ranges (x 10^-8) exercise the 6.1e-5 scale floor."""
    lo, hi = sorted((a, b))
    lo, hi = np.float32(lo * 10.0 ** tiny), np.float32(hi * 10.0 ** tiny)
    x = torch.tensor([lo, hi], dtype=torch.float32)
    ts, tz = torch._choose_qparams_per_tensor(x, reduce_range)
    assert choose_quantization_params(lo, hi, 0, 255, reduce_range) == (ts, tz)


@given(st.floats(1e-9, 1e6))
def test_quantize_multiplier(real):
    m0, shift = quantize_multiplier(real)
    assert 2 ** 30 <= m0 < 2 ** 31
    assert abs(m0 * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -31


def test_observer_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        MinMaxObserver()(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="inf"):
        MovingAverageMinMaxObserver()(np.array([0.0, np.inf], np.float32))
    with pytest.raises(TypeError, match="floating"):
        MinMaxObserver()(np.array([1, 2]))
    with pytest.raises(ValueError, match="include 0"):
        MinMaxObserver(quant_min=1, quant_max=10)
    with pytest.raises(NotImplementedError):
        MinMaxObserver(dtype="quint8", qscheme="per_tensor_symmetric", reduce_range=True)
    with pytest.raises(NotImplementedError):
        MinMaxObserver(qscheme="per_channel_affine")
    with pytest.raises(ValueError, match="qscheme"):
        MinMaxObserver(qscheme="per_tensor")
    with pytest.raises(RuntimeError, match="PlaceholderObserver"):
        PlaceholderObserver().calculate_qparams()
    obs = PerChannelMinMaxObserver(ch_axis=1)
    obs(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="channels"):
        obs(np.zeros((2, 4), np.float32))


def test_factories_and_qconfig():
    a, b = default_observer(), default_observer()
    assert a is not b and (a.quant_min, a.quant_max) == (0, 127)
    assert default_observer.with_args(quant_max=63)().quant_max == 63
    with pytest.raises(ValueError, match="instance"):
        QConfig(activation=MinMaxObserver(), weight=default_observer)
