"""io.export_onnx on int8 models (QOperator and QDQ), run in onnxruntime 1.32.

Three comparisons for each model (digits CNN and MLP, ResNet-20, MobileNetV2; static int8 as
``fuse_model()`` / ``fuse_modules`` + prepare + calibrate + convert; a dynamic int8 MLP):

(a) the QOperator file in onnxruntime (1 and 2 threads, optimisations off and on) equals, exactly, the
    same graph evaluated with ``quant.onnxruntime_ops`` (``tests/onnx_reference.py``); the QDQ file with
    optimisations on (onnxruntime fuses the groups into QLinear* kernels) equals the QOperator file exactly;
(b) against our PyTorch-semantics int8 model, layer by layer on the same input codes: a convolution or
    Linear differs only where PyTorch's float bias / (s_x s_w) and onnxruntime's rounded int32 bias round
    apart (shown exactly below); merges, the input quantization and pooling have their own formulas
    (``docs/onnxruntime_int8.md``) -- the shares of differing codes are bounded here;
(c) the whole model's output codes: the share that differs and the largest difference are bounded.
"""
import functools
import warnings

import numpy as np
import pytest

from minicompress import data, models, nn, quant
from minicompress.io import export_onnx
from minicompress.io.onnx_export import build_model
from minicompress.quant import host
from minicompress.quant import onnxruntime_ops as O
from tests.calibration import calibrated_int8
from tests.onnx_reference import run_reference
from tests.oracle import randomise_batchnorm
from tests.ort_oracle import ort_module, run_model

GROUPS = {"digits_cnn": [["1", "2", "3"], ["4", "5", "6"], ["9", "10"]], "digits_mlp": [["2", "3"]]}
BUILD = {
    "digits_cnn": lambda: models.digits_cnn(rng=np.random.default_rng(0)),
    "digits_mlp": lambda: models.digits_mlp(rng=np.random.default_rng(0)),
    "resnet20": lambda: models.resnet20(num_classes=10, in_channels=1),
    "mobilenet_v2": lambda: models.replace_relu(models.mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1,
                                                                    small_input=True)),
}
# (c): share of differing output codes, largest difference (measured: 0.9 %/1, 0.2 %/1, 59 %/3, 0 %/0)
WHOLE_MODEL_BOUNDS = {"digits_cnn": (0.05, 1), "digits_mlp": (0.05, 1), "resnet20": (0.75, 4), "mobilenet_v2": (0.1, 1)}


def output_codes(y, scale, zero_point):
    """The codes behind a dequantized output y = (q - z) * s."""
    return np.rint(np.asarray(y, np.float64) / scale).astype(np.int64) + zero_point


@functools.lru_cache(maxsize=None)
def digits():
    x_train, _, x_test, _ = data.load_digits()
    return x_train[:128], x_test[:64]


