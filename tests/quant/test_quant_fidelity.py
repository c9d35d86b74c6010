"""Issue 15 regressions, each checked against PyTorch 2.13.0: state dicts of calibrated observers and
fake-quants load into fresh ones (QAT checkpoints resume), buffers update in place, observers accept
and refuse the configurations PyTorch does, fixed-qparams observers / fake-quants, RecordingObserver,
quint4x2, and BatchNorm's eps check."""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress import nn
from minicompress.quant import (FakeQuantize, FixedQParamsFakeQuantize, FixedQParamsObserver, HistogramObserver,
                                MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
                                PerChannelMinMaxObserver, RecordingObserver, default_fixed_qparams_range_0to1_fake_quant,
                                default_fixed_qparams_range_neg1to1_fake_quant, default_fused_act_fake_quant,
                                default_per_channel_weight_fake_quant, get_default_qat_qconfig, prepare_qat,
                                quantize_per_channel, quantize_per_tensor)

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

OBSERVERS = ["MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
             "MovingAveragePerChannelMinMaxObserver", "HistogramObserver"]
QSCHEMES = ["per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
            "per_channel_affine_float_qparams"]


# ---------------------------------------------------------------------------- state dicts load (item 1)
@pytest.mark.parametrize("cls", [PerChannelMinMaxObserver, MovingAveragePerChannelMinMaxObserver])
def test_calibrated_per_channel_observer_state_loads_into_a_fresh_one(torch, cls):
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    calibrated = cls(dtype="qint8", qscheme="per_channel_symmetric")
    calibrated(x)
    fresh = cls(dtype="qint8", qscheme="per_channel_symmetric")
    assert fresh.min_val.shape == (0,)
    fresh.load_state_dict(calibrated.state_dict())
    np.testing.assert_array_equal(fresh.min_val, calibrated.min_val)
    for ours, theirs in zip(fresh.calculate_qparams(), calibrated.calculate_qparams()):
        np.testing.assert_array_equal(ours, theirs)
    tfresh = getattr(torch.ao.quantization, cls.__name__)(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    tfresh.load_state_dict({k: torch.from_numpy(v) for k, v in calibrated.state_dict().items()})  # PyTorch does too
    np.testing.assert_array_equal(tfresh.max_val.numpy(), fresh.max_val)


def test_fake_quantize_scale_loads_at_the_calibrated_shape():
    calibrated = default_per_channel_weight_fake_quant()
    calibrated(np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32))
    fresh = default_per_channel_weight_fake_quant()
    assert fresh.scale.shape == (1,)
    fresh.load_state_dict(calibrated.state_dict())
    assert fresh.scale.shape == (3,) and fresh.zero_point.dtype == np.int32
    np.testing.assert_array_equal(fresh.scale, calibrated.scale)


def test_other_buffers_still_refuse_a_size_mismatch():
    fq = default_per_channel_weight_fake_quant()
    state = fq.state_dict()
    state["activation_post_process.eps"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="size mismatch for 'activation_post_process.eps'"):
        fq.load_state_dict(state)
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="size mismatch for 'running_mean'"):
        bn.load_state_dict({**bn.state_dict(), "running_mean": np.zeros(4, np.float32)})


def _qat_model(seed):
    nn.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    model.qconfig = get_default_qat_qconfig("fbgemm")
    return prepare_qat(model.train())


