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
    """Whether eq. (1) applies to this call (module docstring)."""
    params, buffers = module._parameters.values(), module._buffers.values()
    if any(p is not None and p.data.dtype == HALF for p in params) or any(_is_half(b) for b in buffers):
        return True
    if not _any_half(inputs):
        return False
    has_own = any(p is not None for p in params) or any(b is not None for b in buffers)
    return has_own or not module._modules                     # a container without state: its children round


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
