"""Global switch for whether forward passes keep what backward needs (``no_grad``)."""
from __future__ import annotations

import contextlib
from typing import Iterator

_enabled = True


def is_grad_enabled() -> bool:
    """True unless inside ``no_grad()``."""
    return _enabled


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Within this block forward passes keep no cache (inference only; backward raises)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous
