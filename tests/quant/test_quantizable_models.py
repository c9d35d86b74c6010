"""torchvision's quantizable ResNet and MobileNetV2 flows, side by side with PyTorch's eager flows.

Our reference models and PyTorch twins of torchvision's ``models.quantization`` modules
(``tests/models/torch_twins.py``) get the same weights and random BatchNorm statistics; both are fused with
``fuse_model()``, prepared with the x86/fbgemm default qconfig (HistogramObserver activations with
``reduce_range``, per-channel symmetric weights), calibrated on the same batch and converted. The int8
models must agree: every quantized layer's output scale and zero point, every int8 weight, and the output
codes. One calibration batch: HistogramObserver's multi-batch merging is not bit-exact (documented).

Calibration runs the float model, whose convolutions sum in a different order than PyTorch's: the observed
ranges agree to a few float32 ulps (checked, relative 1e-5 over ResNet-50's 53 layers), and the chosen scales then differ by as much.
To compare the integer pipeline itself, PyTorch's observers are then given our observed ranges and
histograms, and everything after that must be identical.
"""
import os
import sys
import warnings

import numpy as np
import pytest

from minicompress import models, nn, quant

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
from torch_twins import mobilenet_v2_twin, resnet_twin  # noqa: E402

from tests.oracle import hand_observed_ranges, randomise_batchnorm  # noqa: E402


CASES = {
    "resnet20": (lambda: models.resnet20(num_classes=10, in_channels=1),
                 lambda t: resnet_twin(t, "basic", [3, 3, 3], 10, in_channels=1, small_input=True, widths=(16, 32, 64),
                                       quantizable=True), (4, 1, 8, 8)),
    "resnet18": (lambda: models.resnet18(num_classes=10, small_input=True),
                 lambda t: resnet_twin(t, "basic", [2, 2, 2, 2], 10, small_input=True, quantizable=True), (2, 3, 16, 16)),
    "resnet50": (lambda: models.resnet50(num_classes=10, small_input=True),
                 lambda t: resnet_twin(t, "bottleneck", [3, 4, 6, 3], 10, small_input=True, quantizable=True),
                 (2, 3, 8, 8)),
    "mobilenet_v2": (lambda: models.replace_relu(models.mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1,
                                                                     small_input=True)),
                     lambda t: mobilenet_v2_twin(t, 10, 0.5, in_channels=1, small_input=True, quantizable=True),
                     (4, 1, 16, 16)),
}


def _num(value):
    """A scale / zero point (ours: array buffer; PyTorch's: float, int or tensor) as a Python number."""
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value).reshape(-1)[0].item()


def _quantized_layers(model):
    return {name: m for name, m in model.named_modules() if hasattr(m, "scale") and hasattr(m, "zero_point")}


@pytest.mark.parametrize("name", list(CASES))
def test_static_int8_flow_equals_torch(torch, name):
    build, twin_of, shape = CASES[name]
    ours = randomise_batchnorm(build()).eval()
    twin = twin_of(torch).eval()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ours.fuse_model()
    twin.fuse_model()
    ours.qconfig = quant.get_default_qconfig("x86")
    twin.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    prepared, theirs = quant.prepare(ours), torch.ao.quantization.prepare(twin)
    with nn.no_grad():
        prepared(x)
    with torch.no_grad():
        theirs(torch.from_numpy(x))
    hand_observed_ranges(torch, prepared, theirs)
    with pytest.warns(UserWarning, match="not called during calibration") if name == "mobilenet_v2" else _nothing():
        q = quant.convert(prepared)
    tq = torch.ao.quantization.convert(theirs)
    assert_same_int8(torch, q, tq, x)


