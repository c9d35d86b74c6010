"""Real models round trip: torch twins of resnet18, mobilenet_v2 and a small ViT -> torch.onnx.export ->
load_onnx; outputs against torch and onnxruntime, gradients of the input and of every parameter against
torch's autograd."""
import numpy as np
import pytest

pytest.importorskip("onnx")
from onnx_models import IMAGE, build_twin, export, matching_torch_parameter  # noqa: E402
from oracle import assert_close  # noqa: E402

import minicompress as mc  # noqa: E402
from minicompress.io import load_onnx  # noqa: E402

CASES = [("resnet18", False, 17), ("resnet18", True, 13), ("mobilenet_v2", False, 21), ("mobilenet_v2", True, 17),
         ("vit", False, 17), ("vit", False, 21)]


@pytest.fixture(scope="module")
def exported(torch, tmp_path_factory):
    cache = {}

    def get(arch, keep_batchnorm, opset):
        key = (arch, keep_batchnorm, opset)
        if key not in cache:
            twin = build_twin(torch, arch)
            path = export(torch, twin, tmp_path_factory.mktemp(arch) / "m.onnx", arch, opset, keep_batchnorm)
            cache[key] = twin, path
        return cache[key]
    return get


@pytest.mark.parametrize("arch, keep_batchnorm, opset", CASES)
def test_outputs_match_torch_and_onnxruntime(torch, exported, arch, keep_batchnorm, opset):
    ort = pytest.importorskip("onnxruntime")
    twin, path = exported(arch, keep_batchnorm, opset)
    model = load_onnx(path)
    ops = {type(m).__name__ for m in model.children()}
    assert ("BatchNorm2d" in ops) == (keep_batchnorm and arch != "vit")
    x = np.random.default_rng(1).standard_normal((4,) + IMAGE[arch]).astype(np.float32)   # batch 4: no probe's
    with mc.no_grad():
        y = model(x)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_close(y, expected, "vs torch", rtol=1e-4, atol=1e-4)
    assert_close(y, session.run(None, {"x": x})[0], "vs onnxruntime", rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch, keep_batchnorm", [("resnet18", True), ("mobilenet_v2", True), ("vit", False)])
@pytest.mark.parametrize("train", [False, True])
def test_gradients_match_torch_autograd(torch, exported, arch, keep_batchnorm, train):
    """d L / d input and d L / d every parameter, L = sum(y * dout), both in float64, batch 8 (in training
    mode the BatchNorms of the last stage see one value per sample and channel: with few samples the
    gradient is ill-conditioned); train: BatchNorm on batch statistics. 1e-6: the file holds float32 constants (eps, 1 / sqrt(sqrt d))."""
    twin, path = exported(arch, keep_batchnorm, 17)
    model = load_onnx(path).train(train).to(np.float64)
    twin = build_twin(torch, arch).train(train).double()
    for m in list(model.modules()) + list(twin.modules()):      # random masks cannot be compared
        if type(m).__name__ == "Dropout":
            m.eval()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8,) + IMAGE[arch])
    y = model(x)
    dout = rng.standard_normal(y.shape)
    dx = model.backward(dout)
    xt = torch.tensor(x, requires_grad=True)
    yt = twin(xt)
    (yt * torch.from_numpy(dout)).sum().backward()
    assert_close(y, yt.detach().numpy(), "output", rtol=1e-6, atol=1e-6)
    assert_close(dx, xt.grad.numpy(), "d input", rtol=1e-6, atol=1e-6)
    params = dict(twin.named_parameters())
    seen = set()
    reference = build_twin(torch, arch)
    for name, p in model.named_parameters():
        theirs = matching_torch_parameter(reference, p.data.astype(np.float32))
        seen.add(theirs)
        assert_close(p.grad, params[theirs].grad.numpy(), f"d {name} (torch {theirs})", rtol=1e-6, atol=1e-6)
    assert seen == set(params), f"torch parameters without a counterpart: {set(params) - seen}"
