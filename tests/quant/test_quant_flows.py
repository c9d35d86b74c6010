"""fuse_modules, quantize_dynamic and prepare / calibrate / convert vs PyTorch 2.13's eager flows.

The torch twin of every model is built from our ``state_dict`` and calibrated on the same batches.
Static PTQ is bit-identical when the float calibration pass is: models here use parameters and
BatchNorm means in {0, +-1/2, +-1}, eps = 0, running_var = 4 or 1/4, and inputs in multiples of 1/4
up to 4, so every float32 sum is exact whatever the summation order (worst case 24 significant bits
at the last Linear) and both engines observe identical ranges. With arbitrary float weights the two float engines
sum in different orders; an observer's min/max can then differ in the last bit, shifting a scale by
one float32 ulp -- the random-weight test checks the integer codes are still equal and the dequantized
outputs agree to 1e-6 relative (one ulp of scale, never a whole quantization step).
"""
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress import nn, no_grad
from minicompress import quant as Q

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def to_torch(torch, model, tmodel):
    tmodel.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return tmodel.eval()


def cnn(mod, stub, destub, c=3, h=8):
    """QuantStub, Conv-BN-ReLU, MaxPool, Flatten, Linear-ReLU, Linear, DeQuantStub (either library)."""
    return mod.Sequential(stub(), mod.Conv2d(1, c, 3, padding=1), mod.BatchNorm2d(c, eps=0.0), mod.ReLU(),
                          mod.MaxPool2d(2), mod.Flatten(), mod.Linear(c * (h // 2) ** 2, 12), mod.ReLU(),
                          mod.Linear(12, 5), destub())


def dyadic(rng, shape, scale=16):
    return (rng.integers(-16, 17, size=shape) / scale).astype(np.float32)


def halves(rng, shape):
    """Values in {0, +-1/2, +-1}: one significant bit, so products add no mantissa bits."""
    return rng.choice(np.float32([-1, -0.5, 0, 0.5, 1]), size=shape)


def dyadic_cnn(rng):
    m = cnn(nn, Q.QuantStub, Q.DeQuantStub).eval()
    for p in m.parameters():
        p.data[...] = halves(rng, p.shape)
    bn = m[2]
    bn.running_mean[...] = halves(rng, 3)
    bn.running_var[...] = rng.choice([4.0, 0.25], size=3)
    return m


GROUPS = [["1", "2", "3"], ["6", "7"]]
QCONFIGS = ["x86", "fbgemm", "qnnpack", "onednn", "default", "per_channel"]


def qconfigs(torch, name):
    import torch.ao.quantization as tq
    if name == "default":
        return Q.default_qconfig, tq.default_qconfig
    if name == "per_channel":
        return Q.default_per_channel_qconfig, tq.default_per_channel_qconfig
    return Q.get_default_qconfig(name), tq.get_default_qconfig(name)


def ptq(torch, model, qconfig_name, batches):
    """Our and torch's fuse -> prepare -> calibrate -> convert on the same model and batches."""
    import torch.ao.quantization as tq
    tmodel = to_torch(torch, model, cnn(torch.nn, tq.QuantStub, tq.DeQuantStub))
    ours, theirs = Q.fuse_modules(model, GROUPS), tq.fuse_modules(tmodel, GROUPS)
    ours.qconfig, theirs.qconfig = qconfigs(torch, qconfig_name)
    ours, theirs = Q.prepare(ours), tq.prepare(theirs)
    with no_grad():
        for xb in batches:
            ours(xb)
            theirs(torch.from_numpy(xb))
    return Q.convert(ours), tq.convert(theirs)


@settings(max_examples=8)
@given(st.integers(0, 2 ** 32 - 1), st.sampled_from(QCONFIGS))
def test_static_ptq_bit_identical_to_torch(torch, seed, qconfig_name):
    rng = np.random.default_rng(seed)
    batches = [dyadic(rng, (int(rng.integers(2, 9)), 1, 8, 8), scale=4) for _ in range(3)]
    qm, tqm = ptq(torch, dyadic_cnn(rng), qconfig_name, batches)
    x = dyadic(rng, (7, 1, 8, 8), scale=4)
    y, ty = qm(x), tqm(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(y.view(np.int32), ty.view(np.int32))
    assert isinstance(qm[1], Q.QuantizedConvReLU2d) and isinstance(qm[6], Q.QuantizedLinearReLU)
    assert (float(qm[8].scale), int(qm[8].zero_point)) == (tqm[8].scale, tqm[8].zero_point)


@settings(max_examples=6)
@given(st.integers(0, 2 ** 32 - 1))
def test_static_ptq_random_weights_same_codes(torch, seed):
    import minicompress
    minicompress.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = cnn(nn, Q.QuantStub, Q.DeQuantStub).eval()
    batches = [rng.normal(size=(8, 1, 8, 8)).astype(np.float32) for _ in range(3)]
    qm, tqm = ptq(torch, model, "default", batches)
    x = rng.normal(size=(9, 1, 8, 8)).astype(np.float32)
    q_ours, q_torch = qm[:9](x), tqm[:9](torch.from_numpy(x))         # stop before DeQuantize
    np.testing.assert_array_equal(q_ours.int_repr, q_torch.int_repr().numpy())
    assert q_ours.scale == pytest.approx(q_torch.q_scale(), rel=1e-6)
    np.testing.assert_allclose(qm(x), tqm(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-7)


def test_prepared_state_dict_keys_match_torch(torch):
    import torch.ao.quantization as tq
    model = cnn(nn, Q.QuantStub, Q.DeQuantStub).eval()
    tmodel = to_torch(torch, model, cnn(torch.nn, tq.QuantStub, tq.DeQuantStub))
    ours, theirs = Q.fuse_modules(model, GROUPS), tq.fuse_modules(tmodel, GROUPS)
    ours.qconfig, theirs.qconfig = qconfigs(torch, "x86")
    assert set(Q.prepare(ours).state_dict()) == set(tq.prepare(theirs).state_dict())
    assert "1.0.weight" in ours.state_dict() and "qconfig" in ours.__dict__


@given(st.integers(0, 2 ** 32 - 1), st.booleans())
def test_quantize_dynamic_matches_torch(torch, seed, per_channel):
    import minicompress
    minicompress.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))
    tmodel = to_torch(torch, model, torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(),
                                                         torch.nn.Linear(32, 10)))
    import torch.ao.quantization as tq
    if per_channel:
        spec, tspec = {nn.Linear: Q.per_channel_dynamic_qconfig}, {torch.nn.Linear: tq.per_channel_dynamic_qconfig}
    else:
        spec, tspec = {nn.Linear}, {torch.nn.Linear}
    qm = Q.quantize_dynamic(model, spec, dtype="qint8")
    tqm = tq.quantize_dynamic(tmodel, tspec, dtype=torch.qint8)
    x = (rng.normal(size=(6, 20)) * rng.uniform(0.1, 3)).astype(np.float32)
    np.testing.assert_array_equal(qm(x).view(np.int32), tqm(torch.from_numpy(x)).numpy().view(np.int32))
    assert isinstance(model[0], nn.Linear) and isinstance(qm[0], Q.DynamicQuantizedLinear)   # inplace=False
    assert qm[0].weight.dtype == np.int8


def test_fusion_matches_torch_utils_fusion(torch):
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 2, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    mean, var = rng.normal(size=4).astype(np.float32), rng.uniform(0.1, 2, 4).astype(np.float32)
    g, beta = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    t = [torch.from_numpy(a) for a in (w, b, mean, var)]
    for ours, theirs in ((Q.fuse_conv_bn_weights, fuse_conv_bn_weights),
                         (Q.fuse_linear_bn_weights, fuse_linear_bn_weights)):
        ww = w if ours is Q.fuse_conv_bn_weights else w.reshape(4, -1)
        tw = torch.from_numpy(ww)
        for bias, tbias in ((b, t[1]), (None, None)):
            fw, fb = ours(ww, bias, mean, var, 1e-5, g, beta)
            tfw, tfb = theirs(tw, tbias, t[2], t[3], 1e-5, torch.from_numpy(g), torch.from_numpy(beta))
            np.testing.assert_array_equal(fw, tfw.detach().numpy())
            np.testing.assert_array_equal(fb, tfb.detach().numpy())


def test_fuse_modules_structure_and_errors():
    model = cnn(nn, Q.QuantStub, Q.DeQuantStub).eval()
    fused = Q.fuse_modules(model, GROUPS)
    assert isinstance(fused[1], Q.ConvReLU2d) and isinstance(fused[2], nn.Identity)
    assert isinstance(fused[6], Q.LinearReLU) and isinstance(model[1], nn.Conv2d)
    x = np.random.default_rng(1).normal(size=(2, 1, 8, 8)).astype(np.float32)
    with no_grad():
        np.testing.assert_allclose(fused(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eval"):
        Q.fuse_modules(model.train(), GROUPS)
    with pytest.raises(ValueError, match="cannot fuse"):
        Q.fuse_modules(model.eval(), [["1", "4"]])
    with pytest.raises(ValueError, match="no submodule"):
        Q.fuse_modules(model, [["1", "99"]])


def test_flow_errors():
    model = cnn(nn, Q.QuantStub, Q.DeQuantStub).eval()
    with pytest.raises(ValueError, match="qconfig"):
        Q.prepare(model)
    model.qconfig = Q.default_qconfig
    with pytest.raises(ValueError, match="calibration"):
        Q.convert(Q.prepare(model))
    prepared = Q.prepare(model)
    prepared(np.ones((1, 1, 8, 8), np.float32))
    qm = Q.convert(prepared)
    with pytest.raises(TypeError, match="expected a NumPy array, got QTensor"):
        nn.BatchNorm2d(3).eval()(qm[1](qm[0](np.ones((1, 1, 8, 8), np.float32))))
    with pytest.raises(ValueError, match="NaN"):
        Q.prepare(model)(np.full((1, 1, 8, 8), np.nan, np.float32))


def test_int8_state_dict_is_small_and_reloads(tmp_path):
    import minicompress
    minicompress.manual_seed(3)
    model = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 64))
    qm = Q.quantize_dynamic(model, {nn.Linear})
    float_file, int8_file = io.BytesIO(), io.BytesIO()
    np.savez(float_file, **model.state_dict())
    np.savez(int8_file, **qm.state_dict())
    assert len(float_file.getvalue()) / len(int8_file.getvalue()) >= 3.9
    minicompress.manual_seed(4)
    fresh = Q.quantize_dynamic(nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 64)), {nn.Linear})
    int8_file.seek(0)
    with np.load(int8_file) as f:
        fresh.load_state_dict(dict(f))
    x = np.random.default_rng(0).normal(size=(4, 512)).astype(np.float32)
    np.testing.assert_array_equal(fresh(x), qm(x))


