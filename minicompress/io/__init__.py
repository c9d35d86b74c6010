"""Model files: state dicts in .npz / .safetensors / PyTorch checkpoints, and whole models.

- ``load_state_dict_file(path)`` reads ``.npz``, ``.safetensors`` and PyTorch ``.pt``/``.pth``
  (without torch, through a restricted unpickler) into ``{name: ndarray}``;
  ``save_state_dict_file(sd, path)`` writes ``.npz`` / ``.safetensors``; ``load_checkpoint(path)``
  returns a whole PyTorch checkpoint (epochs, optimizer state...) with tensors as ndarrays.
- ``save(model, path)`` / ``load(path)`` store a whole model — architecture as JSON plus its state —
  in a versioned, code-free zip; ``register_module`` makes your own Module classes storable.
- ``describe(path)`` summarises any of these files (what ``minicompress inspect`` prints).
- ``load_onnx(path)`` turns an ONNX model into an ``nn.GraphModule`` of the engine's layers (``onnx/``);
  ``export_onnx(model, path, example_input, int8_format='qdq')`` writes float and int8 models as ONNX
  (extra ``[onnx]``; ``onnx_export/``), QDQ or QOperator for int8.

Nothing here executes code from a file, and every write is atomic. Every loader takes
``max_bytes``, the most memory a file may make it inflate or build (``limits.py``; default 256 MiB +
64 x the file's size). The format is described in docs/model_format.md.
"""
from .atomic import atomic_write
from .describe import describe
from .errors import FileFormatError, UnsafePickleError
from .model_file import FORMAT_VERSION, load, read_model_file, save
from .onnx import OnnxImportError, load_onnx
from .onnx_export import export_onnx
from .registry import register_module
from .safetensors import parse_safetensors, read_safetensors, safetensors_bytes, write_safetensors
from .state_dict_file import load_state_dict_file, save_state_dict_file
from .torch_checkpoint import load_checkpoint

__all__ = [
    "load_state_dict_file", "save_state_dict_file", "save", "load", "describe", "register_module",
    "read_safetensors", "write_safetensors", "parse_safetensors", "safetensors_bytes", "read_model_file",
    "load_checkpoint", "load_onnx", "OnnxImportError", "export_onnx", "atomic_write", "FileFormatError",
    "UnsafePickleError", "FORMAT_VERSION",
]
