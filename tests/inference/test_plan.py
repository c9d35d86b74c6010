"""``inference.freeze``: int8 plans give the model's codes bit for bit, float plans its values to rounding;
unknown modules, hooks and bad input keep the model's behaviour."""
import copy
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress import inference, models, nn, quant
from minicompress.inference.plan import ModuleCall

from calibration import calibrated_int8


def _static_int8(float_model: nn.Module, fusion: list, x: np.ndarray, backend: str = "x86") -> nn.Module:
    wrapped = quant.fuse_modules(nn.Sequential(quant.QuantStub(), *float_model.children(), quant.DeQuantStub())
                                 .eval(), fusion)
    return calibrated_int8(wrapped, x, backend)


def _randomise_bn(model: nn.Module, rng: np.random.Generator) -> None:
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean[:] = rng.normal(0, 0.3, m.num_features)
            m.running_var[:] = rng.uniform(0.5, 2.0, m.num_features)
            m.weight.data[:] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[:] = rng.normal(0, 0.2, m.num_features)


def _model_out(model: nn.Module, x: np.ndarray):
    with nn.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.eval()(x)


def _step_kinds(plan, x) -> list[str]:
    return [type(s).__name__ for s in plan.steps(x)]


@pytest.mark.parametrize("backend", ["x86", "fbgemm", "qnnpack"])
def test_int8_digits_cnn_plan_equals_the_model_bit_for_bit(backend):
    rng = np.random.default_rng(0)
    nn.manual_seed(0)
    cnn = models.digits_cnn().eval()
    _randomise_bn(cnn, rng)
    x = rng.uniform(0, 1, (96, 1, 8, 8)).astype(np.float32)
    int8 = _static_int8(cnn, [["1", "2", "3"], ["4", "5", "6"], ["9", "10"]], x[:64], backend)
    plan = inference.freeze(int8)
    for batch in (1, 7, 64, 96, 7):                    # 7 twice: the second call reuses its steps
        np.testing.assert_array_equal(plan(x[:batch]), _model_out(int8, x[:batch]))
    assert "ModuleCall" not in _step_kinds(plan, x[:7])


conv_cases = st.fixed_dictionaries({
    "c": st.sampled_from([1, 3, 4, 8]), "mult": st.sampled_from([1, 2]), "k": st.sampled_from([1, 3, 5]),
    "stride": st.integers(1, 2), "pad": st.integers(0, 2), "dil": st.integers(1, 2),
    "depthwise": st.booleans(), "pool": st.sampled_from([(2, 2, 0), (3, 2, 1), (3, 1, 1)]),
    "size": st.integers(5, 11), "batch": st.integers(1, 5), "seed": st.integers(0, 2 ** 16)})


@given(conv_cases)
def test_int8_plan_of_random_conv_chains_equals_the_model(case):
    """Convolutions (dense, grouped, depthwise with multipliers), poolings and a Flatten -> Linear whose weight
    columns the plan reorders for NHWC codes: the plan's codes are the model's."""
    rng = np.random.default_rng(case["seed"])
    c, k, pad, dil = case["c"], case["k"], case["pad"], case["dil"]
    if case["size"] + 2 * pad < dil * (k - 1) + 1 or pad > k // 2 * dil + 1:
        return
    mid = c * case["mult"] * 2
    groups = mid // 2 if case["depthwise"] else 2
    layers = [nn.Conv2d(c, mid, k, stride=case["stride"], padding=pad, dilation=dil), nn.ReLU(),
              nn.Conv2d(mid, mid, 3, padding=1, groups=groups), nn.BatchNorm2d(mid), nn.ReLU()]
    pk, ps, pp = case["pool"]
    layers.append(nn.MaxPool2d(pk, stride=ps, padding=pp))
    feat = nn.Sequential(*layers).eval()
    x = rng.normal(0, 1, (case["batch"], c, case["size"], case["size"])).astype(np.float32)
    with nn.no_grad():
        shape = feat(x).shape
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(int(np.prod(shape[1:])), 5)).eval()
    _randomise_bn(model, rng)
    int8 = _static_int8(model, [["1", "2"], ["3", "4", "5"]], np.concatenate([x, 2 * x]))
    plan = inference.freeze(int8)
    np.testing.assert_array_equal(plan(x), _model_out(int8, x))
    assert "ModuleCall" not in _step_kinds(plan, x)


