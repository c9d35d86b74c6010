"""Putting an initializer into a freshly built layer."""
from __future__ import annotations

import numpy as np

from ....nn.module import Module, Parameter


def set_tensor(module: Module, name: str, array: np.ndarray) -> None:
    """``module.<name>`` becomes a float32 Parameter (or buffer) holding a copy of ``array``."""
    value = np.array(array, np.float32, order="C")      # C order: a transposed MatMul weight too
    if isinstance(getattr(module, name, None), Parameter):
        module.register_parameter(name, Parameter(value))
    else:
        module.register_buffer(name, value)
