"""int8 ONNX files in load_onnx: onnxruntime's quantize_static output (QDQ and QOperator, per tensor and per
channel) of a digits CNN, a narrow resnet18 and mobilenet_v2 (width 0.5), value by value against onnxruntime:
``fuse_qdq=True`` against a default session, ``fuse_qdq=False`` against ORT_DISABLE_ALL; the fused groups are
onnxruntime's; single Q / DQ nodes (per tensor and per axis) drawn by hypothesis; refusals; ``minicompress compare``."""
import collections
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("onnx")
from onnx_int8_models import IMAGE, export_float, quantize, quantize_dynamic  # noqa: E402
from ort_oracle import ort_module  # noqa: E402

import minicompress as mc  # noqa: E402
from minicompress.cli import main  # noqa: E402
from minicompress.compare import compare_onnx, run_ours  # noqa: E402
from minicompress.io import load_onnx  # noqa: E402
from minicompress.io.onnx import OnnxImportError  # noqa: E402
from minicompress.io.onnx.load import build_onnx  # noqa: E402

ARCHS = ("cnn", "resnet18", "mobilenet_v2", "ops")
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
               "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax")


@pytest.fixture(scope="module")
def int8_file(torch, tmp_path_factory):
    ort_module()
    floats, files = {}, {}

    def get(arch, fmt, per_channel, activations="uint8"):
        if arch not in floats:
            floats[arch] = export_float(torch, arch, tmp_path_factory.mktemp(arch) / "float.onnx")
        key = arch, fmt, per_channel, activations
        if key not in files:
            files[key] = (quantize_dynamic(floats[arch]) if fmt == "dynamic" else
                          quantize(floats[arch], arch, fmt, per_channel, activations))
        return files[key]
    return get


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_every_value_matches_onnxruntime(int8_file, arch, fmt, per_channel):
    """Fused (default): every value of the graph -- codes and the float output -- equals a default onnxruntime
    session's exactly. Literal (against ORT_DISABLE_ALL): the float operators between the pairs may differ in the
    last bits (summation order); a code differs only where such an input crosses a rounding boundary (by at most
    the input difference in codes, rounded up; onnxruntime's own input gives its codes under div-half-even, R4)
    or where a differing code is carried on."""
    path = int8_file(arch, fmt, per_channel)
    fused = compare_onnx(str(path), optimized=True, seed=1)
    assert fused["agree"], [r for r in fused["rows"] if r["share_differing"]]
    assert fused["rows"][-1]["output"] == "y"
    literal = compare_onnx(str(path), optimized=False, seed=1)
    _assert_explained(literal)
    if fmt == "QOperator":
        assert literal["agree"]


def _assert_explained(result):
    """Every difference of a comparison is carried from an input, a float operator's last bits on equal inputs,
    or a QuantizeLinear whose codes div-half-even (R4) gives from onnxruntime's own input, moved by at most the
    input difference in codes (rounded up); few codes differ."""
    for row in result["rows"]:
        if not row["share_differing"] or row["explanation"].startswith("input "):
            continue
        if row["op"] == "QuantizeLinear":
            assert "div-half-even" in row["rules"] and row["max_abs_diff"] <= np.ceil(row["input_shift_codes"]), row
        else:
            assert row["dtype"] == "float32" and row["explanation"] == "float arithmetic (equal inputs)", row
            assert row["max_abs_diff"] < 1e-4, row
    codes = [r for r in result["rows"] if r["dtype"] in ("uint8", "int8")]
    assert np.mean([r["share_differing"] for r in codes] or [0]) < 0.05  # measured: at most 1.5 % (docs/onnx_import.md)


