"""The functional pruning API of ``torch.nn.utils.prune``: same names, arguments and results.

Each function prunes ``module.<name>`` in place (see ``methods`` for the re-parametrisation
``<name> = <name>_mask * <name>_orig``) and returns ``module``. Pruning the same tensor again
acts only on what is still unpruned.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable

import numpy as np

from ..nn.module import Module
from .base import PruningContainer, effective_weight, pruned_tensors, pruning_hook
from .methods import (CustomFromMask, Identity, L1Unstructured, LnStructured, RandomStructured,
                      RandomUnstructured)

__all__ = ["identity", "random_unstructured", "l1_unstructured", "random_structured", "ln_structured",
           "global_unstructured", "custom_from_mask", "remove", "is_pruned"]


def identity(module: Module, name: str) -> Module:
    """Re-parametrise ``name`` with a mask of ones (prunes nothing)."""
    Identity.apply(module, name)
    return module


def random_unstructured(module: Module, name: str, amount: numbers.Real,
                        rng: np.random.Generator | int | None = None) -> Module:
    """Prune ``amount`` of the still-unpruned entries of ``name``, chosen at random."""
    RandomUnstructured.apply(module, name, amount, rng=rng)
    return module


def l1_unstructured(module: Module, name: str, amount: numbers.Real, importance_scores: Any = None) -> Module:
    """Prune ``amount`` of the still-unpruned entries of ``name`` with the smallest ``|importance|``."""
    L1Unstructured.apply(module, name, amount, importance_scores=importance_scores)
    return module


def random_structured(module: Module, name: str, amount: numbers.Real, dim: int,
                      rng: np.random.Generator | int | None = None) -> Module:
    """Prune ``amount`` of the still-unpruned channels along ``dim``, chosen at random."""
    RandomStructured.apply(module, name, amount, dim, rng=rng)
    return module


def ln_structured(module: Module, name: str, amount: numbers.Real, n: Any, dim: int,
                  importance_scores: Any = None) -> Module:
    """Prune ``amount`` of the still-unpruned channels along ``dim`` with the smallest L``n`` norm.

    For a Conv2d weight (out, in, kh, kw): ``dim=0`` removes filters (output channels), ``dim=1``
    input channels; for a Linear weight (out, in): ``dim=0`` rows, ``dim=1`` columns.
    """
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def custom_from_mask(module: Module, name: str, mask: Any) -> Module:
    """Prune with a given mask (multiplied into any existing mask)."""
    CustomFromMask.apply(module, name, mask)
    return module


def global_unstructured(parameters: Iterable[tuple[Module, str]], pruning_method: type,
                        importance_scores: dict | None = None, **kwargs: Any) -> None:
    """Prune all ``(module, name)`` tensors together: one decision over their concatenation.

    The scores (``importance_scores[(module, name)]``, else the current tensor) and the existing
    masks are raveled and concatenated in the given order; ``pruning_method(**kwargs)`` (e.g.
    ``L1Unstructured`` with ``amount=``) picks among the entries still unpruned, so a float amount
    counts ``round(amount * #unpruned entries of all tensors)``; each tensor then gets its slice of
    the mask through ``custom_from_mask``.
    """
    if not isinstance(parameters, Iterable):
        raise TypeError("global_unstructured(): parameters is not an Iterable")
    parameters = list(parameters)
    importance_scores = {} if importance_scores is None else importance_scores
    if not isinstance(importance_scores, dict):
        raise TypeError("global_unstructured(): importance_scores must be of type dict")
    tensors, scores, masks = [], [], []
    for module, name in parameters:
        if not isinstance(module, Module) or not isinstance(name, str):
            raise TypeError(f"global_unstructured(): expected (Module, str) pairs, got "
                            f"({type(module).__name__}, {type(name).__name__})")
        tensor = effective_weight(module, name) if hasattr(module, name) else None
        if not isinstance(tensor, np.ndarray):
            raise AttributeError(f"global_unstructured(): {module._name()} has no tensor {name!r}")
        score = np.asarray(importance_scores.get((module, name), tensor))
        if score.shape != tensor.shape:
            raise ValueError(f"global_unstructured(): importance_scores for {name!r} of {module._name()} "
                             f"have shape {score.shape}, the tensor {tensor.shape}")
        mask = getattr(module, name + "_mask") if pruning_hook(module, name) is not None else None
        tensors.append(tensor)
        scores.append(score.reshape(-1))
        masks.append((np.ones_like(tensor) if mask is None else mask).reshape(-1))
    method = pruning_method(**kwargs)
    if method.PRUNING_TYPE != "unstructured":
        raise TypeError(f'Only "unstructured" PRUNING_TYPE supported for the `pruning_method`. '
                        f"Found method {pruning_method} of type {method.PRUNING_TYPE}")
    method._tensor_name = "temp"
    final_mask = PruningContainer(method).compute_mask(np.concatenate(scores), np.concatenate(masks))
    start = 0
    for (module, name), tensor in zip(parameters, tensors):
        custom_from_mask(module, name, mask=final_mask[start:start + tensor.size].reshape(tensor.shape))
        start += tensor.size


def remove(module: Module, name: str) -> Module:
    """Make the pruning of ``name`` permanent: ``name`` is a Parameter again holding ``mask * orig``."""
    hook = pruning_hook(module, name)
    if hook is not None:
        hook.remove(module)
        return module
    raise ValueError(f"Parameter {name!r} of module {module._name()} has to be pruned before pruning "
                     f"can be removed")


def is_pruned(module: Module) -> bool:
    """True if ``module`` or any submodule has a pruned tensor."""
    return any(pruned_tensors(m) for m in module.modules())
