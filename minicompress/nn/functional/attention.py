"""Scaled dot-product attention as a forward/backward pair, and the masks that feed it.

    s   = q k^T * scale + bias          (1)  scores           q: (..., L, E)  k: (..., S, E)  ->  s: (..., L, S)
    p   = softmax(s)  along S           (2)  attention weights
    a   = p * keep                      (3)  dropout, keep = m / (1 - p_drop), m ~ Bernoulli(1 - p_drop); else a = p
    out = a v                           (4)  v: (..., S, Ev)  ->  out: (..., L, Ev)

scale defaults to 1 / sqrt(E). Backward, from d out (and d a when the weights are an output too):

    d a = d out v^T (+ d weights)       dv = a^T d out
    d p = d a * keep
    d s = p * (d p - sum_S(d p * p))    (softmax backward)
    dq  = d s k * scale                 dk = d s^T q * scale

Masks enter as the additive ``bias`` of (1): 0 where attention is allowed, -inf where it is not; a
float mask is added as it is. The boolean conventions are opposite, as in PyTorch:
``scaled_dot_product_attention`` reads True as *take part*, MultiheadAttention's ``key_padding_mask``
and ``attn_mask`` read True as *masked out*.

A query whose every key is masked has a row of s that is all -inf; softmax is then 0/0. PyTorch 2.13
keeps the NaN in MultiheadAttention's ``need_weights=True`` path (a plain softmax) but returns 0 from
``scaled_dot_product_attention`` (its "safe softmax": such a row is zero and passes no gradient).
``fully_masked='nan'`` or ``'zero'`` chooses which.
"""
from __future__ import annotations

import math

import numpy as np

from .activation import softmax_backward
from .misc import dropout_backward, dropout_forward


def mask_to_bias(mask: np.ndarray, dtype: np.dtype, true_masks: bool) -> np.ndarray:
    """The additive bias of eq. (1) for ``mask``: a float mask as it is (cast to ``dtype``); a boolean mask
    -inf where it masks, 0 elsewhere -- where True if ``true_masks`` (MultiheadAttention), where False if
    not (scaled_dot_product_attention: True = take part)."""
    dtype = np.dtype(dtype)
    if mask.dtype == np.bool_:
        return np.where(mask if true_masks else ~mask, dtype.type(-np.inf), dtype.type(0))
    return mask.astype(dtype, copy=False)


def causal_bias(L: int, S: int, dtype: np.dtype) -> np.ndarray:
    """-inf above the diagonal, 0 on and below it: query i sees keys j <= i (upper-left aligned when L != S,
    as PyTorch's ``ones(L, S).tril()``).   ->  (L, S)"""
    dtype = np.dtype(dtype)
    return np.where(np.triu(np.ones((L, S), dtype=bool), k=1), dtype.type(-np.inf), dtype.type(0))


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray | None = None,
                      scale: float | None = None, dropout_p: float = 0.0, rng: np.random.Generator | None = None,
                      fully_masked: str = "zero") -> tuple[np.ndarray, np.ndarray, tuple]:
    """Eqs. (1)-(4). Returns ``(out, a, cache)``: a (..., L, S) are the weights after dropout.

    bias: broadcastable to (..., L, S) or None. ``dropout_p`` > 0 draws ``keep`` from ``rng`` (inverted
    dropout, ``functional.misc.dropout_forward``). ``fully_masked``: 'nan' (plain softmax) or 'zero'.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)   # (..., L, S)
    if bias is not None:
        s = s + bias
    with np.errstate(invalid="ignore"):                             # -inf - (-inf): the NaN of a masked row
        z = np.exp(s - s.max(axis=-1, keepdims=True))
        p = z / z.sum(axis=-1, keepdims=True)
    if fully_masked == "zero":
        p[np.all(s == -np.inf, axis=-1)] = 0
    elif fully_masked != "nan":
        raise ValueError(f"attention: fully_masked must be 'nan' or 'zero', got {fully_masked!r}")
    a, keep = dropout_forward(p, dropout_p, rng) if dropout_p > 0 else (p, None)
    return np.matmul(a, v), a, (q, k, v, p, a, keep, scale)


def attention_backward(dout: np.ndarray, dweights: np.ndarray | None,
                       cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dq, dk, dv from d out (..., L, Ev) and d a (..., L, S) or None (module docstring)."""
    q, k, v, p, a, keep, scale = cache
    da = np.matmul(dout, np.swapaxes(v, -1, -2))                     # (..., L, S)
    if dweights is not None:
        da = da + dweights
    dv = np.matmul(np.swapaxes(a, -1, -2), dout)                     # (..., S, Ev)
    dp = da if keep is None else dropout_backward(da, keep)
    ds = softmax_backward(dp, p, dim=-1) * q.dtype.type(scale)       # d s * scale
    return np.matmul(ds, k), np.matmul(np.swapaxes(ds, -1, -2), q), dv