# onnxruntime's fusion of int8-activation QDQ files on x86 (measured on this machine, and what follows from
# EnsureUniqueDQForNodeUnit + QDQS8ToU8Transformer): the groups whose input and output pairs each have one reader
INT8_ACTIVATION_GROUPS = {"cnn": {"QLinearConv": 2, "QGemm": 1},
                          "resnet18": {"QLinearConv": 9, "QLinearGlobalAveragePool": 1, "QGemm": 1},
                          "mobilenet_v2": {"QLinearConv": 37, "QLinearGlobalAveragePool": 1, "QGemm": 1},
                          "ops": {"QLinearConv": 1, "QLinearSigmoid": 1, "QLinearMul": 1,
                                  "QLinearGlobalAveragePool": 1, "QLinearMatMul": 1}}


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_activation_files_match_onnxruntime(int8_file, arch, tmp_path):
    """``quantize_static``'s default, int8 activations. QDQ: the integer operators of ``load_onnx`` are those of
    onnxruntime's optimised graph (only groups whose int8 pairs onnxruntime turns to uint8 fuse; resnet18: 9 of
    its 20 convolutions, no Add), and the rest differs only as explained: the float operators between int8 pairs
    in their last bits, codes only where such a value crosses a rounding boundary. QOperator (int8 QLinearConv
    etc.): every value exact, in both modes."""
    qdq = int8_file(arch, "QDQ", True, "int8")
    assert _integer_ops(load_onnx(qdq)) == _integer_ops_of_onnxruntime(qdq, tmp_path) == INT8_ACTIVATION_GROUPS[arch]
    for optimized in (True, False):
        _assert_explained(compare_onnx(str(qdq), optimized=optimized, seed=1))
    qoperator = str(int8_file(arch, "QOperator", False, "int8"))
    assert compare_onnx(qoperator, optimized=True, seed=1)["agree"]
    assert compare_onnx(qoperator, optimized=False, seed=1)["agree"]


def _integer_ops(model):
    return dict(collections.Counter(type(m).__name__ for m in model.children() if type(m).__name__ in INTEGER_OPS))


def _integer_ops_of_onnxruntime(path, folder):
    import onnx
    ort = ort_module()
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(collections.Counter(n.op_type for n in onnx.load(str(folder / "optimized.onnx")).graph.node
                                    if n.op_type in INTEGER_OPS))


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_groups_are_onnxruntimes(int8_file, arch, tmp_path):
    """The integer operators load_onnx makes of a QDQ file are those onnxruntime's optimised graph holds."""
    path = int8_file(arch, "QDQ", True)
    ours = _integer_ops(load_onnx(path))
    assert ours == _integer_ops_of_onnxruntime(path, tmp_path) and sum(ours.values()) > 0
    literal = load_onnx(path, fuse_qdq=False)
    assert not any(type(m).__name__ in INTEGER_OPS for m in literal.children())


@pytest.mark.parametrize("optimized", [True, False])
def test_dynamic_quantization_matches_onnxruntime(int8_file, optimized):
    """quantize_dynamic's DynamicQuantizeLinear / ConvInteger / MatMulInteger values equal onnxruntime's; the only
    float operator that differs on equal inputs is Sigmoid (onnxruntime's float Sigmoid is MLAS's rational
    approximation, ours the exact logistic: <= 1 ulp), and what follows it carries that."""
    result = compare_onnx(str(int8_file("ops", "dynamic", False)), optimized=optimized, seed=2)
    ops = {r["op"] for r in result["rows"]}
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops
    for row in result["rows"]:
        if row["share_differing"] and not row["explanation"].startswith("input "):
            assert row["op"] == "Sigmoid" and row["explanation"] == "float arithmetic (equal inputs)", row


def test_fusion_changes_codes(int8_file, tmp_path):
    """mobilenet_v2, per-tensor weights, 8 samples: the literal and the fused graphs give different codes (measured:
    5e-6 of the intermediate codes, 1 apart), and each equals its own onnxruntime session's."""
    path = int8_file("mobilenet_v2", "QDQ", False)
    x = np.random.default_rng(3).standard_normal((8,) + IMAGE["mobilenet_v2"]).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    fused_model, _ = build_onnx(str(path))
    literal_model, _ = build_onnx(str(path), fuse_qdq=False)
    fused, literal = run_ours(fused_model, {"x": x}), run_ours(literal_model, {"x": x})
    shared = [v for v in fused if v in literal and fused[v].dtype == np.uint8]
    changed = sum(int(np.sum(fused[v] != literal[v])) for v in shared)
    assert changed > 0
    assert compare_onnx(str(path), str(tmp_path / "x.npz"), optimized=True)["agree"]
    rows = compare_onnx(str(path), str(tmp_path / "x.npz"), optimized=False)["rows"]
    assert all(r["share_differing"] == 0 for r in rows if r["dtype"] == "uint8")


