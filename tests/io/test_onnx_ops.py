"""Every supported ONNX operator, in graphs built with onnx.helper over opsets 13-21 (hypothesis draws the
opset, shapes and attributes), run by onnxruntime (the oracle) and by load_onnx; the batch axis is
dynamic and the run uses a batch neither probe used."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402
from onnx_testing import make_model, run_both  # noqa: E402

from minicompress.io import OnnxImportError  # noqa: E402

import onnx  # noqa: E402

BATCH = 4
opsets = st.integers(13, 21)
seeds = st.integers(0, 2**32 - 1)


def check(tmp_path, nodes, in_shape, initializers, opset, seed, out_shape=None, batch="N", rtol=1e-5, atol=1e-5):
    """One float input 'x' of shape (N, *in_shape) (``batch``: 'N' dynamic, or BATCH), output 'y'."""
    rng = np.random.default_rng(seed)
    model = make_model(onnx, nodes, [("x", [batch, *in_shape])], ["y"], initializers, opset,
                       None if out_shape is None else {"y": out_shape})
    feeds = {"x": rng.standard_normal((BATCH, *in_shape)).astype(np.float32)}
    return run_both(tmp_path, model, feeds, rtol, atol)


def floats(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@given(opsets, seeds, st.integers(1, 3), st.integers(1, 4), st.sampled_from([1, 3]), st.integers(1, 2),
       st.integers(0, 1), st.integers(1, 2), st.booleans())
def test_conv(tmp_path_factory, opset, seed, groups, per_group, k, stride, pad, dilation, bias):
    rng = np.random.default_rng(seed)
    c_in, c_out = groups * per_group, groups * 2
    inits = {"w": floats(rng, c_out, per_group, k, k)} | ({"b": floats(rng, c_out)} if bias else {})
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"], group=groups, strides=[stride] * 2,
                            pads=[pad] * 4, dilations=[dilation] * 2, kernel_shape=[k, k])
    check(tmp_path_factory.mktemp("c"), [node], (c_in, 7, 6), inits, opset, seed)


@given(opsets, seeds, st.booleans(), st.floats(0.5, 2.0), st.floats(0.5, 2.0), st.booleans())
def test_gemm(tmp_path_factory, opset, seed, trans_b, alpha, beta, bias):
    rng = np.random.default_rng(seed)
    w = floats(rng, 5, 3) if trans_b else floats(rng, 3, 5)
    inits = {"w": w} | ({"c": floats(rng, 5)} if bias else {})
    node = helper.make_node("Gemm", ["x", "w"] + (["c"] if bias else []), ["y"], transB=int(trans_b), alpha=alpha,
                            beta=beta)
    check(tmp_path_factory.mktemp("g"), [node], (3,), inits, opset, seed)


@given(opsets, seeds, st.booleans())
def test_matmul_with_a_constant_and_a_bias_add_is_one_linear(tmp_path_factory, opset, seed, bias_first):
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Add", ["b", "h"] if bias_first else ["h", "b"], ["y"])]
    m = check(tmp_path_factory.mktemp("mm"), nodes, (2, 3), {"w": floats(rng, 3, 4), "b": floats(rng, 4)}, opset, seed)
    assert [type(m.get_submodule(n)).__name__ for n, _, _ in m.nodes] == ["Linear"]


@given(opsets, seeds)
def test_matmul_of_two_activations(tmp_path_factory, opset, seed):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]), helper.make_node("MatMul", ["x", "t"], ["y"])]
    check(tmp_path_factory.mktemp("mm2"), nodes, (3, 5), {}, opset, seed)


@given(opsets, seeds, st.sampled_from(["Add", "Sub", "Mul", "Div"]), st.booleans(), st.booleans(), st.booleans())
def test_binary_with_a_constant_or_two_activations(tmp_path_factory, opset, seed, op, const_first, vector, two_data):
    rng = np.random.default_rng(seed)
    c = (rng.uniform(0.5, 2, 3) if vector else rng.uniform(0.5, 2, ())).astype(np.float32)
    if two_data and op != "Div":
        nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node(op, ["x", "s"], ["y"])]
        check(tmp_path_factory.mktemp("b"), nodes, (2, 3), {}, opset, seed)
        return
    constant = helper.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(c))
    ins = ["c", "x"] if const_first else ["x", "c"]
    nodes = [constant, helper.make_node(op, ins, ["y"])]
    check(tmp_path_factory.mktemp("b"), nodes, (2, 3), {}, opset, seed, rtol=1e-5, atol=1e-5)


ACTIVATIONS = [("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}), ("Erf", {}),   # HardSwish: opset 14
               ("LeakyRelu", {"alpha": 0.1}), ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}),
               ("Softmax", {"axis": 1}), ("Softmax", {}), ("LogSoftmax", {"axis": -1})]


@given(opsets, seeds, st.sampled_from(ACTIVATIONS))
def test_activations(tmp_path_factory, opset, seed, case):
    op, attrs = case
    opset = max(opset, 14) if op == "HardSwish" else opset
    check(tmp_path_factory.mktemp("a"), [helper.make_node(op, ["x"], ["y"], **attrs)], (3, 4), {}, opset, seed)


@given(st.integers(20, 21), seeds, st.sampled_from(["none", "tanh"]))
def test_gelu_since_opset_20(tmp_path_factory, opset, seed, approximate):
    check(tmp_path_factory.mktemp("ge"), [helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)], (5,), {},
          opset, seed)


@given(opsets, seeds, st.sampled_from([(0.0, 6.0), (0.0, None), (-1.0, 0.5), (None, 0.3)]))
def test_clip_bounds_are_inputs(tmp_path_factory, opset, seed, bounds):
    low, high = bounds
    inits, ins = {}, ["x", "", ""]
    for k, (name, v) in enumerate((("lo", low), ("hi", high))):
        if v is not None:
            inits[name], ins[k + 1] = np.float32(v), name
    while ins[-1] == "":
        ins.pop()
    check(tmp_path_factory.mktemp("cl"), [helper.make_node("Clip", ins, ["y"])], (6,), inits, opset, seed)


@given(opsets, seeds, st.booleans())
def test_prelu(tmp_path_factory, opset, seed, per_channel):
    slope = np.random.default_rng(seed).uniform(0, 0.5, (3, 1, 1) if per_channel else (1,)).astype(np.float32)
    check(tmp_path_factory.mktemp("p"), [helper.make_node("PRelu", ["x", "s"], ["y"])], (3, 2, 2), {"s": slope},
          opset, seed)


@given(opsets, seeds, st.floats(1e-5, 1e-3), st.floats(0.1, 0.99))
def test_batch_normalization(tmp_path_factory, opset, seed, eps, momentum):
    rng = np.random.default_rng(seed)
    inits = {"s": floats(rng, 3), "b": floats(rng, 3), "m": floats(rng, 3), "v": rng.uniform(0.5, 2, 3).astype(np.float32)}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=eps, momentum=momentum)
    m = check(tmp_path_factory.mktemp("bn"), [node], (3, 2, 2), inits, opset, seed)
    bn = m.get_submodule(m.nodes[0][0])
    assert np.isclose(bn.momentum, 1 - momentum)        # ONNX keeps `momentum` of the running statistics


@given(st.integers(17, 21), seeds, st.sampled_from([-1, -2, 1]), st.booleans())
def test_layer_normalization_since_opset_17(tmp_path_factory, opset, seed, axis, bias):
    rng = np.random.default_rng(seed)
    shape = (3, 4)
    normalized = shape[axis % 3 - 1:] if axis != 1 else shape
    inits = {"s": floats(rng, *normalized)} | ({"b": floats(rng, *normalized)} if bias else {})
    node = helper.make_node("LayerNormalization", ["x", "s"] + (["b"] if bias else []), ["y"], axis=axis, epsilon=1e-5)
    check(tmp_path_factory.mktemp("ln"), [node], shape, inits, opset, seed)


@given(opsets, seeds, st.sampled_from(["MaxPool", "AveragePool"]), st.integers(1, 3), st.integers(1, 2),
       st.integers(0, 1), st.booleans(), st.booleans())
def test_pools(tmp_path_factory, opset, seed, op, k, stride, pad, ceil, count_pad):
    pad = min(pad, k // 2)
    attrs = {"kernel_shape": [k, k], "strides": [stride] * 2, "pads": [pad] * 4, "ceil_mode": int(ceil)}
    if op == "AveragePool":
        attrs["count_include_pad"] = int(count_pad)
    check(tmp_path_factory.mktemp("pl"), [helper.make_node(op, ["x"], ["y"], **attrs)], (2, 6, 5), {}, opset, seed)


@given(opsets, seeds)
def test_global_average_pool_and_flatten(tmp_path_factory, opset, seed):
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Flatten", ["g"], ["y"], axis=1)]
    check(tmp_path_factory.mktemp("gap"), nodes, (3, 4, 5), {}, opset, seed)


@given(opsets, seeds, st.sampled_from([[0, -1], [0, 3, -1], [-1, 6], [0, 2, 2, 3]]))
def test_reshape_with_a_constant_shape(tmp_path_factory, opset, seed, shape):
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    check(tmp_path_factory.mktemp("r"), [node], (3, 4), {"shape": np.array(shape, np.int64)}, opset, seed)


@given(opsets, seeds)
def test_reshape_from_a_run_time_shape_keeps_the_batch(tmp_path_factory, opset, seed):
    """torch's dynamic-batch export: Shape -> Gather(0) -> Unsqueeze -> Concat(-1) -> Reshape."""
    i64 = lambda v: np.array(v, np.int64)   # noqa: E731
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = {"zero": i64(0), "axes0": i64([0]), "minus1": i64([-1])}
    check(tmp_path_factory.mktemp("rd"), nodes, (3, 2, 2), inits, opset, seed, out_shape=["N", 12])


