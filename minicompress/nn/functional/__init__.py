"""Functional forward/backward pairs: the math of every op, written once."""
