"""Loss modules: ``value = loss(input, target)`` then ``dinput = loss.backward()``.

Thin wrappers around the pairs in ``functional/losses.py`` with PyTorch's names, arguments and
defaults. A scalar reduction returns a Python float (nan or inf pass through, as in PyTorch, so a
training loop can check ``math.isfinite``); ``reduction='none'`` returns the array of per-element
losses and ``backward(grad_output)`` then needs the upstream gradient of that shape.

Losses hold no parameters; a class ``weight`` is a buffer (in ``state_dict()`` as in PyTorch).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .functional import losses as F
from .module import Module


class _Loss(Module):
    """Shared plumbing: check the reduction, keep the cache, turn scalars into floats."""

    _reductions: tuple[str, ...] = F.REDUCTIONS
    _backward_fn: Callable[[Any, tuple], np.ndarray]

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        F._check_reduction(reduction, type(self).__name__, self._reductions)
        self.reduction = reduction

    def _loss(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, tuple]:
        raise NotImplementedError

    def forward(self, input: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        loss, cache = self._loss(input, target)
        self._save_for_backward(cache)
        return loss if self.reduction == "none" else float(loss)

    def backward(self, grad_output: Any = None) -> np.ndarray:
        """d loss / d input, times ``grad_output`` (default 1.0; required for reduction='none').

        Uses the latest call's cache; the last one left is kept, so backward can be repeated.
        """
        cache = self._saved(keep_last=True)
        if grad_output is None:
            if self.reduction == "none":
                raise ValueError(f"{self._name()}: reduction='none' gives one loss per element; "
                                 f"pass backward(grad_output) with the loss's shape")
            grad_output = 1.0
        return type(self)._backward_fn(grad_output, cache)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class _WeightedLoss(_Loss):
    def __init__(self, weight: Any = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if weight is not None:
            weight = np.asarray(weight)
            weight = weight if weight.dtype.kind == "f" else weight.astype(np.float32)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    """Cross entropy of logits (N, C, d1, ...) against class indices (N, d1, ...) or probabilities.

    loss_n = -sum_c q[n, c] * log_softmax(input)[n, c] with, for class indices y_n,
    q[n, c] = (1 - eps) * w[y_n] * [c == y_n] + eps / C * w[c] (eps = label_smoothing, w = weight,
    samples with y_n == ignore_index contribute 0); 'mean' divides by sum of w[y_n] over the kept
    samples. See ``functional.losses.cross_entropy_forward`` for the probability-target case.
    """

    _backward_fn = staticmethod(F.cross_entropy_backward)

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def _loss(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, tuple]:
        return F.cross_entropy_forward(input, target, self.weight, self.ignore_index, self.reduction,
                                       self.label_smoothing, name=self._name())

    def extra_repr(self) -> str:
        extra = "" if self.ignore_index == -100 else f", ignore_index={self.ignore_index}"
        extra += f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return super().extra_repr() + extra


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities: loss_n = -w[y_n] * input[n, y_n]."""

    _backward_fn = staticmethod(F.nll_loss_backward)

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(weight, reduction)
        self.ignore_index = int(ignore_index)

    def _loss(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, tuple]:
        return F.nll_loss_forward(input, target, self.weight, self.ignore_index, self.reduction,
                                  name=self._name())

    def extra_repr(self) -> str:
        extra = "" if self.ignore_index == -100 else f", ignore_index={self.ignore_index}"
        return super().extra_repr() + extra


class KLDivLoss(_Loss):
    """KL(target || exp(input)) pointwise: target * (log target - input); input holds log-probabilities.

    reduction='batchmean' gives the mathematical KL divergence per sample (sum / N); the default
    'mean' divides by every element (N * C), as PyTorch does.
    """

    _reductions = F.REDUCTIONS + ("batchmean",)
    _backward_fn = staticmethod(F.kl_div_backward)

    def __init__(self, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__(reduction)
        self.log_target = bool(log_target)

    def _loss(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, tuple]:
        return F.kl_div_forward(input, target, self.reduction, self.log_target, name=self._name())

    def extra_repr(self) -> str:
        return super().extra_repr() + (", log_target=True" if self.log_target else "")


class MSELoss(_Loss):
    """Mean squared error: (input - target)^2, averaged ('mean'), summed or kept ('none')."""

    _backward_fn = staticmethod(F.mse_loss_backward)

    def _loss(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, tuple]:
        return F.mse_loss_forward(input, target, self.reduction, name=self._name())