@given(opsets, seeds, st.sampled_from([[1], [1, -1]]))
def test_squeeze_unsqueeze_axes_are_inputs(tmp_path_factory, opset, seed, axes):
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["u"]), helper.make_node("Relu", ["u"], ["r"]),
             helper.make_node("Squeeze", ["r", "axes"], ["y"])]
    check(tmp_path_factory.mktemp("sq"), nodes, (3, 2), {"axes": np.array(axes, np.int64)}, opset, seed)


@given(opsets, seeds, st.permutations([1, 2, 3]))
def test_transpose(tmp_path_factory, opset, seed, perm):
    check(tmp_path_factory.mktemp("t"), [helper.make_node("Transpose", ["x"], ["y"], perm=[0] + list(perm))],
          (2, 3, 4), {}, opset, seed)


@given(opsets, seeds, st.integers(1, 2))
def test_concat_with_a_trainable_initializer(tmp_path_factory, opset, seed, axis):
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Concat", ["x", "r"], ["y"], axis=axis)]
    check(tmp_path_factory.mktemp("cat"), nodes, (2, 3), {}, opset, seed)
    nodes = [helper.make_node("Concat", ["x", "extra"], ["y"], axis=-1)]
    m = check(tmp_path_factory.mktemp("cat2"), nodes, (2, 3), {"extra": floats(rng, BATCH, 2, 2)}, opset, seed,
              batch=BATCH)
    assert [n for n, _ in m.named_parameters()] == ["extra"]


