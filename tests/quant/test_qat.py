"""QAT modules and flows against PyTorch 2.13's torch.ao.nn.qat / intrinsic.qat, plus finite differences.

Module parity: the same float weights and qconfig in both libraries, several training batches; the
fake-quantized weights (scale / zero-point sequence) are bit-identical, outputs and every gradient
agree to float32 rounding of the convolution / matmul (RTOL, ATOL below).
"""
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicompress import nn
from minicompress.quant import fake_quantize as fq
from minicompress.quant import qat_modules as qat
from minicompress.quant.qat import get_default_qat_qconfig

pytestmark = [pytest.mark.filterwarnings("ignore:.*deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning")]

RTOL, ATOL = 2e-5, 2e-5
FD_RTOL = 1e-6
seeds = st.integers(0, 2**32 - 1)
QC = namedtuple("QC", "activation weight")


def qconfigs(torch, name):
    """(ours, torch's) QConfig-like pairs of fake-quant factories."""
    from torch.ao.quantization import QConfig
    from torch.ao.quantization import fake_quantize as tfq
    act, wt = {"per_tensor": ("default_fake_quant", "default_weight_fake_quant"),
               "fused_per_channel": ("default_fused_act_fake_quant", "default_fused_per_channel_wt_fake_quant")}[name]
    return (QC(getattr(fq, act), getattr(fq, wt)),
            QConfig(activation=getattr(tfq, act), weight=getattr(tfq, wt)))


def tensor(torch, a):
    return torch.tensor(a, requires_grad=True)


def check_close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs.detach().numpy() if hasattr(theirs, "detach") else theirs,
                               rtol=RTOL, atol=ATOL, err_msg=what)


def copy_into(torch, module, arrays):
    with torch.no_grad():
        for name, value in arrays.items():
            target = module
            *path, leaf = name.split(".")
            for p in path:
                target = getattr(target, p)
            getattr(target, leaf).copy_(torch.tensor(value))


# ---------------------------------------------------------------------------- Linear / Conv2d
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("config", ["per_tensor", "fused_per_channel"])
@given(seed=seeds)
def test_qat_linear_matches_torch(torch, relu, config, seed):
    import torch.ao.nn.intrinsic.qat as tniqat
    import torch.ao.nn.qat as tnnqat
    rng = np.random.default_rng(seed)
    ours_qc, torch_qc = qconfigs(torch, config)
    cls, tcls = (qat.LinearReLU, tniqat.LinearReLU) if relu else (qat.Linear, tnnqat.Linear)
    ours = cls(6, 4, qconfig=ours_qc, rng=rng)
    theirs = tcls(6, 4, qconfig=torch_qc)
    copy_into(torch, theirs, {"weight": ours.weight.data, "bias": ours.bias.data})
    for step in range(3):
        x = rng.standard_normal((5, 6)).astype(np.float32)
        dy = rng.standard_normal((5, 4)).astype(np.float32)
        ours.zero_grad()
        y = ours(x)
        dx = ours.backward(dy)
        xt = tensor(torch, x)
        yt = theirs(xt)
        (yt * torch.tensor(dy)).sum().backward()
        assert np.array_equal(ours.weight_fake_quant.scale, theirs.weight_fake_quant.scale.numpy())
        check_close(y, yt, "y")
        check_close(dx, xt.grad, "dx")
        check_close(ours.weight.grad, theirs.weight.grad, "dW")
        check_close(ours.bias.grad, theirs.bias.grad, "db")
        theirs.zero_grad()


