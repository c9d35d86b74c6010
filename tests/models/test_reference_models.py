"""torchvision's ResNet and MobileNetV2 rebuilt in minicompress, against PyTorch twins of torchvision's
modules (``torch_twins.py``: torchvision itself does not import next to CPU torch 2.13.0).

Our random weights are loaded into the twin with ``load_state_dict(strict=True)`` (so the keys are
the same), then outputs, d input and every parameter gradient are compared. Tolerance: float32 with
the error relative to each array's largest magnitude (``oracle.assert_close``), loosened to 1e-4 /
2e-4: a ResNet-18 sums ~10^5 products per output through 20 layers, and float32 sums in a
different order (im2col + BLAS vs oneDNN) differ by a few ulps per layer that add up. MobileNetV2 in
training mode is compared in float64 (both libraries): its last BatchNorms normalise 4 values per
channel (batch 4, 1x1 maps), which amplifies rounding ~1e5-fold (float64 runs agree to 1e-11, so a
float32 run differs by ~1e-3: rounding, not semantics); float64 then checks the semantics to 1e-7.
"""
import numpy as np
import pytest
from oracle import assert_close, to_torch_state
from torch_twins import mobilenet_v2_twin, resnet_twin, vit_twin

from minicompress import models


def _compare(torch, ours, theirs, x, train, rtol=1e-4, atol=2e-4):
    if x.dtype == np.float64:
        ours.to(np.float64)
        theirs.double()
    theirs.load_state_dict(to_torch_state(torch, ours.state_dict()), strict=True)
    ours.train(train)
    theirs.train(train)
    y = ours(x)
    dout = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
    dx = ours.backward(dout)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    (yt * torch.from_numpy(dout)).sum().backward()
    assert_close(y, yt.detach().numpy(), "output", rtol, atol)
    assert_close(dx, xt.grad.numpy(), "d input", rtol, atol)
    grads = {name: p.grad for name, p in theirs.named_parameters()}
    assert sorted(grads) == sorted(name for name, _ in ours.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, grads[name].numpy(), f"d {name}", rtol, atol)
    for name, b in ours.named_buffers():
        expected = dict(theirs.named_buffers())[name].numpy()
        assert_close(b, expected, name, rtol, atol) if expected.dtype.kind == "f" else np.array_equal(b, expected)


def _x(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


TORCHVISION_KEYS = {   # names as in torchvision's published checkpoints
    "resnet18": ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.num_batches_tracked",
                 "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "layer4.1.conv2.weight",
                 "fc.weight", "fc.bias"],
    "resnet50": ["layer1.0.conv3.weight", "layer1.0.bn3.weight", "layer1.0.downsample.0.weight",
                 "layer3.5.conv2.weight", "layer4.2.bn3.bias", "fc.weight"],
    "mobilenet_v2": ["features.0.0.weight", "features.0.1.running_var", "features.1.conv.0.0.weight",
                     "features.1.conv.1.weight", "features.1.conv.2.bias", "features.2.conv.0.0.weight",
                     "features.2.conv.1.0.weight", "features.2.conv.2.weight", "features.2.conv.3.running_mean",
                     "features.17.conv.3.weight", "features.18.0.weight", "features.18.1.bias",
                     "classifier.1.weight", "classifier.1.bias"],
}


@pytest.mark.parametrize("name, count", [("resnet18", 122), ("resnet50", 320), ("mobilenet_v2", 314)])
def test_state_dict_keys_are_torchvisions(name, count):
    sd = getattr(models, name)().state_dict()
    assert len(sd) == count and all(k in sd for k in TORCHVISION_KEYS[name])
    assert sd["fc.weight" if name != "mobilenet_v2" else "classifier.1.weight"].shape[0] == 1000


@pytest.mark.parametrize("train", [True, False])
def test_resnet18_matches_torch(torch, train):
    ours = models.resnet18(num_classes=7, rng=0)
    _compare(torch, ours, resnet_twin(torch, "basic", [2, 2, 2, 2], 7), _x((2, 3, 64, 64)), train)


def test_resnet50_matches_torch_in_eval(torch):
    ours = models.resnet50(num_classes=5, rng=1)
    _compare(torch, ours, resnet_twin(torch, "bottleneck", [3, 4, 6, 3], 5), _x((1, 3, 32, 32)), False)


def test_cifar_resnet20_small_input_matches_torch_in_training(torch):
    ours = models.resnet20(num_classes=10, in_channels=1, rng=2)
    twin = resnet_twin(torch, "basic", [3, 3, 3], 10, in_channels=1, small_input=True, widths=(16, 32, 64))
    _compare(torch, ours, twin, _x((4, 1, 8, 8)), True)