@given(opsets, seeds, st.sampled_from([[1, 3], [2, 2], None]))
def test_split(tmp_path_factory, opset, seed, sizes):
    """Sizes as an input (opset >= 13); without them equal parts (opset 18 names them with num_outputs)."""
    ins, attrs, inits = ["x"], {"axis": 1}, {}
    if sizes is not None:
        ins, inits = ["x", "split"], {"split": np.array(sizes, np.int64)}
    elif opset >= 18:
        attrs["num_outputs"] = 2
    nodes = [helper.make_node("Split", ins, ["a", "b"], **attrs), helper.make_node("Mul", ["a", "a"], ["a2"]),
             helper.make_node("Concat", ["b", "a2"], ["y"], axis=1)]
    check(tmp_path_factory.mktemp("sp"), nodes, (4, 3), inits, opset, seed)


@given(opsets, seeds, st.integers(-5, 5), st.sampled_from([-1, 2, 5, 2**62]), st.sampled_from([1, 2, -1]))
def test_slice(tmp_path_factory, opset, seed, start, end, step):
    i64 = lambda v: np.array(v, np.int64)   # noqa: E731
    inits = {"st": i64([start]), "en": i64([end]), "ax": i64([2]), "sp": i64([step])}
    node = helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])
    try:
        check(tmp_path_factory.mktemp("sl"), [node], (2, 5), inits, opset, seed)
    except OnnxImportError:
        pytest.fail("slice refused")


@given(opsets, seeds, st.sampled_from([0, 2, -1, [0, 2], [[1], [0]]]), st.integers(1, 2))
def test_gather_with_constant_indices(tmp_path_factory, opset, seed, indices, axis):
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)
    check(tmp_path_factory.mktemp("ga"), [node], (3, 3), {"i": np.array(indices, np.int64)}, opset, seed)


@given(opsets, seeds)
def test_gather_from_a_constant_table_is_an_embedding(tmp_path_factory, opset, seed):
    rng = np.random.default_rng(seed)
    table = floats(rng, 7, 3)
    model = make_model(onnx, [helper.make_node("Gather", ["emb.weight", "ids"], ["y"])], [("ids", ["N", 5],
                       TensorProto.INT64)], ["y"], {"emb.weight": table}, opset)
    m = run_both(tmp_path_factory.mktemp("emb"), model, {"ids": rng.integers(0, 7, (BATCH, 5))})
    assert type(m.emb).__name__ == "Embedding"