def assert_same_int8(torch, q, tq, x):
    """Every quantized layer's output (scale, zero point), int8 weights and weight scales, and the output codes
    of ``q`` (ours) and ``tq`` (PyTorch's) on ``x`` are identical."""
    mine, their_layers = _quantized_layers(q), dict(tq.named_modules())
    assert mine, "no quantized layers"
    for key, m in mine.items():
        t = their_layers[key]
        assert _num(m.scale) == _num(t.scale) and _num(m.zero_point) == _num(t.zero_point), key
        if hasattr(m, "weight_qtensor"):
            np.testing.assert_array_equal(m.weight_qtensor().int_repr, t.weight().int_repr().numpy(), err_msg=key)
            their_scales = t.weight().q_per_channel_scales().numpy() if m.weight_scale.ndim else t.weight().q_scale()
            np.testing.assert_array_equal(m.weight_scale, their_scales, err_msg=key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", quant.functional.Int16SaturationWarning)     # reproduced, as torch's
        with nn.no_grad():
            got = q(x)
    with torch.no_grad():
        expected = tq(torch.from_numpy(x)).numpy()
    head = mine["fc" if "fc" in mine else "classifier.1"]
    scale, zero_point = _num(head.scale), int(_num(head.zero_point))
    codes = lambda y: np.round(y / scale).astype(np.int64) + zero_point  # noqa: E731  (output = (q - z) * s)
    np.testing.assert_array_equal(codes(got), codes(expected))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# (case, compare each step). MobileNetV2's steps are not compared: on this input one fake-quant code of
# features.7.conv.2 flips at a tie (the float convolutions sum in another order) and the flipped element is its
# batch's extreme, so every later moving-average range moves. Its convert is compared after the hand-over; there
# activations beyond their trained ranges get codes above 127 and torch's depthwise layers saturate int16 pair
# sums (quant/depthwise.py eq. 1'), which this test needs us to reproduce.
QAT_CASES = (("resnet20", True), ("mobilenet_v2", False))


@pytest.mark.parametrize("name,each_step", QAT_CASES, ids=[c for c, _ in QAT_CASES])
def test_qat_flow_equals_torch_step_by_step(torch, name, each_step):
    """``prepare_qat`` -> SGD steps -> ``convert``, against PyTorch's QAT flow on the same weights.

    Float training diverges chaotically once two float32 sums round differently, so PyTorch is handed our whole
    state (weights, BatchNorm statistics, fake-quant scales, observer ranges) before every step: each step must
    then compute what PyTorch computes (the fake-quantized forward exactly but for a rare code flip at a tie,
    every gradient to float tolerance), and ``convert`` (BatchNorm folded with the trained statistics, weights
    quantized with the trained fake-quants; on deep copies, which once fake-quantized the weight it folds)
    must give identical int8 layers and output codes."""
    import minicompress
    from minicompress import optim
    from minicompress.nn.losses import CrossEntropyLoss

    build, twin_of, shape = CASES[name]
    minicompress.manual_seed(0)
    torch.manual_seed(0)
    ours = randomise_batchnorm(build()).train()
    twin = twin_of(torch).train()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ours.state_dict().items()})
    ours.fuse_model(is_qat=True)
    twin.fuse_model(is_qat=True)
    ours.qconfig = quant.get_default_qat_qconfig("x86")
    twin.qconfig = torch.ao.quantization.get_default_qat_qconfig("x86")
    prepared, theirs = quant.prepare_qat(ours), torch.ao.quantization.prepare_qat(twin)

    def hand_over():
        theirs.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in prepared.state_dict().items()})

    opt = optim.SGD(prepared.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(1)
    their_params = dict(theirs.named_parameters())
    flips = 0
    for _ in range(3):
        hand_over()
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.integers(0, 10, shape[0])
        loss = CrossEntropyLoss()
        out = prepared(x)
        loss(out, y)
        prepared.zero_grad()
        prepared.backward(loss.backward())
        their_out = theirs(torch.from_numpy(x))
        torch.nn.functional.cross_entropy(their_out, torch.from_numpy(y)).backward()
        if not each_step:
            pass
        elif np.abs(out - their_out.detach().numpy()).max() > 1e-5:
            flips += 1                          # a fake-quant code flipped at a tie: the gradients may differ too
        else:
            for key, p in prepared.named_parameters():
                g = their_params[key].grad.numpy()
                np.testing.assert_allclose(p.grad, g, rtol=0, atol=1e-4 * max(np.abs(g).max(), 1e-6), err_msg=key)
        for p in their_params.values():
            p.grad = None
        opt.step()
    assert flips <= 1
    hand_over()
    prepared.eval()
    theirs.eval()
    q, tq = quant.convert(prepared), torch.ao.quantization.convert(theirs)    # inplace=False: deep copies
    assert_same_int8(torch, q, tq, rng.standard_normal(shape).astype(np.float32))