@functools.lru_cache(maxsize=None)
def static_int8(name):
    nn.manual_seed(0)
    model = randomise_batchnorm(BUILD[name]()).eval()
    if hasattr(model, "fuse_model"):
        model.fuse_model()
    else:
        model = quant.fuse_modules(nn.Sequential(quant.QuantStub(), *model.children(), quant.DeQuantStub()).eval(),
                                   GROUPS[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # MobileNetV2: unobserved skip_add of blocks without residual
        return calibrated_int8(model, digits()[0])


def exported(name, fmt, tmp_path):
    path = tmp_path / f"{name}_{fmt}.onnx"
    export_onnx(static_int8(name), path, digits()[1], int8_format=fmt)
    return path


@pytest.mark.parametrize("name", list(BUILD))
def test_qoperator_is_the_onnxruntime_functions(name, tmp_path):
    import onnx
    ort_module()
    x = digits()[1]
    path = exported(name, "qoperator", tmp_path)
    (ours,) = run_reference(onnx.load(path), {"input": x})
    for threads, opt in ((1, False), (2, False), (1, True)):
        (theirs,) = run_model(path, {"input": x}, threads=threads, optimize=opt)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}: threads={threads}, optimize={opt}")


@pytest.mark.parametrize("name", list(BUILD))
def test_qdq_fused_by_onnxruntime_is_qoperator(name, tmp_path):
    ort_module()
    x = digits()[1]
    (qop,) = run_model(exported(name, "qoperator", tmp_path), {"input": x})
    (qdq,) = run_model(exported(name, "qdq", tmp_path), {"input": x}, optimize=True)
    np.testing.assert_array_equal(qdq, qop)


def test_qdq_unfused_runs_float_operators(tmp_path):
    """Without optimisation the QDQ file computes float convolutions between Q/DQ pairs: its codes differ from
    the QOperator file's (ResNet-20 measured: 20 % of output codes, up to 2) -- the file is the same model."""
    ort_module()
    x = digits()[1]
    (qop,) = run_model(exported("resnet20", "qoperator", tmp_path), {"input": x})
    (qdq,) = run_model(exported("resnet20", "qdq", tmp_path), {"input": x})
    head = quant_head(static_int8("resnet20"))
    diff = np.abs(output_codes(qdq, *head) - output_codes(qop, *head))
    assert diff.max() <= 3 and (diff > 0).mean() < 0.4


def quant_head(model):
    """(scale, zero_point) of the last layer with output qparams: the codes behind the model's float output."""
    last = [m for m in model.modules() if hasattr(m, "zero_point") and hasattr(m, "scale")
            and not isinstance(m, quant.Quantize)][-1]
    return float(np.asarray(last.scale).reshape(-1)[0]), int(np.asarray(last.zero_point).reshape(-1)[0])


@pytest.mark.parametrize("name", list(BUILD))
def test_whole_model_against_pytorch_semantics(name, tmp_path):
    ort_module()
    x = digits()[1]
    model = static_int8(name)
    with nn.no_grad():
        ours = model(x)
    (theirs,) = run_model(exported(name, "qoperator", tmp_path), {"input": x})
    head = quant_head(model)
    diff = np.abs(output_codes(ours, *head) - output_codes(theirs, *head))
    share, worst = WHOLE_MODEL_BOUNDS[name]
    assert (diff > 0).mean() <= share and diff.max() <= worst, ((diff > 0).mean(), diff.max())


def recorded_calls(model, x):
    """(module, input QTensors / arrays, output) of every quantized layer call, from forward hooks."""
    calls = []
    kinds = (quant.Quantize, quant.QuantizedConv2d, quant.QuantizedLinear, quant.QFunctional,
             quant.QuantizedAdaptiveAvgPool2d)
    handles = [m.register_forward_hook(lambda mod, args, out: calls.append((mod, args, out)))
               for m in model.modules() if isinstance(m, kinds)]
    try:
        with nn.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def onnxruntime_layer(mod, args):
    """What onnxruntime's kernel gives for the same layer on the same input codes (``onnxruntime_ops``)."""
    from minicompress.io.onnx_export.int8_ops import quantize_bias, weight_params
    if isinstance(mod, quant.Quantize):
        return O.quantize_linear(args[0], np.float32(mod.scale[0]), np.uint8(mod.zero_point[0]))
    x = args[-1] if isinstance(mod, quant.QFunctional) else args[0]
    if isinstance(mod, quant.QuantizedAdaptiveAvgPool2d):      # keeps the input's qparams
        return O.qlinear_global_average_pool(x.int_repr, x.scale, np.uint8(x.zero_point), x.scale,
                                             np.uint8(x.zero_point))
    s, z = float(np.asarray(mod.scale)), np.uint8(np.asarray(mod.zero_point))
    if isinstance(mod, quant.QFunctional):
        a, b = args[1], args[2]
        y = O.qlinear_add(a.int_repr, a.scale, np.uint8(a.zero_point), b.int_repr, b.scale, np.uint8(b.zero_point), s, z)
        return np.maximum(y, z) if args[0] == "add_relu" else y
    w, ws, wz = weight_params(mod)
    bias_q, _ = quantize_bias(mod.bias, x.scale, ws, w.shape[0])
    relu = isinstance(mod, (quant.QuantizedConvReLU2d, quant.QuantizedLinearReLU))
    if isinstance(mod, quant.QuantizedConv2d):
        pads = list(mod.padding) * 2
        y = O.qlinear_conv(x.int_repr, x.scale, np.uint8(x.zero_point), w, ws, wz, s, z, bias_q, mod.stride, pads,
                           mod.dilation, mod.groups)
    else:
        y = O.qgemm(x.int_repr, x.scale, np.uint8(x.zero_point), w, ws, wz, bias_q, s, z)
    return np.maximum(y, z) if relu else y


# Share of differing codes per layer call (measured per kind over all calls: convolutions 0.01-0.03 %, Linear <= 0.16 %,
# the rest 0: the digits inputs are multiples of 1/16, so the input quantization has no ties).
PER_LAYER_BOUNDS = {"Quantize": 0.001, "QuantizedConv2d": 0.005, "QuantizedConvReLU2d": 0.005, "QuantizedLinear": 0.005,
                    "QuantizedLinearReLU": 0.005, "QFunctional": 0.001, "QuantizedAdaptiveAvgPool2d": 0.001}


@pytest.mark.parametrize("name", list(BUILD))
def test_layer_by_layer_against_pytorch_semantics(name):
    """Same input codes into each layer: onnxruntime's arithmetic vs PyTorch's, codes differ by at most 1."""
    differing: dict[str, list] = {}
    for mod, args, out in recorded_calls(static_int8(name), digits()[1]):
        theirs = onnxruntime_layer(mod, args)
        diff = np.abs(theirs.astype(np.int64) - out.int_repr.astype(np.int64))
        assert diff.max() <= 1, (type(mod).__name__, diff.max())
        differing.setdefault(type(mod).__name__, []).append((diff > 0).mean())
    for kind, shares in differing.items():
        assert max(shares) <= PER_LAYER_BOUNDS[kind], (kind, shares)


def test_bias_rounding_is_the_whole_conv_difference():
    """PyTorch's requantisation rint((fl32(acc) + b / (s_x s_w)) * m) with the bias rounded to an integer
    first is onnxruntime's rint(fl32(acc + round(b / (s_x s_w))) * m): every differing code comes from there."""
    from minicompress.io.onnx_export.int8_ops import quantize_bias, weight_params
    from minicompress.quant.reference import requant_epilogue
    found = 0
    for mod, args, out in recorded_calls(static_int8("resnet20"), digits()[1]):
        if not isinstance(mod, quant.QuantizedConv2d):
            continue
        x = args[0]
        w, ws, wz = weight_params(mod)
        bias_q, _ = quantize_bias(mod.bias, x.scale, ws, w.shape[0])
        acc = O.conv_integer(x.int_repr, w, x.zero_point, wz, mod.stride, list(mod.padding) * 2, mod.dilation,
                             mod.groups)
        m = O.output_multiplier(x.scale, ws, float(mod.scale))[None, :, None, None]
        lo = int(mod.zero_point) if isinstance(mod, quant.QuantizedConvReLU2d) else 0
        rounded = requant_epilogue(acc, bias_q.astype(np.float32)[None, :, None, None], m, int(mod.zero_point), lo)
        np.testing.assert_array_equal(rounded, onnxruntime_layer(mod, args))
        found += int((out.int_repr != onnxruntime_layer(mod, args)).sum())
    assert found > 0        # the two do differ on this model, and only by the bias rounding


def test_dynamic_int8_mlp(tmp_path):
    """quantize_dynamic: DynamicQuantizeLinear + MatMulInteger; exact against the reference graph evaluation
    (optimisations off) and the fused DynamicQuantizeMatMul (on), and within the activation-quantisation error
    of PyTorch's dynamic Linear."""
    import onnx
    ort_module()
    nn.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    model = quant.quantize_dynamic(mlp.eval(), {nn.Linear})
    x = digits()[1]
    path = tmp_path / "dyn.onnx"
    export_onnx(model, path, x, int8_format="qoperator")
    (theirs,) = run_model(path, {"input": x})
    (ours,) = run_reference(onnx.load(path), {"input": x})
    np.testing.assert_array_equal(ours, theirs)
    (fused,) = run_model(path, {"input": x}, optimize=True)      # DynamicQuantizeMatMul: the same floats
    np.testing.assert_array_equal(fused, theirs)
    with nn.no_grad():
        pytorch_semantics = model(x)
    with pytest.MonkeyPatch.context() as patch:     # onnxruntime's exact sums, as on a VNNI CPU: without VNNI
        patch.setattr(host, "MLAS_INT16_PAIRS", False)        # its 8-bit codes saturate int16 pairs (8 % off)
        (exact,) = run_reference(onnx.load(path), {"input": x})
    err = np.abs(exact - pytorch_semantics).max() / np.abs(pytorch_semantics).max()
    assert err < 0.02, err          # 7-bit (reduce_range) vs 8-bit activations; measured 0.64 %


class Merges(nn.Module):
    """Quantized Add, Mul, Cat, Sigmoid, LeakyReLU and a ReLU on a non-zero zero point."""

    def __init__(self) -> None:
        super().__init__()
        self.quant, self.dequant = quant.QuantStub(), quant.DeQuantStub()
        self.a, self.b = nn.Linear(6, 5), nn.Linear(6, 5)
        self.add, self.mul, self.cat = nn.Add(), nn.Mul(), nn.Cat(1)
        self.sig, self.leaky, self.relu = nn.Sigmoid(), nn.LeakyReLU(0.1), nn.ReLU()
        self.out = nn.Linear(15, 4)

    def forward(self, x):
        x = self.quant(x)
        a, b = self.a(x), self.b(x)
        y = self.cat(self.add(a, b), self.sig(self.mul(a, b)), self.leaky(self.relu(a)))
        return self.dequant(self.out(y))


@pytest.mark.parametrize("fmt", ["qoperator", "qdq"])
def test_quantized_merges_and_activations(fmt, tmp_path):
    import onnx
    ort_module()
    nn.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)
    q = calibrated_int8(Merges().eval(), x)
    path = tmp_path / "merges.onnx"
    export_onnx(q, path, x, int8_format=fmt)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    if fmt == "qoperator":
        assert {"QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QGemm"} <= ops
        (ours,) = run_reference(onnx.load(path), {"input": x})
        (theirs,) = run_model(path, {"input": x})
        np.testing.assert_array_equal(ours, theirs)
    else:
        assert {"QuantizeLinear", "DequantizeLinear", "Add", "Mul", "Concat", "Sigmoid", "LeakyRelu", "Gemm"} <= ops
        (theirs,) = run_model(path, {"input": x})
    with nn.no_grad():
        expected = q(x)
    head = quant_head(q)
    assert np.abs(output_codes(theirs, *head) - output_codes(expected, *head)).max() <= 3