@pytest.mark.parametrize("train", [True, False])
def test_mobilenet_v2_matches_torch(torch, train):
    ours = models.mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1, small_input=True, dropout=0.0, rng=3)
    twin = mobilenet_v2_twin(torch, 10, 0.5, in_channels=1, small_input=True)
    twin.classifier[0].p = 0.0
    if train:
        _compare(torch, ours, twin, _x((4, 1, 16, 16), dtype=np.float64), True, rtol=1e-7, atol=1e-7)
    else:
        _compare(torch, ours, twin, _x((4, 1, 16, 16)), False)


def test_zero_init_residual_and_bad_arguments():
    m = models.resnet18(zero_init_residual=True, rng=0)
    assert not m.layer1[0].bn2.weight.data.any() and m.bn1.weight.data.all()
    with pytest.raises(ValueError, match="replace_stride_with_dilation should be None or a 3-element tuple"):
        models.resnet18(replace_stride_with_dilation=[True])
    with pytest.raises(ValueError, match="inverted_residual_setting should be non-empty"):
        models.mobilenet_v2(inverted_residual_setting=[[1, 16, 1]])
    with pytest.raises(ValueError, match=r"Conv2d\(3, 64.*expected input \(N, 3, H, W\)"):
        models.resnet18(rng=0)(np.zeros((1, 1, 32, 32), np.float32))


def test_a_torch_saved_checkpoint_loads_unchanged_and_back(torch, tmp_path):
    """torch.save of the torchvision-keyed state dict -> io.load_state_dict_file (no torch needed) ->
    our model gives the same outputs; our state dict loads back into the PyTorch module."""
    from minicompress import io
    twin = mobilenet_v2_twin(torch, 10, 0.5, in_channels=1, small_input=True).eval()
    torch.save(twin.state_dict(), tmp_path / "mobilenet.pt")
    ours = models.mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1, small_input=True, rng=5).eval()
    ours.load_state_dict(io.load_state_dict_file(tmp_path / "mobilenet.pt"))
    x = _x((2, 1, 8, 8))
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert_close(ours(x), expected, "output", 1e-4, 2e-4)
    back = mobilenet_v2_twin(torch, 10, 0.5, in_channels=1, small_input=True).eval()
    back.load_state_dict(to_torch_state(torch, ours.state_dict()), strict=True)
    with torch.no_grad():
        np.testing.assert_array_equal(back(torch.from_numpy(x)).numpy(), expected)


TORCHVISION_VIT_KEYS = ["class_token", "conv_proj.weight", "encoder.pos_embedding",
                        "encoder.layers.encoder_layer_0.ln_1.weight",
                        "encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
                        "encoder.layers.encoder_layer_0.self_attention.out_proj.bias",
                        "encoder.layers.encoder_layer_1.mlp.0.weight", "encoder.layers.encoder_layer_1.mlp.3.bias",
                        "encoder.ln.weight", "heads.head.weight"]


@pytest.mark.parametrize("train", [True, False])
def test_small_vision_transformer_matches_torch(torch, train):
    ours = models.VisionTransformer(8, 2, 2, 2, 16, 32, num_classes=10, in_channels=1, rng=4)
    rng = np.random.default_rng(5)     # torchvision zeroes the head and the class token: give them values
    for name in ("class_token", "heads.head.weight", "heads.head.bias"):
        p = dict(ours.named_parameters())[name]
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    assert list(ours.state_dict())[:2] == ["class_token", "conv_proj.weight"]
    assert all(k in ours.state_dict() for k in TORCHVISION_VIT_KEYS)
    _compare(torch, ours, vit_twin(torch, 8, 2, 2, 2, 16, 32, 10, in_channels=1), _x((3, 1, 8, 8)), train)


@pytest.mark.parametrize("build, shape", [
    (lambda: models.resnet20(in_channels=1, rng=0), (2, 1, 8, 8)),
    (lambda: models.mobilenet_v2(num_classes=3, width_mult=0.5, in_channels=1, small_input=True, rng=0), (2, 1, 8, 8)),
    (lambda: models.VisionTransformer(8, 2, 2, 2, 8, 16, num_classes=3, in_channels=1, rng=0), (2, 1, 8, 8)),
])
def test_models_save_code_free_and_reload_identical(tmp_path, build, shape):
    from minicompress import io, nn
    model = build().eval()
    io.save(model, tmp_path / "m.npz")
    loaded = io.load(tmp_path / "m.npz")
    x = _x(shape)
    with nn.no_grad():
        np.testing.assert_array_equal(loaded(x), model(x))
    assert type(model).__name__ in io.describe(tmp_path / "m.npz")


def test_a_tampered_model_architecture_is_refused(tmp_path):
    import json
    import zipfile
    from minicompress import io
    io.save(models.resnet20(in_channels=1, rng=0), tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as z:
        members = {name: z.read(name) for name in z.namelist()}
    arch = json.loads(members["architecture.json"])
    arch["model"]["config"]["block"] = "os.system"
    members["architecture.json"] = json.dumps(arch).encode()
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(io.FileFormatError, match="unknown block 'os.system'"):
        io.load(tmp_path / "bad.npz")
