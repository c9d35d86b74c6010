"""Per-layer int8 error: compute_sqnr, compare_weights, compare_model_outputs, layer_sensitivity
(≙ ``torch.ao.ns._numeric_suite``), and mixed precision by ``qconfig = None``."""
import numpy as np
import pytest

from minicompress import nn, quant
from minicompress.quant.numeric_suite import compute_sqnr, layer_sensitivity

from calibration import calibrated_int8


def _mlp(seed=0, outlier_layer=None):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(16, 32, rng=rng), nn.ReLU(), nn.Linear(32, 32, rng=rng), nn.ReLU(),
                          nn.Linear(32, 10, rng=rng)).eval()
    if outlier_layer is not None:
        # one huge weight, on an input that is always 0 (so that the output keeps its size): the per-tensor
        # scale becomes 100 / 127.5 and every other weight of the layer rounds to 0
        model[outlier_layer].weight.data[0, 0] = 100.0
        if outlier_layer > 0:
            model[outlier_layer - 2].weight.data[0] = 0.0
            model[outlier_layer - 2].bias.data[0] = -1.0  # ReLU -> 0
    return model


def _batches(n=3, seed=1):
    rng = np.random.default_rng(seed)
    batches = [rng.standard_normal((20, 16)).astype(np.float32) for _ in range(n)]
    for xb in batches:
        xb[:, 0] = 0.0
    return batches


def test_sqnr_by_hand():
    """||x|| = 5, ||x - y|| = 0.5: 20 log10(10) = 20 dB; exact -> inf; QTensors are dequantized."""
    x = np.array([3.0, 4.0], np.float32)
    assert compute_sqnr(x, np.array([3.0, 4.5], np.float32)) == pytest.approx(20.0, abs=1e-12)
    assert compute_sqnr(x, x) == float("inf")
    q = quant.quantize_per_tensor(x, 0.5, 0, "quint8")
    assert compute_sqnr(x, q) == float("inf")            # 3 and 4 are codes 6 and 8
    with pytest.raises(ValueError, match="shapes differ"):
        compute_sqnr(x, x[:1])


def test_sqnr_equals_torch_compute_sqnr(torch):
    from torch.ao.ns.fx.utils import compute_sqnr as torch_sqnr
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((7, 9)).astype(np.float32)
        y = (x + rng.normal(0, rng.uniform(1e-3, 1), x.shape)).astype(np.float32)
        expected = float(torch_sqnr(torch.from_numpy(x), torch.from_numpy(y)))
        assert compute_sqnr(x, y) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("outlier_layer", [0, 2, 4])
def test_layer_with_a_huge_outlier_has_the_lowest_sqnr(outlier_layer):
    model = _mlp(outlier_layer=outlier_layer)
    q = quant.quantize_dynamic(model, {nn.Linear})
    sens = layer_sensitivity(model, q, _batches())
    assert set(sens) == {"0", "2", "4"}
    assert min(sens, key=sens.get) == str(outlier_layer)
    assert list(sens) == sorted(sens, key=sens.get)         # lowest first
    assert sens[str(outlier_layer)] < 10 < min(v for k, v in sens.items() if k != str(outlier_layer))


def test_layer_sensitivity_equals_torch_compare_model_stub(torch):
    """Shadow semantics: each int8 layer vs its float twin on the same input, SQNR over all batches (eq. 2).

    PyTorch's ``ShadowLogger`` keeps ``x[0]`` of any output with ``len(x) > 1`` (meant for tuples, it also
    cuts a batch to its first sample), so PyTorch is run on batches of one sample, where it logs everything."""
    from torch.ao.ns._numeric_suite import get_logger_dict, prepare_model_with_stubs
    model = _mlp(outlier_layer=2)
    twin = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 10)).eval()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    tq = torch.ao.quantization.quantize_dynamic(twin, {torch.nn.Linear})
    rows = [row[None] for row in np.concatenate(_batches())]
    prepare_model_with_stubs(twin, tq, {torch.nn.Linear}, torch.ao.ns._numeric_suite.ShadowLogger)
    with torch.no_grad():
        for row in rows:
            tq(torch.from_numpy(row))
    stats = get_logger_dict(tq)
    expected = {key.split(".")[0]: compute_sqnr(torch.cat(v["float"]).numpy(), torch.cat(v["quantized"]).numpy())
                for key, v in stats.items()}
    got = layer_sensitivity(model, quant.quantize_dynamic(model, {nn.Linear}), rows)
    assert set(got) == set(expected)
    for name in got:
        assert got[name] == pytest.approx(expected[name], abs=1e-3), name