def _qdq_node_model(x_shape, scale, zero_point, axis):
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero_point, "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis)]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


@given(channels=st.integers(1, 4), per_axis=st.booleans(), signed=st.booleans(), seed=st.integers(0, 2 ** 16),
       log_scale=st.floats(-8, 2))
def test_quantize_dequantize_nodes_match_onnxruntime(tmp_path_factory, channels, per_axis, signed, seed, log_scale):
    """Q -> DQ per tensor or per axis 1, uint8 or int8, power-of-two scales (every x / s drawn on a grid of halves:
    ties everywhere): codes and floats equal onnxruntime's, in both modes. (An int8 pair with one zero point is
    made uint8 in a default session, its codes then no value of the file: only y is compared.)"""
    ort_module()
    rng = np.random.default_rng(seed)
    n = channels if per_axis else 1
    scale = (2.0 ** np.round(log_scale + rng.integers(-2, 3, n))).astype(np.float32).reshape(-1 if per_axis else ())
    dtype = np.int8 if signed else np.uint8
    zero_point = rng.integers(np.iinfo(dtype).min // 2, np.iinfo(dtype).max // 2, n).astype(dtype).reshape(scale.shape)
    x = (rng.integers(-300, 300, (2, channels, 3)) / 2 * scale.reshape(-1, 1)).astype(np.float32)
    folder = tmp_path_factory.mktemp("qdq")
    (folder / "m.onnx").write_bytes(_qdq_node_model([2, channels, 3], scale, zero_point, 1).SerializeToString())
    np.savez(folder / "x.npz", x=x)
    for optimized in (True, False):
        result = compare_onnx(str(folder / "m.onnx"), str(folder / "x.npz"), optimized=optimized)
        hidden = optimized and signed and n == 1
        assert result["agree"] and [r["output"] for r in result["rows"]] == (["y"] if hidden else ["q", "y"]), result


def _qdq_conv_model(rng, c_in, c_out, kernel, stride, pad, depthwise, per_channel, relu):
    """x -> Q -> DQ -> Conv(DQ(int8 w), DQ(int32 b)) [-> Relu] -> Q -> DQ -> y, as quantize_static writes it."""
    from onnx import TensorProto, helper, numpy_helper
    groups, c_out = (c_in, c_in) if depthwise else (1, c_out)
    w = rng.integers(-127, 128, (c_out, c_in // groups, kernel, kernel)).astype(np.int8)
    sw = (rng.uniform(0.5, 2, c_out if per_channel else 1) * 2.0 ** -7).astype(np.float32).reshape(-1 if per_channel else ())
    sx, sy = np.float32(2.0 ** -5), np.float32(rng.uniform(0.02, 0.2))
    zx, zy = np.uint8(rng.integers(100, 156)), np.uint8(0 if relu else rng.integers(100, 156))
    bias = rng.integers(-2000, 2000, c_out).astype(np.int32)
    consts = {"sx": sx, "zx": zx, "w": w, "sw": sw, "zw": np.zeros(sw.shape, np.int8), "b": bias,
              "sb": (sx * sw).astype(np.float32), "zb": np.zeros(sw.shape, np.int32), "sy": sy, "zy": zy}
    conv_out, side = ("c" if relu else "r"), (6 + 2 * pad - kernel) // stride + 1
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], [conv_out], kernel_shape=[kernel] * 2, strides=[stride] * 2,
                              pads=[pad] * 4, group=groups, name="conv")]
    nodes += [helper.make_node("Relu", ["c"], ["r"])] if relu else []
    nodes += [helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c_in, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c_out, side, side])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@given(c_in=st.integers(1, 4), c_out=st.integers(1, 4), kernel=st.integers(1, 3), stride=st.integers(1, 2),
       pad=st.integers(0, 1), depthwise=st.booleans(), per_channel=st.booleans(), relu=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_a_qdq_conv_group_fuses_as_onnxruntime(tmp_path_factory, c_in, c_out, kernel, stride, pad, depthwise,
                                               per_channel, relu, seed):
    """One DQ -> Conv [-> Relu] -> Q group (shapes, stride, padding, depthwise, per-channel weights, a redundant
    Relu drawn): fused to one QLinearConv, whose codes equal a default onnxruntime session's at every value;
    literal, every code equals ORT_DISABLE_ALL's unless a float input crossed a rounding boundary."""
    ort_module()
    rng = np.random.default_rng(seed)
    folder = tmp_path_factory.mktemp("conv")
    model = _qdq_conv_model(rng, c_in, c_out, kernel, stride, pad, depthwise, per_channel, relu)
    (folder / "m.onnx").write_bytes(model.SerializeToString())
    np.savez(folder / "x.npz", x=rng.standard_normal((2, c_in, 6, 6)).astype(np.float32))
    fused = load_onnx(folder / "m.onnx")
    assert [type(m).__name__ for m in fused.children()] == ["QuantizeLinear", "QLinearConv", "DequantizeLinear"]
    assert compare_onnx(str(folder / "m.onnx"), str(folder / "x.npz"), optimized=True)["agree"]
    for row in compare_onnx(str(folder / "m.onnx"), str(folder / "x.npz"), optimized=False)["rows"]:
        if row["op"] == "QuantizeLinear" and row["share_differing"]:
            assert "div-half-even" in row["rules"] and row["max_abs_diff"] <= np.ceil(row["input_shift_codes"]), row


def _int8_fan_out_model(readers, expose_codes, dq_zero_point):
    """x -> Q(int8) -> DQ -> ``readers`` x [Conv(DQ(int8 w)) -> Q(int8) -> DQ -> y_k]; the input pair's codes
    optionally a graph output, its DQ's zero point ``dq_zero_point`` (Q's is 3)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(readers)
    consts = {"s": np.float32(2.0 ** -5), "z": np.int8(3), "zd": np.int8(dq_zero_point), "sw": np.float32(2.0 ** -7),
              "zw": np.int8(0), "sy": np.float32(0.05), "zy": np.int8(-4),
              "w": rng.integers(-127, 128, (2, 2, 3, 3)).astype(np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zd"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"])]
    outputs = []
    for k in range(readers):
        nodes += [helper.make_node("Conv", ["xd", "wd"], [f"c{k}"], kernel_shape=[3, 3], pads=[1] * 4, name=f"conv{k}"),
                  helper.make_node("QuantizeLinear", [f"c{k}", "sy", "zy"], [f"q{k}"]),
                  helper.make_node("DequantizeLinear", [f"q{k}", "sy", "zy"], [f"y{k}"])]
        outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, ["N", 2, 5, 5]))
    if expose_codes:
        outputs.append(helper.make_tensor_value_info("xq", TensorProto.INT8, ["N", 2, 5, 5]))
    graph = helper.make_graph(nodes, "fan_out", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
                              outputs, [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("readers, expose_codes, dq_zero_point, fused", [
    (1, False, 3, 1),    # the pairs have one reader each: made uint8, the group fuses
    (2, False, 3, 0),    # the input DQ read twice: its pair stays int8, neither group fuses
    (1, True, 3, 0),     # the input codes are a graph output: the pair stays int8
    (1, False, 4, 0)])   # Q and DQ zero points differ: the pair stays int8
def test_which_int8_pairs_onnxruntime_makes_uint8(tmp_path, readers, expose_codes, dq_zero_point, fused):
    """An int8 Q -> DQ pair is made uint8 (z + 128) only when it has one reader, exposes no codes and both nodes
    carry one zero point; only then can its group fuse on x86. Ours fuses what onnxruntime's optimised graph does,
    and every value of the file agrees with a default session's."""
    path = tmp_path / "m.onnx"
    path.write_bytes(_int8_fan_out_model(readers, expose_codes, dq_zero_point).SerializeToString())
    expected = {"QLinearConv": fused} if fused else {}
    assert _integer_ops(load_onnx(path)) == _integer_ops_of_onnxruntime(path, tmp_path) == expected
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32))
    result = compare_onnx(str(path), str(tmp_path / "x.npz"), optimized=True)
    _assert_explained(result)
    assert {r["output"] for r in result["rows"]} >= {f"y{k}" for k in range(readers)}


