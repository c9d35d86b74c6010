"""A residual model through prepare -> calibrate -> convert, ours vs PyTorch 2.13's eager flow.

QuantStub, conv-bn-relu, conv-bn, a FloatFunctional ``add_relu`` with the first conv's output (the
residual), Hardswish, AdaptiveAvgPool2d(1), Flatten, Linear, Sigmoid, DeQuantStub -- built in both
libraries from one state dict. As in ``test_quant_flows.py``, weights, BN statistics and inputs are
dyadic (parameters in {0, +-1/2, +-1}, var 4 or 1/4, eps 0, inputs in multiples of 1/4) so that both
float engines calibrate on bit-identical activations; the int8 codes must then be equal at every stage.
In PyTorch the quantized conv returns channels-last tensors, so the add, the pooling and our twin all
take the NHWC code paths (``QTensor.channels_last``). HistogramObserver qconfigs calibrate on one
batch: merging histograms across batches is close, not bit-exact (``docs/quantization.md`` section 4; a
scale can move by one float32 ulp); MinMax qconfigs calibrate on three. After the Hardswish (a division
by 6) and the 8x8 mean the float activations themselves are no longer exact, so the two engines'
observers can see ranges one float32 ulp apart (as in ``test_static_ptq_random_weights_same_codes``):
there the scales agree to 1e-6 relative, and the int8 codes must still be equal.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress import nn, no_grad
from minicompress import quant as Q

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
C = 8


class Residual(nn.Module):
    """Our model; forward only (post-training quantization needs no backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.quant, self.dequant = Q.QuantStub(), Q.DeQuantStub()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, C, 3, padding=1), nn.BatchNorm2d(C, eps=0.0), nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(C, C, 3, padding=1), nn.BatchNorm2d(C, eps=0.0)
        self.skip = nn.FloatFunctional()
        self.act = nn.Hardswish()
        self.pool, self.flatten, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, 4)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        h = self.relu1(self.bn1(self.conv1(self.quant(x))))
        y = self.skip.add_relu(self.bn2(self.conv2(h)), h)
        return self.dequant(self.gate(self.fc(self.flatten(self.pool(self.act(y))))))


def torch_twin(torch):
    import torch.ao.quantization as tq

    class TorchResidual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv1, self.bn1, self.relu1 = (torch.nn.Conv2d(1, C, 3, padding=1), torch.nn.BatchNorm2d(C, eps=0.0),
                                                torch.nn.ReLU())
            self.conv2, self.bn2 = torch.nn.Conv2d(C, C, 3, padding=1), torch.nn.BatchNorm2d(C, eps=0.0)
            self.skip = torch.ao.nn.quantized.FloatFunctional()
            self.act = torch.nn.Hardswish()
            self.pool, self.flatten, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(C, 4)
            self.gate = torch.nn.Sigmoid()

        def forward(self, x):
            h = self.relu1(self.bn1(self.conv1(self.quant(x))))
            y = self.skip.add_relu(self.bn2(self.conv2(h)), h)
            return self.dequant(self.gate(self.fc(self.flatten(self.pool(self.act(y))))))

    return TorchResidual()


def halves(rng, shape):
    return rng.choice(np.float32([-1, -0.5, 0, 0.5, 1]), size=shape)


def quarters(rng, shape):
    return (rng.integers(-16, 17, size=shape) / 4).astype(np.float32)


def dyadic_model(rng):
    m = Residual().eval()
    for p in m.parameters():
        p.data[...] = halves(rng, p.shape)
    for bn in (m.bn1, m.bn2):
        bn.running_mean[...] = halves(rng, C)
        bn.running_var[...] = rng.choice([4.0, 0.25], size=C)
    return m


FUSE = [["conv1", "bn1", "relu1"], ["conv2", "bn2"]]


def both_converted(torch, rng, qconfig_name):
    import torch.ao.quantization as tq
    ours = dyadic_model(rng)
    theirs = torch_twin(torch)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    theirs.eval()
    ours, theirs = Q.fuse_modules(ours, FUSE), tq.fuse_modules(theirs, FUSE)
    if qconfig_name == "default":
        ours.qconfig, theirs.qconfig, batches = Q.default_qconfig, tq.default_qconfig, 3
    else:
        ours.qconfig, theirs.qconfig = Q.get_default_qconfig(qconfig_name), tq.get_default_qconfig(qconfig_name)
        batches = 1
    ours, theirs = Q.prepare(ours), tq.prepare(theirs)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    with no_grad():
        for _ in range(batches):
            xb = quarters(rng, (int(rng.integers(2, 6)), 1, 8, 8))
            ours(xb)
            theirs(torch.from_numpy(xb))
    return Q.convert(ours), tq.convert(theirs)


def stages(model, x, quantize):
    """Codes after each quantized stage (the two models have the same attribute names)."""
    q = model.quant(x)
    h = model.relu1(model.bn1(model.conv1(q)))
    y = model.skip.add_relu(model.bn2(model.conv2(h)), h)
    a = model.act(y)
    p = model.pool(a)
    f = model.fc(model.flatten(p))
    return {"conv1": h, "add_relu": y, "hardswish": a, "pool": p, "fc": f, "sigmoid": model.gate(f)}