def scaled_dot_product_attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray,
                                         attn_mask: np.ndarray | None = None, is_causal: bool = False,
                                         scale: float | None = None) -> tuple[np.ndarray, tuple]:
    """out = softmax(q k^T * scale + mask) v, as ``torch.nn.functional.scaled_dot_product_attention``.

    q: (..., L, E)  k: (..., S, E)  v: (..., S, Ev)   (the same leading axes)  ->  out: (..., L, Ev)
    attn_mask: broadcastable to (..., L, S); boolean True = take part, or float (added). ``is_causal``:
    query i sees keys j <= i (not with ``attn_mask``). A query with no key left gets 0, as PyTorch's.
    No dropout here (eval-mode attention; MultiheadAttention applies its own). Returns ``(out, cache)``.
    """
    _check_sdpa(q, k, v, attn_mask, is_causal)
    L, S = q.shape[-2], k.shape[-2]
    bias = causal_bias(L, S, q.dtype) if is_causal else None
    if attn_mask is not None:
        bias = mask_to_bias(attn_mask, q.dtype, true_masks=False)
    out, _, cache = attention_forward(q, k, v, bias, scale, fully_masked="zero")
    return out, cache


def scaled_dot_product_attention_backward(dout: np.ndarray,
                                          cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dq, dk, dv) from d out (..., L, Ev) (module docstring; no gradient reaches a float mask)."""
    return attention_backward(dout, None, cache)


def scaled_dot_product_attention(query: np.ndarray, key: np.ndarray, value: np.ndarray,
                                 attn_mask: np.ndarray | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> np.ndarray:
    """The output of ``scaled_dot_product_attention_forward``, with PyTorch's signature.

    ``dropout_p`` must be 0 (PyTorch applies it even in evaluation; here there is no dropout inside this
    function) and ``enable_gqa`` False (grouped-query attention is not implemented): both are refused.
    """
    if dropout_p != 0:
        raise NotImplementedError(f"scaled_dot_product_attention: dropout_p must be 0 (no dropout inside "
                                  f"attention here), got {dropout_p}")
    if enable_gqa:
        raise NotImplementedError("scaled_dot_product_attention: enable_gqa=True is not implemented")
    out, _ = scaled_dot_product_attention_forward(query, key, value, attn_mask, is_causal, scale)
    return out


def _check_sdpa(q: np.ndarray, k: np.ndarray, v: np.ndarray, attn_mask: np.ndarray | None, is_causal: bool) -> None:
    """Clear errors for the inputs of scaled_dot_product_attention (names and shapes)."""
    where = "scaled_dot_product_attention"
    for name, x in (("query", q), ("key", k), ("value", v)):
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim < 2:
            raise TypeError(f"{where}: {name} must be a floating-point array of at least 2 axes, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} of shape {getattr(x, 'shape', None)}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"{where}: query, key and value must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if (k.shape[:-2] != q.shape[:-2] or v.shape[:-2] != q.shape[:-2] or k.shape[-1] != q.shape[-1]
            or v.shape[-2] != k.shape[-2]):
        raise ValueError(f"{where}: expected query (..., L, E), key (..., S, E), value (..., S, Ev) with the same "
                         f"leading axes, got {q.shape}, {k.shape}, {v.shape}")
    if attn_mask is None:
        return
    if is_causal:
        raise ValueError(f"{where}: give either attn_mask or is_causal=True, not both")
    if not isinstance(attn_mask, np.ndarray) or attn_mask.dtype.kind not in "bf":
        raise TypeError(f"{where}: attn_mask must be a boolean or floating-point array, got "
                        f"{getattr(attn_mask, 'dtype', type(attn_mask).__name__)}")
    weights = q.shape[:-1] + (k.shape[-2],)
    try:
        ok = np.broadcast_shapes(attn_mask.shape, weights) == weights
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{where}: attn_mask of shape {attn_mask.shape} does not broadcast to the attention "
                         f"weights (..., L, S) = {weights}")
