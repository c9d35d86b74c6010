import math

import numpy as np
import pytest

import minicompress as mc
from minicompress import nn
from minicompress.nn import init


@pytest.mark.parametrize("shape", [(7, 5), (64, 3, 3, 3), (16, 4, 5)])
def test_fans_and_gains_match_torch(torch, shape):
    t = torch.empty(shape)
    assert init.calculate_fan_in_and_fan_out(np.empty(shape)) == torch.nn.init._calculate_fan_in_and_fan_out(t)
    for name, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param), rel=1e-15)


def _uniform_ok(a: np.ndarray, bound: float) -> None:
    """Samples of U(-bound, bound): inside the bounds, reaching close to them, std bound / sqrt 3."""
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.95 * bound
    assert abs(a.std() - bound / math.sqrt(3)) < 0.03 * bound
    assert abs(a.mean()) < 0.03 * bound


@pytest.mark.parametrize("shape", [(300, 200), (128, 32, 3, 3)])
def test_init_functions_follow_torch_formulas(torch, shape):
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(np.empty(shape))
    rng = np.random.default_rng(0)
    t = torch.empty(shape)
    for fn, kwargs in [("kaiming_uniform_", {}), ("kaiming_uniform_", dict(a=math.sqrt(5))),
                       ("kaiming_uniform_", dict(mode="fan_out", nonlinearity="relu")),
                       ("xavier_uniform_", dict(gain=2.0)), ("uniform_", dict(a=-0.3, b=0.3))]:
        ours = getattr(init, fn)(np.empty(shape, np.float32), **kwargs, rng=rng)
        theirs = getattr(torch.nn.init, fn)(t, **kwargs).numpy()
        bound = float(np.abs(theirs).max())  # PyTorch's samples reach its bound within 0.1 %
        _uniform_ok(ours, bound * 1.001)
        assert ours.dtype == np.float32
    for fn, kwargs, std in [("kaiming_normal_", dict(nonlinearity="relu"), math.sqrt(2 / fan_in)),
                            ("kaiming_normal_", dict(mode="fan_out"), math.sqrt(2 / 1.0001) / math.sqrt(fan_out)),
                            ("xavier_normal_", dict(gain=0.5), 0.5 * math.sqrt(2 / (fan_in + fan_out))),
                            ("normal_", dict(mean=1.0, std=0.1), 0.1)]:
        ours = getattr(init, fn)(np.empty(shape), **kwargs, rng=rng)
        theirs = getattr(torch.nn.init, fn)(t.double(), **kwargs).numpy()
        assert ours.std() == pytest.approx(std, rel=0.03) and theirs.std() == pytest.approx(std, rel=0.03)
        assert ours.mean() == pytest.approx(kwargs.get("mean", 0.0), abs=0.03 * std)


def test_constant_inits_and_parameters_in_place():
    p = nn.Parameter(np.full((2, 3), 7.0, np.float32))
    data = p.data
    assert init.zeros_(p) is p and p.data is data and not p.data.any()
    assert (init.ones_(np.zeros(3)) == 1).all()
    assert (init.constant_(np.zeros(3), 2.5) == 2.5).all()
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_uniform_(np.zeros(3))


@pytest.mark.parametrize("make, fan_in", [(lambda rng: nn.Linear(400, 300, rng=rng), 400),
                                          (lambda rng: nn.Conv2d(12, 96, 3, groups=3, rng=rng), 4 * 9),
                                          (lambda rng: nn.Conv1d(8, 256, 5, rng=rng), 40)])
def test_default_layer_init_is_pytorchs(make, fan_in):
    layer = make(0)
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt 5) and the bias rule both give 1 / sqrt(fan_in)
    _uniform_ok(layer.weight.data, bound)
    assert np.abs(layer.bias.data).max() <= bound
    assert np.array_equal(make(0).weight.data, layer.weight.data)  # rng= seeds it
    mc.manual_seed(1)
    a = make(None).weight.data
    mc.manual_seed(1)
    assert np.array_equal(a, make(None).weight.data)  # the global generator otherwise


def test_batchnorm_init_and_dtype_keyword():
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    assert (bn.weight.data == 1).all() and (bn.bias.data == 0).all() and bn.weight.data.dtype == np.float64
    assert (bn.running_var == 1).all() and bn.running_mean.dtype == np.float64
    assert nn.Linear(2, 2, dtype=np.float64).weight.data.dtype == np.float64