def test_unsupported_int8_modules_are_refused(tmp_path):
    model = nn.Sequential(quant.QuantStub(), nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 2), quant.DeQuantStub())
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    q = calibrated_int8(model, x)
    with pytest.raises(ValueError, match=r"2 \(QuantizedPReLU, on int8 inputs\)"):
        build_model(q, x, int8_format="qdq")


def test_clamps_hardswish_and_layer_norm(tmp_path):
    """ReLU6 / Hardtanh clip the codes to PyTorch's own quantized bounds (identical codes); Hardswish and LayerNorm
    have no onnxruntime integer kernel: float operators in QDQ files, refused in QOperator files."""
    import onnx
    ort_module()
    nn.manual_seed(0)
    model = nn.Sequential(quant.QuantStub(), nn.Linear(6, 8), nn.ReLU6(), nn.Linear(8, 8), nn.Hardtanh(-0.3, 0.4),
                          quant.DeQuantStub())
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    q = calibrated_int8(model, x)
    s, z = float(q[3].scale), int(q[3].zero_point)
    lo, hi = (quant.qops.quantize_scalar(v, s, z, "quint8") for v in (-0.3, 0.4))
    with nn.no_grad():
        expected = output_codes(q(x), s, z)
    for fmt in ("qoperator", "qdq"):
        path = tmp_path / f"clamp_{fmt}.onnx"
        export_onnx(q, path, x, int8_format=fmt)
        (theirs,) = run_model(path, {"input": x}, optimize=fmt == "qdq")
        got = output_codes(theirs, s, z)
        assert got.min() == lo and got.max() == hi           # clipped to PyTorch's quantized bounds
        assert np.abs(got - expected).max() <= 1
        if fmt == "qoperator":
            np.testing.assert_array_equal(run_reference(onnx.load(path), {"input": x})[0], theirs)
    model = nn.Sequential(quant.QuantStub(), nn.Linear(6, 8), nn.Hardswish(), nn.LayerNorm(8), nn.Linear(8, 3),
                          quant.DeQuantStub())
    q = calibrated_int8(model, x)
    with pytest.raises(ValueError, match=r"2 \(QuantizedHardswish\) has no QOperator kernel"):
        build_model(q, x, int8_format="qoperator")
    export_onnx(q, tmp_path / "hs.onnx", x, int8_format="qdq")
    (theirs,) = run_model(tmp_path / "hs.onnx", {"input": x})
    with nn.no_grad():
        expected = q(x)
    head = quant_head(q)
    assert np.abs(output_codes(theirs, *head) - output_codes(expected, *head)).max() <= 3


def test_bias_outside_int32_is_refused():
    from minicompress.io.onnx_export.int8_ops import quantize_bias
    with pytest.raises(ValueError, match=r"fc: bias\[1\] = 1e\+06 .* outside int32"):
        quantize_bias(np.array([0.5, 1e6], np.float32), 1e-3, np.float32(1e-4), 2, "fc")
    q, scale = quantize_bias(np.array([0.5, -0.25], np.float32), 0.5, np.array([0.5, 1.0], np.float32), 2)
    np.testing.assert_array_equal(q, [2, 0])        # 0.5 / 0.25 = 2; -0.25 / 0.5 = -0.5 -> 0 (half to even)
    np.testing.assert_array_equal(scale, [0.25, 0.5])