def test_digits_int8_accuracy_within_half_a_point():
    """Trained digits MLP: static and dynamic int8 lose at most 0.5 accuracy points on the test split."""
    import minicompress
    from minicompress.data import DataLoader, load_digits
    from minicompress.optim import Adam
    from minicompress.train import evaluate, fit
    minicompress.manual_seed(0)
    xtr, ytr, xte, yte = load_digits(flatten=True)
    model = nn.Sequential(Q.QuantStub(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10), Q.DeQuantStub())
    fit(model, nn.CrossEntropyLoss(), Adam(model.parameters(), lr=1e-2), DataLoader(xtr, ytr, 64, shuffle=True),
        epochs=15, quiet=True)
    model.eval()
    acc = evaluate(model, xte, yte)["accuracy"]
    dyn = evaluate(Q.quantize_dynamic(model, {nn.Linear}), xte, yte)["accuracy"]
    fused = Q.fuse_modules(model, [["1", "2"]])
    fused.qconfig = Q.get_default_qconfig("x86")
    prepared = Q.prepare(fused)
    with no_grad():
        prepared(xtr)
    static = evaluate(Q.convert(prepared), xte, yte)["accuracy"]
    assert acc > 0.9
    assert abs(static - acc) <= 0.005 + 1e-9 and abs(dyn - acc) <= 0.005 + 1e-9