@given(opsets, seeds)
def test_expand_a_class_token_to_the_batch_and_dropout_identity(tmp_path_factory, opset, seed):
    rng = np.random.default_rng(seed)
    i64 = lambda v: np.array(v, np.int64)   # noqa: E731
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             helper.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
             helper.make_node("Expand", ["token", "target"], ["tok"]),
             helper.make_node("Concat", ["tok", "x"], ["c"], axis=1),
             helper.make_node("Identity", ["c"], ["i"]), helper.make_node("Dropout", ["i"], ["y"])]
    inits = {"zero": i64(0), "axes0": i64([0]), "rest": i64([1, 4]), "token": floats(rng, 1, 1, 4)}
    m = check(tmp_path_factory.mktemp("ex"), nodes, (3, 4), inits, opset, seed)
    assert [n for n, _ in m.named_parameters()] == ["token"]


def test_unsupported_operators_are_listed_with_their_nodes_and_counts(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cos", ["r"], ["c1"], name="first_cos"),
             helper.make_node("Cos", ["c1"], ["c2"], name="second_cos"),
             helper.make_node("Sin", ["c2"], ["y"], name="the_sin")]
    path = tmp_path / "u.onnx"
    onnx.save(make_model(onnx, nodes, [("x", ["N", 3])], ["y"], {}, 17), str(path))
    from minicompress.io import load_onnx
    with pytest.raises(OnnxImportError, match=r"3 nodes of unsupported operators: Cos x2 \(nodes 'first_cos', "
                                              r"'second_cos'\); Sin x1 \(node 'the_sin'\)"):
        load_onnx(path)


def test_opsets_outside_13_to_21_are_refused(tmp_path):
    path = tmp_path / "o.onnx"
    onnx.save(make_model(onnx, [helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 3])], ["y"], {}, 12), str(path))
    from minicompress.io import load_onnx
    with pytest.raises(ValueError, match="opset 12 .*13-21"):
        load_onnx(path)


def test_a_data_dependent_shape_is_refused_by_node_name(tmp_path):
    from minicompress.io import load_onnx
    nodes = [helper.make_node("Reshape", ["x", "target"], ["y"], name="bad_reshape")]
    path = tmp_path / "d.onnx"
    onnx.save(make_model(onnx, nodes, [("x", ["N", 2]), ("target", [2], TensorProto.INT64)], ["y"], {}, 17,
                         {"y": ["N", 2]}), str(path))
    with pytest.raises(OnnxImportError, match=r"'bad_reshape' \(Reshape\): its shape \(input 1\) must be a constant"):
        load_onnx(path)
    nodes = [helper.make_node("Floor", ["x"], ["y"], name="floor_x")]   # (Cast of an activation is a module: int8 files)
    onnx.save(make_model(onnx, nodes, [("x", ["N", 2])], ["y"], {}, 17), str(path))
    with pytest.raises(OnnxImportError, match=r"'floor_x' \(Floor\): Floor of an activation is not supported"):
        load_onnx(path)


def test_the_package_imports_without_onnx_and_load_onnx_names_the_extra(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    script = ("import sys\nsys.modules['onnx'] = None\nimport minicompress, minicompress.io, minicompress.cli\n"
              "try:\n    minicompress.io.load_onnx('m.onnx')\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.returncode == 0, out.stderr
    assert "pip install 'minicompress[onnx]'" in out.stdout


def test_hostile_sizes_are_refused_before_allocating(tmp_path):
    from minicompress.io import FileFormatError, load_onnx
    big = np.array([1 << 20, 1 << 20], np.int64)
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="huge"),
             helper.make_node("Add", ["x", "zeros"], ["y"])]
    path = tmp_path / "h.onnx"
    onnx.save(make_model(onnx, nodes, [("x", ["N", 1])], ["y"], {"shape": big}, 17), str(path))
    with pytest.raises(OnnxImportError, match=r"'huge' \(ConstantOfShape\).*at most 4194304 elements"):
        load_onnx(path)
    path = tmp_path / "w.onnx"
    onnx.save(make_model(onnx, [helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", ["N", 64])], ["y"],
                         {"w": np.zeros((64, 64), np.float32)}, 17), str(path))
    with pytest.raises(FileFormatError, match=r"initializer 'w' \[64, 64\] would take 16384 bytes"):
        load_onnx(path, max_bytes=1000)
    assert load_onnx(path, max_bytes=20000).nodes
