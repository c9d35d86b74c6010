"""Frozen inference plans: a model's forward as a fixed list of steps over buffers allocated once.

    plan = inference.freeze(model)      # the plan keeps its own copy of the model, in eval mode
    y = plan(x)                          # == model.eval()(x) under no_grad()

The plan expands nested ``Sequential`` containers into one chain of modules and gives each module it
knows a *step*: the module's arithmetic written straight onto the kernels, with every parameter prepared
once (packed int8 weights, requantisation multipliers, BatchNorm folded into the preceding convolution or
linear layer) and the buffers of one input shape allocated once. Between steps, 4-D activations stay
channels last, (N, H, W, C), as fbgemm and onnxruntime keep them: an int8 convolution's GEMM writes NHWC
rows, so no layer transposes, and a Flatten before a Linear reorders the Linear's weight columns instead
of the activations. A module the plan does not know (or one with hooks, whose behaviour only its call
reproduces) is called as it is, its input and output converted to and from the logical layout.

What comes out (``tests/inference``):

- int8 steps compute the module's codes bit for bit (the same kernels, the same requantisation, the same
  int16 saturation of fbgemm's depthwise path and its warning); each int8 step is checked against its
  module's own output on the first input of each shape, and a difference raises;
- float steps fold BatchNorm into the weights (``quant.fuse_conv_bn_eval``, as ``torch.jit.freeze`` and
  onnxruntime do) and sum in another order, so they agree with the model to float32 rounding, not bit for bit.

The steps of one input shape are built on its first call (by running it) and kept, up to
``MAX_SHAPES`` shapes. Each call returns new arrays: the buffers are the plan's own.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, NamedTuple

import numpy as np

from ..nn.containers import Sequential
from ..nn.grad_mode import no_grad
from ..nn.module import Module
from ..quant.qtensor import QTensor

MAX_SHAPES = 8


class Spec(NamedTuple):
    """How an activation between two steps is stored.

    layout: 'logical' (as the model's modules see it: NCHW for 4-D), 'nhwc' (a 4-D activation stored
    (N, H, W, C)) or 'flat_hwc' (a flattened (N, C*H*W) activation whose columns are in (H, W, C) order);
    chw: (C, H, W) of a 'flat_hwc' activation; qparams: (scale, zero_point) of uint8 codes, None for float.
    """

    layout: str = "logical"
    chw: tuple | None = None
    qparams: tuple | None = None


LOGICAL_FLOAT = Spec()


def to_logical(x: np.ndarray, spec: Spec) -> Any:
    """The activation as the model's modules see it: an ndarray, or a QTensor of codes (a view where possible)."""
    if spec.layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    elif spec.layout == "flat_hwc":
        c, h, w = spec.chw
        x = np.ascontiguousarray(x.reshape(x.shape[0], h, w, c).transpose(0, 3, 1, 2)).reshape(x.shape[0], -1)
    if spec.qparams is None:
        return x
    return QTensor(x, spec.qparams[0], spec.qparams[1], None, "quint8", channels_last=spec.layout == "nhwc")


def from_logical(value: Any, who: str) -> tuple[np.ndarray, Spec]:
    """A module's output as (array, Spec): 4-D arrays become channels-last views (copied only if needed)."""
    if isinstance(value, QTensor):
        if value.axis is not None or value.dtype != "quint8":
            raise TypeError(f"inference plan: {who} returned {value!r}; only per-tensor quint8 activations "
                            f"can flow between steps")
        codes, qparams = value.int_repr, (float(value.scale), int(value.zero_point))
    elif isinstance(value, np.ndarray):
        codes, qparams = value, None
    else:
        raise TypeError(f"inference plan: {who} returned a {type(value).__name__}; a plan's chain passes "
                        f"one array or QTensor from module to module")
    if codes.ndim == 4:
        return codes.transpose(0, 2, 3, 1), Spec("nhwc", None, qparams)
    return codes, Spec("logical", None, qparams)


class Step:
    """One module (or a fused run of modules) of the chain for one input shape: ``step(x) -> y``.

    Subclasses set ``name`` (the modules they stand for) and ``out_spec``, and allocate their buffers
    in ``__init__`` from the example input they are built with.
    """

    name: str
    out_spec: Spec

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ModuleCall(Step):
    """A module the plan has no step for, called as it is (its hooks run) on the logical activation.
    Its output layout is learnt from its first call; later calls must keep the same quantization parameters."""

    def __init__(self, module: Module, x: np.ndarray, spec: Spec) -> None:
        self.module, self.name, self.in_spec = module, module._name(), spec
        self.out_spec: Spec | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with no_grad():
            y, spec = from_logical(self.module(to_logical(x, self.in_spec)), self.name)
        if self.out_spec is None:
            self.out_spec = spec
        elif spec != self.out_spec:
            raise RuntimeError(f"inference plan: {self.name} returned {spec} where its first call returned "
                               f"{self.out_spec}; a frozen plan needs fixed output quantization parameters")
        return y