def test_float_plan_folds_batchnorm_and_agrees_to_rounding():
    rng = np.random.default_rng(1)
    nn.manual_seed(1)
    for model, shape in ((models.digits_cnn(), (33, 1, 8, 8)), (models.digits_mlp((32, 16)), (33, 64))):
        model.eval()
        _randomise_bn(model, rng)
        x = rng.uniform(0, 1, shape).astype(np.float32)
        plan = inference.freeze(model)
        want = _model_out(model, x)
        got = plan(x)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
        kinds = _step_kinds(plan, x)
        assert "ModuleCall" not in kinds
        assert len(kinds) < len(list(model.children()))      # BatchNorm and ReLU were absorbed


def test_float64_models_run_in_float64():
    nn.manual_seed(2)
    model = models.digits_cnn().to(np.float64).eval()
    x = np.random.default_rng(2).uniform(0, 1, (5, 1, 8, 8))
    got = inference.freeze(model)(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _model_out(model, x), rtol=0, atol=1e-12)


def test_unknown_modules_and_hooks_run_as_calls():
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    seen = []
    model[3].register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    x = rng.normal(size=(2, 2, 6, 6)).astype(np.float32)
    plan = inference.freeze(model)
    np.testing.assert_allclose(plan(x), _model_out(model, x), rtol=0, atol=1e-6)
    steps = plan.steps(x)
    calls = [s for s in steps if isinstance(s, ModuleCall)]
    assert [type(s.module).__name__ for s in calls] == ["Tanh", "ReLU"]        # the hooked ReLU is called
    assert len(seen) == 3                    # the build traces the model once and runs the step once; the model
    plan(x)
    assert len(seen) == 4


def test_the_plan_keeps_its_own_copy_and_leaves_the_model_alone():
    nn.manual_seed(4)
    model = models.digits_cnn()
    model.train()
    x = np.random.default_rng(4).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    reference = copy.deepcopy(model)
    plan = inference.freeze(model)
    assert model.training                                   # freeze did not switch the model to eval
    model[0].weight.data[:] = 0                             # changed before the plan's first call
    np.testing.assert_allclose(plan(x), _model_out(reference, x), rtol=0, atol=1e-5)


def test_outputs_are_new_arrays_and_shapes_are_cached():
    nn.manual_seed(5)
    model = models.digits_cnn().eval()
    plan = inference.freeze(model)
    x = np.random.default_rng(5).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    a = plan(x)
    b = plan(x * 0.5)
    assert not np.shares_memory(a, b) and not np.array_equal(a, b)
    for n in range(1, inference.MAX_SHAPES + 3):
        plan(np.ones((n, 1, 8, 8), np.float32))
    assert len(plan._plans) == inference.MAX_SHAPES


def test_bad_input_gets_the_models_own_errors():
    nn.manual_seed(6)
    rng = np.random.default_rng(6)
    cnn = models.digits_cnn().eval()
    x = rng.uniform(0, 1, (8, 1, 8, 8)).astype(np.float32)
    int8 = _static_int8(cnn, [["1", "2", "3"], ["4", "5", "6"], ["9", "10"]], x)
    for model in (cnn, int8):
        plan = inference.freeze(model)
        with pytest.raises(TypeError, match="floating-point input"):
            plan(np.ones((2, 1, 8, 8), np.int64))
        with pytest.raises(ValueError, match=r"Conv|conv"):
            plan(np.ones((2, 3, 8, 8), np.float32))              # 3 channels into a 1-channel convolution
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    plan = inference.freeze(int8)
    plan(x)
    with pytest.raises(ValueError, match="NaN"):
        plan(nan)


