"""SparseLinear: an inference-only Linear that skips the zeros of an unstructured-pruned weight.

``SparseLinear.from_dense(linear)`` takes the effective weight (``mask * orig`` if pruned) of a
``Linear`` and keeps only its nonzeros in CSR form (see ``kernels``); ``y = x W^T + b`` then costs
nnz multiply-adds per sample instead of in * out. Worth it at high sparsity and small batches
(e.g. 90 % zeros at batch 1); a dense BLAS matmul wins at low sparsity or large batches.
"""
from __future__ import annotations

import numpy as np

from ..nn.module import Module
from .kernels import csr_matmul, dense_to_csr
from .base import effective_weight

__all__ = ["SparseLinear"]


class SparseLinear(Module):
    """y = x W^T + b with W stored as CSR (``indptr``, ``indices``, ``data`` buffers). No backward."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
        super().__init__()
        weight = np.asarray(weight)
        self.out_features, self.in_features = weight.shape
        indptr, indices, data = dense_to_csr(weight)
        self.register_buffer("indptr", indptr)
        self.register_buffer("indices", indices)
        self.register_buffer("data", data)
        self.register_buffer("bias", None if bias is None else np.array(bias, dtype=weight.dtype))

    @classmethod
    def from_dense(cls, linear: Module) -> "SparseLinear":
        """From a (possibly pruned) Linear: its effective weight and bias."""
        bias = effective_weight(linear, "bias") if linear.bias is not None else None
        return cls(effective_weight(linear, "weight"), bias)

    @property
    def nnz(self) -> int:
        return int(self.data.size)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.in_features:
            got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{self._name()}: expected input (N, {self.in_features}), got {got}")
        y = csr_matmul(x, self.indptr, self.indices, self.data)
        return y if self.bias is None else y + self.bias

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self._name()} is for inference only; fine-tune the masked Linear instead")

    def to_dense(self) -> np.ndarray:
        """The weight (out, in) as a dense array."""
        w = np.zeros((self.out_features, self.in_features), dtype=self.data.dtype)
        rows = np.repeat(np.arange(self.out_features), np.diff(self.indptr.astype(np.int64)))
        w[rows, self.indices] = self.data
        return w

    def extra_repr(self) -> str:
        density = self.nnz / max(self.out_features * self.in_features, 1)
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz} ({density:.1%})"
