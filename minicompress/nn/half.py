"""float16 models: stored in float16, computed per operation in float32, as PyTorch's CPU kernels do.

``model.half()`` (= ``model.to(np.float16)``) halves the bytes of every floating parameter and buffer.
PyTorch's CPU kernels for ``torch.half`` compute in float32 ("opmath"): a GEMM or convolution multiplies
float16 operands (their products are exact in float32) and accumulates in float32, normalisations and
reductions run in float32, and each operation rounds its result to float16 once. The engine does the
same, one rule for every layer: a module that *computes* -- one with parameters or buffers of its own,
or one without children -- called with a float16 input or holding float16 state runs as

    y16 = fp16_rn( forward_fp32( fp32(x16), fp32(own parameters and buffers) ) )            (1)

Containers (``Sequential``, a model class whose forward only calls its children) pass arrays on
untouched, so every layer rounds its own output, as every PyTorch op does. The float32 copies live only
during the call; the stored state stays float16. Results agree with PyTorch's half model to float16
rounding where both round the same float32 value (float32 summation order can move a result by one
float16 ulp). Meant for inference: a backward after (1) computes float32 gradients that are stored in
float16, with no loss scaling.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

HALF, COMPUTE = np.dtype(np.float16), np.dtype(np.float32)
_SEEN = [False]        # has any float16 parameter or buffer been made? Until then no call pays for the check


def note(array: Any) -> None:
    """Called where arrays become parameters or buffers: the first float16 one switches eq. (1)'s check on."""
    if not _SEEN[0] and getattr(array, "dtype", None) == HALF:
        _SEEN[0] = True


def _is_half(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == HALF


def _cast(value: Any, dtype: np.dtype, only: np.dtype) -> Any:
    """Arrays of dtype ``only`` (also inside tuples / lists) cast to ``dtype``; anything else unchanged."""
    if isinstance(value, np.ndarray):
        return value.astype(dtype) if value.dtype == only else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype, only) for v in value)
    return value


def _any_half(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_any_half(v) for v in value)
    return _is_half(value)


def computes_in_half(module: Any, inputs: tuple) -> bool:
    """Whether eq. (1) applies to this call (module docstring). On every module call: plain loops, no
    allocations (a parameter decides for the module: ``to`` casts all of a module's tensors together).
    Free until the process has made a float16 parameter or buffer (``note``)."""
    if not _SEEN[0]:
        return False
    d = module.__dict__
    own = False
    for p in d["_parameters"].values():
        if p is not None:
            if p.data.dtype == HALF:
                return True
            own = True
            break
    if not own:
        for b in d["_buffers"].values():
            if b is not None:
                if b.dtype == HALF:
                    return True
                own = True
    for x in inputs:
        if (type(x) is np.ndarray and x.dtype == HALF) or (type(x) in (tuple, list) and _any_half(x)):
            return own or not d["_modules"]                 # a container without state: its children round
    return False


@contextmanager
def float32_state(module: Any) -> Iterator[None]:
    """The module's own float16 parameters and buffers as float32 copies for the duration of the call."""
    saved_params = {n: p.data for n, p in module._parameters.items() if p is not None and p.data.dtype == HALF}
    saved_buffers = {n: b for n, b in module._buffers.items() if b is not None and b.dtype == HALF}
    try:
        for n, data in saved_params.items():
            module._parameters[n].data = data.astype(COMPUTE)
        for n, b in saved_buffers.items():
            module._buffers[n] = b.astype(COMPUTE)
        module._values.clear()
        yield
    finally:
        for n, data in saved_params.items():
            module._parameters[n].data = data
        for n, b in saved_buffers.items():
            module._buffers[n] = b
        module._values.clear()


def forward_in_float32(module: Any, inputs: tuple) -> Any:
    """Eq. (1): float32 inputs and state, one rounding of the outputs to float16 (when an input was float16)."""
    with float32_state(module):
        output = module.forward(*_cast(inputs, COMPUTE, HALF))
    return _cast(output, HALF, COMPUTE) if _any_half(inputs) else output