def test_depthwise_saturation_is_said_by_the_plan_too():
    """fbgemm's saturating depthwise pairs (quant/depthwise.py): the plan computes the same codes and warns."""
    c = 8
    wq = quant.QTensor(np.full((c, 1, 3, 3), -128, np.int8), 0.01, 0, None, "qint8")
    conv = quant.QuantizedConv2d(c, c, (3, 3), (1, 1), (1, 1), (1, 1), c, wq, None, 0.5, 0)
    model = nn.Sequential(quant.Quantize(1.0, 0), conv, quant.DeQuantize()).eval()
    x = np.full((1, c, 4, 4), 255.0, np.float32)
    with pytest.warns(quant.functional.Int16SaturationWarning):
        want = model(x)
    plan = inference.freeze(model)
    with pytest.warns(quant.functional.Int16SaturationWarning):
        plan(x)
    with pytest.warns(quant.functional.Int16SaturationWarning):
        np.testing.assert_array_equal(plan(x), want)


def test_pruned_layers_with_parametrizations_run_as_calls():
    from minicompress import prune
    nn.manual_seed(7)
    model = models.digits_cnn().eval()
    prune.l1_unstructured(model[3], "weight", amount=0.5)
    x = np.random.default_rng(7).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    plan = inference.freeze(model)
    np.testing.assert_allclose(plan(x), _model_out(model, x), rtol=0, atol=1e-5)
    called = [type(s.module).__name__ for s in plan.steps(x) if isinstance(s, ModuleCall)]
    assert called == ["Conv2d", "BatchNorm2d"]              # a BatchNorm folds only into a conv step


@pytest.mark.parametrize("arch", ["resnet20", "mobilenet_v2"])
def test_int8_architectures_plan_equals_the_model(arch):
    """Branching models are traced (``nn.trace_graph``): residual adds run as module calls on NHWC views,
    convolutions as steps; the codes are the model's."""
    rng = np.random.default_rng(8)
    if arch == "resnet20":
        model = models.resnet20(num_classes=10, in_channels=1, rng=0)
    else:
        model = models.replace_relu(models.mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1,
                                                        small_input=True, rng=0))
    model.eval()
    _randomise_bn(model, rng)
    x = rng.uniform(0, 1, (20, 1, 8, 8)).astype(np.float32)
    fused = copy.deepcopy(model)
    fused.fuse_model()
    int8 = calibrated_int8(fused, x)
    plan = inference.freeze(int8)
    for batch in (1, 20):
        np.testing.assert_array_equal(plan(x[:batch]), _model_out(int8, x[:batch]))
    kinds = _step_kinds(plan, x)
    assert kinds.count("ConvStep") == sum(isinstance(m, quant.QuantizedConv2d) for m in int8.modules())
    fplan = inference.freeze(model)
    want = _model_out(model, x)
    np.testing.assert_allclose(fplan(x), want, rtol=0, atol=1e-5 * np.abs(want).max())
    fkinds = _step_kinds(fplan, x)
    assert "ModuleCall" not in fkinds and "AddStep" in fkinds           # adds, ReLU6, pooling, stubs: all steps
    if arch == "mobilenet_v2":
        assert "DepthwiseStep" in fkinds


class _RawAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) + x                        # an operation no hook can see


def test_models_that_trace_cannot_follow_run_as_one_call():
    model = _RawAdd().eval()
    x = np.random.default_rng(9).normal(size=(3, 4)).astype(np.float32)
    plan = inference.freeze(model)
    np.testing.assert_array_equal(plan(x), _model_out(model, x))
    assert [type(s.module).__name__ for s in plan.steps(x)] == ["_RawAdd"]


