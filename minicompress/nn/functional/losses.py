"""Losses as forward/backward pairs, with PyTorch's exact semantics.

Each ``*_forward(input, target, ...)`` returns ``(loss, cache)``: ``loss`` is a 0-d array for the
``'mean'``/``'sum'`` (and ``'batchmean'``) reductions, or the per-element losses for ``'none'``.
Each ``*_backward(dloss, cache)`` returns d loss / d input; ``dloss`` is the upstream gradient
(a scalar for the scalar reductions, an array shaped like the ``'none'`` loss otherwise).

Class-index losses (cross entropy, NLL) take the class axis at position 1 (2-d (N, C) or
k-dimensional (N, C, d1, ...)), or an unbatched (C,) input with a 0-d target. They all reduce to

    loss = sum_{n,c} q[n,c] * (-s[n,c]) / D                                          (1)

with ``s`` the log-probabilities, ``q`` the (weighted, smoothed) target distribution of each sample
and ``D`` the normaliser of the reduction. Its gradient with respect to ``s`` is ``-q / D``.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .activation import log_softmax_backward, log_softmax_forward

REDUCTIONS = ("none", "mean", "sum")


# ---------------------------------------------------------------------------- input checks
def _check_reduction(reduction: str, name: str, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(f"{name}: reduction must be one of {allowed}, got {reduction!r}")


def _check_float_input(input: np.ndarray, name: str) -> None:
    if not isinstance(input, np.ndarray):
        raise TypeError(f"{name}: expected the input as a NumPy array, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point input array, got {input.dtype}")


def _check_same_shape(input: np.ndarray, target: np.ndarray, name: str) -> np.ndarray:
    """``target`` as an array of ``input``'s dtype, after checking that the shapes agree."""
    _check_float_input(input, name)
    target = np.asarray(target)
    if target.shape != input.shape:
        raise ValueError(f"{name}: input and target must have the same shape, "
                         f"got input {input.shape} and target {target.shape}")
    if target.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric target, got {target.dtype}")
    return target.astype(input.dtype, copy=False)


def _num_classes(input: np.ndarray, name: str) -> int:
    """C of a class-scores input (N, C, d1, ...) or (C,), after checking it is a float array."""
    _check_float_input(input, name)
    if input.ndim == 0:
        raise ValueError(f"{name}: expected input (N, C), (N, C, d1, ...) or (C,), got a 0-d array")
    return input.shape[1] if input.ndim > 1 else input.shape[0]


def _check_class_target(input: np.ndarray, target: np.ndarray, ignore_index: int,
                        name: str) -> np.ndarray:
    """Check class indices: ``target`` (N, d1, ...) of integers in [0, C) or ``ignore_index``."""
    num_classes = _num_classes(input, name)
    target = np.asarray(target)
    batch_shape = input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()
    if target.shape != batch_shape:
        layout = "()" if input.ndim == 1 else "(N, d1, ...)" if input.ndim > 2 else "(N,)"
        raise ValueError(f"{name}: expected target {layout} = {batch_shape} of class indices for "
                         f"input {input.shape}, got target {target.shape}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: class-index targets must be integers, got {target.dtype} "
                        f"(probability targets must have the input's shape {input.shape})")
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bad.any():
        raise ValueError(f"{name}: target {int(target[bad].flat[0])} is out of bounds for "
                         f"{num_classes} classes (input {input.shape}, ignore_index={ignore_index})")
    return target


def _check_weight(weight: np.ndarray | None, num_classes: int, dtype: np.dtype,
                  name: str) -> np.ndarray | None:
    if weight is None:
        return None
    weight = np.asarray(weight)
    if weight.shape != (num_classes,):
        raise ValueError(f"{name}: expected a class weight of shape ({num_classes},), got {weight.shape}")
    return weight.astype(dtype, copy=False)


# ---------------------------------------------------------------------------- class-index helpers
def _classes_last(a: np.ndarray) -> np.ndarray:
    """(N, C, d1, ...) -> (N, d1, ..., C); (C,) stays (C,)."""
    return np.moveaxis(a, 1, -1) if a.ndim > 1 else a


def _classes_back(a: np.ndarray) -> np.ndarray:
    """Inverse of ``_classes_last``."""
    return np.moveaxis(a, -1, 1) if a.ndim > 1 else a


