"""Weight-only int8 embedding, as ``torch.ao.nn.quantized.Embedding`` (fbgemm's ``embedding_byte``), bit-exact.

Each row r of the (R, D) table gets its own float qparams (``per_channel_affine_float_qparams``):
s_r = fl32((max_r - min_r) / 255) (1.0 if <= eps), z_r = fl32(-min_r / s_r) -- a float zero point, the
range not widened to include 0 -- and quint8 codes

    (1) q = clamp(rint(fl32(fl32(w * fl32(1 / s_r)) + z_r)), 0, 255)

PyTorch packs each row as (codes, s_r, b_r) with b_r = -fl32(z_r * s_r); a lookup returns float32

    (2) y = fma(s_r, q, b_r)          (one rounding; not (q - z_r) * s_r, which differs in ~half the outputs)

State dict: ``weight`` uint8 (R, D), ``weight_scale`` float32 (R,), ``weight_zero_point`` float32 (R,)
(PyTorch keeps them in an opaque ``_packed_params._packed_weight``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.module import Module
from . import kernels

f32 = np.float32
FLOAT_QPARAMS = "per_channel_affine_float_qparams"


def quantize_rows(w: np.ndarray, scales: np.ndarray, zero_points: np.ndarray) -> np.ndarray:
    """Eq. (1): quint8 codes of the (R, D) table with per-row float qparams."""
    w = np.asarray(w, f32)
    inv = (f32(1) / np.asarray(scales, f32))[:, None]
    return np.clip(np.rint((w * inv).astype(f32) + np.asarray(zero_points, f32)[:, None]), 0, 255).astype(np.uint8)


def embedding_byte(codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, indices: Any) -> np.ndarray:
    """Eq. (2): rows ``indices`` (any integer shape) of the quantized table, float32 (*indices.shape, D)."""
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"quantized embedding: indices must be integers, got {idx.dtype}")
    rows = codes.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= rows):
        raise IndexError(f"quantized embedding: indices must be in [0, {rows}), got values in "
                         f"[{idx.min()}, {idx.max()}]")
    s = np.asarray(scales, f32)[idx][..., None]
    b = -(np.asarray(zero_points, f32)[idx][..., None] * s).astype(f32)
    q = codes[idx].astype(f32)
    return kernels.fma32_elementwise(np.broadcast_to(s, q.shape), q, np.broadcast_to(b, q.shape))


class QuantizedEmbedding(Module):
    """``nnq.Embedding``: int8 table, float32 output (weight-only; padding_idx / max_norm are dropped, as PyTorch)."""

    def __init__(self, codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = codes.shape
        self.register_buffer("weight", np.array(codes, np.uint8))
        self.register_buffer("weight_scale", np.array(scales, f32))
        self.register_buffer("weight_zero_point", np.array(zero_points, f32))

    def forward(self, indices: Any) -> np.ndarray:
        return embedding_byte(self.weight, self.weight_scale, self.weight_zero_point, indices)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self._name()} is inference-only")

    @classmethod
    def from_float(cls, mod: Module) -> "QuantizedEmbedding":
        observer = mod.qconfig.weight() if getattr(mod, "qconfig", None) is not None else None
        if observer is None or getattr(observer, "qscheme", None) != FLOAT_QPARAMS or observer.dtype != "quint8":
            raise ValueError(f"{mod._name()}: Embedding quantization needs a quint8 {FLOAT_QPARAMS} weight observer; "
                             f"set its qconfig = quant.float_qparams_weight_only_qconfig (as PyTorch requires)")
        w = np.asarray(mod.weight.data, f32)
        observer(w)
        scales, zero_points = observer.calculate_qparams()
        return cls(quantize_rows(w, scales, zero_points), scales, zero_points)

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, dtype='quint8', " \
               f"qscheme={FLOAT_QPARAMS!r}"
