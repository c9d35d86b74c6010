"""torch twins of torchvision's resnet18, mobilenet_v2 and a small ViT with random weights (BatchNorm
statistics and LayerNorm affines too, so that every parameter is distinct), exported by torch.onnx."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from torch_twins import mobilenet_v2_twin, resnet_twin, vit_twin  # noqa: E402

IMAGE = {"resnet18": (3, 32, 32), "mobilenet_v2": (3, 32, 32), "vit": (3, 16, 16)}


def build_twin(torch, arch: str, seed: int = 0):
    torch.manual_seed(seed)
    if arch == "resnet18":
        model = resnet_twin(torch, "basic", [2, 2, 2, 2], num_classes=10)
    elif arch == "mobilenet_v2":
        model = mobilenet_v2_twin(torch, num_classes=10)
    else:
        model = vit_twin(torch, 16, 4, 2, 2, 16, 32, 10)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                n = m.weight.shape
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.3, n).astype(np.float32)))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.3, n).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2, n).astype(np.float32)))
        for name, p in model.named_parameters():
            if name in ("class_token", "encoder.pos_embedding") or name.endswith("bias"):
                p.copy_(torch.from_numpy(rng.normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    return model.eval()


def export(torch, model, path, arch: str, opset: int = 17, keep_batchnorm: bool = False) -> Path:
    """``torch.onnx.export`` (the legacy exporter) with a dynamic batch axis; ``keep_batchnorm``: no
    constant folding, so BatchNormalization nodes stay (eval export folds them into the convolutions)."""
    x = torch.zeros((2,) + IMAGE[arch])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                          do_constant_folding=not keep_batchnorm)
    return Path(path)


def matching_torch_parameter(torch_model, array: np.ndarray) -> str:
    """The one torch parameter whose value is ``array`` (weights are distinct; MatMul weights transposed back)."""
    found = [name for name, p in torch_model.named_parameters()
             if tuple(p.shape) == array.shape and np.array_equal(p.detach().numpy(), array)]
    assert len(found) == 1, f"parameter of shape {array.shape} matches {found}"
    return found[0]
