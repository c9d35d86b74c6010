"""An imported ONNX model fine-tunes, prunes, distills, quantizes and saves like a native one."""
import copy
import warnings

import numpy as np
import pytest

pytest.importorskip("onnx")
from oracle import assert_close  # noqa: E402

import minicompress as mc  # noqa: E402
from minicompress import data, distill, io, metrics, nn, optim, prune, quant, train  # noqa: E402
from tests.prune.prune_testing import mask_planned  # noqa: E402


def torch_net(torch):
    """conv-bn-relu, a residual conv-bn + relu, max-pool, flatten, linear: every tool's usual path."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
            self.c2, self.b2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
            self.fc = torch.nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            h = torch.relu(self.b1(self.c1(x)))
            h = torch.relu(self.b2(self.c2(h)) + h)
            return self.fc(torch.flatten(torch.nn.functional.max_pool2d(h, 2), 1))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for bn in (net.b1, net.b2):
            bn.running_mean.uniform_(-0.3, 0.3), bn.running_var.uniform_(0.5, 2), bn.bias.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def files(torch, tmp_path_factory):
    """(torch twin, path with BatchNormalization nodes, path with BatchNorm folded into the convolutions)."""
    net, out = torch_net(torch), tmp_path_factory.mktemp("native")
    paths = []
    for keep in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = out / f"net_{keep}.onnx"
            torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                              input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}},
                              do_constant_folding=not keep)
        paths.append(path)
    return net, paths[0], paths[1]


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, n)


def test_fine_tunes_with_train_fit_and_its_gradients_are_torchs(torch, files):
    net, path, _ = files
    model = io.load_onnx(path).train()
    x, y = batch()
    loss = nn.CrossEntropyLoss()
    loss(model(x), y)
    model.zero_grad()
    model.backward_params(loss.backward())
    twin = copy.deepcopy(net).train()
    torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    theirs = {k: p.grad.numpy() for k, p in twin.named_parameters()}
    for name, p in model.named_parameters():
        module, attr = name.split(".")
        assert_close(p.grad, theirs[f"{module}.{attr}"], name, rtol=1e-4, atol=1e-4,
                     scale=1e-2)   # a conv bias before a training-mode BatchNorm: d = 0 up to rounding
    model.clear_caches()
    history = train.fit(model, loss, optim.SGD(model.parameters(), lr=0.1), data.DataLoader(x, y, batch_size=8),
                        epochs=5, quiet=True)
    assert history["loss"][-1] < 0.8 * history["loss"][0]


def test_channel_prunes_from_its_own_graph_and_equals_the_masked_model(files):
    _, path, _ = files
    model = io.load_onnx(path)
    x, _ = batch(4)
    groups = prune.dependency_graph(model, x).prunable() if hasattr(prune, "dependency_graph") else \
        prune.dependency.dependency_graph(model, x).prunable()
    assert [(g.root, g.channels) for g in groups] == [("c1", 8)]        # c1, b1, c2, b2 and fc's columns: one group
    mask_planned(model, x, 0.5)
    small = prune.channel_prune(model, x, 0.5)
    with mc.no_grad():
        assert_close(small(x), model(x), "surgered vs masked", rtol=1e-5, atol=1e-6)
    assert (small.c1.out_channels, small.c2.in_channels, small.b2.num_features, small.fc.in_features) == (4, 4, 4, 64)
    assert metrics.count_macs(small, (1, 8, 8)) < metrics.count_macs(io.load_onnx(path), (1, 8, 8)) / 2.5


def test_distills_into_a_native_student(files):
    _, path, _ = files
    teacher = io.load_onnx(path)
    x, y = batch(32)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    trainer = distill.Distiller(epochs=3, batch_size=8, quiet=True, rng=0).fit(student, x, y, teacher=teacher)
    with mc.no_grad():
        np.testing.assert_allclose(trainer.teacher_logits_, teacher(x), rtol=1e-6)
    assert trainer.history_[0]["loss"][-1] < trainer.history_[0]["loss"][0]


@pytest.mark.parametrize("keep_batchnorm", [True, False])
def test_quantizes_statically_after_fusing_its_graph(files, keep_batchnorm):
    _, with_bn, folded = files
    model = io.load_onnx(with_bn if keep_batchnorm else folded)
    groups = quant.graph_fusion_groups(model)
    kinds = [[type(model.get_submodule(n)).__name__ for n in g] for g in groups]
    assert kinds == ([["Conv2d", "BatchNorm2d", "ReLU"], ["Conv2d", "BatchNorm2d"]] if keep_batchnorm
                     else [["Conv2d", "ReLU"]])        # the second conv's output is read by the residual add
    fused = quant.fuse_modules(model, groups)
    wrapped = quant.QuantWrapper(fused)
    wrapped.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(wrapped)
    x, _ = batch(64)
    with mc.no_grad():
        prepared(x)
        qmodel = quant.convert(prepared)
        y, expected = qmodel(x), model(x)
    assert type(qmodel.module.get_submodule(groups[0][0])).__name__ == "QuantizedConvReLU2d"
    assert np.abs(y - expected).max() < 0.05 * np.abs(expected).max()


def test_quantizes_dynamically(files):
    _, _, folded = files
    model = io.load_onnx(folded)
    qmodel = quant.quantize_dynamic(model, {nn.Linear})
    x, _ = batch()
    with mc.no_grad():
        y, expected = qmodel(x), model(x)
    assert type(qmodel.fc).__name__ == "DynamicQuantizedLinear"
    assert np.abs(y - expected).max() < 0.02 * np.abs(expected).max()


def test_saves_and_loads_float_and_int8(tmp_path, files):
    _, path, _ = files
    model = io.load_onnx(path)
    x, _ = batch()
    io.save(model, tmp_path / "m.mcm")
    again = io.load(tmp_path / "m.mcm")
    assert type(again).__name__ == "GraphModule" and again.nodes == model.nodes
    with mc.no_grad():
        np.testing.assert_array_equal(again(x), model(x))
    qmodel = quant.quantize_dynamic(model, {nn.Linear})
    io.save(qmodel, tmp_path / "q.mcm")
    with mc.no_grad():
        np.testing.assert_array_equal(io.load(tmp_path / "q.mcm")(x), qmodel(x))


def test_vit_import_saves_quantizes_dynamically_and_trains_its_class_token(torch, tmp_path):
    from onnx_models import build_twin, export
    path = export(torch, build_twin(torch, "vit"), tmp_path / "vit.onnx", "vit")
    model = io.load_onnx(path)
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    io.save(model, tmp_path / "vit.mcm")
    with mc.no_grad():
        np.testing.assert_array_equal(io.load(tmp_path / "vit.mcm")(x), model(x))
        q = quant.quantize_dynamic(model, {nn.Linear})
        assert np.abs(q(x) - model(x)).max() < 0.05 * np.abs(model(x)).max()
    model.train()
    model.backward_params(np.ones(model(x).shape, np.float32))
    assert np.abs(model.class_token.grad).sum() > 0 and model.encoder_pos_embedding.grad.shape == (1, 17, 16)


def test_a_view_flatten_and_constant_arithmetic_prune_like_flatten(torch, tmp_path):
    """``x.view(x.size(0), -1)`` exports as Shape -> Gather -> Concat -> Reshape: a Reshape(0, -1) that
    merges the channels with the spatial axes is followed as a Flatten; ``x * 0.5`` keeps the channels;
    a per-channel constant (varies along them) refuses its group by name."""
    class Net(torch.nn.Module):
        def __init__(self, per_channel):
            super().__init__()
            self.c1, self.fc = torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.Linear(6 * 8 * 8, 3)
            self.scale = torch.arange(1.0, 7.0).reshape(6, 1, 1) if per_channel else 0.5

        def forward(self, x):
            h = torch.relu(self.c1(x)) * self.scale
            return self.fc(h.view(h.size(0), -1))

    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    for per_channel in (False, True):
        path = tmp_path / f"v{per_channel}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Net(per_channel).eval(), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False,
                              opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "N"}})
        model = io.load_onnx(path)
        assert "Reshape" in {type(m).__name__ for m in model.children()}
        dg = prune.dependency_graph(model, x)
        if per_channel:
            assert not dg.prunable() and "varies along the channel axis" in " ".join(dg.refused().values())
            continue
        mask_planned(model, x, 0.5)
        small = prune.channel_prune(model, x, 0.5)
        with mc.no_grad():
            assert_close(small(x), model(x), "surgered vs masked", rtol=1e-5, atol=1e-6)
        assert small.fc.in_features == 3 * 64
