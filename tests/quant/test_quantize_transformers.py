"""Dynamic int8 of transformers, side by side with PyTorch's ``quantize_dynamic(model, {nn.Linear})``.

PyTorch's rule, reproduced: only modules of *exact* type Linear are swapped. MultiheadAttention's ``out_proj``
is a ``NonDynamicallyQuantizableLinear`` and stays float; its in-projection is a parameter
(``in_proj_weight``), not a Linear module, and stays float too; so do LayerNorm, softmax attention, GELU and
ViT's ``conv_proj``.

Integer parts are compared exactly: every dynamic Linear's int8 weight, scale, zero point and bias. Then each
dynamic Linear is given the very input PyTorch's got (captured with a forward pre-hook) and must return
PyTorch's output bit for bit. The model outputs agree to float tolerance only: the float parts (attention's
matmuls and softmax, LayerNorm's mean and variance, GELU) sum in a different order than PyTorch's kernels, so
the inputs of the dynamic Linears differ by float32 ulps, and with them the per-call activation (min, max),
now and then the chosen activation scale, and codes at rounding ties.
"""
import os
import sys

import numpy as np
import pytest

from minicompress import models, nn, quant
from minicompress.nn.layers.attention import NonDynamicallyQuantizableLinear

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from torch_twins import vit_twin  # noqa: E402


def _load(torch, theirs, ours):
    theirs.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ours.state_dict().items()})
    return theirs.eval()


def _compare_dynamic_linears(torch, q, tq, x):
    """Same swapped modules; integer parts equal; each dynamic Linear equals PyTorch's on PyTorch's input."""
    mine = {n: m for n, m in q.named_modules() if isinstance(m, quant.DynamicQuantizedLinear)}
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    theirs = {n: m for n, m in tq.named_modules() if type(m) is dynamic}
    assert set(mine) == set(theirs) and mine
    inputs = {}
    handles = [m.register_forward_pre_hook(lambda mod, i, _n=n: inputs.setdefault(_n, i[0].clone()))
               for n, m in theirs.items()]
    with torch.no_grad():
        expected = tq(torch.from_numpy(x)).numpy()
    for h in handles:
        h.remove()
    for name, m in mine.items():
        w, b = theirs[name]._packed_params._weight_bias()
        np.testing.assert_array_equal(m.weight, w.int_repr().numpy(), err_msg=name)
        assert float(m.weight_scale) == w.q_scale() and int(m.weight_zero_point) == w.q_zero_point(), name
        np.testing.assert_array_equal(m.bias, b.detach().numpy(), err_msg=name)
        with torch.no_grad():
            their_out = theirs[name](inputs[name]).numpy()
        np.testing.assert_array_equal(m(inputs[name].numpy()), their_out, err_msg=name)
    return expected


def test_transformer_encoder_dynamic_int8_equals_torch(torch):
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, rng=0), 2).eval()
    twin = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0), 2,
                                       enable_nested_tensor=False)
    twin = _load(torch, twin, ours)
    q = quant.quantize_dynamic(ours, {nn.Linear})
    tq = torch.ao.quantization.quantize_dynamic(twin, {torch.nn.Linear})
    for layer in q.layers:
        assert type(layer.self_attn.out_proj) is NonDynamicallyQuantizableLinear        # stays float
        assert isinstance(layer.self_attn.in_proj_weight, nn.Parameter)                 # stays float
        assert isinstance(layer.linear1, quant.DynamicQuantizedLinear)
    assert set(q.state_dict()) >= {"layers.0.self_attn.in_proj_weight", "layers.0.self_attn.out_proj.weight"}
    x = np.random.default_rng(1).standard_normal((5, 3, 32)).astype(np.float32)    # (S, N, E)
    expected = _compare_dynamic_linears(torch, q, tq, x)
    with nn.no_grad():
        got = q(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_vision_transformer_dynamic_int8_equals_torch(torch):
    ours = models.VisionTransformer(8, 2, 2, 4, 32, 64, num_classes=10, in_channels=1, rng=0)
    rng = np.random.default_rng(2)
    ours.heads.head.weight.data = rng.normal(0, 0.1, ours.heads.head.weight.shape).astype(np.float32)
    twin = _load(torch, vit_twin(torch, 8, 2, 2, 4, 32, 64, 10, in_channels=1), ours.eval())
    q = quant.quantize_dynamic(ours, {nn.Linear})
    tq = torch.ao.quantization.quantize_dynamic(twin, {torch.nn.Linear})
    names = {n for n, m in q.named_modules() if isinstance(m, quant.DynamicQuantizedLinear)}
    assert names == {"heads.head"} | {f"encoder.layers.encoder_layer_{i}.mlp.{j}" for i in (0, 1) for j in (0, 3)}
    x = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
    expected = _compare_dynamic_linears(torch, q, tq, x)
    with nn.no_grad():
        got = q(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_dynamic_quantization_leaves_out_proj_float_even_when_named():
    """A dict spec naming out_proj still does not swap it: the mapping has no entry for its type (PyTorch's)."""
    mha = nn.MultiheadAttention(8, 2, rng=0)
    q = quant.quantize_dynamic(nn.Sequential(mha), {"0.out_proj": quant.default_dynamic_qconfig})
    assert type(q[0].out_proj) is NonDynamicallyQuantizableLinear


@pytest.mark.parametrize("qat", [False, True])
def test_quant_wrapper_matches_torch_recipe(torch, qat):
    """QuantWrapper / add_quant_dequant: same tree, keys and stub qconfigs as PyTorch's."""
    lin = nn.Linear(4, 3, rng=0)
    lin.qconfig = quant.get_default_qconfig("x86")
    model = quant.add_quant_dequant(nn.Sequential(lin, nn.GELU()))
    assert isinstance(model[0], quant.QuantWrapper) and isinstance(model[1], nn.GELU)
    assert model[0].quant.qconfig is lin.qconfig and model[0].dequant.qconfig is lin.qconfig
    assert quant.add_quant_dequant(model) is model and isinstance(model[0].quant, quant.QuantStub)   # idempotent
    tl = torch.nn.Linear(4, 3)
    tl.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    tmodel = torch.ao.quantization.add_quant_dequant(torch.nn.Sequential(tl, torch.nn.GELU()))
    assert set(model.state_dict()) == set(tmodel.state_dict())
    model.eval(), tmodel.eval()
    tmodel[0].module.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    prepared, tprepared = quant.prepare(model), torch.ao.quantization.prepare(tmodel)
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    with nn.no_grad():
        prepared(x)
    with torch.no_grad():
        tprepared(torch.from_numpy(x))
    q, tq = quant.convert(prepared), torch.ao.quantization.convert(tprepared)
    assert float(q[0].module.scale) == tq[0].module.scale and int(q[0].module.zero_point) == tq[0].module.zero_point
    assert float(q[0].quant.scale[0]) == float(tq[0].quant.scale)
    assert int(q[0].quant.zero_point[0]) == int(tq[0].quant.zero_point)
    with nn.no_grad():
        got = q(x)
    with torch.no_grad():
        expected = tq(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