def test_unsupported_int8_nodes_are_refused_by_name(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="to_int16")]
    inits = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int16(0), "z")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("q", TensorProto.INT16, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(OnnxImportError, match=r"'to_int16' \(QuantizeLinear\).*int16"):
        load_onnx(tmp_path / "m.onnx")


def test_int8_model_runs_and_refuses_backward(int8_file):
    model = load_onnx(int8_file("cnn", "QOperator", True))
    x = np.random.default_rng(0).standard_normal((5,) + IMAGE["cnn"]).astype(np.float32)
    with mc.no_grad():
        assert model(x).shape == (5, 10)
    model(x)
    with pytest.raises(NotImplementedError, match="inference only"):
        model.backward(np.ones((5, 10), np.float32))


def test_compare_command(int8_file, tmp_path, capsys):
    """``minicompress compare``: the table and exit 0 on an agreeing file; --literal --json on mobilenet_v2
    (float operators differ in the last bits): exit 1, rows say why; a bad --inputs file: exit 1, named keys."""
    path = str(int8_file("resnet18", "QDQ", True))
    assert main(["compare", path, "--optimized"]) == 0
    out = capsys.readouterr().out
    assert "QLinearConv" in out and "values agree with onnxruntime exactly" in out
    assert main(["compare", str(int8_file("mobilenet_v2", "QDQ", True)), "--literal", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "literal" and not result["agree"]
    assert {r["explanation"] for r in result["rows"] if r["share_differing"]} == {"float arithmetic (equal inputs)"}
    np.savez(tmp_path / "bad.npz", image=np.zeros((1, 3, 32, 32), np.float32))
    assert main(["compare", path, "--inputs", str(tmp_path / "bad.npz")]) == 1
    assert "['image']" in capsys.readouterr().err


@pytest.mark.parametrize("activations", ["uint8", "int8"])
def test_a_vit_quantized_by_onnxruntime_matches_onnxruntime(torch, tmp_path, activations):
    """torch's small ViT exported, ``quantize_static`` (QDQ, uint8 or int8 activations -- int8: GELU's constant
    operands are folded to int8 codes by onnxruntime, so those two groups stay float -- per-channel weights). Literal mode
    equals an ORT_DISABLE_ALL session bit for bit. Fused mode makes the integer operators of onnxruntime's optimised
    graph -- QLinearMatMul of two activations (q k^T, weights v), QLinearSoftmax, QLinearAdd / QLinearMul with a
    constant operand (biases, attention's scaling, the position embedding), QGemm whose int32 bias sat behind
    torch's Identity nodes -- and its output equals a default session's bit for bit; value by value only the
    float LayerNorm and Erf between the int8 groups differ, in the last bits (onnxruntime's LayerNorm takes
    E[x^2] - mean^2, its Erf is MLAS's approximation), and no code does on these inputs."""
    import sys
    import warnings
    from pathlib import Path

    ort = pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from torch_twins import vit_twin

    torch.manual_seed(0)
    model = vit_twin(torch, 8, 2, 2, 4, 32, 64, 10, in_channels=1).eval()
    float_path, int8_path = tmp_path / "vit.onnx", tmp_path / "vit_int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(4, 1, 8, 8),), str(float_path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": np.random.default_rng(i).standard_normal((4, 1, 8, 8)).astype(np.float32)}
                                 for i in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(float_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    x = np.random.default_rng(9).standard_normal((3, 1, 8, 8)).astype(np.float32)
    outputs = {}
    for fused, level in ((False, ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                         (True, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        options = ort.SessionOptions()
        options.graph_optimization_level, options.intra_op_num_threads = level, 1
        session = ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])
        outputs[fused] = (load_onnx(str(int8_path), fuse_qdq=fused)(x), session.run(None, {"x": x})[0])
    np.testing.assert_array_equal(*outputs[False])
    np.testing.assert_array_equal(*outputs[True])
    ours = _integer_ops(load_onnx(int8_path))
    assert ours == _integer_ops_of_onnxruntime(int8_path, tmp_path)
    assert ours["QLinearSoftmax"] == 2 and ours["QLinearMatMul"] == (10 if activations == "uint8" else 8)
    result = compare_onnx(str(int8_path), optimized=True, seed=1)
    _assert_explained(result)
    assert {r["op"] for r in result["rows"] if r["share_differing"] and r["dtype"] == "float32"} <= \
        {"LayerNormalization", "Erf", "Gemm"}   # int8: Gemms between int8 pairs stay float
    assert all(r["share_differing"] == 0 for r in result["rows"] if r["dtype"] in ("uint8", "int8"))