@given(st.integers(0, 2 ** 32 - 1), st.sampled_from([(2, None, 0), (3, 1, 1), (2, 1, 0), (3, 2, 1)]))
def test_passthrough_layers_match_torch_on_quantized_tensors(torch, seed, pool):
    """ReLU / MaxPool2d / Flatten on codes == PyTorch's ops on quantized tensors (scale, zp kept)."""
    k, s, p = pool
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 3, 7, 6)).astype(np.float32)
    qx = Q.quantize_per_tensor(x, 0.05, 100, "quint8")
    tx = torch.quantize_per_tensor(torch.from_numpy(x), 0.05, 100, torch.quint8)
    pairs = [(Q.QuantizedReLU(), torch.nn.ReLU()), (Q.QuantizedFlatten(), torch.nn.Flatten()),
             (Q.QuantizedMaxPool2d(k, s, p), torch.nn.MaxPool2d(k, s, p))]
    for ours, theirs in pairs:
        got, want = ours(qx), theirs(tx)
        np.testing.assert_array_equal(got.int_repr, want.int_repr().numpy())
        assert (got.scale, got.zero_point) == (want.q_scale(), want.q_zero_point())
    np.testing.assert_array_equal(Q.QuantizedReLU()(x), np.maximum(x, 0))     # float input: the float layer