def _class_index_terms(logp: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
                       ignore_index: int, label_smoothing: float, reduction: str):
    """Per-sample losses, ``q`` of equation (1) and its normaliser ``D`` for class-index targets.

    With ``w`` the class weights (1 without ``weight``), ``y_n`` the target and ``C`` classes:

        nll_n    = -w[y_n] * s[n, y_n]                 (0 where y_n == ignore_index)
        smooth_n = -sum_c w[c] * s[n, c]               (0 where y_n == ignore_index)
        loss_n   = (1 - eps) * nll_n + eps / C * smooth_n
        q[n, c]  = (1 - eps) * w[y_n] * [c == y_n] + eps / C * w[c]

    'mean' divides sum_n loss_n by D = sum of w[y_n] over the non-ignored samples (the count of them
    without weights), as PyTorch's nll_loss and its label-smoothing term do.
    """
    s = _classes_last(logp)                                   # (N, d1, ..., C)
    num_classes = s.shape[-1]
    valid = target != ignore_index                            # (N, d1, ...)
    safe_target = np.where(valid, target, 0)
    w = np.ones(num_classes, dtype=logp.dtype) if weight is None else weight
    w_target = np.where(valid, w[safe_target], 0).astype(logp.dtype)      # w[y_n], 0 if ignored

    s_target = np.take_along_axis(s, safe_target[..., None], axis=-1)[..., 0]
    losses = -w_target * s_target
    q = np.zeros_like(s)
    np.put_along_axis(q, safe_target[..., None], w_target[..., None], axis=-1)
    if label_smoothing > 0:
        smooth = np.where(valid, -(s * w).sum(axis=-1), 0)
        losses = (1 - label_smoothing) * losses + label_smoothing / num_classes * smooth
        q = (1 - label_smoothing) * q + (label_smoothing / num_classes) * w * valid[..., None]
    denominator = w_target.sum() if reduction == "mean" else 1
    return losses, _classes_back(q), denominator


def _reduce(losses: np.ndarray, reduction: str, denominator: Any) -> np.ndarray:
    """'none': the losses; 'sum': their sum; 'mean': their sum / denominator (nan if 0 / 0)."""
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / losses.dtype.type(denominator))


def _upstream(dloss: Any, loss_shape: tuple[int, ...], dtype: np.dtype, reduction: str,
              name: str) -> np.ndarray:
    """The upstream gradient as an array of the input's dtype: 0-d, or ``loss_shape`` for 'none'."""
    dloss = np.asarray(dloss, dtype=dtype)
    if reduction != "none":
        if dloss.size != 1:
            raise ValueError(f"{name}: reduction={reduction!r} gives a scalar loss; expected a scalar "
                             f"upstream gradient, got shape {dloss.shape}")
        return dloss.reshape(())
    if dloss.shape != loss_shape:
        raise ValueError(f"{name}: expected an upstream gradient of shape {loss_shape} "
                         f"(reduction='none'), got {dloss.shape}")
    return dloss


# ---------------------------------------------------------------------------- cross entropy
def cross_entropy_forward(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                          ignore_index: int = -100, reduction: str = "mean",
                          label_smoothing: float = 0.0, *, name: str = "cross_entropy"):
    """Cross entropy of logits against class indices or class probabilities (PyTorch's rules).

    s = log_softmax(input) along the class axis 1, then equation (1).
    Class indices, target (N, d1, ...) integer: see ``_class_index_terms`` (weights, ignore_index,
        label smoothing, 'mean' divides by the summed weights of the non-ignored targets).
    Probabilities, target of the input's shape (N, C, d1, ...) float:
        q[n, c] = w[c] * ((1 - eps) * target[n, c] + eps / C)
        loss_n  = -sum_c q[n, c] * s[n, c];   'mean' divides by N * d1 * ... (ignore_index unused).
    input (N, C, d1, ...) or (C,) -> loss () or, for reduction='none', (N, d1, ...).
    ``name`` prefixes error messages (the loss classes pass their own).
    """
    _check_reduction(reduction, name)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing}")
    num_classes = _num_classes(input, name)
    weight = _check_weight(weight, num_classes, input.dtype, name)
    logp, softmax_cache = log_softmax_forward(input, dim=1 if input.ndim > 1 else 0)
    if np.shape(target) == input.shape:                        # class probabilities
        if np.asarray(target).dtype.kind != "f":
            raise TypeError(f"{name}: a target of the input's shape {input.shape} holds class "
                            f"probabilities and must be floating-point, got {np.asarray(target).dtype}")
        if ignore_index >= 0:
            raise ValueError(f"{name}: ignore_index={ignore_index} is not supported for probability targets")
        target = _check_same_shape(input, target, name)
        q = (1 - label_smoothing) * target + label_smoothing / num_classes if label_smoothing else target
        if weight is not None:
            q = _classes_back(_classes_last(q) * weight)
        losses = -(q * logp).sum(axis=1 if input.ndim > 1 else 0)
        denominator = losses.size
    else:
        target = _check_class_target(input, target, ignore_index, name)
        losses, q, denominator = _class_index_terms(logp, target, weight, ignore_index,
                                                    label_smoothing, reduction)
    loss = _reduce(losses, reduction, denominator)
    denominator = denominator if reduction == "mean" else 1
    return loss, (softmax_cache, q, denominator, reduction, losses.shape, name)


def cross_entropy_backward(dloss: Any, cache: tuple) -> np.ndarray:
    """d loss / d input = log_softmax_backward(-q * dloss / D)   (see equation (1))."""
    softmax_cache, q, denominator, reduction, loss_shape, name = cache
    dlogp = nll_loss_backward(dloss, (q, denominator, reduction, loss_shape, name))
    return log_softmax_backward(dlogp, softmax_cache, dim=1 if q.ndim > 1 else 0)


