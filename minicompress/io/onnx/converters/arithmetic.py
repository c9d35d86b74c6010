"""Add, Sub, Mul, Div.

Two activations: nn.Add / nn.Sub / nn.Mul (Div of two activations is refused). One constant operand:
an Add of an initializer bias right after a bias-free Linear (MatMul) becomes that Linear's bias; an
Add / Mul of an initializer with more than one element (a ViT's position embedding) makes it a
trainable Parameter of the graph fed to nn.Add / nn.Mul; any other constant (a scalar, a Constant node)
is a buffer of nn.ConstantOperand.
"""
from __future__ import annotations

import numpy as np

from ....nn import layers as L
from ....nn.module import Parameter
from ..builder import Builder, refuse
from ..reader import OnnxNode

MERGES = {"Add": L.Add, "Sub": L.Sub, "Mul": L.Mul}


def _fold_bias(b: Builder, node: OnnxNode, data_k: int, bias: np.ndarray) -> bool:
    """Make ``bias`` the bias of the bias-free Linear that produced input ``data_k``, if only this node reads it."""
    x = node.input(data_k)
    module = b.modules.get(b.producer.get(x, ""))
    if not (isinstance(module, L.Linear) and module.bias is None and b.consumers[x] == 1
            and bias.shape in ((module.out_features,), (1, module.out_features))):
        return False
    module.register_parameter("bias", Parameter(np.array(bias.reshape(-1), np.float32)))
    b.refresh(x)
    b.alias(node.outputs[0], x)
    return True


def binary(b: Builder, node: OnnxNode) -> None:
    op = node.op_type
    consts = [b.is_const(node, k) for k in (0, 1)]
    if not any(consts):
        if op == "Div":
            raise refuse(node, "a division of two activations is not supported (only by a constant)")
        b.emit(node, MERGES[op](), [b.data(node, 0), b.data(node, 1)])
        return
    k = consts.index(True)
    value = b.value(node, k)
    c = b.static(node, k, "constant operand")
    if c.dtype.kind != "f":
        raise refuse(node, f"its constant operand holds {c.dtype} values, an activation is float")
    if op == "Add" and value.initializer and _fold_bias(b, node, 1 - k, c):
        return
    if op in ("Add", "Mul") and value.initializer and c.size > 1:
        b.emit(node, MERGES[op](), [b.operand(node, 0), b.operand(node, 1)])
        return
    module = L.ConstantOperand(op.lower(), c.astype(np.float32), constant_first=k == 0)
    b.emit(node, module, [b.data(node, 1 - k)])


ARITHMETIC = {op: binary for op in ("Add", "Sub", "Mul", "Div")}
