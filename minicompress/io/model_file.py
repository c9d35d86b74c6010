"""Whole-model files: the architecture as JSON plus the state arrays, in one zip (an ``.npz``).

Layout (docs/model_format.md is the reference)::

    architecture.json      {"format": "minicompress.model", "format_version": 1,
                            "minicompress_version": "0.1.0", "metadata": {...},
                            "state": ["0.weight", ...], "model": <node>}
    <state key>.npy        one per ``model.state_dict()`` entry, exact dtype and shape
    config/<n>.npy         arrays used as constructor arguments (rare)

    <node> = {"class": "minicompress.nn.Linear", "config": {"in_features": 4, ...},
              "training": false, "pruned": ["weight"], "children": {"0": <node>, ...}}

Because the arrays are ``.npy`` members, ``numpy.load(path)`` reads the state dict directly. Loading
parses JSON and ``.npy`` headers only (``allow_pickle=False``), instantiates classes found in the
registry (``registry.py``) and never imports or runs anything the file names.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any, Mapping

import numpy as np

from ..nn.module import Module, Parameter
from ..prune.base import pruned_tensors
from ..prune.functional import custom_from_mask
from .atomic import atomic_write
from .errors import FileFormatError
from .layer_shapes import expected_shapes
from .limits import ByteBudget, read_member
from .npz import read_npz, write_npz
from .registry import ModuleSpec, spec_for_class, spec_for_name
from .state_checks import check_built_module, check_expected_shapes, check_quantization, check_state

FORMAT = "minicompress.model"
FORMAT_VERSION = 1
ARCHITECTURE = "architecture.json"
MAX_ARCHITECTURE_BYTES = 1 << 26


# ---------------------------------------------------------------------------------------- saving
def save(model: Module, path: str | os.PathLike, compress: bool = True,
         metadata: Mapping[str, Any] | None = None, verify: bool = True) -> None:
    """Write ``model`` (architecture + state; float, pruned or quantized) to ``path``, atomically.

    ``compress`` deflates the arrays (pruned zeros and int8 weights shrink well); ``metadata`` is
    any JSON-able mapping stored as is (e.g. accuracy, recipe). Every module class must be known
    to the registry (all minicompress modules are; register your own with ``register_module``).
    ``verify`` rebuilds the model from what would be written, as ``load`` will, and refuses to write
    a file that would not give back the same module tree — a wrong config fails now, not at load.
    """
    from .. import __version__

    config_arrays: dict[str, np.ndarray] = {}
    tree = _module_node(model, "", config_arrays)
    state = model.state_dict()
    clashes = [k for k in state if k == ARCHITECTURE or k.startswith("config/")]
    if clashes:
        raise ValueError(f"cannot save: state keys {clashes} clash with the file layout")
    architecture = {"format": FORMAT, "format_version": FORMAT_VERSION, "minicompress_version": __version__,
                    "metadata": dict(metadata or {}), "state": list(state), "model": tree}
    text = json.dumps(architecture, separators=(",", ":")).encode("utf-8")
    if verify:
        _verify_rebuild(model, json.loads(text)["model"], state, config_arrays)
    with atomic_write(path) as f:
        write_npz(f, {**state, **config_arrays}, compress, extra={ARCHITECTURE: text})


def _verify_rebuild(model: Module, tree: dict, state: dict, config_arrays: dict) -> None:
    where = f"<{type(model).__name__} being saved>"
    try:
        rebuilt = _build(tree, "", state, config_arrays, where)
        _restore_state(rebuilt, state, where)
    except FileFormatError as e:
        raise ValueError(f"cannot save: the model would not load back: {e}") from e
    pairs = list(zip(model.named_modules(), rebuilt.named_modules()))
    for (key, original), (_, copy) in reversed(pairs):  # children first: report the deepest difference
        if type(original) is not type(copy) or repr(original) != repr(copy):
            raise ValueError(f"cannot save: module {key or '(root)'} would load back as {copy!r:.200} instead of "
                             f"{original!r:.200}; give {type(original).__name__} _config()/_from_config() or "
                             f"register it with to_config/from_config")


def _module_node(module: Module, where: str, arrays: dict) -> dict:
    spec = spec_for_class(type(module))
    children = dict(module.named_children())
    config = spec.to_config(module)
    if not isinstance(config, dict):
        raise TypeError(f"cannot save {module._name()}: its to_config returned a {type(config).__name__}, not a dict")
    node: dict[str, Any] = {
        "class": spec.name,
        "config": {k: _encode(v, module, f"{where}{k}", arrays, children) for k, v in config.items()},
        "training": bool(module.training),
    }
    pruned = list(pruned_tensors(module))
    if pruned:
        node["pruned"] = pruned
    node["children"] = {name: _module_node(child, f"{where}{name}.", arrays) for name, child in children.items()}
    return node


def _encode(value: Any, module: Module, where: str, arrays: dict, children: dict) -> Any:
    """A config value as JSON (see registry.py for what is allowed)."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_encode(v, module, f"{where}.{i}", arrays, children) for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, module, f"{where}.{k}", arrays, children) for k, v in value.items()}}
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return {"__dtype__": np.dtype(value).str}
    if isinstance(value, np.ndarray):
        member = f"config/{where}"
        arrays[member] = value
        return {"__array__": member}
    if isinstance(value, Module):
        for name, child in children.items():
            if child is value:
                return {"__child__": name}
    raise TypeError(f"cannot save {module._name()}: constructor argument {where!r} is a {type(value).__name__}, "
                    f"which a model file cannot store; give the class _config()/_from_config() or use "
                    f"register_module(cls, to_config, from_config)")


