"""Build small ONNX graphs with onnx.helper, check them, and run them in onnxruntime and in load_onnx."""
from __future__ import annotations

import numpy as np
import pytest

import minicompress as mc
from minicompress.io import load_onnx


def make_model(onnx, nodes, inputs, outputs, initializers, opset, out_shapes=None):
    """``inputs``: [(name, shape with 'N' for the batch)]; ``outputs``: names; ``initializers``: {name: array};
    ``out_shapes``: the outputs' shapes where ONNX's shape inference cannot find them."""
    from onnx import TensorProto, helper, numpy_helper
    vi = [helper.make_tensor_value_info(name, TensorProto.FLOAT if dtype is None else dtype, shape)
          for name, shape, dtype in ((i + (None,))[:3] for i in inputs)]
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, (out_shapes or {}).get(name)) for name in outputs]
    inits = [numpy_helper.from_array(np.asarray(v), name) for name, v in initializers.items()]
    graph = helper.make_graph(nodes, "g", vi, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)     # fills in the outputs' shapes
    onnx.checker.check_model(model)
    return model


def run_both(tmp_path, model, feeds, rtol=1e-5, atol=1e-5, name="m.onnx"):
    """Outputs of onnxruntime and of the imported GraphModule on ``feeds`` agree; returns the module."""
    import onnx
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / name
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    ours = load_onnx(path)
    with mc.no_grad():
        got = ours(*feeds.values())
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape, f"output {k}: shape {g.shape} != onnxruntime's {e.shape}"
        scale = max(float(np.abs(e).max()) if e.size else 0.0, 1e-3)
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol * scale, err_msg=f"output {k}")
    return ours
