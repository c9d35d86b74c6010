"""Static PTQ and QAT of a ViT's Linear layers, each in a QuantWrapper, LayerNorm / attention / GELU float.

Against PyTorch: the same recipe on the twin of torchvision's ViT (``add_quant_dequant`` after putting the
x86 qconfig on the MLP and head Linear layers -- PyTorch's MultiheadAttention reads ``out_proj.weight``
directly, so its ``out_proj`` cannot be wrapped there; ours calls it as a module and can). As in
``test_quantizable_models.py``, PyTorch's observers are given our observed ranges and histograms (the float
parts sum in another order, so ranges differ by ulps); after that every scale, zero point and int8 weight is
equal, and each quantized Linear returns PyTorch's codes on PyTorch's input.
"""
import os
import sys

import numpy as np
import pytest

from tests.oracle import hand_observed_ranges

from minicompress import models, nn, quant
from minicompress.nn.layers.attention import NonDynamicallyQuantizableLinear

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from torch_twins import vit_twin  # noqa: E402


def _vit(seed=0):
    vit = models.VisionTransformer(8, 2, 2, 4, 32, 64, num_classes=10, in_channels=1, rng=seed)
    rng = np.random.default_rng(seed + 1)
    vit.heads.head.weight.data = rng.normal(0, 0.1, vit.heads.head.weight.shape).astype(np.float32)
    return vit.eval()


def _wrap_linears(model, qconfig, linear_type, skip=lambda name: False):
    for name, m in model.named_modules():
        if type(m) is linear_type and not skip(name):
            m.qconfig = qconfig
    return model


def test_static_mlp_and_head_linears_equal_torch(torch):
    ours = _vit()
    twin = vit_twin(torch, 8, 2, 2, 4, 32, 64, 10, in_channels=1)
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ours.state_dict().items()})
    twin.eval()
    ours = quant.add_quant_dequant(_wrap_linears(ours, quant.get_default_qconfig("x86"), nn.Linear))
    twin = torch.ao.quantization.add_quant_dequant(
        _wrap_linears(twin, torch.ao.quantization.get_default_qconfig("x86"), torch.nn.Linear))
    assert set(ours.state_dict()) == set(twin.state_dict())
    x = np.random.default_rng(3).standard_normal((8, 1, 8, 8)).astype(np.float32)
    prepared, theirs = quant.prepare(ours), torch.ao.quantization.prepare(twin)
    with nn.no_grad():
        prepared(x)
    with torch.no_grad():
        theirs(torch.from_numpy(x))
    observers = hand_observed_ranges(torch, prepared, theirs, atol=1e-6)
    assert len(observers) == 2 * 5          # quant stub + Linear of mlp.0, mlp.3 (x2 blocks) and head
    q, tq = quant.convert(prepared), torch.ao.quantization.convert(theirs)
    their_layers = dict(tq.named_modules())
    inputs = {}
    wrapped = [n for n, m in q.named_modules() if isinstance(m, quant.QuantWrapper)]
    handles = [their_layers[n + ".module"].register_forward_pre_hook(
        lambda mod, i, _n=n: inputs.setdefault(_n, i[0])) for n in wrapped]
    with torch.no_grad():
        expected = tq(torch.from_numpy(x)).numpy()
    for h in handles:
        h.remove()
    for name in wrapped:
        mine, theirs_q = dict(q.named_modules())[name], their_layers[name]
        assert float(mine.quant.scale[0]) == float(theirs_q.quant.scale) and \
            int(mine.quant.zero_point[0]) == int(theirs_q.quant.zero_point), name
        lin, tlin = mine.module, theirs_q.module
        assert float(lin.scale) == tlin.scale and int(lin.zero_point) == tlin.zero_point, name
        np.testing.assert_array_equal(lin.weight_qtensor().int_repr, tlin.weight().int_repr().numpy(), err_msg=name)
        tin = inputs[name]
        qin = quant.QTensor(tin.int_repr().numpy(), tin.q_scale(), tin.q_zero_point(), None, "quint8")
        with torch.no_grad():
            np.testing.assert_array_equal(lin(qin).int_repr, tlin(tin).int_repr().numpy(), err_msg=name)
    with nn.no_grad():
        got = q(x)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=2e-3)


def test_every_linear_including_out_proj_static_int8():
    float_model = _vit()
    model = _wrap_linears(_vit(), quant.get_default_qconfig("x86"), nn.Linear)
    model = quant.add_quant_dequant(_wrap_linears(model, quant.get_default_qconfig("x86"),
                                                  NonDynamicallyQuantizableLinear))
    assert isinstance(model.encoder.layers.encoder_layer_0.self_attention.out_proj, quant.QuantWrapper)
    prepared = quant.prepare(model)
    rng = np.random.default_rng(4)
    with nn.no_grad():
        for _ in range(2):
            prepared(rng.standard_normal((8, 1, 8, 8)).astype(np.float32))
    q = quant.convert(prepared)
    out_proj = q.encoder.layers.encoder_layer_1.self_attention.out_proj.module
    assert isinstance(out_proj, quant.QuantizedLinear)
    assert isinstance(q.encoder.layers.encoder_layer_1.ln_1, nn.LayerNorm)          # float
    assert type(q.encoder.layers.encoder_layer_1.mlp[1]) is nn.GELU
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    with nn.no_grad():
        assert quant.compute_sqnr(float_model(x), q(x)) > 20
    sens = quant.layer_sensitivity(model, q, [x])
    assert len(sens) == 2 * 3 + 1


@pytest.mark.parametrize("keep_float", ["heads.head", "encoder.layers.encoder_layer_0.mlp.0"])
def test_qconfig_none_keeps_a_linear_float(keep_float):
    model = _wrap_linears(_vit(), quant.get_default_qconfig("x86"), nn.Linear, skip=lambda n: n == keep_float)
    prepared = quant.prepare(quant.add_quant_dequant(model))
    with nn.no_grad():
        prepared(np.random.default_rng(5).standard_normal((4, 1, 8, 8)).astype(np.float32))
    q = quant.convert(prepared)
    assert type(q.get_submodule(keep_float)) is nn.Linear
    assert sum(isinstance(m, quant.QuantizedLinear) for m in q.modules()) == 4


def test_qat_of_the_linears_trains_and_converts():
    model = _vit().train()
    model = quant.add_quant_dequant(_wrap_linears(model, quant.get_default_qat_qconfig("x86"), nn.Linear))
    model = quant.prepare_qat(model)
    assert isinstance(model.heads.head.module, quant.qat_modules.Linear)
    x = np.random.default_rng(6).standard_normal((8, 1, 8, 8)).astype(np.float32)
    y = np.arange(8) % 10
    opt_params = [p for p in model.parameters()]
    ce = nn.CrossEntropyLoss()
    before = model.heads.head.module.weight.data.copy()
    ce(model(x), y)
    model.backward(ce.backward())
    assert model.heads.head.module.weight.grad is not None and np.abs(model.heads.head.module.weight.grad).sum() > 0
    for p in opt_params:
        if p.grad is not None:
            p.data -= 0.01 * p.grad
    assert not np.array_equal(before, model.heads.head.module.weight.data)
    q = quant.convert(model.eval())
    assert isinstance(q.heads.head.module, quant.QuantizedLinear)
    with nn.no_grad():
        assert q(x).shape == (8, 10)
