"""Evaluate an exported ONNX graph with ``quant.onnxruntime_ops`` (and NumPy for the float operators).

The integer operators go to the Part-A functions that reproduce onnxruntime's CPU kernels, so on a
QOperator graph this must give onnxruntime's output codes exactly: the whole-model form of the kernel
tests. The float operators cover what ``io.onnx_export`` writes for int8 and dynamic models (float32 in
NumPy: exact for the elementwise ones, not a float-model runtime).
"""
from __future__ import annotations

import numpy as np

from minicompress.nn.functional.pool import max_pool2d_forward
from minicompress.quant import onnxruntime_ops as O


def _attrs(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _maxpool(x, a):
    pads = a.get("pads", [0, 0, 0, 0])
    y, _ = max_pool2d_forward(x.astype(np.float32), tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1])),
                              tuple(pads[:2]), tuple(a.get("dilations", [1, 1])), bool(a.get("ceil_mode", 0)))
    return y.astype(x.dtype)


def _flatten(x, a):
    axis = a.get("axis", 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _reshape(x, shape):
    shape = [x.shape[k] if d == 0 else int(d) for k, d in enumerate(shape)]
    return x.reshape(shape)


OPS = {
    "QuantizeLinear": lambda v, a: O.quantize_linear(v[0], v[1], v[2], axis=a.get("axis", 1)),
    "DequantizeLinear": lambda v, a: O.dequantize_linear(v[0], v[1], v[2], axis=a.get("axis", 1)),
    "DynamicQuantizeLinear": lambda v, a: O.dynamic_quantize_linear(v[0]),
    "MatMulInteger": lambda v, a: O.matmul_integer(v[0], v[1], v[2], v[3]),
    "QLinearConv": lambda v, a: O.qlinear_conv(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
                                               v[8] if len(v) > 8 else None, a["strides"], a["pads"],
                                               a["dilations"], a["group"]),
    "QGemm": lambda v, a: O.qgemm(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], bool(a.get("transB", 0))),
    "QLinearAdd": lambda v, a: O.qlinear_add(*v),
    "QLinearMul": lambda v, a: O.qlinear_mul(*v),
    "QLinearGlobalAveragePool": lambda v, a: O.qlinear_global_average_pool(*v),
    "QLinearSigmoid": lambda v, a: O.qlinear_sigmoid(*v),
    "QLinearLeakyRelu": lambda v, a: O.qlinear_leaky_relu(*v, alpha=a.get("alpha", 0.01)),
    "QLinearConcat": lambda v, a: O.qlinear_concat(v[0], v[1], [tuple(v[k:k + 3]) for k in range(2, len(v), 3)],
                                                   a["axis"]),
    "MaxPool": lambda v, a: _maxpool(v[0], a),
    "Flatten": lambda v, a: _flatten(v[0], a),
    "Reshape": lambda v, a: _reshape(v[0], v[1]),
    "Identity": lambda v, a: v[0],
    "Clip": lambda v, a: np.clip(v[0], v[1], v[2] if len(v) > 2 else None).astype(v[0].dtype),
    "Cast": lambda v, a: v[0].astype(np.float32),
    "Mul": lambda v, a: (v[0] * v[1]).astype(np.float32),
    "Add": lambda v, a: (v[0] + v[1]).astype(np.float32),
    "Relu": lambda v, a: np.maximum(v[0], np.float32(0)),
}


def run_reference(model, feeds: dict) -> list[np.ndarray]:
    """The graph's outputs, computed node by node with ``OPS``."""
    import onnx
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    values.update(feeds)
    values[""] = None
    for node in model.graph.node:
        if node.op_type not in OPS:
            raise NotImplementedError(f"onnx_reference: no reference for {node.op_type} ({node.name})")
        out = OPS[node.op_type]([values[i] for i in node.input], _attrs(node))
        outs = out if isinstance(out, tuple) else (out,)
        for name, value in zip(node.output, outs):
            values[name] = np.asarray(value)
    return [values[o.name] for o in model.graph.output]
