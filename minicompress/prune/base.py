"""The base of every pruning method: the re-parametrisation of a module's tensor, and containers.

Each method answers one question, ``compute_mask(t, default_mask) -> mask``: given importance
scores ``t`` (by default the tensor itself) and the mask of earlier prunes, which entries survive.
A mask is an array of 0s and 1s of ``t``'s shape and dtype, and never revives an entry the
``default_mask`` removed (the concrete methods are in ``methods``).

``Method.apply(module, name, ...)`` re-parametrises ``module.<name>`` with PyTorch's names and keys::

    <name>_orig   the original Parameter object (same object; optimizers keep working)
    <name>_mask   buffer, same dtype as the weight
    <name>        plain array  = <name>_mask * <name>_orig        (1)

The method object itself is the engine parametrization of ``<name>`` (``Module.register_parametrization``,
first in the chain): the layer computes with (1) on every forward, and the gradient it reports for
``<name>`` reaches ``<name>_orig.grad`` as ``grad * <name>_mask``. A later parametrization (QAT's
weight fake-quant) acts on (1): ``fq(<name>_mask * <name>_orig)``.
A pruned negative weight is therefore -0.0, as in PyTorch. A second prune of the same tensor wraps
the methods in a ``PruningContainer``, whose last method only sees what is still unpruned.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from ..nn.module import Module, Parameter

__all__ = ["pruning_hook", "pruned_tensors", "parameters_by_tensor", "effective_weight", "BasePruningMethod",
           "PruningContainer", "torch_result_type"]


def pruning_hook(module: Module, name: str) -> "BasePruningMethod | None":
    """The pruning method (or container) acting on ``module.<name>``, or None if it is not pruned."""
    entry = module.parametrizations().get(name)
    methods = [p for p in entry.chain if isinstance(p, BasePruningMethod)] if entry else []
    return methods[0] if methods else None


def pruned_tensors(module: Module) -> dict[str, "BasePruningMethod"]:
    """``{tensor name: pruning method or container}`` for every pruned tensor of ``module`` itself."""
    return {name: hook for name in module.parametrizations()
            if (hook := pruning_hook(module, name)) is not None}


def parameters_by_tensor(model: Module) -> Iterator[tuple[str, Module, str, Parameter]]:
    """(key, module, tensor name, Parameter) of every parameter, keyed by the tensor it stands for
    (``0.weight`` for the Parameter stored as ``0.weight_orig``)."""
    for prefix, module in model.named_modules():
        tensor_of = {entry.original: name for name, entry in module.parametrizations().items()}
        for name, param in module.named_parameters(recurse=False):
            tensor = tensor_of.get(name, name)
            yield (f"{prefix}.{tensor}" if prefix else tensor), module, tensor, param


def effective_weight(module: Module, name: str) -> np.ndarray:
    """What the layer computes with before any later parametrization: ``mask * orig`` freshly if
    ``name`` is pruned, else the Parameter's data."""
    hook = pruning_hook(module, name)
    if hook is not None:
        return hook.apply_mask(module)
    value = getattr(module, name)
    return value.data if isinstance(value, Parameter) else value


class BasePruningMethod:
    """A pruning rule; once applied to a module, also the parametrization of tensor ``_tensor_name``.

    As a parametrization (``Module.register_parametrization``, always first in the chain, so it acts
    on the stored Parameter): ``value(module, orig) = mask * orig`` (1) and
    ``backward(module, grad) = grad * mask`` (d(mask * orig) / d orig = mask).
    """

    PRUNING_TYPE = "unstructured"  # 'unstructured' | 'structured' | 'global'
    _tensor_name: str | None = None

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement compute_mask")

    def _mask(self, module: Module) -> np.ndarray:
        return getattr(module, self._tensor_name + "_mask")

    def value(self, module: Module, orig: np.ndarray) -> np.ndarray:
        """``mask * orig`` (1), in the original tensor's dtype."""
        return self._mask(module).astype(orig.dtype, copy=False) * orig

    def backward(self, module: Module, grad: np.ndarray) -> np.ndarray:
        """d loss / d orig = grad * mask."""
        return grad * self._mask(module)

    def apply_mask(self, module: Module) -> np.ndarray:
        """``mask * orig`` (1) of ``module``'s tensor, computed now."""
        if self._tensor_name is None:
            raise RuntimeError(f"{module._name()} has to be pruned (apply()) before apply_mask()")
        return self.value(module, getattr(module, self._tensor_name + "_orig").data)

    @classmethod
    def apply(cls, module: Module, name: str, *args: Any, importance_scores: Any = None,
              **kwargs: Any) -> "BasePruningMethod":
        """Prune ``module.<name>`` with ``cls(*args, **kwargs)``; return the hook (method or container).

        Everything is checked and the mask computed before ``module`` is changed, so on any error
        the module is left as it was.
        """
        method = cls(*args, **kwargs)
        method._tensor_name = name
        old = pruning_hook(module, name)
        if old is None:
            param = dict(module.named_parameters(recurse=False)).get(name)
            if param is None:
                if hasattr(module, name):
                    raise TypeError(f"{module._name()}: {name!r} is not a Parameter and cannot be pruned")
                raise AttributeError(f"{module._name()} has no parameter {name!r} to prune")
            current, default_mask, hook = param.data, np.ones_like(param.data), method
        else:
            current = old.apply_mask(module)
            default_mask = np.array(getattr(module, name + "_mask"), copy=True, order="C")
            previous = list(old) if isinstance(old, PruningContainer) else [old]
            hook = PruningContainer(*previous, method)
        scores = current if importance_scores is None else np.asarray(importance_scores)
        if scores.shape != current.shape:
            raise ValueError(f"{module._name()}: importance_scores should have the shape of {name!r}, "
                             f"got {scores.shape} vs {current.shape}")
        mask = hook.compute_mask(scores, default_mask=default_mask)

        if isinstance(old, PruningContainer):  # keep the user's container object, as PyTorch does
            old.add_pruning_method(method)
            hook = old
        if old is not None:
            module.remove_parametrization(name, old, bake=False)
        module.register_buffer(name + "_mask", mask)
        module.register_parametrization(name, hook, original=name + "_orig", first=True)
        return hook

    def prune(self, t: np.ndarray, default_mask: np.ndarray | None = None,
              importance_scores: np.ndarray | None = None) -> np.ndarray:
        """``t * compute_mask(importance_scores or t, default_mask or ones)``, without any module.

        The product has PyTorch's promoted dtype (``torch_result_type``): a float32 ``t`` times an
        integer or bool mask stays float32, as in PyTorch (NumPy alone would give float64).
        """
        t = np.asarray(t)
        scores = t if importance_scores is None else np.asarray(importance_scores)
        if scores.shape != t.shape:
            raise ValueError(f"importance_scores should have the shape of t, got {scores.shape} vs {t.shape}")
        default_mask = np.ones_like(t) if default_mask is None else np.asarray(default_mask)
        mask = self.compute_mask(scores, default_mask=default_mask)
        return (t * mask).astype(torch_result_type(t.dtype, mask.dtype), copy=False)

    def remove(self, module: Module) -> None:
        """Make ``<name>`` a Parameter again (the original object) holding ``mask * orig``. Not undone."""
        name = self._tensor_name
        if name is None or pruning_hook(module, name) is not self:
            raise RuntimeError(f"{module._name()} has to be pruned before pruning can be removed")
        module.remove_parametrization(name, self, bake=True)
        delattr(module, name + "_mask")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "mask")
        return f"{type(self).__name__}({fields})"


