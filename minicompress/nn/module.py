"""Parameter and Module: the containers of the autograd-free engine.

A Module owns Parameters (learned arrays with a ``.grad``), buffers (state that is saved but not
learned, e.g. BatchNorm running statistics) and child Modules, under PyTorch's names, so that
``state_dict()`` keys and layouts are exactly PyTorch's.

There is no autograd: every layer's ``forward`` keeps what its ``backward`` needs (unless inside
``no_grad()``), and ``backward(grad_output)`` returns d loss / d input while *accumulating*
d loss / d parameter into each parameter's ``.grad``. Backward never changes weights; optimizers do.

The data boundary: when the input of a forward pass is data, nobody needs d loss / d input (PyTorch
does not compute it for a tensor that does not require grad). ``backward_params(grad_output)`` is the
backward for that case: it accumulates exactly the parameter gradients ``backward`` would, and
returns None. By default it runs ``backward`` and drops the result; Linear and Conv skip their
d input GEMM (and col2im), Sequential sends it to its first child, and the reference models to their
stem, so the work of the first layer's d input is never done. ``train.fit`` calls it.

The seams through which pruning, quantization, tracing and counting extend a layer without the
layer knowing about them (nothing outside ``nn`` touches a Module's private stores):

- forward pre-hooks ``hook(module, inputs)`` run before every ``forward`` (a non-None return
  replaces the inputs);
- forward hooks ``hook(module, inputs, output)`` run after it (a non-None return replaces the
  output); a hook that transforms the output gives its reverse as ``backward(module, grad)``, which
  the engine applies to the gradient before the module's own ``backward`` sees it;
- weight parametrizations: ``register_parametrization(name, p)`` makes the tensor a layer computes
  with ``p_k(...p_1(original))`` (``p.value(module, x)``), and routes the gradient the layer reports
  for ``name`` back through ``p.backward(module, grad)`` to the original Parameter. Pruning is the
  parametrization ``orig * mask`` (original kept as ``<name>_orig``, PyTorch's key), QAT the weight
  fake-quant, and both stack: ``fq(orig * mask)``;
- gradient hooks ``hook(grad)`` under a name receive the gradient reported for that name instead
  of a parameter.
- ``accepts_loaded_shape(name, shape)``: a module whose buffer's shape depends on the data seen
  (observers, fake-quants) lets ``load_state_dict`` give that buffer a differently shaped array.

A module may be called several times in one forward pass (torchvision's BasicBlock applies its
``relu`` twice): every call's cache is pushed on a last-in-first-out stack and each ``backward``
pops one, so backward calls in reverse call order (reverse-mode order) see their own call's cache.
"""
from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from typing import Any, Callable, Iterator

import numpy as np

from .grad_mode import is_grad_enabled
from .half import computes_in_half, forward_in_float32
from .half import note as note_half
from .parameter import IncompatibleKeys, Parameter, Parametrized, RemovableHandle

__all__ = ["Module", "Parameter", "Parametrized", "RemovableHandle", "IncompatibleKeys", "CACHE_WARNING_DEPTH"]


# A module holding this many forward caches that no backward has used yet gets one warning.
CACHE_WARNING_DEPTH = 1024


def _through_forward_hooks(backward: Callable) -> Callable:
    """Wrap a class's ``backward``: first the reverse of every output-transforming forward hook."""

    @functools.wraps(backward)
    def wrapped(self: "Module", *args: Any, **kwargs: Any) -> Any:
        d = self.__dict__
        hooks = d.get("_forward_hooks")
        if not hooks or d.get("_in_backward"):     # no hooks, or a subclass's backward calling super()
            return backward(self, *args, **kwargs)
        grad = args[0] if args else kwargs.pop("grad_output")
        for _, hook_backward in reversed(list(hooks.values())):
            if hook_backward is not None:
                grad = hook_backward(self, grad)
        d["_in_backward"] = True
        try:
            return backward(self, grad, *args[1:], **kwargs)
        finally:
            d["_in_backward"] = False

    wrapped._through_forward_hooks = True
    return wrapped


