"""ONNX export (extra ``[onnx]``): ``export_onnx(model, path, example_input, int8_format='qdq')``.

``builder`` the ONNX graph under construction; ``float_ops`` float modules as ONNX operators;
``attention`` MultiheadAttention and a ViT's token modules written out; ``int8_ops`` int8 modules as
QDQ or QOperator groups; ``export`` the traced walk and the file.
``onnx`` is imported only when a model is exported.
"""
from .export import INT8_FORMATS, build_model, export_onnx

__all__ = ["export_onnx", "build_model", "INT8_FORMATS"]
