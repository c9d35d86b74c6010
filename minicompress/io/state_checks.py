"""A model file's arrays against the module tree they are loaded into: every check raises
``FileFormatError`` naming the file, the state key and the values.

- before a built-in layer is built: the shapes its config implies (``layer_shapes.py``);
- after each module is built, and for the whole model: every tensor's shape, and its dtype's
  kind — a floating-point tensor takes any floating dtype (``model.to(np.float64)`` is saved as
  such), any other takes the same kind (an int8 weight cannot become int64, nor a float a bool);
- after the state is in place: the quantization parameters of quantized modules, by key name
  (``scale`` / ``weight_scale`` finite and > 0; ``zero_point`` / ``weight_zero_point`` integers in
  the range of their quantized dtype; int8 weights where there is a ``weight_scale``).
"""
from __future__ import annotations

from itertools import chain

import numpy as np

from ..nn.module import Module, Parameter
from .errors import FileFormatError
from .layer_shapes import Shapes

_KINDS = {"f": "floating-point", "i": "signed integer", "u": "unsigned integer", "b": "boolean", "c": "complex"}
# the integer range of each quantized dtype (as quant.qtensor.QDTYPES); layer outputs are quint8, weights qint8
_QUANTIZED_RANGES = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2 ** 31), 2 ** 31 - 1)}


def state_key(where: str, tensor: str, pruned: list[str]) -> str:
    """The key of a module's tensor in the state: a pruned tensor is stored as ``<tensor>_orig``."""
    return f"{where}{tensor}_orig" if tensor in pruned else f"{where}{tensor}"


def check_expected_shapes(expected: Shapes, where: str, pruned: list[str], state: dict, name: str,
                          owner: str) -> None:
    """Before building ``owner`` (a description of the class and config): the file holds each tensor
    its config implies, with that shape."""
    for tensor, shape in expected.items():
        key = state_key(where, tensor, pruned)
        if key not in state:
            raise FileFormatError(f"{name}: {owner} has a {tensor} of shape {shape}, but the file has no {key!r}")
        if state[key].shape != shape:
            raise FileFormatError(f"{name}: {key!r} has shape {state[key].shape} but the architecture gives "
                                  f"{owner} a {tensor} of shape {shape}")


def check_tensor(key: str, array: np.ndarray, current: np.ndarray, owner: Module, name: str) -> None:
    """``array`` (from the file, under ``key``) can replace ``current``, a tensor of ``owner``."""
    attr = key.rpartition(".")[2]
    if array.shape != current.shape:
        raise FileFormatError(f"{name}: {key!r} has shape {array.shape} but the architecture gives "
                              f"{owner._name()} a {attr} of shape {current.shape}")
    if array.dtype.kind != current.dtype.kind:
        raise FileFormatError(f"{name}: {key!r} holds {array.dtype} values but {owner._name()} keeps its {attr} as "
                              f"{current.dtype}: a {_KINDS.get(current.dtype.kind, current.dtype.kind)} array")


def check_built_module(module: Module, where: str, pruned: list[str], state: dict, name: str) -> None:
    """Right after ``module`` is built: each of its own tensors that the file holds fits."""
    tensors = chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False))
    for tensor, value in tensors:
        key = state_key(where, tensor, pruned)
        if value is not None and key in state:
            check_tensor(key, state[key], value.data if isinstance(value, Parameter) else value, module, name)


def check_state(model: Module, state: dict, name: str) -> None:
    """The file's state has exactly the model's keys, each with a fitting shape and dtype."""
    slots = model.state_dict(keep_vars=True)
    missing = [key for key in slots if key not in state]
    unexpected = sorted(set(state) - set(slots))
    if missing or unexpected:
        raise FileFormatError(f"{name}: the state does not fit the architecture (missing {missing[:10]}, "
                              f"unexpected {unexpected[:10]})")
    for key, current in slots.items():
        owner = model.get_submodule(key.rpartition(".")[0])
        check_tensor(key, state[key], current.data if isinstance(current, Parameter) else current, owner, name)


def check_quantization(model: Module, name: str) -> None:
    """Scales and zero points of every quantized module, once the file's state is in place."""
    for where, module in model.named_modules():
        buffers = {k: v for k, v in module.named_buffers(recurse=False) if v is not None}
        prefix = f"{where}." if where else ""
        for attr in ("scale", "weight_scale"):
            if attr in buffers:
                _check_scale(f"{prefix}{attr}", buffers[attr], name)
        for attr in ("zero_point", "weight_zero_point"):
            if attr in buffers:
                _check_zero_point(f"{prefix}{attr}", buffers[attr], _zero_point_dtype(module, attr), name)
        weight = buffers.get("weight")
        if "weight_scale" in buffers and weight is not None and weight.dtype != np.int8:
            raise FileFormatError(f"{name}: {prefix + 'weight'!r} holds {weight.dtype} values but {module._name()} "
                                  f"keeps its weight as int8 codes")


def _check_scale(key: str, scale: np.ndarray, name: str) -> None:
    if scale.dtype.kind != "f" or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise FileFormatError(f"{name}: {key!r} = {scale.tolist()!r:.80} is not a valid quantization scale (each "
                              f"must be finite and > 0)")


def _zero_point_dtype(module: Module, attr: str) -> str:
    if attr == "weight_zero_point":
        return "qint8"
    dtype = getattr(module, "dtype", None)
    return dtype if isinstance(dtype, str) and dtype in _QUANTIZED_RANGES else "quint8"


def _check_zero_point(key: str, zero_point: np.ndarray, dtype: str, name: str) -> None:
    low, high = _QUANTIZED_RANGES[dtype]
    if zero_point.dtype.kind not in "iu" or not np.all((zero_point >= low) & (zero_point <= high)):
        raise FileFormatError(f"{name}: {key!r} = {zero_point.tolist()!r:.80} is not a valid {dtype} zero point "
                              f"(integers in [{low}, {high}])")