def test_qat_checkpoint_resumes_in_a_fresh_prepare_qat_model():
    """prepare_qat -> train -> state_dict -> load into a fresh prepare_qat model -> same forward."""
    rng = np.random.default_rng(2)
    trained = _qat_model(0)
    for _ in range(3):
        trained(rng.normal(size=(4, 2, 6, 6)).astype(np.float32))
    state = trained.state_dict()
    assert state["0.weight_fake_quant.scale"].shape == (3,)
    resumed = _qat_model(1)
    resumed.load_state_dict(state)
    for key, value in state.items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
    trained.apply(lambda m: m.disable_observer() if hasattr(m, "observer_enabled") else None)
    resumed.apply(lambda m: m.disable_observer() if hasattr(m, "observer_enabled") else None)
    x = rng.normal(size=(2, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(resumed(x), trained(x))


# ---------------------------------------------------------------------------- buffers in place (item 6)
@pytest.mark.parametrize("make", [MinMaxObserver, MovingAverageMinMaxObserver, HistogramObserver,
                                  lambda: PerChannelMinMaxObserver(ch_axis=0)])
def test_observer_buffers_are_updated_in_place(make):
    obs = make()
    rng = np.random.default_rng(3)
    obs(rng.normal(size=(2, 50)).astype(np.float32))            # a per-channel observer resizes here, once
    held = {name: getattr(obs, name) for name in ("min_val", "max_val", "histogram") if hasattr(obs, name)}
    obs((rng.normal(size=(2, 50)) * 5).astype(np.float32))
    for name, array in held.items():
        assert getattr(obs, name) is array, name


def test_fake_quantize_scale_and_zero_point_are_updated_in_place():
    fq = FakeQuantize()
    held = fq.scale, fq.zero_point
    for k in range(3):
        fq(np.linspace(-k - 1, k + 2, 20, dtype=np.float32))
    assert fq.scale is held[0] and fq.zero_point is held[1]
    np.testing.assert_array_equal(held[0], fq.calculate_qparams()[0])
    fused = default_fused_act_fake_quant()
    held_min = fused.activation_post_process.min_val
    fused(np.linspace(-1, 1, 9, dtype=np.float32))
    assert fused.activation_post_process.min_val is held_min


# ---------------------------------------------------------------------------- dtypes and acceptance (4, 5)
def test_zero_point_dtypes_follow_torch(torch):
    x = np.random.default_rng(4).normal(size=(4, 5)).astype(np.float32)
    for cls, qscheme, dtype in itertools.product(OBSERVERS, QSCHEMES, ["quint8", "qint8"]):
        import minicompress.quant as q
        try:
            ours = getattr(q, cls)(dtype=dtype, qscheme=qscheme)
        except NotImplementedError:
            continue
        theirs = getattr(torch.ao.quantization, cls)(dtype=getattr(torch, dtype), qscheme=getattr(torch, qscheme))
        assert ours.calculate_qparams()[1].dtype == theirs.calculate_qparams()[1].numpy().dtype   # un-observed
        ours(x)
        theirs(torch.from_numpy(x))
        for a, b in zip(ours.calculate_qparams(), theirs.calculate_qparams()):
            assert a.dtype == b.numpy().dtype, (cls, qscheme, dtype)
            np.testing.assert_array_equal(a, b.numpy())


def test_every_observer_accepts_and_refuses_what_torch_does(torch):
    import minicompress.quant as q
    for cls, dtype, qscheme, reduce_range, custom in itertools.product(
            OBSERVERS, ["quint8", "qint8", "qint32", "quint4x2"], QSCHEMES, [False, True], [None, (0, 15), (-8, 7)]):
        kw = {} if custom is None else dict(quant_min=custom[0], quant_max=custom[1])
        outcome = []
        for make in (lambda: getattr(q, cls)(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, **kw),
                     lambda: getattr(torch.ao.quantization, cls)(dtype=getattr(torch, dtype),
                                                                 qscheme=getattr(torch, qscheme),
                                                                 reduce_range=reduce_range, **kw)):
            try:
                obs = make()
                outcome.append(("ok", obs.quant_min, obs.quant_max))
            except (NotImplementedError, AssertionError, ValueError) as exc:
                outcome.append((type(exc).__name__,))
        ours, theirs = outcome
        if theirs[0] == "AssertionError":            # PyTorch asserts; we raise ValueError
            theirs = ("ValueError",)
        assert ours == theirs, (cls, dtype, qscheme, reduce_range, custom)


def test_histogram_observer_accepts_reduced_symmetric_quint8(torch):
    """Regression (issue 15): only MinMax / PerChannel observers refuse this configuration."""
    x = np.random.default_rng(5).normal(size=500).astype(np.float32)
    ours = HistogramObserver(dtype="quint8", qscheme="per_tensor_symmetric", reduce_range=True)
    theirs = torch.ao.quantization.HistogramObserver(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric,
                                                     reduce_range=True)
    ours(x)
    theirs(torch.from_numpy(x))
    for a, b in zip(ours.calculate_qparams(), theirs.calculate_qparams()):
        np.testing.assert_array_equal(a, b.numpy())


# ---------------------------------------------------------------------------- fixed qparams, recording (8)
@pytest.mark.parametrize("name", ["default_fixed_qparams_range_0to1_fake_quant",
                                  "default_fixed_qparams_range_neg1to1_fake_quant"])
def test_fixed_qparams_fake_quant_matches_torch(torch, name):
    import minicompress.quant as q
    ours, theirs = getattr(q, name)(), getattr(torch.ao.quantization.fake_quantize, name)()
    x = np.linspace(-1.5, 1.5, 301, dtype=np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    y = theirs(tx)
    np.testing.assert_array_equal(ours(x), y.detach().numpy())
    y.sum().backward()
    np.testing.assert_array_equal(ours.backward(np.ones_like(x)), tx.grad.numpy())
    assert {k: (v.dtype, v.shape) for k, v in ours.state_dict().items()} == \
        {k: (v.numpy().dtype, tuple(v.shape)) for k, v in theirs.state_dict().items()}
    for a, b in zip(ours.calculate_qparams(), theirs.calculate_qparams()):
        np.testing.assert_array_equal(a, b.numpy())
        assert a.dtype == b.numpy().dtype


def test_fixed_qparams_observer_and_fake_quant_contract():
    obs = FixedQParamsObserver(scale=1 / 256, zero_point=0)
    x = np.ones(3, np.float32)
    assert obs(x) is x
    scale, zp = obs.calculate_qparams()
    assert scale.dtype == np.float32 and zp.dtype == np.int32 and scale[0] == 1 / 256
    with pytest.raises(NotImplementedError, match="dynamic"):
        FixedQParamsObserver(scale=0.1, zero_point=0, is_dynamic=True)
    with pytest.raises(TypeError, match="must be a FixedQParamsObserver"):
        FixedQParamsFakeQuantize(observer=MinMaxObserver)
    fq = default_fixed_qparams_range_0to1_fake_quant()
    assert fq.scale is fq.activation_post_process.scale
    fq(np.linspace(-3, 3, 7, dtype=np.float32))
    assert fq.scale[0] == np.float32(1 / 256) and fq.zero_point[0] == 0
    assert default_fixed_qparams_range_neg1to1_fake_quant().zero_point[0] == 128


def test_recording_observer_keeps_copies():
    obs = RecordingObserver()
    x = np.arange(3, dtype=np.float32)
    assert obs(x) is x
    x[0] = 7
    obs(x)
    assert [v.tolist() for v in obs.get_tensor_value()] == [[0, 1, 2], [7, 1, 2]]
    with pytest.raises(RuntimeError, match="should not be called for RecordingObserver"):
        obs.calculate_qparams()


# ---------------------------------------------------------------------------- quint4x2 (8)
def _unpack4(codes):
    return np.stack([codes & 15, codes >> 4], axis=1).reshape(-1)


@given(st.integers(0, 2 ** 32 - 1), st.sampled_from([0.1, 0.25, 1 / 3, 0.07]), st.integers(0, 15))
def test_quint4x2_quantize_per_tensor_matches_torch_including_ties(torch, seed, scale, zp):
    rng = np.random.default_rng(seed)
    x = ((rng.integers(-20, 30, 64) + 0.5) * scale + rng.choice([0, 1e-7], 64)).astype(np.float32)
    q = quantize_per_tensor(x, scale, zp, "quint4x2")
    tq = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint4x2)
    assert q.int_repr.dtype == np.uint8 and q.int_repr.max() <= 15
    np.testing.assert_array_equal(q.int_repr, _unpack4(tq.int_repr().numpy())[:64])
    np.testing.assert_array_equal(q.dequantize(), tq.dequantize().numpy())


def test_quint4x2_observers_match_torch(torch):
    x = np.random.default_rng(6).normal(size=(3, 40)).astype(np.float32)
    for ours, theirs in (
            (MinMaxObserver(dtype="quint4x2", reduce_range=True),
             torch.ao.quantization.MinMaxObserver(dtype=torch.quint4x2, reduce_range=True)),
            (PerChannelMinMaxObserver(dtype="quint4x2", qscheme="per_channel_affine_float_qparams"),
             torch.ao.quantization.PerChannelMinMaxObserver(dtype=torch.quint4x2,
                                                            qscheme=torch.per_channel_affine_float_qparams)),
            (HistogramObserver(dtype="quint4x2"), torch.ao.quantization.HistogramObserver(dtype=torch.quint4x2))):
        ours(x)
        theirs(torch.from_numpy(x))
        assert (ours.quant_min, ours.quant_max) == (theirs.quant_min, theirs.quant_max) == (0, 15)
        for a, b in zip(ours.calculate_qparams(), theirs.calculate_qparams()):
            assert a.dtype == b.numpy().dtype
            np.testing.assert_array_equal(a, b.numpy())
    with pytest.raises(TypeError, match="no per-channel affine quint4x2"):
        quantize_per_channel(x, np.full(3, 0.1), np.zeros(3, np.int64), 0, "quint4x2")


# ---------------------------------------------------------------------------- BatchNorm eps = 0
def test_batchnorm_eps_zero_in_training_raises_torchs_error_naming_the_layer(torch):
    x = np.zeros((2, 3, 4, 4), np.float32)
    bn = nn.BatchNorm2d(3, eps=0.0)
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3.*batch_norm eps must be positive during training, but got 0"):
        bn(x)
    with pytest.raises(ValueError, match="batch_norm eps must be positive during training"):
        torch.nn.BatchNorm2d(3, eps=0.0)(torch.from_numpy(x))
    bn.eval()
    assert bn(x).shape == x.shape                     # eval with eps = 0 computes, as PyTorch's


def test_fused_fake_quant_names_itself_on_nan():
    fq = default_fused_act_fake_quant()
    with pytest.raises(ValueError, match=r"FusedMovingAvgObsFakeQuantize\(.*observed data contains NaN \(1 of 3"):
        fq(np.array([0.5, np.nan, 1.0], np.float32))
