"""ONNX import: ``load_onnx(path) -> nn.GraphModule`` (the ``[onnx]`` extra, imported only when called).

``reader.py`` turns the protobuf into plain Python, ``fold.py`` evaluates the constant shape arithmetic,
``builder.py`` holds one import's state, ``converters/`` maps each op type to the modules it becomes,
``load.py`` runs them in order. The semantics are in docs/onnx_import.md.
"""
from .builder import OnnxImportError
from .load import load_onnx, unsupported

__all__ = ["load_onnx", "unsupported", "OnnxImportError"]