class Module:
    """Base class of every layer, loss-free container and model."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("backward", "backward_params"):
            backward = cls.__dict__.get(name)
            if backward is not None and not getattr(backward, "_through_forward_hooks", False):
                setattr(cls, name, _through_forward_hooks(backward))

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_grad_hooks", OrderedDict())
        object.__setattr__(self, "_parametrizations", OrderedDict())
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_caches", [])
        object.__setattr__(self, "_hook_counter", 0)
        object.__setattr__(self, "training", True)

    def __getstate__(self) -> dict:
        """Copies and pickles carry no forward caches (they belong to one pass of one object)."""
        state = self.__dict__.copy()
        state["_caches"], state["_values"] = [], {}
        return state

    # ------------------------------------------------------------------ attributes
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call Module.__init__() before assigning {name!r}")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        entry = self.__dict__["_parametrizations"].get(name) if "_parametrizations" in self.__dict__ else None
        if entry is not None and entry.original != name:
            raise AttributeError(f"{self._name()}: {name!r} is parametrized ({', '.join(map(repr, entry.chain))}); "
                                 f"assign to {entry.original!r} instead")
        if isinstance(value, Parameter):
            buffers.pop(name, None), modules.pop(name, None), self.__dict__.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None), buffers.pop(name, None), self.__dict__.pop(name, None)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"{self._name()}: cannot assign {type(value).__name__} to parameter "
                                f"{name!r} (use a Parameter, or set {name}.data)")
            params[name] = None
        elif name in buffers:
            buffers[name] = None if value is None else np.asarray(value)
            note_half(buffers[name])
        elif name in modules:
            if value is not None:
                raise TypeError(f"{self._name()}: cannot assign {type(value).__name__} to child module {name!r}")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        entry = d.get("_parametrizations", {}).get(name)
        if entry is not None:   # a parametrized tensor whose Parameter lives elsewhere (pruning: weight_orig)
            value = d["_values"].get(name)
            return self.array(name) if value is None else value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{self._name()}: register_parameter({name!r}) expects a Parameter or None, "
                            f"got {type(param).__name__}")
        self.__dict__.pop(name, None)
        self._buffers.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name: str, array: np.ndarray | None, persistent: bool = True) -> None:
        self.__dict__.pop(name, None)
        self._parameters.pop(name, None)
        self._buffers[name] = None if array is None else np.asarray(array)
        note_half(self._buffers[name])
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{self._name()}: add_module({name!r}) expects a Module, got {type(module).__name__}")
        self._modules[name] = module

    def array(self, name: str, before: Any = None) -> np.ndarray | None:
        """The ndarray a layer computes with under attribute ``name``.

        A parametrized tensor: ``p_k(...p_1(original.data))``, computed now (each parametrization's
        forward runs once per call, so a layer calls this once per tensor per forward); with ``before``,
        only the parametrizations ahead of that one (e.g. a QAT weight before its fake-quant). Otherwise
        a Parameter's data, a buffer, a plain array or None.
        """
        entry = self._parametrizations.get(name)
        if entry is None:
            value = getattr(self, name)
            return value.data if isinstance(value, Parameter) else value
        value = self._parameters[entry.original].data
        for parametrization in entry.chain:
            if parametrization is before:
                return value
            value = parametrization.value(self, value)
        self._values[name] = value
        return value

    # ------------------------------------------------------------------ parametrizations
    def register_parametrization(self, name: str, parametrization: Any, *, original: str | None = None,
                                 first: bool = False) -> None:
        """Compute tensor ``name`` as ``parametrization.value(self, x)`` of what it was (eq. chain).

        ``parametrization`` has ``value(module, x) -> array`` and ``backward(module, grad) -> grad``
        (d loss / d x from d loss / d value). The first parametrization of ``name`` may move the
        Parameter to attribute ``original`` (pruning keeps PyTorch's ``<name>_orig``); ``name`` then
        reads as the last computed value. ``first=True`` puts it before the others (it then acts on the
        stored Parameter itself, as pruning does). Gradients the layer reports for ``name`` go back
        through the chain in reverse to the Parameter.
        """
        entry = self._parametrizations.get(name)
        if entry is None:
            param = self._parameters.get(name)
            if param is None:
                raise AttributeError(f"{self._name()} has no parameter {name!r} to parametrize")
            original = name if original is None else original
            if original != name:
                if original in self._parameters or original in self._buffers or original in self._modules:
                    raise ValueError(f"{self._name()}: cannot move {name!r} to {original!r}: the name is taken")
                self._parameters[original] = param
                del self._parameters[name]
            entry = Parametrized(original, (parametrization,))
        else:
            moved = entry.original
            if original is not None and original != entry.original:
                if not (first and entry.original == name):
                    raise ValueError(f"{self._name()}: {name!r} is already parametrized from {entry.original!r}, "
                                     f"not {original!r}")
                self._parameters[original] = self._parameters.pop(name)   # the new first one moves it
                moved = original
            chain = (parametrization,) + entry.chain if first else entry.chain + (parametrization,)
            entry = Parametrized(moved, chain)
        self._parametrizations[name] = entry
        self._values.pop(name, None)

    def remove_parametrization(self, name: str, parametrization: Any, bake: bool = True) -> None:
        """Take ``parametrization`` out of ``name``'s chain.

        ``bake`` (it must be first in the chain) writes its value into the Parameter:
        ``original.data = parametrization.value(self, original.data)`` (pruning's ``remove``).
        Removing the first parametrization (or the last one) stores the Parameter under ``name`` again.
        """
        entry = self._parametrizations.get(name)
        if entry is None or not any(p is parametrization for p in entry.chain):
            raise ValueError(f"{self._name()}: {parametrization!r} does not parametrize {name!r}")
        param = self._parameters[entry.original]
        if bake:
            if entry.chain[0] is not parametrization:
                raise ValueError(f"{self._name()}: only the first parametrization of {name!r} can be baked in")
            param.data = parametrization.value(self, param.data)
        chain = tuple(p for p in entry.chain if p is not parametrization)
        self._values.pop(name, None)
        original = entry.original
        if original != name and (not chain or entry.chain[0] is parametrization):
            del self._parameters[original]      # the move to `original` belonged to the first one
            self._parameters[name] = param
            original = name
        if chain:
            self._parametrizations[name] = Parametrized(original, chain)
        else:
            del self._parametrizations[name]

    def parametrizations(self) -> "OrderedDict[str, Parametrized]":
        """``{tensor name: Parametrized(original attribute, chain)}`` of this module (not its children)."""
        return OrderedDict(self._parametrizations)

    def refresh_parametrizations(self) -> None:
        """Forget the last computed values, so reading a parametrized name recomputes it."""
        self._values.clear()

    # ------------------------------------------------------------------ hooks
    def _add_hook(self, hooks: dict, key: Any, hook: Callable) -> RemovableHandle:
        hooks[key] = hook
        return RemovableHandle(hooks, key)

    def register_forward_pre_hook(self, hook: Callable[["Module", tuple], Any]) -> RemovableHandle:
        """``hook(module, inputs)`` runs before every forward; a non-None return replaces ``inputs``."""
        object.__setattr__(self, "_hook_counter", self._hook_counter + 1)
        return self._add_hook(self._forward_pre_hooks, self._hook_counter, hook)

    def register_forward_hook(self, hook: Callable[["Module", tuple, Any], Any],
                              backward: Callable[["Module", Any], Any] | None = None) -> RemovableHandle:
        """``hook(module, inputs, output)`` runs after every forward; a non-None return replaces ``output``.

        A hook that transforms the output gives ``backward(module, grad) -> grad`` (the gradient with
        respect to what ``forward`` returned, from the gradient with respect to the hook's result);
        the engine applies it, hooks in reverse order, before the module's own ``backward``.
        """
        object.__setattr__(self, "_hook_counter", self._hook_counter + 1)
        return self._add_hook(self._forward_hooks, self._hook_counter, (hook, backward))

    def forward_hooks(self) -> list:
        """This module's forward hooks, in the order they run."""
        return [hook for hook, _ in self._forward_hooks.values()]

    def forward_pre_hooks(self) -> list:
        """This module's forward pre-hooks, in the order they run."""
        return list(self._forward_pre_hooks.values())

    def register_grad_hook(self, name: str, hook: Callable[[np.ndarray], None]) -> RemovableHandle:
        """Route the gradient a layer reports for ``name`` to ``hook(grad)`` instead of a parameter."""
        if name in self._grad_hooks:
            raise ValueError(f"{self._name()}: a gradient hook for {name!r} is already registered")
        return self._add_hook(self._grad_hooks, name, hook)

    def accumulate_grad(self, name: str, grad: np.ndarray, fresh: bool = False) -> None:
        """Add ``grad`` (d loss / d ``name``) to the parameter ``name``'s ``.grad``, or hand it to its hook.

        ``fresh``: the caller computed ``grad`` for this call and keeps no other reference to it (a
        layer's dW = dy^T x); the first accumulation then stores that array as ``.grad`` instead of a
        copy, provided the parametrizations hand it back unchanged and it has the parameter's dtype.
        """
        hook = self._grad_hooks.get(name)
        if hook is not None:
            hook(grad)
            return
        given = grad
        entry = self._parametrizations.get(name)
        if entry is not None:                   # d loss / d original through the chain, in reverse
            for parametrization in reversed(entry.chain):
                grad = parametrization.backward(self, grad)
            name = entry.original
        param = self._parameters.get(name)
        if param is None:
            raise RuntimeError(f"{self._name()}: no parameter or gradient hook named {name!r}")
        if np.shape(grad) != param.data.shape:
            raise ValueError(f"{self._name()}: gradient for {name!r} has shape {np.shape(grad)}, "
                             f"the parameter has shape {param.data.shape}")
        if param.grad is not None:
            param.grad += grad
        elif fresh and grad is given and grad.dtype == param.data.dtype and grad.flags.writeable:
            param.grad = grad
        else:
            param.grad = np.array(grad, dtype=param.data.dtype, copy=True)

    # ------------------------------------------------------------------ calling
    def __call__(self, *inputs: Any) -> Any:
        d = self.__dict__
        if d["_forward_pre_hooks"]:
            for hook in list(d["_forward_pre_hooks"].values()):
                result = hook(self, inputs)
                if result is not None:
                    inputs = result if isinstance(result, tuple) else (result,)
        output = forward_in_float32(self, inputs) if computes_in_half(self, inputs) else self.forward(*inputs)
        if d["_forward_hooks"]:
            for hook, _ in list(d["_forward_hooks"].values()):
                result = hook(self, inputs, output)
                if result is not None:
                    output = result
        return output

    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def backward_params(self, grad_output: Any) -> None:
        """The backward of a call whose input was data: accumulate every parameter gradient as
        ``backward`` does, without computing d loss / d input; returns None (module docstring).

        This default runs ``backward`` and drops its result, which is right for any module; modules
        that can skip the work of d input override it.
        """
        self.backward(grad_output)

    def _save_for_backward(self, cache: Any) -> None:
        """Push ``cache`` for the backward of this call (nothing inside ``no_grad()``)."""
        if not is_grad_enabled():
            return
        caches = self.__dict__["_caches"]
        caches.append(cache)
        if len(caches) == CACHE_WARNING_DEPTH:
            warnings.warn(f"{self._name()} holds {len(caches)} forward caches that no backward has used: run "
                          f"inference inside minicompress.no_grad(), or call model.clear_caches()",
                          ResourceWarning, stacklevel=3)

    def _saved(self, keep_last: bool = False) -> Any:
        """Pop the cache of the latest forward call not yet consumed by a backward.

        ``keep_last`` (losses): the only cache left stays, so ``loss.backward()`` can be repeated.
        """
        caches = self.__dict__.get("_caches")
        if not caches:
            raise RuntimeError(f"{self._name()}: backward() called without a forward() with gradients "
                               f"enabled (outside no_grad()), or more often than forward()")
        return caches[0] if keep_last and len(caches) == 1 else caches.pop()

    def clear_caches(self) -> "Module":
        """Drop every forward cache of this module and its children (forward calls no backward will use)."""
        for module in self.modules():
            module.__dict__["_caches"].clear()
        return self

    # ------------------------------------------------------------------ traversal
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator["Module"]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, memo: set | None = None, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self.named_children():
            yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def get_submodule(self, target: str) -> "Module":
        """The submodule at dotted path ``target`` ('' is this module), as PyTorch's."""
        module = self
        for part in target.split(".") if target else ():
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (looking up {target!r} "
                                     f"in {type(self).__name__})")
            module = child
        return module

    def set_submodule(self, target: str, module: "Module") -> None:
        """Put ``module`` at dotted path ``target`` (the parent must exist), as PyTorch's."""
        if not target:
            raise ValueError("set_submodule: target must name a submodule, got ''")
        parent_path, _, name = target.rpartition(".")
        self.get_submodule(parent_path).add_module(name, module)

    def _named_members(self, store: str, prefix: str, recurse: bool) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, value in getattr(module, store).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "Module":
        object.__setattr__(self, "training", bool(mode))
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def half(self) -> "Module":
        """``to(np.float16)``: float16 storage, float32 compute per layer (``nn.half``)."""
        return self.to(np.float16)

    def to(self, dtype: Any) -> "Module":
        """Cast every floating-point parameter (and its grad) and buffer to ``dtype``, in place."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"{self._name()}.to: expected a floating dtype, got {dtype}")
        note_half(np.empty(0, dtype))
        for module in self.modules():
            for p in module._parameters.values():
                if p is not None and p.data.dtype.kind == "f":
                    p.data = p.data.astype(dtype)
                    p.grad = None if p.grad is None else p.grad.astype(dtype)
            for name, b in module._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    module._buffers[name] = b.astype(dtype)
            for name, value in list(module.__dict__.items()):
                if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not name.startswith("_"):
                    object.__setattr__(module, name, value.astype(dtype))
            module._values.clear()
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> "OrderedDict[str, Any]":
        """Copies of every parameter and persistent buffer, under PyTorch's keys and layouts.

        ``keep_vars=True`` (PyTorch's argument) gives the Parameter objects and the buffer arrays
        themselves instead of copies.
        """
        out: OrderedDict[str, Any] = OrderedDict()
        for key, _, name, array in self._state_slots(prefix):
            if not keep_vars:
                out[key] = np.array(array, copy=True)
            else:
                owner = self.get_submodule(key[len(prefix):].rpartition(".")[0])
                out[key] = owner._parameters.get(name, array)
        return out

    def _state_slots(self, prefix: str = "") -> Iterator[tuple[str, "Module", str, np.ndarray]]:
        """(key, owner module, attribute name, current array) for every state-dict entry."""
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, self, name, p.data
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                yield prefix + name, self, name, b
        for name, module in self.named_children():
            yield from module._state_slots(f"{prefix}{name}.")

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> IncompatibleKeys:
        """Copy arrays from ``state_dict`` (PyTorch keys) into this module's parameters and buffers.

        Shapes must match exactly, except for buffers whose module accepts the loaded shape
        (:meth:`accepts_loaded_shape`): those are replaced by a copy of the loaded array in the
        buffer's dtype. With ``strict`` any missing or unexpected key is an error; without,
        they are returned. Every value is converted and checked first (an array of numbers, of the
        parameter's shape; integers for an integer buffer); nothing is changed unless every check
        passes, and the error names each bad key. ``assign=True`` (PyTorch's
        argument) stores the given arrays themselves, dtype included, instead of copying into the
        current ones.
        """
        slots = {key: (owner, name, current) for key, owner, name, current in self._state_slots()}
        missing = [k for k in slots if k not in state_dict]
        unexpected = [k for k in state_dict if k not in slots]
        errors, arrays = [], {}
        for key, value in state_dict.items():
            if key not in slots:
                continue
            current = slots[key][2]
            try:
                array = np.asarray(value)
            except Exception as exc:                 # ragged lists and the like
                errors.append(f"{key!r} is not an array ({type(exc).__name__}: {exc})")
                continue
            owner, name = slots[key][0], slots[key][1]
            resizable = name in owner._buffers and owner.accepts_loaded_shape(name, array.shape)
            if array.dtype.kind not in "biuf":
                errors.append(f"{key!r} holds {array.dtype} values, not numbers")
            elif array.shape != current.shape and not resizable:
                errors.append(f"size mismatch for {key!r}: copying an array of shape {array.shape}, "
                              f"the parameter in this model has shape {current.shape}")
            elif current.dtype.kind in "iu" and array.dtype.kind == "f" and not np.all(array == np.round(array)):
                errors.append(f"{key!r}: the model holds integers ({current.dtype}), got non-integer floats")
            arrays[key] = array
        if strict:
            if missing:
                errors.append(f"missing keys: {missing}")
            if unexpected:
                errors.append(f"unexpected keys: {unexpected}")
        if errors:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(errors))
        for key, (owner, name, current) in slots.items():
            if key not in arrays:
                continue
            if not assign and arrays[key].shape != current.shape:   # a resizable buffer (see above)
                owner._buffers[name] = np.array(arrays[key], dtype=current.dtype)
            elif not assign:         # copy into the existing array, as PyTorch's param.copy_(value)
                current[...] = arrays[key].astype(current.dtype, copy=False)
            elif name in owner._parameters:
                owner._parameters[name].data = arrays[key]
            else:
                owner._buffers[name] = arrays[key]
            note_half(arrays[key])
        for module in self.modules():
            module._values.clear()
        return IncompatibleKeys(missing, unexpected)

    def accepts_loaded_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        """Whether ``load_state_dict`` may give buffer ``name`` a loaded array of another ``shape``.

        The seam for state whose shape is only known after data was seen (PyTorch's
        ``_load_from_state_dict`` overrides that ``resize_`` a buffer): a per-channel observer's
        running min / max start empty and become (C,), a FakeQuantize's scale / zero point start (1,).
        The default accepts nothing: shapes must match. Parameters never change shape on load.
        """
        return False

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def _name(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self.named_children()]
        if not lines:
            return self._name()
        body = "\n  ".join(lines)
        return f"{type(self).__name__}(\n  {body}\n)"
