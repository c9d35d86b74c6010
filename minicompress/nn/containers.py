"""Containers: Sequential (children applied in order; backward runs them in reverse), ModuleList and
ModuleDict (hold children under PyTorch's keys ``0``, ``1``, ... / the dict's keys; no forward of
their own: the composite module that owns them calls them and writes the backward)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

import numpy as np

from .module import Module


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

    def backward_params(self, grad_output: np.ndarray) -> None:
        """The input was data: the children in reverse, the first through its own ``backward_params``
        (a Linear or Conv first computes no d input; a parameter-free first child such as Flatten
        takes its ordinary backward, so the child after it still computes its d input)."""
        children = list(self.children())
        for module in reversed(children[1:]):
            grad_output = module.backward(grad_output)
        if children:
            children[0].backward_params(grad_output)

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


class ModuleList(Module):
    """A list of modules registered under '0', '1', ..., as ``torch.nn.ModuleList`` (no forward)."""

    def __init__(self, modules: Any = None) -> None:
        super().__init__()
        for module in modules or ():
            self.append(module)

    def _key(self, idx: int) -> str:
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"ModuleList index {idx} is out of range for {n} modules")
        return str(idx % n)

    def __getitem__(self, idx: int | slice) -> Any:
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[self._key(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        self.add_module(self._key(idx), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Any) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError("ModuleList has no forward: call its modules from the owning module's forward")


class ModuleDict(Module):
    """Modules under string keys (insertion order), as ``torch.nn.ModuleDict`` (no forward)."""

    def __init__(self, modules: Any = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        delattr(self, key)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules: Any) -> None:
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self.add_module(str(key), module)

    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError("ModuleDict has no forward: call its modules from the owning module's forward")
