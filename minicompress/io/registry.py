"""Which Module classes a model file may name, and how each becomes JSON and back.

A whole-model file stores no code: each module is a class *name* plus constructor arguments
(its "config"). Loading looks the name up here, never imports what a file names, and calls only
``from_config`` of a class found here. Two kinds of classes are known:

1. every ``Module`` subclass defined in the ``minicompress`` package (nn layers, and whatever
   ``prune``/``quant``/``distill`` define), under the name it is exported as, e.g.
   ``minicompress.nn.Linear`` (else its full module path), found without registration;
2. classes registered with ``register_module(cls, to_config, from_config)`` (your own models).

How a class becomes a config, first rule that applies:

- the ``to_config`` / ``from_config`` given to ``register_module``;
- the convention ``module._config() -> dict`` and ``cls._from_config(config) -> module``;
- for the quantized modules whose constructors take a QTensor or child modules, the configs in
  ``quant_configs.py``;
- the constructor signature: for each argument (but ``self``, ``*args``, ``**kwargs``) the
  attribute of the same name (as PyTorch layers keep them: ``in_features``, ``kernel_size``...);
  arguments with a default and no such attribute (the layers' ``dtype=``, ``rng=``) are left out;
  an argument whose attribute holds a Parameter/array/None and whose default is a bool
  (``bias=True``) is stored as ``attribute is not None``; a Module-valued argument refers to the
  child of that name. Then ``cls(**config)`` — for the built-in classes inside
  ``nn.init.skip_init()`` (no random initialisation: the loader puts the file's array in every
  tensor, and refuses a file that lacks one).

Config values are JSON values, tuples (lists in JSON; every list is read back as a tuple), dicts
with string keys, NumPy dtypes, ndarrays (stored as ``.npy`` members beside the state) and
references to children. Children and state are not part of the config: the loader attaches the
saved children after ``from_config`` (replacing any the constructor made) and then restores every
array of ``state_dict()`` exactly.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..nn.init import skip_init
from ..nn.module import Module, Parameter
from .quant_configs import ADAPTERS

# Subpackages whose Module classes are known without registration (imported when present).
KNOWN_SUBPACKAGES = ("nn", "prune", "quant", "distill", "models")


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    cls: type
    to_config: Callable[[Module], dict]
    from_config: Callable[[dict], Module]


_REGISTERED: dict[str, ModuleSpec] = {}


def register_module(cls: type, to_config: Callable[[Module], dict] | None = None,
                    from_config: Callable[[dict], Module] | None = None, *, name: str | None = None) -> type:
    """Let whole-model files store and rebuild ``cls``; returns ``cls`` (usable as a decorator).

    Parameters
    ----------
    cls : a ``Module`` subclass.
    to_config : ``module -> dict`` of constructor arguments (see the module docstring for the values
        allowed); default: ``_config()`` if the class defines it, else read from the constructor
        signature.
    from_config : ``dict -> module``; default ``cls._from_config`` if defined, else ``cls(**config)``.
    name : the name stored in files (default ``module.qualname``); keep it stable across versions.
    """
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register_module expects a Module subclass, got {cls!r}")
    name = name or f"{cls.__module__}.{cls.__qualname__}"
    if name in _REGISTERED and _REGISTERED[name].cls is not cls:
        raise ValueError(f"register_module: the name {name!r} is already used by {_REGISTERED[name].cls!r}")
    _REGISTERED[name] = _make_spec(cls, name, to_config, from_config)
    return cls


def _make_spec(cls: type, name: str, to_config: Callable | None, from_config: Callable | None) -> ModuleSpec:
    if to_config is None and from_config is None and not hasattr(cls, "_config") and name in ADAPTERS:
        to_config, make_from_config = ADAPTERS[name]  # quantized modules that take a QTensor, etc.
        from_config = make_from_config(cls)
    if to_config is None:
        to_config = cls._config if hasattr(cls, "_config") else signature_config
    if from_config is None and hasattr(cls, "_from_config"):
        from_config = cls._from_config
    if from_config is None:
        from_config = _without_init(cls) if _is_builtin(cls) else (lambda config: cls(**config))
    return ModuleSpec(name, cls, to_config, from_config)


def _without_init(cls: type) -> Callable[[dict], Module]:
    """``cls(**config)`` built inside ``nn.init.skip_init()``: Linear(4096, 4096) costs no random draws,
    and its ``np.empty`` tensors are never touched before the file's arrays replace them."""
    def build(config: dict) -> Module:
        with skip_init():
            return cls(**config)
    return build


_BUILTIN: dict[str, type] = {}  # name -> class, refreshed when a name is not found


def _builtin_classes() -> dict[str, type]:
    """name -> class for every Module subclass defined in minicompress (subpackages imported first)."""
    for sub in KNOWN_SUBPACKAGES:
        try:
            importlib.import_module(f"minicompress.{sub}")
        except ImportError:
            pass
    stack = [Module]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if _is_builtin(cls):
            _BUILTIN.setdefault(builtin_name(cls), cls)
    return _BUILTIN


def _is_builtin(cls: type) -> bool:
    return cls.__module__.startswith("minicompress.") and not cls.__name__.startswith("_")


def builtin_name(cls: type) -> str:
    """``minicompress.<subpackage>.<Name>`` if exported there, else the full module path."""
    parts = cls.__module__.split(".")
    package = importlib.import_module(".".join(parts[:2]))
    if getattr(package, cls.__name__, None) is cls:
        return f"{'.'.join(parts[:2])}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def spec_for_class(cls: type) -> ModuleSpec:
    """How to store ``cls``; a clear error if files cannot name it."""
    for spec in _REGISTERED.values():
        if spec.cls is cls:
            return spec
    if _is_builtin(cls):
        return _make_spec(cls, builtin_name(cls), None, None)
    raise TypeError(f"cannot save a {cls.__qualname__} ({cls.__module__}): model files store no code, so "
                    f"the class must be known when loading; call minicompress.io.register_module("
                    f"{cls.__qualname__}) (in the code that saves and in the code that loads)")


def spec_for_name(name: str) -> ModuleSpec | None:
    """The class a file names, or None; nothing outside this registry is ever imported."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name.startswith("minicompress."):
        cls = _BUILTIN.get(name) or _builtin_classes().get(name)
        if cls is not None:
            return _make_spec(cls, name, None, None)
    return None


def signature_config(module: Module) -> dict:
    """Constructor arguments read back from same-named attributes (see the module docstring)."""
    config: dict[str, Any] = {}
    for arg in inspect.signature(type(module).__init__).parameters.values():
        if arg.name == "self" or arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD):
            continue
        try:
            value = getattr(module, arg.name)
        except AttributeError:
            if arg.default is arg.empty:
                raise TypeError(f"cannot save {module._name()}: its constructor argument {arg.name!r} is "
                                f"not kept as an attribute; define _config()/_from_config() or use "
                                f"register_module(cls, to_config, from_config)") from None
            continue
        if isinstance(arg.default, bool) and (value is None or isinstance(value, (Parameter, np.ndarray))):
            value = value is not None  # bias=True -> the layer keeps a Parameter (or None)
        config[arg.name] = value
    return config
