"""Run one ONNX node (or a whole model file) in onnxruntime's CPU provider: the int8 oracle.

``run_node(op, inputs, out_dtypes, ...)`` builds a single-node model with ``onnx.helper``, checks it with
``onnx.checker`` and runs it with ``intra_op_num_threads`` threads and graph optimisations off (or on).
Inputs are ``(array, is_initializer)``; ``None`` is an omitted optional input.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

ORT_VERSION = "1.32.0"


def ort_module():
    ort = pytest.importorskip("onnxruntime")
    if ort.__version__ != ORT_VERSION:
        pytest.skip(f"the oracle is onnxruntime=={ORT_VERSION}, found {ort.__version__}")
    pytest.importorskip("onnx")
    return ort


def session(model_bytes: bytes, threads: int = 1, optimize: bool = False):
    ort = ort_module()
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def run_model(path_or_bytes: Any, feeds: dict, threads: int = 1, optimize: bool = False) -> list:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb").read()
    return session(data, threads, optimize).run(None, feeds)


def run_node(op: str, inputs: list, out_dtypes: list, attrs: dict | None = None, domain: str = "",
             opset: int = 21, threads: int = 1, optimize: bool = False) -> list:
    ort_module()
    import onnx
    from onnx import helper, numpy_helper
    names, graph_inputs, inits, feeds = [], [], [], {}
    for i, item in enumerate(inputs):
        if item is None:
            names.append("")
            continue
        arr, init = np.asarray(item[0]), item[1]
        name = f"in{i}"
        names.append(name)
        if init:
            inits.append(numpy_helper.from_array(arr, name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, arr.shape))
            feeds[name] = arr
    outs = [f"out{k}" for k in range(len(out_dtypes))]
    node = helper.make_node(op, names, outs, domain=domain, **(attrs or {}))
    outputs = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(d)), None)
               for o, d in zip(outs, out_dtypes)]
    graph = helper.make_graph([node], op, graph_inputs, outputs, inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    if not domain:                       # the checker knows the standard domain only
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    return session(model.SerializeToString(), threads, optimize).run(None, feeds)
