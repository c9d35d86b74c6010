"""The converter table: ONNX op type -> ``convert(builder, node)``, which emits modules (``Builder.emit``),
defines constants or aliases values. One file per family of operators."""
from .activations import ACTIVATIONS
from .arithmetic import ARITHMETIC
from .layers import LAYERS
from .quantized import QUANTIZED
from .shapes import SHAPES

CONVERTERS = {**LAYERS, **ACTIVATIONS, **ARITHMETIC, **SHAPES, **QUANTIZED}

__all__ = ["CONVERTERS"]
