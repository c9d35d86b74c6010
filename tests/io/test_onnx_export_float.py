"""io.export_onnx on float models: onnxruntime runs every exported file and agrees with our forward.

Tolerance: float32 (rtol 1e-4, atol 1e-5 of the output's scale) -- onnxruntime sums convolutions and
GEMMs in its own order. Every file is run at the traced batch size and at another one (dynamic batch).
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minicompress import models, nn
from minicompress.io import export_onnx
from tests.oracle import assert_close, randomise_batchnorm
from tests.ort_oracle import ort_module, run_model


class Branches(nn.Module):
    """Every merge kind: nn.Add, nn.Mul, nn.Cat and FloatFunctional's add / mul / cat / add_relu / scalars."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 5), nn.Linear(6, 5)
        self.add, self.mul, self.cat = nn.Add(), nn.Mul(), nn.Cat(1)
        self.ff = nn.FloatFunctional()
        self.out = nn.Linear(25, 3)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        s = self.ff.add_scalar(self.ff.mul_scalar(self.add(a, b), 0.5), 1.25)
        return self.out(self.cat(s, self.mul(a, b), self.ff.add(a, b), self.ff.mul(a, b), self.ff.add_relu(a, b)))


def zoo_2d():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, stride=2), nn.BatchNorm2d(4), nn.PReLU(4), nn.Conv2d(4, 4, 3, padding="same",
                                                                                        groups=2, dilation=2),
        nn.Hardswish(), nn.Conv2d(4, 6, 1), nn.Hardsigmoid(), nn.MaxPool2d(3, stride=1, padding=1),
        nn.ReLU6(), nn.AvgPool2d(3, stride=1, padding=1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(2),
        nn.Hardtanh(-0.5, 0.7), nn.SiLU(), nn.Flatten(), nn.Dropout(0.3), nn.Linear(24, 8), nn.Tanh(),
        nn.Unflatten(1, (2, 4)), nn.Permute((0, 2, 1)), nn.Linear(2, 3), nn.GELU(), nn.LayerNorm(3),
        nn.Sigmoid(), nn.Flatten(), nn.Identity(), nn.Linear(12, 5), nn.Softmax(dim=1))


def zoo_1d():
    return nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.MaxPool1d(2),
                         nn.AvgPool1d(2), nn.GELU(approximate="tanh"), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.BatchNorm1d(4), nn.Linear(4, 6), nn.LogSoftmax(dim=-1))


def vit():
    """A small ViT with a random head (torchvision zero-initialises it, which would make the output 0)."""
    model = models.VisionTransformer(image_size=8, patch_size=2, num_layers=2, num_heads=2, hidden_dim=16,
                                     mlp_dim=32, num_classes=10, in_channels=1)
    model.heads.head.weight.data = np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32)
    return model


class SelfAttention(nn.Module):
    def __init__(self, need_weights: bool, average: bool, bias: bool = True) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, bias=bias, batch_first=True)
        self.need_weights, self.average = need_weights, average

    def forward(self, x):
        y, w = self.attn(x, x, x, need_weights=self.need_weights, average_attn_weights=self.average)
        return (y, w) if self.need_weights else y


MODELS = {
    "digits_cnn": (lambda: models.digits_cnn(), (4, 1, 8, 8)),
    "digits_mlp": (lambda: models.digits_mlp(), (4, 1, 8, 8)),
    "resnet20": (lambda: models.resnet20(num_classes=10, in_channels=1), (2, 1, 8, 8)),
    "resnet18": (lambda: models.resnet18(num_classes=10, small_input=True), (2, 3, 8, 8)),
    "mobilenet_v2": (lambda: models.mobilenet_v2(num_classes=10, width_mult=0.25, in_channels=1, small_input=True),
                     (2, 1, 8, 8)),
    "zoo_2d": (zoo_2d, (3, 2, 8, 8)),
    "zoo_1d": (zoo_1d, (3, 3, 8)),
    "branches": (Branches, (4, 6)),
    "vit": (vit, (2, 1, 8, 8)),
}


def check_float_export(model, x, path, opset=17, rtol=1e-4):
    model.eval()
    export_onnx(model, path, x, opset=opset)
    for batch in (x, np.concatenate([x, x[:1]])):
        with nn.no_grad():
            expected = model(batch)
        (got,) = run_model(path, {"input": batch})
        assert_close(got, expected, f"onnxruntime vs forward ({type(model).__name__}, opset {opset})", rtol=rtol)


@pytest.mark.parametrize("name", list(MODELS))
def test_float_models_run_in_onnxruntime(name, tmp_path):
    ort_module()
    build, shape = MODELS[name]
    nn.manual_seed(0)
    model = randomise_batchnorm(build())
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    check_float_export(model, x, tmp_path / f"{name}.onnx")