class PruningContainer(BasePruningMethod):
    """The sequence of methods applied to one tensor; computes masks with its *last* method only.

    The last method sees only what is still unpruned (``default_mask``):
    unstructured -> the entries where mask == 1 (so 0.5 then 0.5 prunes 75 %);
    structured   -> the channels along ``dim`` not yet entirely zero (norms of the masked weights);
    global       -> the whole tensor.
    """

    def __init__(self, *methods: BasePruningMethod) -> None:
        self._pruning_methods: tuple[BasePruningMethod, ...] = ()
        for method in methods:
            self.add_pruning_method(method)

    def add_pruning_method(self, method: BasePruningMethod) -> None:
        if not isinstance(method, BasePruningMethod):
            raise TypeError(f"{type(method).__name__} is not a BasePruningMethod")
        if not self._pruning_methods and self._tensor_name is None:
            self._tensor_name = method._tensor_name
        if self._tensor_name != method._tensor_name:
            raise ValueError(f"PruningContainer acts on {self._tensor_name!r}, cannot add a method acting "
                             f"on {method._tensor_name!r}")
        self._pruning_methods += (method,)

    def __len__(self) -> int:
        return len(self._pruning_methods)

    def __iter__(self) -> Iterable[BasePruningMethod]:
        return iter(self._pruning_methods)

    def __getitem__(self, idx: int) -> BasePruningMethod:
        return self._pruning_methods[idx]

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        method = self._pruning_methods[-1]
        new_mask = default_mask.astype(t.dtype, copy=True)
        if method.PRUNING_TYPE == "unstructured":
            slc: Any = default_mask == 1
        elif method.PRUNING_TYPE == "structured":
            dim = _channel_dim(t, method.dim)
            others = tuple(d for d in range(t.ndim) if d != dim)
            slc = [slice(None)] * t.ndim
            slc[dim] = default_mask.sum(axis=others) != 0  # channels not yet all zero
            slc = tuple(slc)
        elif method.PRUNING_TYPE == "global":
            slc = (slice(None),) * t.ndim
        else:
            raise ValueError(f"Unrecognized PRUNING_TYPE {method.PRUNING_TYPE!r}")
        new_mask[slc] = method.compute_mask(t[slc], default_mask=default_mask[slc])
        return new_mask

    def __repr__(self) -> str:
        return f"PruningContainer({', '.join(map(repr, self._pruning_methods))})"


def torch_result_type(a: np.dtype, b: np.dtype) -> np.dtype:
    """The dtype PyTorch gives ``a_tensor * b_tensor``: a float dtype wins over any integer or bool
    dtype unchanged (float32 * int64 -> float32); two of one kind promote as NumPy does."""
    a, b = np.dtype(a), np.dtype(b)
    a_float, b_float = a.kind in "fc", b.kind in "fc"
    if a_float != b_float:
        return a if a_float else b
    return np.result_type(a, b)


def _channel_dim(t: np.ndarray, dim: int) -> int:
    """``dim`` as a non-negative axis of ``t``; IndexError (as PyTorch) if out of range."""
    if not -t.ndim <= dim < t.ndim:
        raise IndexError(f"Invalid index {dim} for tensor of size {t.shape}")
    return dim % t.ndim
