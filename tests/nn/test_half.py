"""float16 models (model.half()): float16 storage, float32 compute per layer, one rounding per layer -- against
PyTorch's half modules on the CPU."""
import numpy as np
import pytest

from minicompress import io, metrics, models, nn

ULP_SLACK = 1          # float32 summation order may move a float16 result by one ulp


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float16 ulps (both are float16 arrays of finite values)."""
    ia = a.view(np.int16).astype(np.int64)
    ib = b.view(np.int16).astype(np.int64)
    ia = np.where(ia < 0, -32768 - ia, ia)             # sign-magnitude -> ordered integers
    ib = np.where(ib < 0, -32768 - ib, ib)
    return np.abs(ia - ib)


LAYERS = [
    ("Linear", lambda t: (nn.Linear(40, 24), t.nn.Linear(40, 24)), (16, 40)),
    ("Conv2d", lambda t: (nn.Conv2d(3, 8, 3, padding=1), t.nn.Conv2d(3, 8, 3, padding=1)), (4, 3, 9, 9)),
    ("BatchNorm2d", lambda t: (nn.BatchNorm2d(5), t.nn.BatchNorm2d(5)), (4, 5, 6, 6)),
    ("LayerNorm", lambda t: (nn.LayerNorm(12), t.nn.LayerNorm(12)), (6, 12)),
    ("GELU", lambda t: (nn.GELU(), t.nn.GELU()), (8, 20)),
    ("Softmax", lambda t: (nn.Softmax(-1), t.nn.Softmax(-1)), (8, 20)),
    ("MaxPool2d", lambda t: (nn.MaxPool2d(2), t.nn.MaxPool2d(2)), (2, 3, 8, 8)),
    ("AvgPool2d", lambda t: (nn.AvgPool2d(2), t.nn.AvgPool2d(2)), (2, 3, 8, 8)),
    ("AdaptiveAvgPool2d", lambda t: (nn.AdaptiveAvgPool2d(1), t.nn.AdaptiveAvgPool2d(1)), (2, 3, 8, 8)),
]


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[n for n, _, _ in LAYERS])
def test_half_layers_match_torch_half_to_one_ulp(torch, name, make, shape):
    ours, theirs = make(torch)
    state = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    if name == "BatchNorm2d":
        rng = np.random.default_rng(3)
        state["running_mean"] = torch.from_numpy(rng.standard_normal(5).astype(np.float32))
        state["running_var"] = torch.from_numpy(rng.uniform(0.5, 2, 5).astype(np.float32))
        ours.load_state_dict({k: v.numpy() for k, v in state.items()})
    theirs.load_state_dict(state)
    ours.eval().half()
    theirs.eval().half()
    x = (np.random.default_rng(0).standard_normal(shape) * 2).astype(np.float16)
    y = ours(x)
    y_t = theirs(torch.from_numpy(x)).detach().numpy()
    assert y.dtype == np.float16
    assert _ulps(y, y_t).max() <= ULP_SLACK, name
    assert all(v.dtype in (np.float16, np.int64) for v in ours.state_dict().values())


def test_half_digits_cnn_agrees_with_torch_and_with_float32():
    model = models.digits_cnn(rng=np.random.default_rng(0)).eval()
    x = np.random.default_rng(1).standard_normal((32, 1, 8, 8)).astype(np.float32)
    y32 = model(x)
    size32 = metrics.model_size_bytes(model)
    model.half()
    y16 = model(x.astype(np.float16))
    assert y16.dtype == np.float16 and model[0].weight.data.dtype == np.float16
    assert np.abs(y16.astype(np.float32) - y32).max() < 2e-2 * np.abs(y32).max()
    assert (y16.argmax(1) == y32.argmax(1)).mean() >= 0.95
    assert metrics.model_size_bytes(model) < 0.55 * size32


def test_half_whole_model_matches_torch(torch):
    model = models.digits_cnn((8, 16), 32, rng=np.random.default_rng(0)).eval()
    tm = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                             torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                             torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(256, 32), torch.nn.ReLU(),
                             torch.nn.Linear(32, 10)).eval()
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    model.half()
    tm.half()
    x = np.random.default_rng(1).standard_normal((64, 1, 8, 8)).astype(np.float16)
    y, y_t = model(x), tm(torch.from_numpy(x)).detach().numpy()
    # per-layer 1-ulp differences, compounded: a few ulps of the output scale, most outputs identical
    scale_ulp = float(np.spacing(np.abs(y_t).max()))
    diff = np.abs(y.astype(np.float32) - y_t.astype(np.float32))
    assert diff.max() <= 4 * scale_ulp and (diff > 0).mean() < 0.2, (diff.max() / scale_ulp, (diff > 0).mean())
    assert np.array_equal(y.argmax(1), y_t.argmax(1))


def test_half_models_save_and_load_as_float16(tmp_path):
    model = models.digits_mlp((16,), rng=np.random.default_rng(0)).eval().half()
    io.save(model, tmp_path / "h.npz")
    back = io.load(tmp_path / "h.npz")
    x = np.random.default_rng(2).standard_normal((5, 1, 8, 8)).astype(np.float16)
    assert back[1].weight.data.dtype == np.float16
    np.testing.assert_array_equal(back(x), model(x))


def test_float32_inputs_to_a_half_layer_compute_in_float32():
    """A float16 layer called with float32 input (inside a float32 computation) returns float32."""
    lin = nn.Linear(4, 3).half()
    x = np.ones((2, 4), np.float32)
    y = lin(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x @ lin.weight.data.astype(np.float32).T + lin.bias.data.astype(np.float32))


def test_a_fresh_process_loading_a_half_model_computes_it_in_float32(tmp_path):
    """The check of eq. (1) is switched on by the first float16 parameter or buffer a process makes; a process
    whose first one comes from a model file (``io.load``) must switch it on too."""
    import subprocess
    import sys
    model = models.digits_cnn((4, 8), 16, rng=np.random.default_rng(0)).eval().half()
    io.save(model, tmp_path / "h.npz")
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    code = ("import numpy as np, sys; from minicompress import io; from minicompress.nn import half; "
            "assert not half._SEEN[0]; m = io.load(sys.argv[1]); y = m(np.load(sys.argv[2])); "
            "np.save(sys.argv[3], y)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "h.npz"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model(x))
