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
    mine, their_layers = _quantized_layers(q), dict(tq.named_modules())
    assert mine, "no quantized layers"
    for key, m in mine.items():
        t = their_layers[key]
        assert _num(m.scale) == _num(t.scale), key
        assert _num(m.zero_point) == _num(t.zero_point), key
        if hasattr(m, "weight_qtensor"):
            np.testing.assert_array_equal(m.weight_qtensor().int_repr, t.weight().int_repr().numpy(), err_msg=key)
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
