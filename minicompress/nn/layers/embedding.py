"""Embedding: a learned table of row vectors looked up by integer index."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import init
from ..functional.misc import embedding_backward, embedding_forward
from ..module import Module, Parameter
from ._utils import check_grad


class Embedding(Module):
    """y = weight[indices], as ``torch.nn.Embedding`` (weight (num_embeddings, embedding_dim) ~ N(0, 1),
    the ``padding_idx`` row zero and never trained). ``backward`` accumulates the weight gradient and
    returns None: indices have no gradient. ``max_norm``, ``scale_grad_by_freq`` and ``sparse`` are
    not supported (refused, not ignored)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, *, dtype=None, rng=None) -> None:
        super().__init__()
        owner = f"Embedding({num_embeddings}, {embedding_dim})"
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise NotImplementedError(f"{owner}: max_norm, scale_grad_by_freq and sparse are not supported")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"{owner}: padding_idx must be within num_embeddings, got {padding_idx}")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), np.dtype(np.float32 if dtype is None else dtype)))
        self.reset_parameters(rng)

    def reset_parameters(self, rng: Any = None) -> None:
        init.normal_(self.weight, rng=rng)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, indices: Any) -> np.ndarray:
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"{self._name()}: expected integer indices, got dtype {indices.dtype} "
                            f"(shape {indices.shape})")
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            bad = indices[(indices < 0) | (indices >= self.num_embeddings)].reshape(-1)[0]
            raise IndexError(f"{self._name()}: index {int(bad)} is out of range [0, {self.num_embeddings})")
        y, cache = embedding_forward(indices, self.array("weight"))
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> None:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        self.accumulate_grad("weight", embedding_backward(grad_output, cache, self.padding_idx))
        return None

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}" + (
            f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
