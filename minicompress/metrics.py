"""Metrics: classification quality, model size, compute and speed.

Classification metrics take integer labels ``y_true`` and ``y_pred`` (or scores for top-k).
Model metrics take any Module; MACs are counted per sample for Linear and convolution layers
(float or quantized), which dominate the cost of the networks here.
"""
from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from .nn.grad_mode import no_grad
from .nn.kinds import is_weighted
from .nn.module import Module
from .prune.base import pruned_tensors
from .quant.modules import WeightedQuantized


def _labels(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"metrics: y_true and y_pred must be 1-D of equal length, got {y_true.shape} "
                         f"and {y_pred.shape}")
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """mean(y_pred == y_true)."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float((y_true == y_pred).mean())


def top_k_accuracy(y_true: Any, scores: np.ndarray, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores (ties: lower index first)."""
    scores = np.asarray(scores)
    y_true = np.asarray(y_true)
    if scores.ndim != 2 or len(scores) != len(y_true):
        raise ValueError(f"top_k_accuracy: expected scores (N, C) and y_true (N,), got {scores.shape} "
                         f"and {y_true.shape}")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == y_true[:, None]).any(axis=1).mean())


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """C[i, j] = number of samples of true class i predicted as j.   -> (K, K) int64"""
    y_true, y_pred = _labels(y_true, y_pred)
    k = num_classes if num_classes is not None else int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def precision_recall_f1(y_true: Any, y_pred: Any, num_classes: int | None = None) -> dict:
    """Per-class and macro precision, recall and F1.

    precision_c = TP_c / (TP_c + FP_c); recall_c = TP_c / (TP_c + FN_c);
    F1_c = 2 P R / (P + R); an undefined ratio (0/0) counts as 0, as scikit-learn's default.
    Macro = unweighted mean over classes.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1,
            "macro_precision": float(precision.mean()), "macro_recall": float(recall.mean()),
            "macro_f1": float(f1.mean())}


def macro_f1(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 scores."""
    return precision_recall_f1(y_true, y_pred, num_classes)["macro_f1"]


def agreement(pred_a: Any, pred_b: Any) -> float:
    """Fraction of samples on which two models predict the same class."""
    return accuracy(pred_a, pred_b)


# ---------------------------------------------------------------------------- model metrics
def _effective_state(model: Module) -> dict[str, np.ndarray]:
    """State arrays needed for inference: a pruned ``w_orig``/``w_mask`` pair counts as one ``w`` = mask * orig."""
    state = model.state_dict()
    for prefix, module in model.named_modules():
        for name, method in pruned_tensors(module).items():
            key = f"{prefix}.{name}" if prefix else name
            del state[key + "_orig"], state[key + "_mask"]
            state[key] = method.apply_mask(module)
    return state


def count_params(model: Module, nonzero: bool = False) -> int:
    """Number of weights (parameters and quantized weights; buffers excluded), or of nonzero ones.

    A pruned weight counts once (its effective ``mask * orig``).
    """
    state = _effective_state(model)
    buffer_keys = {name for name, _ in model.named_buffers()}
    total = 0
    for key, value in state.items():
        if key in buffer_keys and not _is_weight_buffer(key, value):
            continue
        total += int(np.count_nonzero(value)) if nonzero else int(value.size)
    return total


def _is_weight_buffer(key: str, value: np.ndarray) -> bool:
    """Quantized modules keep their int8 weights and biases as buffers: those are weights too."""
    return key.rsplit(".", 1)[-1] in ("weight", "bias") and value.ndim >= 1


def model_size_bytes(model: Module) -> int:
    """Bytes of the dense arrays inference needs (pruned pairs count once, int8 weights 1 byte each)."""
    return int(sum(v.nbytes for v in _effective_state(model).values()))


def count_macs(model: Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates per sample of every Linear/convolution layer, by tracing one forward.

    Linear: out_features * in_features per row; Conv: output elements * (in_channels / groups) * prod(kernel).
    ``input_shape`` excludes the batch axis. The forward runs on a copy of ``model`` (eval mode, no
    gradients), with a forward hook on each counted layer: the model itself, its observers and
    fake-quants included, sees nothing.
    """
    counts: list[int] = []

    def count(module: Module, inputs: tuple, out: Any) -> None:
        counts.append(_layer_macs(module, out))

    work = copy.deepcopy(model).eval()
    for m in work.modules():
        if _weight_shape(m) is not None:
            m.register_forward_hook(count)
    with no_grad():
        work(np.zeros((1, *input_shape), dtype=np.float32))
    return int(sum(counts))


def _weight_shape(module: Module) -> tuple[int, ...] | None:
    """The weight shape of a Linear / convolution, float (any subclass: QAT too) or quantized; else None."""
    if is_weighted(module):       # the stored Parameter (a parametrized weight is not computed here)
        entry = module.parametrizations().get("weight")
        return getattr(module, entry.original if entry else "weight").shape
    if isinstance(module, WeightedQuantized):
        return module.weight.shape       # the int8 weight buffer
    return None


def _layer_macs(module: Module, out: Any) -> int:
    shape = _weight_shape(module)
    out_shape = np.shape(getattr(out, "int_repr", out))
    if len(shape) == 2:                                   # Linear: (out, in)
        return int(np.prod(out_shape[1:-1], dtype=np.int64)) * shape[0] * shape[1]
    per_output = int(np.prod(shape[1:]))                  # (in/groups) * kernel
    return int(np.prod(out_shape[1:], dtype=np.int64)) * per_output


def measure_latency(model: Module, x: np.ndarray, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of one ``model(x)`` call in eval mode under ``no_grad``."""
    was_training = model.training
    model.eval()
    times = []
    try:
        with no_grad():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return float(np.median(times))
