"""MultiheadAttention: the in-projection, ``functional.attention`` per head, and the ``out_proj`` Linear child.

    q = query W_q^T + b_q     k = key W_k^T + b_k     v = value W_v^T + b_v           (1)  (N, L|S, E)
    head h: a_h = softmax(q_h k_h^T / sqrt(D) + bias) v_h,   q_h = q[..., hD:(h+1)D]    (2)  D = E / H
    y = concat_h(a_h) W_o^T + b_o                                                     (3)  out_proj

with W_q, W_k, W_v the three row blocks of ``in_proj_weight`` (3E, E) -- or ``q_proj_weight``,
``k_proj_weight``, ``v_proj_weight`` when kdim or vdim differ from E -- exactly as ``torch.nn.MultiheadAttention``.

Beyond PyTorch, the inner width H * D may be smaller than E: ``head_dim=D`` (keyword only; default E / H)
is what ``prune.prune_heads`` leaves, ``in_proj_weight`` (3HD, E) and ``out_proj`` (E, HD). PyTorch's
module cannot hold such weights; at full width everything is PyTorch's.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import init
from ..functional.attention import attention_backward, attention_forward, causal_bias, mask_to_bias
from ..functional.linear import linear_backward, linear_forward
from ..module import Module, Parameter
from ..random import get_rng
from ._utils import check_array, check_grad
from .linear import Linear


class NonDynamicallyQuantizableLinear(Linear):
    """MultiheadAttention's ``out_proj``, as PyTorch's: a Linear that ``quantize_dynamic`` leaves float (the
    quantization mappings match exact types, so this subclass is not swapped)."""


class _Saved(NamedTuple):
    layout: str                 # 'unbatched', 'batch_first' or 'seq_first': how to undo the (N, L, E) view
    out_shape: tuple
    weights_shape: tuple | None  # None when need_weights=False
    average: bool
    attention: tuple            # functional.attention cache
    projections: tuple          # linear caches of q, k, v


class MultiheadAttention(Module):
    """y, weights = MHA(query, key, value), as ``torch.nn.MultiheadAttention`` (module docstring eqs. 1-3):
    same arguments, defaults, attributes, initialisation (xavier_uniform_ in-projection, zero biases,
    xavier_normal_ bias_k / bias_v) and state-dict keys (``in_proj_weight``, ``in_proj_bias``,
    ``out_proj.weight``, ``out_proj.bias``, ...). kdim / vdim, ``add_bias_kv`` and ``add_zero_attn`` are
    implemented as PyTorch's.

    Shapes: query (L, N, E) (``batch_first``: (N, L, E); unbatched: (L, E)); key (S, N, kdim), value
    (S, N, vdim) likewise. y has query's shape; weights (N, L, S) averaged over heads (unbatched (L, S)),
    or (N, H, L, S) with ``average_attn_weights=False``; None with ``need_weights=False``.

    Masks (additive scores, True = masked out, the opposite of scaled_dot_product_attention's convention):
    ``key_padding_mask`` (N, S) (unbatched (S,)), ``attn_mask`` (L, S) or (N*H, L, S), each boolean (True ->
    -inf) or float (added). A query whose keys are all masked gives NaN with ``need_weights=True`` (PyTorch's
    plain softmax) and 0 attention with ``need_weights=False`` (PyTorch's SDPA). ``is_causal`` needs
    ``attn_mask`` and, as PyTorch's hint, replaces it by the causal mask only when ``need_weights=False``
    and there is no ``key_padding_mask``.

    ``dropout`` drops attention weights in training (engine's inverted dropout, masks from the global
    generator, ``minicompress.manual_seed``); the returned weights are those after dropout, as PyTorch's.
    ``rng`` only draws the initial weights.

    ``backward(grad)``: grad is d y, or a tuple (d y, d weights or None); returns (d query, d key, d value).
    With self-attention (query is key is value) the input gradient is their sum: the caller adds them.
    Unlike PyTorch, which reads ``out_proj.weight`` directly, ``out_proj`` is called as a module, so its
    hooks and parametrizations (pruning, QAT) take effect.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, *, head_dim: int | None = None, dtype=None,
                 rng=None) -> None:
        super().__init__()
        owner = f"MultiheadAttention(embed_dim={embed_dim}, num_heads={num_heads})"
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"{owner}: embed_dim and num_heads must be greater than 0")
        if head_dim is None and embed_dim % num_heads:
            raise ValueError(f"{owner}: embed_dim must be divisible by num_heads")
        if head_dim is not None and not 0 < head_dim * num_heads <= embed_dim:
            raise ValueError(f"{owner}: head_dim={head_dim} x num_heads must be in [1, embed_dim]")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{owner}: dropout probability has to be between 0 and 1, but got {dropout}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads if head_dim is None else head_dim
        inner = self.num_heads * self.head_dim
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.batch_first, self.add_zero_attn = dropout, batch_first, add_zero_attn
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        rng = get_rng(rng)
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(np.empty((3 * inner, embed_dim), dtype))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = Parameter(np.empty((inner, embed_dim), dtype))
            self.k_proj_weight = Parameter(np.empty((inner, self.kdim), dtype))
            self.v_proj_weight = Parameter(np.empty((inner, self.vdim), dtype))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(np.empty(3 * inner, dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(inner, embed_dim, bias=bias, dtype=dtype, rng=rng)
        if add_bias_kv:
            self.bias_k = Parameter(np.empty((1, 1, inner), dtype))
            self.bias_v = Parameter(np.empty((1, 1, inner), dtype))
        else:
            self.bias_k = self.bias_v = None
        self._reset_parameters(rng)

    def _reset_parameters(self, rng=None) -> None:
        """PyTorch's: xavier_uniform_ in-projection weights, zero in-projection and out_proj biases,
        xavier_normal_ bias_k and bias_v (out_proj.weight keeps the Linear initialisation)."""
        rng = get_rng(rng)
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            if getattr(self, name) is not None:
                init.xavier_uniform_(getattr(self, name), rng=rng)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        for name in ("bias_k", "bias_v"):
            if getattr(self, name) is not None:
                init.xavier_normal_(getattr(self, name), rng=rng)

    # ------------------------------------------------------------------ forward
    def __call__(self, query: np.ndarray, key: np.ndarray, value: np.ndarray,
                 key_padding_mask: np.ndarray | None = None, need_weights: bool = True,
                 attn_mask: np.ndarray | None = None, average_attn_weights: bool = True,
                 is_causal: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """PyTorch's keywords, handed to ``Module.__call__`` positionally (hooks see all eight inputs)."""
        return super().__call__(query, key, value, key_padding_mask, need_weights, attn_mask,
                                average_attn_weights, is_causal)

    def forward(self, query: np.ndarray, key: np.ndarray, value: np.ndarray,
                key_padding_mask: np.ndarray | None = None, need_weights: bool = True,
                attn_mask: np.ndarray | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        weights, biases = self._projection_weights(), self._projection_biases()
        layout = self._check_inputs(query, key, value, weights[0].dtype)
        xq, xk, xv = (_to_batch_first(x, layout) for x in (query, key, value))   # (N, L|S, E|kdim|vdim)
        N, L, E = xq.shape
        H, D, S = self.num_heads, self.head_dim, xk.shape[1]
        extra = int(self.bias_k is not None) + int(self.add_zero_attn)          # keys added below
        bias = self._scores_bias(key_padding_mask, attn_mask, is_causal, need_weights, layout, (N, L, S, extra),
                                 xq.dtype)
        (q, cq), (k, ck), (v, cv) = (linear_forward(x, w, b) for x, w, b in zip((xq, xk, xv), weights, biases))
        if self.bias_k is not None:                       # one more key and value: the learned bias_k, bias_v
            k = np.concatenate([k, np.broadcast_to(self.array("bias_k"), (N, 1, H * D))], axis=1)
            v = np.concatenate([v, np.broadcast_to(self.array("bias_v"), (N, 1, H * D))], axis=1)
        qh, kh, vh = (x.reshape(N, -1, H, D).transpose(0, 2, 1, 3) for x in (q, k, v))   # (N, H, L|S, D)
        if self.add_zero_attn:                            # one more key and value of zeros, per head
            kh, vh = (np.concatenate([x, np.zeros((N, H, 1, D), x.dtype)], axis=2) for x in (kh, vh))
        p = self.dropout if self.training else 0.0
        out, a, cache = attention_forward(qh, kh, vh, bias, dropout_p=p, rng=get_rng(),
                                          fully_masked="nan" if need_weights else "zero")
        y = self.out_proj(out.transpose(0, 2, 1, 3).reshape(N, L, H * D))         # (N, L, E)
        y = _from_batch_first(y, layout)
        w = None
        if need_weights:
            w = a.mean(axis=1) if average_attn_weights else a                    # (N, L, S) or (N, H, L, S)
            w = w[0] if layout == "unbatched" else w
        self._save_for_backward(_Saved(layout, y.shape, None if w is None else w.shape, average_attn_weights,
                                       cache, (cq, ck, cv)))
        return y, w

    def _projection_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(W_q, W_k, W_v) of eq. (1): row blocks of in_proj_weight, or the three separate weights."""
        if self._qkv_same_embed_dim:
            return tuple(np.split(self.array("in_proj_weight"), 3))
        return self.array("q_proj_weight"), self.array("k_proj_weight"), self.array("v_proj_weight")

    def _projection_biases(self) -> tuple:
        b = self.array("in_proj_bias")
        return (None, None, None) if b is None else tuple(np.split(b, 3))

    def _scores_bias(self, key_padding_mask: Any, attn_mask: Any, is_causal: bool, need_weights: bool,
                     layout: str, sizes: tuple[int, int, int, int], dtype: np.dtype) -> np.ndarray | None:
        """The additive bias of the scores, broadcastable to (N, H, L, S + extra), as PyTorch merges the masks:
        the ``extra`` keys (bias_k, zero attention) get a 0 column, except under the causal hint, whose mask
        PyTorch's SDPA builds over every key."""
        N, L, S, extra = sizes
        self._check_masks(key_padding_mask, attn_mask, layout, N, L, S)
        if is_causal and attn_mask is None:
            raise ValueError(f"{self._name()}: Need attn_mask if specifying the is_causal hint (PyTorch's rule); "
                             f"give the causal mask, e.g. a (L, S) = ({L}, {S}) boolean np.triu(ones, 1)")
        if is_causal and key_padding_mask is None and not need_weights:
            return causal_bias(L, S + extra, dtype)       # PyTorch's SDPA is_causal: attn_mask is not read
        bias = None
        if attn_mask is not None:
            bias = mask_to_bias(attn_mask, dtype, true_masks=True)
            bias = bias if bias.ndim == 2 else bias.reshape(N, self.num_heads, L, S)
        if key_padding_mask is not None:
            kpm = mask_to_bias(key_padding_mask, dtype, true_masks=True).reshape(N, 1, 1, S)
            bias = kpm if bias is None else bias + kpm
        return None if bias is None else np.pad(bias, [(0, 0)] * (bias.ndim - 1) + [(0, extra)])

    # ------------------------------------------------------------------ backward
    def backward(self, grad_output: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = self._saved()
        d_out, d_weights = grad_output if isinstance(grad_output, tuple) else (grad_output, None)
        check_grad(self, d_out, c.out_shape)
        N, H, L, _ = c.attention[0].shape
        dw = None
        if d_weights is not None:
            if c.weights_shape is None:
                raise ValueError(f"{self._name()}: backward got a gradient for the attention weights, but the "
                                 f"forward ran with need_weights=False")
            check_grad(self, d_weights, c.weights_shape)
            dw = d_weights[None] if c.layout == "unbatched" else d_weights
            dw = np.broadcast_to(dw[:, None] / dw.dtype.type(H), (N, H) + dw.shape[1:]) if c.average else dw
        d_merged = self.out_proj.backward(_to_batch_first(d_out, c.layout))           # (N, L, E)
        d_heads = d_merged.reshape(N, L, H, -1).transpose(0, 2, 1, 3)                 # (N, H, L, D)
        dqh, dkh, dvh = attention_backward(d_heads, dw, c.attention)
        if self.add_zero_attn:
            dkh, dvh = dkh[:, :, :-1], dvh[:, :, :-1]
        dq, dk, dv = (x.transpose(0, 2, 1, 3).reshape(N, -1, H * self.head_dim) for x in (dqh, dkh, dvh))
        if self.bias_k is not None:
            self.accumulate_grad("bias_k", dk[:, -1:].sum(axis=0, keepdims=True))
            self.accumulate_grad("bias_v", dv[:, -1:].sum(axis=0, keepdims=True))
            dk, dv = dk[:, :-1], dv[:, :-1]
        grads = [linear_backward(d, cache) for d, cache in zip((dq, dk, dv), c.projections)]
        if self._qkv_same_embed_dim:
            self.accumulate_grad("in_proj_weight", np.concatenate([dW for _, dW, _ in grads]))
        else:
            for name, (_, dW, _) in zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), grads):
                self.accumulate_grad(name, dW)
        if self.in_proj_bias is not None:
            self.accumulate_grad("in_proj_bias", np.concatenate([db for _, _, db in grads]))
        return tuple(_from_batch_first(dx, c.layout) for dx, _, _ in grads)

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, query: Any, key: Any, value: Any, dtype: np.dtype) -> str:
        """Errors naming the layer and the shapes (inputs of the weights' ``dtype``); returns their layout."""
        for x in (query, key, value):
            check_array(self, x, dtype)
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"{self._name()}: expected query, key, value all 3-D (batched) or all 2-D (unbatched), "
                             f"got {query.shape}, {key.shape}, {value.shape}")
        layout = "unbatched" if query.ndim == 2 else "batch_first" if self.batch_first else "seq_first"
        (N, _, Eq), (Nk, S, Ek), (Nv, Sv, Ev) = (_to_batch_first(x, layout).shape for x in (query, key, value))
        if (Eq, Ek, Ev) != (self.embed_dim, self.kdim, self.vdim) or not N == Nk == Nv or S != Sv:
            axes = {"unbatched": "({}, {})", "batch_first": "(N, {}, {})", "seq_first": "({}, N, {})"}[layout]
            raise ValueError(f"{self._name()}: expected query {axes.format('L', self.embed_dim)}, key "
                             f"{axes.format('S', self.kdim)} and value {axes.format('S', self.vdim)}, got "
                             f"{query.shape}, {key.shape}, {value.shape}")
        return layout

    def _check_masks(self, key_padding_mask: Any, attn_mask: Any, layout: str, N: int, L: int, S: int) -> None:
        H = self.num_heads
        padding_shapes = [(S,)] if layout == "unbatched" else [(N, S)]
        for name, mask, shapes in (("key_padding_mask", key_padding_mask, padding_shapes),
                                   ("attn_mask", attn_mask, [(L, S), (N * H, L, S)])):
            if mask is None:
                continue
            if not isinstance(mask, np.ndarray) or mask.dtype.kind not in "bf":
                raise TypeError(f"{self._name()}: only boolean and floating-point {name} are supported, got "
                                f"{getattr(mask, 'dtype', type(mask).__name__)}")
            if mask.shape not in shapes:
                raise ValueError(f"{self._name()}: expected {name} of shape {' or '.join(map(str, shapes))} "
                                 f"(N={N}, num_heads={H}, L={L}, S={S}), got {mask.shape}")

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


def _to_batch_first(x: np.ndarray, layout: str) -> np.ndarray:
    """(N, T, E) view of an input: unbatched (T, E) -> (1, T, E); seq-first (T, N, E) -> (N, T, E)."""
    if layout == "unbatched":
        return x[None]
    return x if layout == "batch_first" else x.transpose(1, 0, 2)


def _from_batch_first(x: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of ``_to_batch_first``."""
    if layout == "unbatched":
        return x[0]
    return x if layout == "batch_first" else x.transpose(1, 0, 2)

