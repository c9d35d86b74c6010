"""Frozen inference plans (``freeze``): a model's eval forward on buffers allocated once, channels last.

See ``plan.py``. ``freeze(model)(x)`` returns what ``model(x)`` returns under ``no_grad()``: int8 codes bit
for bit, float results to float32 rounding (BatchNorm folded).
"""
from .plan import MAX_SHAPES, InferencePlan, ModuleCall, Spec, Step, freeze, register_builder

__all__ = ["InferencePlan", "MAX_SHAPES", "ModuleCall", "Spec", "Step", "freeze", "register_builder"]
