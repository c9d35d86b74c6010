"""minicompress: a pure-NumPy reference implementation of neural-network compression."""
from ._numba_cache import purge_stale

purge_stale()                                   # before any kernel module is imported (``_numba_cache.py``)
from .nn.grad_mode import is_grad_enabled, no_grad
from .nn.random import get_rng, manual_seed

__version__ = "0.1.0"
__all__ = ["no_grad", "is_grad_enabled", "manual_seed", "get_rng", "__version__"]