# A builder gets (chain, i, x, spec) and returns (step, number of modules it consumed) or None (no step).
Builder = Callable[[list, int, np.ndarray, Spec], "tuple[Step, int] | None"]
BUILDERS: list[Builder] = []


def register_builder(builder: Builder) -> Builder:
    """Add a step builder (tried in registration order; the first that returns a step wins)."""
    BUILDERS.append(builder)
    return builder


def has_hooks(module: Module) -> bool:
    """Forward hooks, pre-hooks or weight parametrizations (pruning masks, QAT): only the module's call
    reproduces what they do, so the plan calls such a module instead of giving it a step."""
    return bool(module.forward_pre_hooks() or module.forward_hooks() or module.parametrizations())


def expand(module: Module) -> list[Module]:
    """The chain of modules a model's forward runs: plain ``Sequential`` containers (without hooks and
    without their own ``forward``) are expanded recursively; anything else is one link."""
    if isinstance(module, Sequential) and type(module).forward is Sequential.forward and not has_hooks(module):
        return [m for child in module.children() for m in expand(child)]
    return [module]


class InferencePlan:
    """``freeze(model)``: the model's eval forward as steps (module docstring); call it like the model."""

    def __init__(self, model: Module) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"freeze: expected a Module, got {type(model).__name__}")
        self.model = copy.deepcopy(model).eval()
        self.chain = expand(self.model)
        floats = [p.data.dtype for p in self.model.parameters() if p.data.dtype.kind == "f"]
        self.dtype = np.dtype(np.float64) if floats and all(d == np.float64 for d in floats) else np.dtype(np.float32)
        self._plans: OrderedDict[tuple, list[Step]] = OrderedDict()

    def steps(self, x: np.ndarray) -> list[Step]:
        """The steps for inputs shaped like x (built by running x through the chain on first sight)."""
        x = self._input(x)
        key = (x.shape, x.dtype.str)
        if key not in self._plans:
            self._build(x)
        return self._plans[key]

    def __call__(self, x: Any) -> Any:
        x = self._input(x)
        key = (x.shape, x.dtype.str)
        steps = self._plans.get(key)
        if steps is None:
            return self._build(x)
        self._plans.move_to_end(key)
        spec = LOGICAL_FLOAT
        for step in steps:
            x = step(x)
            spec = step.out_spec
        return _result(x, spec)

    def _input(self, x: Any) -> np.ndarray:
        """The input as a contiguous array of the model's float dtype (float32, or float64 for a
        ``to(np.float64)`` model)."""
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"inference plan: expected a floating-point input, got {x.dtype} {x.shape}")
        return np.ascontiguousarray(x, self.dtype)

    def _build(self, x: np.ndarray) -> Any:
        key, steps, spec, i = (x.shape, x.dtype.str), [], LOGICAL_FLOAT, 0
        while i < len(self.chain):
            step, used = self._step_for(i, x, spec)
            x, spec = step(x), step.out_spec
            steps.append(step)
            i += used
        self._plans[key] = steps
        if len(self._plans) > MAX_SHAPES:
            self._plans.popitem(last=False)
        return _result(x, spec)

    def _step_for(self, i: int, x: np.ndarray, spec: Spec) -> tuple[Step, int]:
        if not has_hooks(self.chain[i]):
            for builder in BUILDERS:
                built = builder(self.chain, i, x, spec)
                if built is not None:
                    return built
        return ModuleCall(self.chain[i], x, spec), 1

    def __repr__(self) -> str:
        shapes = ", ".join(str(k[0]) for k in self._plans) or "none yet"
        return f"InferencePlan({len(self.chain)} modules; built for input shapes: {shapes})"


def _result(x: np.ndarray, spec: Spec) -> Any:
    """The plan's output: a new array (or QTensor) in the logical layout, never one of the buffers."""
    value = to_logical(x, spec)
    if isinstance(value, QTensor):
        return QTensor(np.array(value.int_repr), value.scale, value.zero_point, None, "quint8",
                       channels_last=value.channels_last)
    return np.array(value)


def freeze(model: Module) -> InferencePlan:
    """An inference plan of ``model`` in eval mode: the plan runs a copy of it with ``eval()`` applied (the
    model itself is untouched, and later changes to it are not seen). ``plan(x)`` returns what
    ``model.eval()(x)`` returns under ``no_grad()``: module docstring."""
    from . import float_steps, int8_steps  # noqa: F401  (register their builders)
    return InferencePlan(model)