# ---------------------------------------------------------------------------- hooks survive other tools
def _conv_net(seed):
    from minicompress import nn as mnn
    from minicompress.quant import DeQuantStub, QuantStub
    return mnn.Sequential(QuantStub(), mnn.Conv2d(1, 4, 3, padding=1, rng=seed), mnn.ReLU(), mnn.Flatten(),
                          mnn.Linear(4 * 6 * 6, 3, rng=seed), DeQuantStub())


def test_count_macs_leaves_the_observers_of_a_prepared_model_working():
    """Regression: count_macs used to delete the observers' patched forward (calibration then saw nothing)."""
    from minicompress import metrics, quant
    model = _conv_net(0).eval()
    model.qconfig = quant.get_default_qconfig("x86")
    model[4].qconfig = quant.QConfig(activation=quant.MinMaxObserver, weight=quant.default_weight_observer)
    prepared = quant.prepare(model)
    assert metrics.count_macs(prepared, (1, 6, 6)) == 4 * 9 * 36 + 144 * 3
    observer = prepared[4].activation_post_process
    assert np.isinf(observer.min_val).all()                  # the MAC count's zeros were not observed
    prepared(np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32))
    assert np.isfinite(observer.min_val).all() and observer.max_val > observer.min_val


def test_trace_leaves_a_models_forward_hooks_in_place():
    """Regression: prune's trace patched and then deleted each leaf's forward."""
    from minicompress import nn as mnn
    from minicompress.prune import dependency_graph
    model = mnn.Sequential(mnn.Linear(3, 4, rng=0), mnn.ReLU(), mnn.Linear(4, 2, rng=0))
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert [n.name for n in dependency_graph(model, np.ones((2, 3), np.float32)).graph.nodes] == ["0", "1", "2"]
    model(np.ones((5, 3), np.float32))
    assert seen == [(2, 4), (5, 4)] and model[1].forward_hooks()


def test_count_macs_on_a_qat_model_keeps_forward_and_backward():
    from minicompress import metrics, quant
    from minicompress.quant import qat
    model = _conv_net(1).train()
    model.qconfig = qat.get_default_qat_qconfig("x86")
    prepared = qat.prepare_qat(model)
    metrics.count_macs(prepared, (1, 6, 6))
    prepared.train()
    y = prepared(np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32))
    prepared.backward(np.ones_like(y))                       # used to raise "backward() called without a forward()"
    assert prepared[1].weight.grad is not None and prepared[1].activation_post_process.forward_hooks() == []
