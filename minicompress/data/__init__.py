"""Bundled real data (UCI 8x8 handwritten digits) and a batch loader."""
from .digits import load_digits
from .loader import DataLoader

__all__ = ["load_digits", "DataLoader"]