def test_static_wrapped_layers_sensitivity_and_mixed_precision():
    """Static int8 of chosen Linear layers (QuantWrapper); keeping the least accurate one float
    (qconfig = None) raises the end-to-end SQNR."""
    def quantized(model, keep_float=()):
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                m.qconfig = None if name in keep_float else quant.get_default_qconfig("x86")
        wrapped = quant.add_quant_dequant(model)
        prepared = quant.prepare(wrapped)
        with nn.no_grad():
            for xb in _batches():
                prepared(xb)
        return wrapped, quant.convert(prepared)

    import copy
    base = _mlp(outlier_layer=2)
    wrapped, q = quantized(copy.deepcopy(base))
    sens = layer_sensitivity(wrapped, q, _batches())
    assert set(sens) == {"0.module", "2.module", "4.module"} and min(sens, key=sens.get) == "2.module"
    x = np.concatenate(_batches(seed=5))
    with nn.no_grad():
        reference = base(x)
        all_int8 = compute_sqnr(reference, q(x))
        _, mixed = quantized(copy.deepcopy(base), keep_float={"2"})
        assert type(mixed[2]) is nn.Linear
        assert compute_sqnr(reference, mixed(x)) > all_int8 + 10


def test_compare_weights_and_outputs():
    model = _mlp()
    q = quant.quantize_dynamic(model, {nn.Linear})
    weights = quant.compare_weights(model.state_dict(), q.state_dict())
    assert set(weights) == {"0.weight", "2.weight", "4.weight"}
    for d in weights.values():
        assert d["float"].shape == d["quantized"].shape and compute_sqnr(d["float"], d["quantized"]) > 30
    outputs = quant.compare_model_outputs(model, q, _batches(1)[0])
    assert {"0", "2", "4"} <= set(outputs)
    assert all(compute_sqnr(v["float"][0], v["quantized"][0]) > 20 for v in outputs.values())


def test_layer_sensitivity_needs_the_float_model_that_was_converted():
    model = _mlp()
    q = quant.quantize_dynamic(model, {nn.Linear})
    with pytest.raises(ValueError, match=r"has ReLU at '2'.*does not convert to DynamicQuantizedLinear"):
        layer_sensitivity(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.ReLU()), q, _batches(1))
    with pytest.raises(ValueError, match="no int8 weighted layers"):
        layer_sensitivity(model, model, _batches(1))


def test_compare_weights_and_sensitivity_of_a_fused_static_resnet():
    """Fused float keys (``conv1.0.weight``) match the int8 ones (``conv1.weight``) by PyTorch's rule."""
    from minicompress import models
    fused = models.resnet20(num_classes=10, in_channels=1, rng=0).eval()
    fused.fuse_model()
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    q = calibrated_int8(fused, x)
    weights = quant.compare_weights(fused.state_dict(), q.state_dict())
    assert len(weights) == 19 + 2 + 1                  # 19 convs, 2 downsample convs, fc
    assert weights["layer1.0.conv1.weight"]["quantized"].axis == 0
    assert all(compute_sqnr(d["float"], d["quantized"]) > 30 for d in weights.values())
    sens = layer_sensitivity(fused, q, [x])
    assert {k + ".weight" for k in sens} == set(weights) and all(v > 15 for v in sens.values())