EXACT_FLOAT_CALIBRATION = ("conv1", "add_relu", "sigmoid")


@settings(max_examples=10)
@given(st.integers(0, 2 ** 32 - 1), st.sampled_from(["x86", "qnnpack", "default"]))
def test_residual_model_int8_codes_equal_torch(torch, seed, qconfig_name):
    rng = np.random.default_rng(seed)
    qm, tqm = both_converted(torch, rng, qconfig_name)
    assert isinstance(qm.skip, Q.QFunctional) and isinstance(qm.act, Q.QuantizedHardswish)
    assert (float(qm.skip.scale), int(qm.skip.zero_point)) == (tqm.skip.scale, tqm.skip.zero_point)
    x = quarters(rng, (5, 1, 8, 8))
    with no_grad():
        ours, theirs = stages(qm, x, True), stages(tqm, torch.from_numpy(x), True)
    for name in ours:
        np.testing.assert_array_equal(ours[name].int_repr, theirs[name].int_repr().numpy(), err_msg=name)
        assert ours[name].zero_point == theirs[name].q_zero_point(), name
        if name in EXACT_FLOAT_CALIBRATION:
            assert ours[name].scale == theirs[name].q_scale(), name
        else:
            assert ours[name].scale == pytest.approx(theirs[name].q_scale(), rel=1e-6), name
    np.testing.assert_array_equal(qm(x), tqm(torch.from_numpy(x)).numpy())     # sigmoid: fixed (1/256, 0)


