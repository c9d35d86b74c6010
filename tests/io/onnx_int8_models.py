"""Float torch twins (a small digits CNN, a narrow resnet18, mobilenet_v2 width 0.5, and 'ops': a small net with
LeakyReLU, Sigmoid, Mul, Concat, a global average pool and a MatMul) exported by torch.onnx and quantized by
onnxruntime's ``quantize_static`` (QDQ or QOperator, per tensor or per channel, uint8 or int8 activations; calibrated
on digits for the CNN, else random data) or ``quantize_dynamic``."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from torch_twins import mobilenet_v2_twin, resnet_twin  # noqa: E402

IMAGE = {"cnn": (1, 8, 8), "resnet18": (3, 32, 32), "mobilenet_v2": (3, 32, 32), "ops": (1, 8, 8)}


def ops_net(torch):
    nn = torch.nn

    class OpsNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2, self.c3 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
            self.w = nn.Parameter(torch.randn(8, 5))

        def forward(self, x):
            y = nn.functional.leaky_relu(self.c1(x), 0.1)
            z = torch.cat([torch.sigmoid(self.c2(y)) * self.c3(y), y], 1)
            return nn.functional.adaptive_avg_pool2d(z, 1).flatten(1) @ self.w
    return OpsNet()


def float_twin(torch, arch: str, seed: int = 0):
    torch.manual_seed(seed)
    nn = torch.nn
    if arch == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    elif arch == "ops":
        model = ops_net(torch)
    elif arch == "resnet18":
        model = resnet_twin(torch, "basic", [2, 2, 2, 2], num_classes=10, widths=(16, 32, 64, 128))
    else:
        model = mobilenet_v2_twin(torch, num_classes=10, width_mult=0.5)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):       # distinct statistics: the folded convolutions are not trivial
                n = m.weight.shape
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.3, n).astype(np.float32)))
                m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.3, n).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2, n).astype(np.float32)))
    return model.eval()


def calibration_data(arch: str, n: int = 4) -> list[np.ndarray]:
    if arch in ("cnn", "ops"):
        from minicompress.data import load_digits
        return [x[None] for x in load_digits()[0][:n]]
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1,) + IMAGE[arch]).astype(np.float32) for _ in range(n)]


def export_float(torch, arch: str, path: Path) -> Path:
    """torch.onnx.export (legacy exporter, dynamic batch), then onnxruntime's ``quant_pre_process`` (folds the
    exporter's constant nodes into initializers, as ``quantize_static`` asks)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    raw = path.with_name(path.stem + "_raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(float_twin(torch, arch), (torch.zeros((1,) + IMAGE[arch]),), str(raw), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        quant_pre_process(str(raw), str(path), skip_symbolic_shape=True)
    return path


def quantize(float_path: Path, arch: str, fmt: str, per_channel: bool, activations: str = "uint8") -> Path:
    """``quantize_static`` with a CalibrationDataReader; uint8 (or, ``quantize_static``'s default, int8)
    activations, int8 weights."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter({"x": x} for x in calibration_data(arch))

        def get_next(self):
            return next(self.batches, None)

    out = float_path.with_name(f"{arch}_{fmt}_{'channel' if per_channel else 'tensor'}_{activations}.onnx")
    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(str(float_path), str(out), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=per_channel, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8)
    return out


def quantize_dynamic(float_path: Path) -> Path:
    """``quantize_dynamic``: DynamicQuantizeLinear -> ConvInteger / MatMulInteger -> Cast -> Mul (scales)."""
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
    out = float_path.with_name("dynamic.onnx")
    ort_quantize_dynamic(str(float_path), str(out))
    return out