def test_dynamic_int8_mlp_plan_equals_the_model_bit_for_bit():
    """Dynamic int8 Linears and a BatchNorm1d that follows one (not foldable into int8 weights) keep the
    module's arithmetic exactly."""
    rng = np.random.default_rng(10)
    nn.manual_seed(10)
    mlp = models.digits_mlp((48, 24)).eval()
    _randomise_bn(mlp, rng)
    dyn = quant.quantize_dynamic(mlp, {nn.Linear})
    x = rng.uniform(0, 1, (37, 64)).astype(np.float32)
    plan = inference.freeze(dyn)
    np.testing.assert_array_equal(plan(x), _model_out(dyn, x))
    kinds = _step_kinds(plan, x)
    assert "ModuleCall" not in kinds and kinds.count("BatchNormStep") == 2


@pytest.mark.parametrize("k, stride, pad, dil", [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 2, 1), (3, 1, 2, 2), (1, 1, 0, 1)])
def test_float_depthwise_and_pointwise_steps_agree_to_rounding(k, stride, pad, dil):
    rng = np.random.default_rng(k * 10 + stride + pad + dil)
    model = nn.Sequential(nn.Conv2d(6, 6, k, stride=stride, padding=pad, dilation=dil, groups=6), nn.BatchNorm2d(6),
                          nn.ReLU(), nn.Conv2d(6, 4, 1), nn.ReLU()).eval()
    _randomise_bn(model, rng)
    x = rng.normal(size=(3, 6, 9, 9)).astype(np.float32)
    plan = inference.freeze(model)
    want = _model_out(model, x)
    np.testing.assert_allclose(plan(x), want, rtol=0, atol=2e-6 * np.abs(want).max())
    assert _step_kinds(plan, x) == ["_FromLogical", "ConvStep"]


@pytest.mark.parametrize("k, stride, pad, dil, act", [
    (3, 1, 1, (1, 1), nn.ReLU6()), (3, 2, 1, (2, 1), nn.Hardtanh(-0.5, 0.5)), (5, 1, 2, (1, 1), nn.ReLU()),
    (3, 1, 2, (2, 2), nn.ReLU6()), (1, 2, 0, (1, 1), nn.Identity())])
def test_float_dense_conv_steps_fuse_the_clamp_and_agree_to_rounding(k, stride, pad, dil, act):
    """Column dilation 1 takes the implicit GEMM (``conv_f32``), dilation (2, 2) im2col + BLAS; either fuses a
    following ReLU / ReLU6 / Hardtanh and a residual FloatFunctional add."""
    rng = np.random.default_rng(k + stride + pad + sum(dil))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(5, 7, k, stride=stride, padding=pad, dilation=dil)
            self.bn, self.act, self.skip = nn.BatchNorm2d(7), act, nn.FloatFunctional()
            self.conv2 = nn.Conv2d(7, 7, 3, padding=1)

        def forward(self, x):
            h = self.act(self.bn(self.conv(x)))
            return self.skip.add_relu(self.conv2(h), h)

    model = Block().eval()
    _randomise_bn(model, rng)
    x = rng.normal(size=(3, 5, 11, 10)).astype(np.float32)
    plan = inference.freeze(model)
    want = _model_out(model, x)
    np.testing.assert_allclose(plan(x), want, rtol=0, atol=2e-6 * np.abs(want).max())
    kinds = [kind for kind in _step_kinds(plan, x) if kind != "_Pass"]         # an Identity passes through
    assert kinds == ["_FromLogical", "ConvStep", "AddStep"], kinds
    assert plan.steps(x)[0].step.implicit == (dil[1] == 1)


def test_an_observed_float_add_stays_a_module_call():
    model = nn.Sequential(nn.Conv2d(2, 2, 1)).eval()
    skip = nn.FloatFunctional()

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.skip = model, skip

        def forward(self, x):
            return self.skip.add(self.body(x), x)

    res = Residual().eval()
    res.skip.activation_post_process = quant.MinMaxObserver()
    x = np.random.default_rng(12).normal(size=(2, 2, 4, 4)).astype(np.float32)
    plan = inference.freeze(res)
    np.testing.assert_allclose(plan(x), _model_out(res, x), rtol=0, atol=1e-6)
    assert _step_kinds(plan, x)[-1] == "ModuleCall"
