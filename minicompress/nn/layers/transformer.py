"""TransformerEncoderLayer and TransformerEncoder, as PyTorch's: composites with a hand-written backward.

Post-norm (``norm_first=False``, the original Transformer) and pre-norm (Xiong et al. 2020, Fig. 1):

    post:  h = norm1(x + sa(x))            y = norm2(h + ff(h))                        (1)
    pre:   h = x + sa(norm1(x))            y = h + ff(norm2(h))                        (2)

    sa(x) = dropout1(self_attn(x, x, x, need_weights=False)[0])
    ff(x) = dropout2(linear2(dropout(activation(linear1(x)))))

Each backward is its forward read in reverse; at a residual the input gradient is the sum of both paths,
and self-attention's input gradient is the sum of its d query, d key and d value.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..containers import ModuleList
from ..functional.activation import gelu_backward, gelu_forward, relu_backward, relu_forward
from ..functional.attention import causal_bias, mask_to_bias
from ..module import Module
from ..random import get_rng
from ._utils import check_array, check_grad
from .activation import GELU, ReLU
from .attention import MultiheadAttention
from .linear import Linear
from .misc import Dropout
from .norm import LayerNorm

_ACTIVATIONS = {"relu": (relu_forward, relu_backward), "gelu": (gelu_forward, gelu_backward)}


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward block with residuals and LayerNorms (module docstring, eqs. 1-2), as
    ``torch.nn.TransformerEncoderLayer``: same arguments, defaults, children (``self_attn``, ``linear1``,
    ``dropout``, ``linear2``, ``norm1``, ``norm2``, ``dropout1``, ``dropout2``) and state-dict keys.

    ``activation``: 'relu' or 'gelu' (applied as a function, as PyTorch's ``F.relu`` / ``F.gelu``: no child
    module), or an engine Module (a child ``activation``, as PyTorch registers a Module). src: (S, N, E),
    (N, S, E) with ``batch_first``, or unbatched (S, E); ``src_mask``, ``src_key_padding_mask`` and
    ``is_causal`` as MultiheadAttention's ``attn_mask``, ``key_padding_mask`` and ``is_causal``.
    ``rng`` draws the initial weights; the dropouts draw from the global generator.

    The result is always PyTorch's training-path computation. PyTorch's inference fast path (eval mode with
    no gradient recorded, batch_first, even nhead, ...) is a fused kernel whose rounding differs slightly and
    which gives NaN, not 0, for a query whose keys are all masked.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: Any = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, *, dtype=None, rng=None) -> None:
        super().__init__()
        if isinstance(activation, str) and activation not in _ACTIVATIONS:
            raise ValueError(f"TransformerEncoderLayer: activation should be relu/gelu, not {activation}")
        if not isinstance(activation, (str, Module)):
            raise TypeError(f"TransformerEncoderLayer: activation must be 'relu', 'gelu' or a Module (a plain "
                            f"function has no backward), got {activation!r}")
        rng = get_rng(rng)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype, rng=rng)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype, rng=rng)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype, rng=rng)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation_relu_or_gelu = (1 if activation == "relu" or isinstance(activation, ReLU) else
                                        2 if activation == "gelu" or isinstance(activation, GELU) else 0)
        self.activation = activation

    def __call__(self, src: np.ndarray, src_mask: np.ndarray | None = None,
                 src_key_padding_mask: np.ndarray | None = None, is_causal: bool = False) -> np.ndarray:
        """PyTorch's keywords, handed to ``Module.__call__`` positionally."""
        return super().__call__(src, src_mask, src_key_padding_mask, is_causal)

    def forward(self, src: np.ndarray, src_mask: np.ndarray | None = None,
                src_key_padding_mask: np.ndarray | None = None, is_causal: bool = False) -> np.ndarray:
        check_array(self, src)                       # its dtype: checked by the children against their weights
        d_model = self.self_attn.embed_dim
        if src.ndim not in (2, 3) or src.shape[-1] != d_model:
            raise ValueError(f"{self._name()}: expected src (S, N, {d_model}), (N, S, {d_model}) with batch_first, "
                             f"or (S, {d_model}), got {src.shape}")
        masks = (src_mask, src_key_padding_mask, is_causal)
        if self.norm_first:
            h = src + self._sa_block(self.norm1(src), *masks)
            ff, act_cache = self._ff_block(self.norm2(h))
            y = h + ff
        else:
            h = self.norm1(src + self._sa_block(src, *masks))
            ff, act_cache = self._ff_block(h)
            y = self.norm2(h + ff)
        self._save_for_backward((y.shape, act_cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, act_cache = self._saved()
        check_grad(self, grad_output, shape)
        if self.norm_first:
            dh = grad_output + self.norm2.backward(self._ff_block_backward(grad_output, act_cache))
            return dh + self.norm1.backward(self._sa_block_backward(dh))
        dh = self.norm2.backward(grad_output)
        dh = dh + self._ff_block_backward(dh, act_cache)
        dh = self.norm1.backward(dh)
        return dh + self._sa_block_backward(dh)

    def _sa_block(self, x: np.ndarray, attn_mask: Any, key_padding_mask: Any, is_causal: bool) -> np.ndarray:
        y, _ = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                              need_weights=False, is_causal=is_causal)
        return self.dropout1(y)

    def _sa_block_backward(self, grad: np.ndarray) -> np.ndarray:
        dq, dk, dv = self.self_attn.backward(self.dropout1.backward(grad))
        return dq + dk + dv                          # query, key and value are one tensor

    def _ff_block(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        h = self.linear1(x)
        if isinstance(self.activation, Module):
            h, act_cache = self.activation(h), None
        else:
            h, act_cache = _ACTIVATIONS[self.activation][0](h)
        return self.dropout2(self.linear2(self.dropout(h))), act_cache

    def _ff_block_backward(self, grad: np.ndarray, act_cache: Any) -> np.ndarray:
        grad = self.dropout.backward(self.linear2.backward(self.dropout2.backward(grad)))
        if isinstance(self.activation, Module):
            grad = self.activation.backward(grad)
        else:
            grad = _ACTIVATIONS[self.activation][1](grad, act_cache)
        return self.linear1.backward(grad)

    def extra_repr(self) -> str:
        return f"d_model={self.self_attn.embed_dim}, nhead={self.self_attn.num_heads}"


class TransformerEncoder(Module):
    """``num_layers`` deep copies of ``encoder_layer`` (children ``layers.0``, ``layers.1``, ...), then the
    optional ``norm``, as ``torch.nn.TransformerEncoder``; backward runs them in reverse.

    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)``: ``is_causal=None`` detects a
    causal ``mask`` as PyTorch does (equal to the (S, S) mask with -inf above the diagonal; a boolean mask
    reads True as -inf), and passes the hint to every layer. ``enable_nested_tensor`` and ``mask_check`` are
    kept as attributes and change nothing: there is no nested-tensor fast path here. (PyTorch's, in eval mode
    with no gradient recorded and a ``src_key_padding_mask``, returns 0 at padded positions; this encoder,
    as PyTorch's training path, returns their computed values.)
    """

    def __init__(self, encoder_layer: Module, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        if not isinstance(encoder_layer, Module):
            raise TypeError(f"TransformerEncoder: encoder_layer must be a Module, got {type(encoder_layer).__name__}")
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor, self.mask_check = enable_nested_tensor, mask_check

    def __call__(self, src: np.ndarray, mask: np.ndarray | None = None,
                 src_key_padding_mask: np.ndarray | None = None, is_causal: bool | None = None) -> np.ndarray:
        """PyTorch's keywords, handed to ``Module.__call__`` positionally."""
        return super().__call__(src, mask, src_key_padding_mask, is_causal)

    def forward(self, src: np.ndarray, mask: np.ndarray | None = None,
                src_key_padding_mask: np.ndarray | None = None, is_causal: bool | None = None) -> np.ndarray:
        check_array(self, src)
        first = self.layers[0] if len(self.layers) else None
        batch_first = getattr(getattr(first, "self_attn", None), "batch_first", False)
        seq_len = src.shape[1 if batch_first and src.ndim == 3 else 0]     # PyTorch's _get_seq_len
        is_causal = detect_causal_mask(mask, is_causal, seq_len, src.dtype)
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        if self.norm is not None:
            out = self.norm(out)
        self._save_for_backward(out.shape)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        check_grad(self, grad_output, self._saved())
        grad = grad_output if self.norm is None else self.norm.backward(grad_output)
        for layer in reversed(list(self.layers)):
            grad = layer.backward(grad)
        return grad

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}"


def detect_causal_mask(mask: np.ndarray | None, is_causal: bool | None, size: int, dtype: np.dtype) -> bool:
    """PyTorch's ``_detect_is_causal_mask``: a given ``is_causal`` as it is; None -> whether ``mask`` (as an
    additive bias: boolean True -> -inf) equals the (size, size) causal mask exactly."""
    if is_causal is not None:
        return bool(is_causal)
    if mask is None or mask.shape != (size, size):
        return False
    return bool(np.array_equal(mask_to_bias(mask, dtype, true_masks=True), causal_bias(size, size, dtype)))