# ---------------------------------------------------------------------------- negative log-likelihood
def nll_loss_forward(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                     ignore_index: int = -100, reduction: str = "mean", *, name: str = "nll_loss"):
    """loss_n = -w[y_n] * input[n, y_n]  (0 where y_n == ignore_index); input holds log-probabilities.

    'mean' divides sum_n loss_n by the summed weights of the non-ignored targets.
    input (N, C, d1, ...) or (C,), target (N, d1, ...) or () integers -> loss () or (N, d1, ...).
    """
    _check_reduction(reduction, name)
    target = _check_class_target(input, target, ignore_index, name)
    weight = _check_weight(weight, _num_classes(input, name), input.dtype, name)
    losses, q, denominator = _class_index_terms(input, target, weight, ignore_index, 0.0, reduction)
    loss = _reduce(losses, reduction, denominator)
    return loss, (q, denominator if reduction == "mean" else 1, reduction, losses.shape, name)


def nll_loss_backward(dloss: Any, cache: tuple) -> np.ndarray:
    """d loss / d input[n, c] = -q[n, c] * dloss / D   with q[n, c] = w[y_n] * [c == y_n]."""
    q, denominator, reduction, loss_shape, name = cache
    g = _upstream(dloss, loss_shape, q.dtype, reduction, name)
    if reduction == "none":
        g = np.expand_dims(g, 1 if q.ndim > 1 else 0)                  # (N, 1, d1, ...)
    if denominator == 0:                   # every target ignored: loss nan, gradient 0 (as PyTorch)
        return np.zeros_like(q)
    return -q * (g / q.dtype.type(denominator))


# ---------------------------------------------------------------------------- KL divergence
def kl_div_forward(input: np.ndarray, target: np.ndarray, reduction: str = "mean",
                   log_target: bool = False, *, name: str = "kl_div"):
    """Pointwise KL divergence with ``input`` = log q (log-probabilities), as PyTorch's kl_div:

        l = xlogy(t, t) - t * input     (t * (log t - input), and 0 where t == 0)
        l = exp(t) * (t - input)         with log_target=True (t holds log-probabilities)

    Reductions: 'none' -> l; 'sum'; 'mean' -> sum / l.size (over *all* elements: batch and classes);
    'batchmean' -> sum / N (the mathematical KL per sample; N = input.shape[0]).
    input, target (N, ...) same shape -> loss () or (N, ...).
    """
    _check_reduction(reduction, name, REDUCTIONS + ("batchmean",))
    target = _check_same_shape(input, target, name)
    if reduction == "mean":
        warnings.warn(f"{name}: reduction='mean' divides the total loss by both the batch size and the "
                      f"support size; 'batchmean' divides only by the batch size and is the KL divergence "
                      f"(as PyTorch warns)", UserWarning, stacklevel=3)
    if log_target:
        p = np.exp(target)
        losses = p * (target - input)
    else:
        p = target
        with np.errstate(divide="ignore", invalid="ignore"):
            losses = np.where(p == 0, 0, p * np.log(np.where(p == 0, 1, p))) - p * input
    batch = input.shape[0] if input.ndim else 1
    denominator = batch if reduction == "batchmean" else losses.size
    loss = _reduce(losses, "mean" if reduction == "batchmean" else reduction, denominator)
    denominator = denominator if reduction in ("mean", "batchmean") else 1
    return loss, (p, denominator, reduction, name)


def kl_div_backward(dloss: Any, cache: tuple) -> np.ndarray:
    """d loss / d input = -t * dloss / D   (-exp(t) * dloss / D with log_target); D as in the forward."""
    p, denominator, reduction, name = cache
    g = _upstream(dloss, p.shape, p.dtype, reduction, name)
    return -p * (g / p.dtype.type(denominator))


# ---------------------------------------------------------------------------- mean squared error
def mse_loss_forward(input: np.ndarray, target: np.ndarray, reduction: str = "mean", *,
                     name: str = "mse_loss"):
    """l = (input - target)^2 elementwise; 'mean' -> sum / l.size, 'sum', 'none' -> l (input's shape)."""
    _check_reduction(reduction, name)
    target = _check_same_shape(input, target, name)
    diff = input - target
    loss = _reduce(diff * diff, reduction, diff.size)
    return loss, (diff, diff.size if reduction == "mean" else 1, reduction, name)


def mse_loss_backward(dloss: Any, cache: tuple) -> np.ndarray:
    """d loss / d input = 2 * (input - target) * dloss / D   (D = size for 'mean', else 1)."""
    diff, denominator, reduction, name = cache
    g = _upstream(dloss, diff.shape, diff.dtype, reduction, name)
    return (2 / denominator) * diff * g             # PyTorch's order: norm = 2 / D, then norm * diff * g