# ---------------------------------------------------------------------------------------- loading
def read_model_file(path: str | os.PathLike, *,
                    max_bytes: int | None = None) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(architecture, state, config_arrays)`` of a model file, checked but not instantiated.

    ``max_bytes`` bounds the bytes of the arrays inflated (``limits.py``; default 256 MiB + 64 x
    the file's size).
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if ARCHITECTURE not in archive.namelist():
                raise FileFormatError(f"{name}: not a minicompress model file (no {ARCHITECTURE}); for a state "
                                      f"dict use model.load_state_dict(io.load_state_dict_file(path))")
            raw = read_member(archive, archive.getinfo(ARCHITECTURE), name, MAX_ARCHITECTURE_BYTES)
            architecture = json.loads(raw.decode("utf-8"))
    except FileFormatError:
        raise
    except Exception as e:  # BadZipFile, bad CRC, invalid UTF-8 or JSON, nesting too deep...
        raise FileFormatError(f"{name}: not a readable model file ({type(e).__name__}: {e})"[:300]) from None
    _check_header(architecture, name)
    arrays = read_npz(data, name, ByteBudget(name, len(data), max_bytes), skip=(ARCHITECTURE,))
    config_arrays = {k: v for k, v in arrays.items() if k.startswith("config/")}
    state = {k: v for k, v in arrays.items() if not k.startswith("config/")}
    if list(state) != architecture["state"]:
        raise FileFormatError(f"{name}: the stored arrays {sorted(state)[:10]} do not match the state keys "
                              f"listed in {ARCHITECTURE} {architecture['state'][:10]}")
    return architecture, state, config_arrays


def _check_header(architecture: Any, name: str) -> None:
    if not isinstance(architecture, dict) or architecture.get("format") != FORMAT:
        raise FileFormatError(f"{name}: {ARCHITECTURE} does not describe a {FORMAT} file")
    version = architecture.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise FileFormatError(f"{name}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise FileFormatError(f"{name}: written in model format {version} (minicompress "
                              f"{architecture.get('minicompress_version')}); this minicompress reads format "
                              f"{FORMAT_VERSION} and older: upgrade minicompress")
    if not isinstance(architecture.get("model"), dict) or not isinstance(architecture.get("state"), list):
        raise FileFormatError(f"{name}: {ARCHITECTURE} lacks 'model' or 'state'")


def load(path: str | os.PathLike, *, max_bytes: int | None = None) -> Module:
    """Rebuild the model saved by ``save``: same classes, arguments, children, modes and arrays.

    ``max_bytes`` bounds the bytes of the arrays read (``limits.py``; default 256 MiB + 64 x the
    file's size).
    """
    name = os.fspath(path)
    architecture, state, config_arrays = read_model_file(path, max_bytes=max_bytes)
    try:
        model = _build(architecture["model"], "", state, config_arrays, name)
    except RecursionError:
        raise FileFormatError(f"{name}: the module tree is nested too deeply") from None
    _restore_state(model, state, name)
    return model


def _build(node: Any, where: str, state: dict, arrays: dict, name: str) -> Module:
    at = f"module {where[:-1]!r}" if where else "the root module"
    if (not isinstance(node, dict) or not isinstance(node.get("class"), str)
            or not isinstance(node.get("config"), dict) or not isinstance(node.get("children"), dict)):
        raise FileFormatError(f"{name}: {at}: expected {{'class', 'config', 'children'}}, got {str(node)[:80]}")
    spec = spec_for_name(node["class"])
    if spec is None:
        raise FileFormatError(f"{name}: {at} is a {node['class']!r}, which is not a known module class; if it "
                              f"is yours, call minicompress.io.register_module(<the class>) before loading")
    children = {k: None if child is None else _build(child, f"{where}{k}.", state, arrays, name)
                for k, child in node["children"].items()}
    config = {k: _decode(v, arrays, children, name, at) for k, v in node["config"].items()}
    pruned = _pruned_tensors(node, where, state, name)
    expected = expected_shapes(spec.name, config)
    if expected is not None:  # before building: a hostile config may ask for gigabytes
        owner = f"{at} ({spec.name.rsplit('.', 1)[-1]}({', '.join(f'{k}={v!r}' for k, v in config.items())}))"
        check_expected_shapes(expected, where, pruned, state, name, owner[:300])
    module = _construct(spec, config, name, at)
    for key, _ in list(module.named_children()):  # the saved children replace any the constructor made
        delattr(module, key)
    for key, child in children.items():
        module.add_module(key, child)
    check_built_module(module, where, pruned, state, name)
    module.training = bool(node.get("training", True))
    for tensor in pruned:
        _reapply_pruning(module, tensor, where, state, name)
    return module


def _construct(spec: ModuleSpec, config: dict, name: str, at: str) -> Module:
    try:
        module = spec.from_config(config)
    except Exception as e:  # MemoryError included: a config asking for more than the machine has
        raise FileFormatError(f"{name}: cannot rebuild {at} as {spec.name}(**{config!r:.200}): "
                              f"{type(e).__name__}: {e}") from e
    if not isinstance(module, Module):
        raise FileFormatError(f"{name}: rebuilding {at} gave a {type(module).__name__}, not a Module")
    return module


def _decode(value: Any, arrays: dict, children: dict, name: str, at: str) -> Any:
    if isinstance(value, list):
        return tuple(_decode(v, arrays, children, name, at) for v in value)
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, inner), = value.items()
        if tag == "__dict__" and isinstance(inner, dict):
            return {k: _decode(v, arrays, children, name, at) for k, v in inner.items()}
        if tag == "__dtype__" and isinstance(inner, str):
            try:
                dtype = np.dtype(inner)
            except Exception:
                dtype = None
            if dtype is not None and dtype.kind in "biufc":
                return dtype
        if tag == "__array__" and inner in arrays:
            return arrays[inner]
        if tag == "__child__" and inner in children:
            return children[inner]
    raise FileFormatError(f"{name}: {at}: invalid config value {str(value)[:80]}")


def _pruned_tensors(node: dict, where: str, state: dict, name: str) -> list[str]:
    """The node's pruned tensors; each needs ``<t>_orig`` and a ``<t>_mask`` of its shape and dtype."""
    pruned = node.get("pruned", [])
    if not isinstance(pruned, list) or not all(isinstance(t, str) for t in pruned):
        raise FileFormatError(f"{name}: module {where[:-1]!r}: 'pruned' must be a list of tensor names, got "
                              f"{str(pruned)[:80]}")
    for tensor in pruned:
        orig, mask = state.get(f"{where}{tensor}_orig"), state.get(f"{where}{tensor}_mask")
        if orig is None or mask is None or mask.shape != orig.shape or mask.dtype != orig.dtype:
            raise FileFormatError(f"{name}: module {where[:-1]!r} is marked pruned on {tensor!r} but the file lacks "
                                  f"matching {tensor}_orig/{tensor}_mask arrays (same shape and dtype)")
    return pruned


def _reapply_pruning(module: Module, tensor: str, where: str, state: dict, name: str) -> None:
    """Re-create ``<tensor>_orig`` / ``<tensor>_mask`` (prune.custom_from_mask) from the saved arrays."""
    orig, mask = state[f"{where}{tensor}_orig"], state[f"{where}{tensor}_mask"]
    param = getattr(module, tensor, None)
    if not isinstance(param, Parameter) or orig.shape != param.shape or orig.dtype.kind != param.data.dtype.kind:
        raise FileFormatError(f"{name}: module {where[:-1]!r} is marked pruned on {tensor!r} but the file lacks "
                              f"matching {tensor}_orig/{tensor}_mask arrays")
    param.data = orig
    custom_from_mask(module, tensor, mask)


def _restore_state(model: Module, state: dict, name: str) -> None:
    """Put every saved array in place, exactly (dtype included), after checking each (state_checks.py)."""
    check_state(model, state, name)
    model.load_state_dict(state, assign=True)   # the saved arrays themselves, dtype included
    check_quantization(model, name)
