"""How much to prune: ``amount`` -> a count, validated exactly as ``torch.nn.utils.prune``.

An ``int`` amount (any ``numbers.Integral``, so ``True`` too) is an absolute count; anything else
that is a ``numbers.Real`` is a fraction in [0, 1]. The count of a fraction is Python's
``round(amount * n)`` — half to even on the double product — so ``0.35 * 10 == 3.5 -> 4`` and
``0.25 * 10 == 2.5 -> 2``. ``1`` prunes one entry, ``1.0`` prunes them all.
"""
from __future__ import annotations

import numbers

__all__ = ["validate_amount", "count_to_prune", "validate_count"]


def validate_amount(amount: object) -> None:
    """Check ``amount`` before the tensor size is known.

    Raises
    ------
    TypeError
        ``amount`` is not a real number.
    ValueError
        a float outside [0, 1], or a negative int.
    """
    if not isinstance(amount, numbers.Real):
        raise TypeError(f"Invalid type for amount: {amount!r}. Must be int or float.")
    if isinstance(amount, numbers.Integral):
        bad = amount < 0
    else:
        bad = not 0.0 <= float(amount) <= 1.0  # NaN is bad too
    if bad:
        raise ValueError(f"amount={amount} should either be a float in the range [0, 1] "
                         f"or a non-negative integer")


def count_to_prune(amount: numbers.Real, size: int) -> int:
    """Number of entries (or channels) to prune out of ``size``: ``amount`` itself or ``round(amount * size)``."""
    if isinstance(amount, numbers.Integral):
        return int(amount)
    return int(round(amount * size))


def validate_count(amount: numbers.Real, size: int) -> None:
    """An int ``amount`` may not exceed ``size`` (a fraction never can). Raises ValueError."""
    if isinstance(amount, numbers.Integral) and amount > size:
        raise ValueError(f"amount={amount} should be smaller than the number of parameters to prune={size}")