@pytest.mark.parametrize("relu", [False, True])
@given(seed=seeds, groups=st.sampled_from([1, 2]), stride=st.sampled_from([1, 2]))
def test_qat_conv2d_matches_torch(torch, relu, seed, groups, stride):
    import torch.ao.nn.intrinsic.qat as tniqat
    import torch.ao.nn.qat as tnnqat
    rng = np.random.default_rng(seed)
    ours_qc, torch_qc = qconfigs(torch, "fused_per_channel")
    cls = qat.ConvReLU2d if relu else qat.Conv2d
    tcls = tniqat.ConvReLU2d if relu else tnnqat.Conv2d
    ours = cls(4, 6, 3, stride=stride, padding=1, groups=groups, qconfig=ours_qc, rng=rng)
    theirs = tcls(4, 6, 3, stride=stride, padding=1, groups=groups, qconfig=torch_qc)
    copy_into(torch, theirs, {"weight": ours.weight.data, "bias": ours.bias.data})
    for _ in range(2):
        x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
        y = ours(x)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        ours.zero_grad()
        dx = ours.backward(dy)
        xt = tensor(torch, x)
        theirs.zero_grad()
        (theirs(xt) * torch.tensor(dy)).sum().backward()
        assert np.array_equal(ours.weight_fake_quant.zero_point, theirs.weight_fake_quant.zero_point.numpy())
        check_close(y, theirs(torch.tensor(x)), "y")
        check_close(dx, xt.grad, "dx")
        check_close(ours.weight.grad, theirs.weight.grad, "dW")
        check_close(ours.bias.grad, theirs.bias.grad, "db")


# ---------------------------------------------------------------------------- Conv + BN
def make_convbn(torch, rng, relu, bias, config="fused_per_channel"):
    import torch.ao.nn.intrinsic.qat as tniqat
    ours_qc, torch_qc = qconfigs(torch, config)
    cls, tcls = (qat.ConvBnReLU2d, tniqat.ConvBnReLU2d) if relu else (qat.ConvBn2d, tniqat.ConvBn2d)
    ours = cls(3, 5, 3, padding=1, bias=bias, qconfig=ours_qc, rng=rng)
    theirs = tcls(3, 5, 3, padding=1, bias=bias, qconfig=torch_qc)
    ours.bn.bias.data[:] = rng.standard_normal(5)
    ours.bn.running_mean[:] = rng.standard_normal(5)
    ours.bn.running_var[:] = rng.uniform(0.5, 2.0, 5)
    arrays = {"weight": ours.weight.data, "bn.weight": ours.bn.weight.data, "bn.bias": ours.bn.bias.data,
              "bn.running_mean": ours.bn.running_mean, "bn.running_var": ours.bn.running_var}
    if bias:
        arrays["bias"] = ours.bias.data
    copy_into(torch, theirs, arrays)
    return ours, theirs


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@given(seed=seeds)
def test_qat_conv_bn_matches_torch_in_training_and_after_freeze_bn(torch, relu, bias, seed):
    rng = np.random.default_rng(seed)
    ours, theirs = make_convbn(torch, rng, relu, bias)
    for step in range(4):
        if step == 2:                                   # BN switches to running statistics
            ours.apply(qat.freeze_bn_stats)
            theirs.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
            ours.train(), theirs.train()                # a frozen BN stays in eval mode
            assert not ours.bn.training and not theirs.bn.training
        # start each step from the same running statistics (float32 summation order makes them differ
        # in the last bit after an update, which would flip fake-quant ties of the folded weight)
        copy_into(torch, theirs, {"bn.running_mean": ours.bn.running_mean, "bn.running_var": ours.bn.running_var})
        x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
        y = ours(x)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        ours.zero_grad()
        dx = ours.backward(dy)
        xt = tensor(torch, x)
        theirs.zero_grad()
        yt = theirs(xt)
        (yt * torch.tensor(dy)).sum().backward()
        # torch.sqrt(running_var + eps) is not always correctly rounded (1 ulp off), so the folded
        # weight and its scale may differ in the last bit
        np.testing.assert_allclose(ours.weight_fake_quant.scale, theirs.weight_fake_quant.scale.numpy(), rtol=1e-6)
        check_close(y, yt, f"y step {step}")
        check_close(dx, xt.grad, "dx")
        check_close(ours.weight.grad, theirs.weight.grad, "dW")
        check_close(ours.bn.weight.grad, theirs.bn.weight.grad, "dgamma")
        check_close(ours.bn.bias.grad, theirs.bn.bias.grad, "dbeta")
        if bias:
            check_close(ours.bias.grad, theirs.bias.grad, "db")
        check_close(ours.bn.running_mean, theirs.bn.running_mean, "running_mean")
        check_close(ours.bn.running_var, theirs.bn.running_var, "running_var")
        assert int(ours.bn.num_batches_tracked) == int(theirs.bn.num_batches_tracked)


def test_qat_state_dict_keys_match_torch(torch):
    rng = np.random.default_rng(0)
    ours, theirs = make_convbn(torch, rng, relu=True, bias=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours_qc, torch_qc = qconfigs(torch, "per_tensor")
    import torch.ao.nn.qat as tnnqat
    assert list(qat.Linear(3, 2, qconfig=ours_qc).state_dict()) == list(
        tnnqat.Linear(3, 2, qconfig=torch_qc).state_dict())


# ---------------------------------------------------------------------------- finite differences
def numeric_grad(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f()
        x[i] = old - h
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def check_fd(module, x, params):
    """Every parameter gradient and dx against centred differences of sum(y * dy), float64."""
    rng = np.random.default_rng(1)
    y = module(x)
    dy = rng.standard_normal(y.shape)
    module.zero_grad()
    dx = module.backward(dy)
    loss = lambda: float(np.sum(module(x) * dy))
    for name, analytic in [("x", dx)] + [(n, p.grad) for n, p in params]:
        target = x if name == "x" else dict(params)[name].data
        numeric = numeric_grad(loss, target)
        # relative to the largest entry; 1e-8 absolute for gradients that are exactly 0 (the conv bias
        # ahead of a batch-statistics BN), where the numeric value is rounding noise
        assert np.abs(analytic - numeric).max() <= FD_RTOL * np.abs(analytic).max() + 1e-8, name


@pytest.mark.parametrize("kind", ["linear_relu", "conv", "conv_bn_relu", "conv_bn_frozen"])
def test_qat_backward_matches_finite_differences_with_fake_quant_off(kind):
    """With fake-quant disabled the QAT modules are smooth: every gradient must equal float64 finite
    differences (for Conv-BN this includes gamma's path through the folding factor f = gamma / sigma,
    whose two terms must cancel; BN momentum 0 keeps the running statistics fixed across calls)."""
    rng = np.random.default_rng(0)
    qc = QC(fq.default_fake_quant, fq.default_per_channel_weight_fake_quant)
    if kind == "linear_relu":
        m, x = qat.LinearReLU(4, 3, qconfig=qc, rng=rng), rng.standard_normal((5, 4))
    elif kind == "conv":
        m, x = qat.Conv2d(2, 3, 3, padding=1, qconfig=qc, rng=rng), rng.standard_normal((2, 2, 4, 4))
    else:
        m, x = qat.ConvBnReLU2d(2, 3, 3, padding=1, bias=True, momentum=0.0, qconfig=qc, rng=rng), \
            rng.standard_normal((2, 2, 4, 4))
        m.bn.running_var[:] = rng.uniform(0.5, 2, 3)
        m.bn.bias.data[:] = rng.standard_normal(3)
        if kind == "conv_bn_frozen":                 # BN on running statistics: the conv bias matters now
            m.freeze_bn_stats()
    m.to(np.float64)
    m.apply(fq.disable_fake_quant)
    check_fd(m, x, list(m.named_parameters()))


def test_to_float_folds_bn_like_the_frozen_qat_forward():
    """ConvBnReLU2d.to_float() (BN folded with running statistics, the weights convert quantizes) computes
    what the QAT module computes with BN frozen and fake-quant off."""
    rng = np.random.default_rng(4)
    qc = QC(fq.default_fake_quant, fq.default_per_channel_weight_fake_quant)
    m = qat.ConvBnReLU2d(2, 3, 3, padding=1, bias=True, qconfig=qc, rng=rng)
    m.bn.running_mean[:] = rng.standard_normal(3)
    m.bn.running_var[:] = rng.uniform(0.5, 2, 3)
    m.bn.bias.data[:] = rng.standard_normal(3)
    m.freeze_bn_stats()
    m.apply(fq.disable_fake_quant)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    folded = m.to_float()
    assert type(folded).__name__ == "ConvReLU2d" and type(folded[0]) is nn.Conv2d
    np.testing.assert_allclose(folded(x), m(x), rtol=1e-5, atol=1e-5)


def test_ste_mask_reaches_the_weight_gradient_exactly():
    """Clamped weights (outside the fake-quant range) get exactly zero gradient, others exactly dW_q."""
    rng = np.random.default_rng(2)
    obs = fq.FakeQuantize.with_args(quant_min=-8, quant_max=7, dtype="qint8", qscheme="per_tensor_symmetric")
    m = qat.Linear(4, 3, qconfig=QC(fq.default_fake_quant, obs), rng=rng)
    m(rng.standard_normal((2, 4)).astype(np.float32))         # observe the weight once
    m.weight_fake_quant.disable_observer()
    m.weight.data[0, 0] = 100.0                                # far outside the (frozen) range
    x = rng.standard_normal((2, 4)).astype(np.float32)
    m.zero_grad()
    m(x)
    m.backward(np.ones((2, 3), np.float32))
    expected = np.ones((2, 3), np.float32).T @ x
    expected[0, 0] = 0.0
    assert np.array_equal(m.weight.grad, expected)


def test_qat_modules_require_a_qconfig_and_4d_input_for_conv_bn():
    with pytest.raises(ValueError, match="qconfig must be provided"):
        qat.Linear(3, 2)
    qc = QC(fq.default_fake_quant, fq.default_weight_fake_quant)
    with pytest.raises(ValueError, match="expected input \\(N, 3, H, W\\)"):
        qat.ConvBn2d(3, 4, 3, qconfig=qc)(np.zeros((3, 5, 5), np.float32))
    with pytest.raises(TypeError, match="from_float only works for Linear"):
        qat.Linear.from_float(nn.Conv2d(1, 1, 1))


# ---------------------------------------------------------------------------- qconfigs
@pytest.mark.parametrize("backend", ["x86", "fbgemm", "qnnpack", "onednn"])
@pytest.mark.parametrize("version", [0, 1])
def test_default_qat_qconfig_matches_torch(torch, backend, version):
    ours = get_default_qat_qconfig(backend, version)
    theirs = torch.ao.quantization.get_default_qat_qconfig(backend, version)
    for o, t in ((ours.activation(), theirs.activation()), (ours.weight(), theirs.weight())):
        obs, tobs = o.activation_post_process, t.activation_post_process
        assert type(o).__name__ == type(t).__name__ and type(obs).__name__ == type(tobs).__name__
        assert (o.quant_min, o.quant_max, o.ch_axis) == (tobs.quant_min, tobs.quant_max, t.ch_axis)
        assert o.dtype == str(t.dtype).replace("torch.", "") and o.qscheme == str(t.qscheme).replace("torch.", "")
        assert obs.averaging_constant == tobs.averaging_constant
    with pytest.raises(ValueError, match="not supported"):
        get_default_qat_qconfig("arm")


# ---------------------------------------------------------------------------- whole-model flow
def tiny_models(torch, rng):
    """The same Quant-Conv-BN-ReLU-Pool-Flatten-Linear-DeQuant network in both libraries."""
    from minicompress.quant import DeQuantStub, QuantStub
    ours = nn.Sequential(QuantStub(), nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10, rng=rng), DeQuantStub())
    tq = torch.ao.quantization
    theirs = torch.nn.Sequential(tq.QuantStub(), torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                 torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                 torch.nn.Linear(64, 10), tq.DeQuantStub())
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs


def test_prepare_qat_model_trains_like_torch(torch):
    """fuse_modules_qat + prepare_qat('x86') on the same float weights, three SGD steps in each library
    with its own gradients: the same module structure and state-dict keys, activation scales within
    1e-5, logits and gradients within float32 rounding (a rare tie flipped by rounding noise may move
    one activation by one quantization step: at least 99 % of logits agree to 1e-4)."""
    from minicompress.nn import CrossEntropyLoss
    from minicompress.quant.qat import fuse_modules_qat, get_default_qat_qconfig, prepare_qat
    rng = np.random.default_rng(0)
    ours, theirs = tiny_models(torch, rng)
    tq = torch.ao.quantization
    ours = fuse_modules_qat(ours.train(), [["1", "2", "3"]])
    theirs = tq.fuse_modules_qat(theirs.train(), [["1", "2", "3"]])
    ours.qconfig, theirs.qconfig = get_default_qat_qconfig("x86"), tq.get_default_qat_qconfig("x86")
    ours, theirs = prepare_qat(ours), tq.prepare_qat(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [type(m).__name__ for m in ours.children()] == [type(m).__name__ for m in theirs.children()]
    loss = CrossEntropyLoss()
    for step in range(3):
        x = rng.uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        logits = ours(x)
        loss(logits, y)
        ours.zero_grad()
        ours.backward(loss.backward())
        tlogits = theirs(torch.tensor(x))
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(tlogits, torch.tensor(y)).backward()
        tl = tlogits.detach().numpy()
        assert np.mean(np.abs(logits - tl) <= 1e-4 + 1e-4 * np.abs(tl)) >= 0.99, step
        for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert name == tname
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-3, atol=1e-4, err_msg=name)
            p.data -= np.float32(0.1) * p.grad
            with torch.no_grad():
                tp -= 0.1 * tp.grad
        for name in ("0", "1", "6"):
            apq, tapq = ours._modules[name].activation_post_process, theirs._modules[name].activation_post_process
            np.testing.assert_allclose(apq.scale, tapq.scale.numpy(), rtol=1e-5, err_msg=name)
            assert np.array_equal(apq.zero_point, tapq.zero_point.numpy())


def test_qat_on_digits_then_convert_beats_ptq_and_agrees_with_the_fake_quant_model():
    """End to end (short): float CNN -> 4-bit static PTQ vs 4-bit QAT (-8..7 weights, 0..15 activations)
    -> convert. QAT int8 accuracy >= PTQ's; converted predictions agree with the fake-quant model's on
    >= 99 % of the test set. (bench/qat.py runs the full 8- and 4-bit experiment.)"""
    import copy

    from minicompress import manual_seed, models, train
    from minicompress.data import DataLoader, load_digits
    from minicompress.optim import SGD, Adam
    from minicompress.quant import (DeQuantStub, MinMaxObserver, PerChannelMinMaxObserver, QConfig, QuantStub,
                                    convert, fuse_modules, prepare)
    from minicompress.quant.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
    from minicompress.quant.qat import QAT_CONVERT_MODULE_MAPPINGS, FreezeQAT, fuse_modules_qat, prepare_qat
    from minicompress.quant.flows import DEFAULT_STATIC_QUANT_MODULE_MAPPINGS
    manual_seed(0)
    xtr, ytr, xte, yte = load_digits()
    cnn = models.digits_cnn(channels=(8, 16), hidden=32, rng=np.random.default_rng(0))
    model = nn.Sequential(QuantStub(), *cnn, DeQuantStub())
    loss = nn.CrossEntropyLoss()
    train.fit(model, loss, Adam(model.parameters(), lr=3e-3),
              DataLoader(xtr, ytr, 64, shuffle=True, rng=np.random.default_rng(1)), epochs=5, quiet=True)
    groups = [["1", "2", "3"], ["4", "5", "6"], ["9", "10"]]
    act4 = dict(quant_min=0, quant_max=15, dtype="quint8")
    wt4 = dict(quant_min=-8, quant_max=7, dtype="qint8", qscheme="per_channel_symmetric")

    ptq = fuse_modules(copy.deepcopy(model).eval(), groups)
    ptq.qconfig = QConfig(MinMaxObserver.with_args(**act4), PerChannelMinMaxObserver.with_args(**wt4))
    ptq = prepare(ptq)
    train.predict(ptq, xtr)
    ptq_acc = train.evaluate(convert(ptq), xte, yte)["accuracy"]

    q = fuse_modules_qat(copy.deepcopy(model).train(), groups)
    q.qconfig = QConfig(fq.FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **act4),
                        fq.FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, **wt4))
    q = prepare_qat(q)
    train.fit(q, loss, SGD(q.parameters(), lr=0.002, momentum=0.9),
              DataLoader(xtr, ytr, 64, shuffle=True, rng=np.random.default_rng(2)), epochs=4, quiet=True,
              callbacks=[FreezeQAT(disable_observer_after=3, freeze_bn_after=3)])
    assert not any(m.observer_enabled[0] for m in q.modules() if isinstance(m, fq.FakeQuantize))
    assert all(m.freeze_bn and not m.bn.training for m in q.modules() if isinstance(m, qat.ConvBn2d))
    fake = train.predict(q, xte).argmax(axis=1)
    int8 = train.predict(convert(q, {**DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, **QAT_CONVERT_MODULE_MAPPINGS}),
                         xte).argmax(axis=1)
    qat_acc = float(np.mean(int8 == yte))
    assert qat_acc >= ptq_acc, (qat_acc, ptq_acc)
    assert np.mean(int8 == fake) >= 0.99
