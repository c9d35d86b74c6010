"""Training and evaluation loops.

``fit`` runs mini-batch gradient descent with any loss that follows the engine's protocol
(``value = loss_fn(output, target)``, ``grad = loss_fn.backward()``) and any optimizer from
``minicompress.optim``. Callbacks hook into the loop; each may define any of::

    on_fit_begin(model, optimizer)
    on_after_backward(step, model, optimizer)         # gradients ready, before optimizer.step()
    on_batch_end(step, model, optimizer, loss)        # after optimizer.step()
    on_epoch_end(epoch, model, optimizer, logs)       # logs: this epoch's entry of the history

``step`` counts optimizer steps from 0 over the whole fit; ``epoch`` counts from 0.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Iterable

import numpy as np

from .data.checks import check_labels
from .nn.grad_mode import no_grad
from .nn.module import Module


def _progress(iterable: Iterable, total: int, desc: str, quiet: bool) -> Any:
    """A tqdm progress bar on a terminal, the bare iterable otherwise (or when ``quiet``)."""
    if quiet or not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a runtime dependency
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, unit="batch")


def _callbacks(callbacks: Iterable[Any], event: str, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, event, None)
        if method is not None:
            method(*args)


def fit(model: Module, loss_fn: Any, optimizer: Any, loader: Any, epochs: int = 1,
        scheduler: Any = None, callbacks: Iterable[Any] = (), quiet: bool = False, desc: str | None = None) -> dict:
    """Train ``model`` for ``epochs`` passes over ``loader``; return the history.

    Each step: ``out = model(xb)``; ``loss = loss_fn(out, yb)``; ``model.backward_params(loss_fn.backward())``
    (the batch is data: the parameter gradients of ``model.backward``, without d loss / d xb, which the
    first layer then does not compute); callbacks' ``on_after_backward``; ``optimizer.step()``;
    ``optimizer.zero_grad()``. The scheduler
    (if any) steps once per epoch. A non-finite loss stops training with a ``FloatingPointError``.

    Returns ``{"loss": [...], "accuracy": [...], "lr": [...], "seconds": [...]}``, one entry per epoch
    (mean training loss, training accuracy when outputs are class scores, learning rate used, time).
    A model may return a tuple (``loss_fn`` then takes the tuple and its ``backward`` returns one
    gradient per output); the training accuracy is then measured on the first output. ``desc`` names
    what is trained in the progress bar ("teacher: epoch 3/20"). An empty loader is an error.
    """
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    if epochs > 0 and len(loader) == 0:
        raise ValueError(f"fit: the loader yields no batches ({len(getattr(loader, 'x', ()))} samples, "
                         f"batch_size {getattr(loader, 'batch_size', '?')}, drop_last "
                         f"{getattr(loader, 'drop_last', '?')}): nothing to train on")
    callbacks = list(callbacks)
    history: dict[str, list] = {"loss": [], "accuracy": [], "lr": [], "seconds": []}
    model.train()
    _callbacks(callbacks, "on_fit_begin", model, optimizer)
    step = 0
    for epoch in range(int(epochs)):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        total_loss, correct, seen = 0.0, 0, 0
        bar = _progress(loader, len(loader), f"{desc + ': ' if desc else ''}epoch {epoch + 1}/{epochs}", quiet)
        for xb, yb in bar:
            out = model(xb)
            loss = float(loss_fn(out, yb))
            if not math.isfinite(loss):
                raise FloatingPointError(f"fit: loss is {loss} at epoch {epoch}, step {step} "
                                         f"(learning rate {lr}); lower the learning rate or check the data")
            optimizer.zero_grad()
            model.backward_params(loss_fn.backward())
            _callbacks(callbacks, "on_after_backward", step, model, optimizer)
            optimizer.step()
            _callbacks(callbacks, "on_batch_end", step, model, optimizer, loss)
            n = len(xb)
            total_loss += loss * n
            seen += n
            scores = out[0] if isinstance(out, tuple) else out
            if scores.ndim == 2 and np.ndim(yb) == 1 and np.issubdtype(np.asarray(yb).dtype, np.integer):
                correct += int((scores.argmax(axis=1) == yb).sum())
            step += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        if scheduler is not None:
            scheduler.step()
        history["loss"].append(total_loss / max(seen, 1))
        history["accuracy"].append(correct / max(seen, 1))
        history["lr"].append(lr)
        history["seconds"].append(time.perf_counter() - start)
        logs = {key: values[-1] for key, values in history.items()}
        _callbacks(callbacks, "on_epoch_end", epoch, model, optimizer, logs)
    return history


def predict(model: Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Model outputs for ``x`` in eval mode, batch by batch, without keeping caches."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            outs = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.empty((0,))


def evaluate(model: Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict:
    """``{"accuracy": mean(argmax(f(x)) == y), "loss": mean cross-entropy}`` in eval mode."""
    from .nn.functional.activation import log_softmax_forward

    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"evaluate: x and y have different lengths: x {x.shape}, y {y.shape}")
    logits = predict(model, x, batch_size)
    if logits.ndim != 2:
        raise ValueError(f"evaluate: expected class scores (N, C) from the model, got {logits.shape}")
    y = check_labels(y, "evaluate: y", logits.shape[1])
    log_p, _ = log_softmax_forward(logits.astype(np.float64), dim=1)
    loss = float(-log_p[np.arange(len(y)), y].mean()) if len(y) else float("nan")
    return {"accuracy": float((logits.argmax(axis=1) == y).mean()) if len(y) else float("nan"),
            "loss": loss}