def merges_model(mod, stub, destub, functional):
    """QuantStub, Conv2d, PReLU / LeakyReLU branches merged by FloatFunctional mul and cat (either library)."""

    class Merges(mod.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant, self.conv = stub(), destub(), mod.Conv2d(1, 4, 3, padding=1)
            self.prelu, self.leaky = mod.PReLU(4), mod.LeakyReLU(0.125)
            self.mul, self.cat = functional(), functional()

        def forward(self, x):
            h = self.conv(self.quant(x))
            a, b = self.prelu(h), self.leaky(h)
            return self.dequant(self.cat.cat([self.mul.mul(a, b), a], 1))

    return Merges()


def test_prelu_leaky_mul_cat_model_codes_equal_torch(torch):
    import torch.ao.quantization as tq
    rng = np.random.default_rng(5)
    ours = merges_model(nn, Q.QuantStub, Q.DeQuantStub, nn.FloatFunctional).eval()
    for p in ours.parameters():
        p.data[...] = halves(rng, p.shape)
    ours.prelu.weight.data[...] = np.float32([0.25, 0.5, 1.0, 0.75])
    theirs = merges_model(torch.nn, tq.QuantStub, tq.DeQuantStub, torch.ao.nn.quantized.FloatFunctional).eval()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    ours.qconfig, theirs.qconfig = Q.default_qconfig, tq.default_qconfig
    # nnq.PReLU quantizes its slopes to quint8: give it a quint8 weight observer (else PyTorch warns)
    ours.prelu.qconfig = Q.QConfig(activation=Q.default_observer, weight=Q.MinMaxObserver.with_args(dtype="quint8"))
    theirs.prelu.qconfig = tq.QConfig(activation=tq.default_observer,
                                      weight=tq.MinMaxObserver.with_args(dtype=torch.quint8))
    ours, theirs = Q.prepare(ours), tq.prepare(theirs)
    xb = quarters(rng, (3, 1, 6, 6))
    with no_grad():
        ours(xb)
        theirs(torch.from_numpy(xb))
    qm, tqm = Q.convert(ours), tq.convert(theirs)
    assert isinstance(qm.prelu, Q.QuantizedPReLU) and isinstance(qm.cat, Q.QFunctional)
    x = quarters(rng, (2, 1, 6, 6))
    np.testing.assert_array_equal(qm(x), tqm(torch.from_numpy(x)).numpy())


def test_layer_norm_module_matches_nnq_layer_norm(torch):
    import torch.ao.quantization as tq
    rng = np.random.default_rng(2)
    ours = nn.Sequential(Q.QuantStub(), nn.Linear(6, 40), nn.LayerNorm(40), Q.DeQuantStub()).eval()
    ours[2].weight.data[...] = rng.normal(size=40)
    ours[2].bias.data[...] = rng.normal(size=40)
    theirs = torch.nn.Sequential(tq.QuantStub(), torch.nn.Linear(6, 40), torch.nn.LayerNorm(40), tq.DeQuantStub()).eval()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    ours.qconfig, theirs.qconfig = Q.default_qconfig, tq.default_qconfig
    ours, theirs = Q.prepare(ours), tq.prepare(theirs)
    xb = quarters(rng, (8, 6))
    with no_grad():
        ours(xb)
        theirs(torch.from_numpy(xb))
    qm, tqm = Q.convert(ours), tq.convert(theirs)
    assert isinstance(qm[2], Q.QuantizedLayerNorm)
    x = quarters(rng, (5, 6))
    q_ours, q_torch = qm[:3](x), tqm[:3](torch.from_numpy(x))
    np.testing.assert_array_equal(q_ours.int_repr, q_torch.int_repr().numpy())
    assert q_ours.scale == pytest.approx(q_torch.q_scale(), rel=1e-6)      # float LayerNorm calibration: 1-ulp ranges


class AddBlock(nn.Module):
    """Our merge module nn.Add then ReLU (as models/resnet.py's BasicBlock); PyTorch's twin: FloatFunctional.add."""

    def __init__(self):
        super().__init__()
        self.quant, self.dequant = Q.QuantStub(), Q.DeQuantStub()
        self.conv, self.add, self.relu = nn.Conv2d(2, 2, 3, padding=1), nn.Add(), nn.ReLU()

    def forward(self, x):
        x = self.quant(x)
        return self.dequant(self.relu(self.add(self.conv(x), x)))


def test_nn_add_converts_to_the_same_codes_as_torch_float_functional_add(torch):
    import torch.ao.quantization as tq

    class TorchAddBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv, self.add, self.relu = (torch.nn.Conv2d(2, 2, 3, padding=1), torch.ao.nn.quantized.FloatFunctional(),
                                              torch.nn.ReLU())

        def forward(self, x):
            x = self.quant(x)
            return self.dequant(self.relu(self.add.add(self.conv(x), x)))

    rng = np.random.default_rng(3)
    ours = AddBlock().eval()
    for p in ours.parameters():
        p.data[...] = halves(rng, p.shape)
    theirs = TorchAddBlock().eval()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    ours.qconfig, theirs.qconfig = Q.default_qconfig, tq.default_qconfig
    ours, theirs = Q.prepare(ours), tq.prepare(theirs)
    for _ in range(2):
        xb = quarters(rng, (3, 2, 5, 5))                  # 150 codes: a vector body and a scalar tail
        with no_grad():
            ours(xb)
        theirs(torch.from_numpy(xb))
    qm, tqm = Q.convert(ours), tq.convert(theirs)
    assert isinstance(qm.add, Q.QuantizedAdd)
    assert (float(qm.add.scale), int(qm.add.zero_point)) == (tqm.add.scale, tqm.add.zero_point)
    x = quarters(rng, (3, 2, 5, 5))
    np.testing.assert_array_equal(qm(x), tqm(torch.from_numpy(x)).numpy())


def test_prepare_observes_merges_like_torch():
    m = Residual().eval()
    m.qconfig = Q.default_qconfig
    prepared = Q.prepare(m)
    assert isinstance(prepared.skip.activation_post_process, Q.MinMaxObserver)
    assert hasattr(prepared.act, "activation_post_process")
    assert not hasattr(prepared.gate, "activation_post_process")          # fixed qparams: not observed
    assert not hasattr(prepared.pool, "activation_post_process")
    add = nn.Sequential(nn.Add(), nn.Cat(1))
    add.qconfig = Q.default_qconfig
    assert all(hasattr(mod, "activation_post_process") for mod in Q.prepare(add))


def test_add_scalar_is_not_observed_and_converts():
    ff = nn.FloatFunctional()
    ff.qconfig = Q.default_qconfig
    wrapper = nn.Sequential(ff)
    wrapper.qconfig = Q.default_qconfig
    prepared = Q.prepare(wrapper)
    prepared[0].add(np.ones(3, np.float32), np.full(3, 2.0, np.float32))
    prepared[0].add_scalar(np.full(3, 100.0, np.float32), 1.0)              # must not widen the observed range
    assert float(prepared[0].activation_post_process.max_val) == 3.0
    qf = Q.convert(prepared)[0]
    x = Q.quantize_per_tensor(np.float32([0, 1, 2]), 0.1, 10, "quint8")
    assert qf.mul_scalar(x, -2.0).zero_point == 245


def test_plain_plus_in_a_converted_residual_names_the_module():
    class PlainResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.conv = Q.QuantStub(), nn.Conv2d(1, 1, 1)

        def forward(self, x):
            q = self.quant(x)
            return self.conv(q) + q

    m = PlainResidual().eval()
    m.qconfig = Q.default_qconfig
    prepared = Q.prepare(m)
    with no_grad():
        prepared(np.ones((1, 1, 2, 2), np.float32))
    with pytest.raises(TypeError, match=r"PlainResidual\(\)\.forward: '\+' on a QTensor and a QTensor.*nn\.Add"):
        Q.convert(prepared)(np.ones((1, 1, 2, 2), np.float32))
    qadd = Q.QuantizedAdd(0.1, 0)
    with pytest.raises(TypeError, match=r"QuantizedAdd\(scale=0.1, zero_point=0\): expected QTensor inputs, "
                                        r"got \['QTensor', 'ndarray'\]"):
        qadd(Q.quantize_per_tensor(np.zeros(2, np.float32), 0.1, 0, "quint8"), np.zeros(2, np.float32))
