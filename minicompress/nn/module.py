"""Parameter and Module: the containers of the autograd-free engine.

A Module owns Parameters (learned arrays with a ``.grad``), buffers (state that is saved but not
learned, e.g. BatchNorm running statistics) and child Modules, under PyTorch's names, so that
``state_dict()`` keys and layouts are exactly PyTorch's.

There is no autograd: every layer's ``forward`` keeps what its ``backward`` needs (unless inside
``no_grad()``), and ``backward(grad_output)`` returns d loss / d input while *accumulating*
d loss / d parameter into each parameter's ``.grad``. Backward never changes weights; optimizers do.

Two hooks let pruning and quantization-aware training re-parametrise a weight without the layer
knowing about it (as PyTorch does with ``weight_orig``/``weight_mask``):

- forward pre-hooks ``hook(module, inputs)`` run before every ``forward`` (they recompute e.g.
  ``weight = weight_orig * weight_mask``);
- gradient hooks ``hook(grad)`` registered under a name receive the gradient a layer reports for that
  name instead of a parameter of that name (e.g. ``weight_orig.grad += grad * weight_mask``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from .grad_mode import is_grad_enabled


class Parameter:
    """A learned array: ``data`` (ndarray) and ``grad`` (ndarray of the same shape, or None)."""

    __slots__ = ("data", "grad")

    def __init__(self, data: Any, grad: np.ndarray | None = None) -> None:
        self.data = np.array(data, dtype=getattr(data, "dtype", np.float32), copy=True)
        self.grad = grad

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class RemovableHandle:
    """Returned by ``register_*_hook``; ``remove()`` unregisters the hook."""

    def __init__(self, hooks: dict, key: Any) -> None:
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer, loss-free container and model."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_grad_hooks", OrderedDict())
        object.__setattr__(self, "_hook_counter", 0)
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ attributes
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call Module.__init__() before assigning {name!r}")
        params, buffers, modules = self._parameters, self._buffers, self._modules
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
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{self._name()}: add_module({name!r}) expects a Module, got {type(module).__name__}")
        self._modules[name] = module

    def array(self, name: str) -> np.ndarray | None:
        """The ndarray behind attribute ``name``: a Parameter's data, a buffer or a plain array."""
        value = getattr(self, name)
        return value.data if isinstance(value, Parameter) else value

    # ------------------------------------------------------------------ hooks
    def _add_hook(self, hooks: dict, key: Any, hook: Callable) -> RemovableHandle:
        hooks[key] = hook
        return RemovableHandle(hooks, key)

    def register_forward_pre_hook(self, hook: Callable[["Module", tuple], Any]) -> RemovableHandle:
        """``hook(module, inputs)`` runs before every forward; a non-None return replaces ``inputs``."""
        object.__setattr__(self, "_hook_counter", self._hook_counter + 1)
        return self._add_hook(self._forward_pre_hooks, self._hook_counter, hook)

    def register_grad_hook(self, name: str, hook: Callable[[np.ndarray], None]) -> RemovableHandle:
        """Route the gradient a layer reports for ``name`` to ``hook(grad)`` instead of a parameter."""
        if name in self._grad_hooks:
            raise ValueError(f"{self._name()}: a gradient hook for {name!r} is already registered")
        return self._add_hook(self._grad_hooks, name, hook)

    def accumulate_grad(self, name: str, grad: np.ndarray) -> None:
        """Add ``grad`` (d loss / d ``name``) to the parameter ``name``'s ``.grad``, or hand it to its hook."""
        hook = self._grad_hooks.get(name)
        if hook is not None:
            hook(grad)
            return
        param = self._parameters.get(name)
        if param is None:
            raise RuntimeError(f"{self._name()}: no parameter or gradient hook named {name!r}")
        if np.shape(grad) != param.data.shape:
            raise ValueError(f"{self._name()}: gradient for {name!r} has shape {np.shape(grad)}, "
                             f"the parameter has shape {param.data.shape}")
        if param.grad is None:
            param.grad = np.array(grad, dtype=param.data.dtype, copy=True)
        else:
            param.grad += grad

    # ------------------------------------------------------------------ calling
    def __call__(self, *inputs: Any) -> Any:
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, inputs)
            if result is not None:
                inputs = result if isinstance(result, tuple) else (result,)
        return self.forward(*inputs)

    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def _save_for_backward(self, cache: Any) -> None:
        """Keep ``cache`` for backward, or nothing inside ``no_grad()``."""
        object.__setattr__(self, "_cache", cache if is_grad_enabled() else None)

    def _saved(self) -> Any:
        cache = self.__dict__.get("_cache")
        if cache is None:
            raise RuntimeError(f"{self._name()}: backward() called without a forward() with gradients "
                               f"enabled (outside no_grad())")
        return cache

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

    def to(self, dtype: Any) -> "Module":
        """Cast every floating-point parameter (and its grad) and buffer to ``dtype``, in place."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"{self._name()}.to: expected a floating dtype, got {dtype}")
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
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self, prefix: str = "") -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and persistent buffer, under PyTorch's keys and layouts."""
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        self._save_to_state_dict(out, prefix)
        return out

    def _save_to_state_dict(self, out: dict, prefix: str) -> None:
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p.data.copy()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                out[prefix + name] = np.array(b, copy=True)
        for name, module in self.named_children():
            module._save_to_state_dict(out, f"{prefix}{name}.")

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

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from ``state_dict`` (PyTorch keys) into this module's parameters and buffers.

        Shapes must match exactly. With ``strict`` any missing or unexpected key is an error; without,
        they are returned. Nothing is changed unless every check passes.
        """
        slots = {key: (owner, name, current) for key, owner, name, current in self._state_slots()}
        missing = [k for k in slots if k not in state_dict]
        unexpected = [k for k in state_dict if k not in slots]
        errors = []
        for key, value in state_dict.items():
            if key in slots:
                current = slots[key][2]
                shape = tuple(np.shape(value))
                if shape != current.shape:
                    errors.append(f"size mismatch for {key!r}: copying an array of shape {shape}, "
                                  f"the parameter in this model has shape {current.shape}")
        if strict:
            if missing:
                errors.append(f"missing keys: {missing}")
            if unexpected:
                errors.append(f"unexpected keys: {unexpected}")
        if errors:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(errors))
        for key, (owner, name, current) in slots.items():
            if key in state_dict:    # copy into the existing array, as PyTorch's param.copy_(value)
                current[...] = np.asarray(state_dict[key]).astype(current.dtype, copy=False)
        return IncompatibleKeys(missing, unexpected)

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


class Sequential(Module):
    """Apply children in order: ``y = f_n(...f_2(f_1(x)))``; backward runs them in reverse."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def forward(self, x: Any) -> Any:
        for module in self.children():
            x = module(x)
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        for module in reversed(list(self.children())):
            grad_output = module.backward(grad_output)
        return grad_output

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, idx: int | slice) -> Any:
        items = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(items[idx]))
        return items[idx][1]

    def __setitem__(self, idx: int, module: Module) -> None:
        key = list(self._modules)[idx]
        self.add_module(key, module)

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self._modules)), module)
        return self
