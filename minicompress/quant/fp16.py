"""float16 dynamic quantization: weights stored in float16, computed in float32, as PyTorch's
``quantize_dynamic(model, dtype=torch.float16)`` (``quantized::linear_prepack_fp16`` /
``linear_dynamic_fp16`` on fbgemm).

PyTorch prepares a weight once::

    w16 = fp16_rn(clamp(w, -65504, 65504))        (1) saturate to float16's finite range (warning), round to
                                                      nearest even (fbgemm's cpu_float2half_rn)

and computes each call in float32 (fbgemm's fp16 GEMM converts w16 back to float32 and accumulates in
float32), then adds the float32 bias::

    y = x @ fp32(w16)^T + b                        (2)

The activations are never quantized, so (2) agrees with PyTorch to float32 summation order (the GEMM's
blocking), not bit for bit. State dict: ``weight`` float16 (out, in), ``bias`` float32 (out,).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..nn.module import Module

FP16_MAX = float(np.finfo(np.float16).max)      # 65504


def float16_weight(w: np.ndarray, who: str) -> np.ndarray:
    """Eq. (1): the float16 copy of a float32 weight; values beyond +-65504 saturate, with a warning naming
    ``who`` (PyTorch warns the same way)."""
    w = np.asarray(w, np.float32)
    if np.isnan(w).any():
        raise ValueError(f"{who}: weight of shape {w.shape} contains NaN")
    outside = np.abs(w) > FP16_MAX
    if outside.any():
        warnings.warn(f"{who}: {int(outside.sum())} weight value(s) outside float16's range [-65504, 65504] "
                      f"saturated (as PyTorch's _saturate_weight_to_fp16)", RuntimeWarning, stacklevel=3)
    return np.clip(w, -FP16_MAX, FP16_MAX).astype(np.float16)


def linear_fp16(x: np.ndarray, w16: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Eq. (2): float32 (..., in) @ float16 (out, in)^T computed in float32, + bias -> float32 (..., out)."""
    x = np.asarray(x, np.float32)
    if x.shape[-1] != w16.shape[1]:
        raise ValueError(f"linear_fp16: input (..., {w16.shape[1]}) expected, got {x.shape}")
    y = x @ w16.astype(np.float32, copy=False).T       # a module's call already has it in float32 (nn.half)
    if bias is not None:
        y += bias
    return y


class DynamicFloat16Linear(Module):
    """``nnqd.Linear`` with ``dtype=torch.float16``: a float16 weight, float32 in and out (eq. 2).

    Built by ``from_float``; the constructor makes zero buffers of the right shapes (what a model file fills).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", np.zeros((out_features, in_features), np.float16))
        self.register_buffer("bias", np.zeros(out_features, np.float32) if bias else None)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return linear_fp16(x, self.weight, self.bias).astype(x.dtype, copy=False)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self._name()} is inference-only")

    @classmethod
    def from_weight(cls, weight: np.ndarray, bias: np.ndarray | None, who: str) -> "DynamicFloat16Linear":
        """Eq. (1) on a float (out, in) weight; ``who`` names it in the saturation warning."""
        out = cls(weight.shape[1], weight.shape[0], bias is not None)
        out.weight = float16_weight(weight, who)
        if bias is not None:
            out.bias = np.array(bias, np.float32)
        return out

    @classmethod
    def from_float(cls, mod: Module) -> "DynamicFloat16Linear":
        return cls.from_weight(mod.weight.data, None if mod.bias is None else mod.bias.data, mod._name())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype='float16'"