@given(opset=st.integers(17, 21), seed=st.integers(0, 2 ** 16))
def test_opsets(opset, seed, tmp_path_factory):
    """GELU is Gelu from opset 20, an Erf decomposition before; LayerNormalization from 17."""
    ort_module()
    nn.manual_seed(seed)
    model = zoo_2d()
    x = np.random.default_rng(seed).standard_normal((2, 2, 8, 8)).astype(np.float32)
    check_float_export(model, x, tmp_path_factory.mktemp("opset") / "m.onnx", opset=opset)


@pytest.mark.parametrize("opset", [13, 16])
def test_old_opsets_without_layer_norm(opset, tmp_path):
    ort_module()
    nn.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((3, 3, 8)).astype(np.float32)
    check_float_export(zoo_1d(), x, tmp_path / "m.onnx", opset=opset)
    with pytest.raises(ValueError, match=r"LayerNorm\) needs opset 17"):
        export_onnx(nn.Sequential(nn.LayerNorm(8)), tmp_path / "ln.onnx", x, opset=opset)


def test_embedding(tmp_path):
    ort_module()
    nn.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 4), nn.Flatten(), nn.Linear(12, 2))
    idx = np.random.default_rng(0).integers(0, 11, (5, 3)).astype(np.int64)
    export_onnx(model, tmp_path / "e.onnx", idx)
    with nn.no_grad():
        expected = model(idx)
    (got,) = run_model(tmp_path / "e.onnx", {"input": idx})
    assert_close(got, expected, "embedding")


def test_unsupported_modules_are_refused_together(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(144, 8),
                          nn.Unflatten(1, (2, 4)), nn.LSTM(4, 3, batch_first=True))
    x = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError) as err:
        export_onnx(model, tmp_path / "m.onnx", x)
    msg = str(err.value)
    assert "2 module(s)" in msg and "1 (GroupNorm)" in msg and "5 (LSTM)" in msg
    assert not (tmp_path / "m.onnx").exists()


def test_bad_arguments_are_refused(tmp_path):
    model, x = nn.Sequential(nn.Linear(3, 2)), np.zeros((1, 3), np.float32)
    with pytest.raises(ValueError, match="int8_format must be one of"):
        export_onnx(model, tmp_path / "m.onnx", x, int8_format="qlinear")
    with pytest.raises(ValueError, match=r"opset must be in 13\.\.21"):
        export_onnx(model, tmp_path / "m.onnx", x, opset=12)
    with pytest.raises(ValueError, match="flattens the batch axis"):
        export_onnx(nn.Sequential(nn.Flatten(0)), tmp_path / "m.onnx", x)
    with pytest.raises(ValueError, match=r"dim=None"):
        export_onnx(nn.Sequential(nn.Softmax()), tmp_path / "m.onnx", x)


def test_failed_export_leaves_the_old_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):
        export_onnx(nn.Sequential(nn.GroupNorm(1, 3)), path, np.zeros((1, 3, 2, 2), np.float32))
    assert path.read_bytes() == b"old"


def test_static_batch(tmp_path):
    ort_module()
    import onnx
    model, x = nn.Sequential(nn.Linear(3, 2)), np.zeros((4, 3), np.float32)
    export_onnx(model, tmp_path / "m.onnx", x, dynamic_batch=False)
    dims = onnx.load(tmp_path / "m.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 3]


@pytest.mark.parametrize("need_weights, average, bias, opset", [(False, True, True, 17), (True, True, True, 17),
                                                                (True, True, False, 18), (True, False, True, 21)])
def test_multihead_attention(need_weights, average, bias, opset, tmp_path):
    """Attention written out (MatMul, Softmax, Transpose, Reshape); the averaged weights by ReduceMean (its
    axes an attribute before opset 18, an input from 18)."""
    ort_module()
    nn.manual_seed(0)
    model = SelfAttention(need_weights, average, bias).eval()
    x = np.random.default_rng(2).standard_normal((3, 5, 8)).astype(np.float32)
    export_onnx(model, tmp_path / "mha.onnx", x, opset=opset)
    with nn.no_grad():
        expected = model(x)
    got = run_model(tmp_path / "mha.onnx", {"input": x})
    for ours, theirs in zip(got, expected if need_weights else (expected,)):
        assert_close(ours, theirs, "MultiheadAttention", rtol=1e-4)


def test_multihead_attention_refusals(tmp_path):
    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)

        def forward(self, x):
            return self.attn(x, x, x)[0]

    with pytest.raises(ValueError, match=r"attn \(MultiheadAttention\) has batch_first=False"):
        export_onnx(SeqFirst(), tmp_path / "m.onnx", np.zeros((5, 2, 8), np.float32))
