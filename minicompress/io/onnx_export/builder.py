"""A small ONNX graph under construction: unique names, initializers, nodes; the edges between modules.

``Graph`` knows nothing of minicompress modules: the emitters (``float_ops``, ``int8_ops``) call
``node`` / ``const`` and get tensor names back. An edge is a float tensor name (``str``) or a
``QEdge``: an int8 activation with its per-tensor (scale, zero point). In QOperator graphs a QEdge
carries the uint8 codes; in QDQ graphs also the float tensor ``DequantizeLinear`` made of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ONNX_EXTRA = "pip install 'minicompress[onnx]'"
MS_DOMAIN = "com.microsoft"


def require_onnx() -> Any:
    """The ``onnx`` package, or an ImportError naming the extra."""
    try:
        import onnx
    except ImportError as e:                      # pragma: no cover - the test extra has onnx
        raise ImportError(f"ONNX export needs the onnx package: {ONNX_EXTRA}") from e
    return onnx


@dataclass(frozen=True)
class QEdge:
    """An int8 activation: ``codes`` (uint8 / int8 tensor name), its qparams (as numbers and as initializer
    names), and ``real`` -- in QDQ graphs the float tensor DequantizeLinear(codes) feeding float ops."""

    codes: str
    scale: float
    zero_point: int
    scale_name: str
    zp_name: str
    dtype: Any = np.uint8
    real: str | None = None


class Graph:
    """Nodes, initializers and names of one ONNX graph; ``model()`` makes the ModelProto."""

    def __init__(self, opset: int, int8_format: str = "qdq") -> None:
        self.opset, self.int8_format = opset, int8_format
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.uses_ms_domain = False
        self._names: set[str] = set()

    def fresh(self, hint: str) -> str:
        """A tensor name not used yet, from ``hint`` (a module name such as 'features.0.conv')."""
        base = hint.replace("#", "_call") or "t"
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def const(self, hint: str, value: Any, dtype: Any = None) -> str:
        """An initializer holding ``value`` (as ``dtype``); returns its name."""
        onnx = require_onnx()
        name = self.fresh(hint)
        arr = np.asarray(value, dtype) if dtype is not None else np.asarray(value)
        self.initializers.append(onnx.numpy_helper.from_array(arr.copy(order="C"), name))   # keeps 0-d arrays 0-d
        return name

    def node(self, op: str, inputs: list[str], hint: str, n_out: int = 1, domain: str = "", **attrs: Any) -> Any:
        """Append one node; returns its output name (or the list of names when n_out > 1)."""
        onnx = require_onnx()
        outs = [self.fresh(f"{hint}/{op}" if n_out == 1 else f"{hint}/{op}.{k}") for k in range(n_out)]
        self.nodes.append(onnx.helper.make_node(op, inputs, outs, name=self.fresh(f"{hint}/{op}/node"),
                                                domain=domain, **attrs))
        if domain == MS_DOMAIN:
            self.uses_ms_domain = True
        return outs[0] if n_out == 1 else outs

    def qparams(self, hint: str, scale: float, zero_point: int, dtype: Any = np.uint8) -> tuple[str, str]:
        """Initializers for a per-tensor (scale float32, zero point of ``dtype``)."""
        return self.const(f"{hint}.scale", np.float32(scale)), self.const(f"{hint}.zero_point", zero_point, dtype)

    def model(self, inputs: list[Any], outputs: list[Any], producer: str) -> Any:
        onnx = require_onnx()
        h = onnx.helper
        graph = h.make_graph(self.nodes, "minicompress", inputs, outputs, self.initializers)
        opsets = [h.make_opsetid("", self.opset)] + ([h.make_opsetid(MS_DOMAIN, 1)] if self.uses_ms_domain else [])
        return h.make_model(graph, opset_imports=opsets, producer_name=producer, ir_version=8)
