"""Whole-model files: save/load gives the same classes, arguments, modes and arrays — hence identical
outputs — for float, float64, pruned and channel-pruned models; unknown classes and corrupt files
are refused; writes are atomic."""
import io
import json
import os
import sys
import zipfile

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import minicompress.io as mio
from io_testing import no_code_execution
from minicompress import nn, prune
from minicompress.io import FileFormatError, register_module
from minicompress.nn import Module, Parameter


def mlp():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 8, bias=False),
                         nn.LeakyReLU(0.2), nn.Linear(8, 4), nn.LogSoftmax(dim=1))


def cnn():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, (3, 1), stride=(1, 2), padding="valid", groups=2, bias=False),
                         nn.BatchNorm2d(6, eps=1e-3, momentum=None), nn.GELU(approximate="tanh"),
                         nn.AvgPool2d(2, stride=1, ceil_mode=True), nn.AdaptiveAvgPool2d((2, None)),
                         nn.Flatten(), nn.Identity(), nn.Linear(6 * 2 * 1, 5), nn.Sigmoid(), nn.Softmax(dim=-1))


def cnn1d():
    return nn.Sequential(nn.Conv1d(3, 4, 3, dilation=2), nn.BatchNorm1d(4, affine=False), nn.Tanh(),
                         nn.MaxPool1d(2, ceil_mode=True), nn.AvgPool1d(2, count_include_pad=False),
                         nn.Flatten(1, -1), nn.Linear(4 * 1, 3))


MODELS = {"mlp": (mlp, (5, 6)), "cnn": (cnn, (3, 2, 8, 8)), "cnn1d": (cnn1d, (2, 3, 9))}


def run(model, x):
    with __import__("minicompress").no_grad():
        return model(x)


def train_a_little(model, x):
    """Make BatchNorm statistics and num_batches_tracked non-trivial."""
    model.train()
    run(model, x)
    run(model, x * 2 + 1)
    model.eval()


def round_trip(model, tmp_path, **kwargs):
    path = tmp_path / "model.npz"
    mio.save(model, path, **kwargs)
    with no_code_execution():
        return mio.load(path)


def assert_same_model(a, b):
    assert repr(a) == repr(b)
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    assert [m.training for m in a.modules()] == [m.training for m in b.modules()]
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and sa[key].shape == sb[key].shape, key
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_gives_identical_outputs(tmp_path, kind, dtype):
    make, shape = MODELS[kind]
    model = make().to(dtype)
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    train_a_little(model, x)
    loaded = round_trip(model, tmp_path)
    assert_same_model(model, loaded)
    np.testing.assert_array_equal(run(loaded, x), run(model, x))
    assert run(loaded, x).dtype == dtype


def test_training_flags_and_metadata_survive(tmp_path):
    model = cnn().train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    path = tmp_path / "m.npz"
    mio.save(model, path, metadata={"accuracy": 0.98, "stage": "teacher"})
    loaded = mio.load(path)
    assert loaded.training and not loaded[1].training and loaded[0].training
    architecture, _, _ = mio.read_model_file(path)
    assert architecture["metadata"] == {"accuracy": 0.98, "stage": "teacher"}
    assert architecture["format_version"] == mio.FORMAT_VERSION


def test_the_file_is_an_npz_of_the_state_dict(tmp_path):
    model = mlp()
    path = tmp_path / "m.npz"
    mio.save(model, path, compress=False)
    with np.load(path, allow_pickle=False) as npz:
        for key, value in model.state_dict().items():
            np.testing.assert_array_equal(npz[key], value)
    loaded = mio.load_state_dict_file(path)
    assert list(loaded) == list(model.state_dict())


# --------------------------------------------------------------------------- pruned models
def test_pruned_model_round_trips_and_stays_pruned(tmp_path):
    model = cnn()
    x = np.random.default_rng(2).standard_normal((3, 2, 8, 8)).astype(np.float32)
    train_a_little(model, x)
    prune.l1_unstructured(model[0], "weight", amount=0.4)
    prune.ln_structured(model[0], "weight", amount=1, n=2, dim=0)  # a PruningContainer
    prune.random_unstructured(model[11], "bias", amount=2, rng=0)
    loaded = round_trip(model, tmp_path)
    assert_same_model(model, loaded)
    np.testing.assert_array_equal(run(loaded, x), run(model, x))
    assert prune.is_pruned(loaded)
    np.testing.assert_array_equal(loaded[0].weight, model[0].weight)  # mask * orig, recomputed
    # still a working re-parametrisation: the gradient reaches weight_orig through the mask
    loaded.train()
    loaded(x)
    loaded.backward(np.ones((3, 5), np.float32))
    grad = loaded[0].weight_orig.grad
    assert grad is not None and np.all(grad[loaded[0].weight_mask == 0] == 0)
    prune.remove(loaded[0], "weight")
    np.testing.assert_array_equal(loaded[0].weight.data, model[0].weight)


def test_channel_pruned_model_round_trips(tmp_path):
    model = cnn()
    x = np.random.default_rng(3).standard_normal((2, 2, 8, 8)).astype(np.float32)
    train_a_little(model, x)
    small = prune.channel_prune(model, x, amount=0.5)
    small.eval()
    loaded = round_trip(small, tmp_path)
    assert_same_model(small, loaded)
    np.testing.assert_array_equal(run(loaded, x), run(small, x))


def test_compression_shrinks_a_sparse_model(tmp_path):
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for layer in (model[0], model[2]):
        prune.l1_unstructured(layer, "weight", amount=0.9)
        prune.remove(layer, "weight")
    mio.save(model, tmp_path / "dense.npz", compress=False)
    mio.save(model, tmp_path / "small.npz")
    assert os.path.getsize(tmp_path / "small.npz") < 0.5 * os.path.getsize(tmp_path / "dense.npz")


# --------------------------------------------------------------------------- int8 models
def static_int8(qconfig, x):
    from minicompress import quant
    model = nn.Sequential(quant.QuantStub(), nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, bias=False), nn.Flatten(), nn.Linear(4 * 2 * 2, 8), nn.ReLU(),
                          nn.Linear(8, 3), quant.DeQuantStub()).eval()
    model = quant.fuse_modules(model, [["1", "2"], ["6", "7"]])
    model.qconfig = qconfig
    prepared = quant.prepare(model)
    run(prepared, x)
    return quant.convert(prepared)


@pytest.mark.parametrize("qconfig", ["x86", "per_tensor"])
def test_static_int8_model_round_trips(tmp_path, qconfig):
    from minicompress import quant
    x = np.random.default_rng(5).standard_normal((4, 2, 8, 8)).astype(np.float32)
    config = quant.get_default_qconfig("x86") if qconfig == "x86" else quant.default_qconfig
    model = static_int8(config, x)
    loaded = round_trip(model, tmp_path)
    assert_same_model(model, loaded)
    assert loaded.state_dict()["1.weight"].dtype == np.int8
    assert loaded.state_dict()["1.weight_scale"].ndim == (1 if qconfig == "x86" else 0)
    np.testing.assert_array_equal(run(loaded, x), run(model, x))


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_int8_model_round_trips(tmp_path, per_channel):
    from minicompress import quant
    float_model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    spec = {nn.Linear: quant.per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
    model = quant.quantize_dynamic(float_model, spec)
    loaded = round_trip(model, tmp_path)
    assert_same_model(model, loaded)
    assert loaded.state_dict()["0.weight_scale"].ndim == int(per_channel)
    x = np.random.default_rng(6).standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_array_equal(run(loaded, x), run(model, x))


def test_prepared_models_are_refused_at_save(tmp_path):
    from minicompress import quant
    model = nn.Sequential(quant.QuantStub(), nn.Linear(4, 3), quant.DeQuantStub()).eval()
    model.qconfig = quant.get_default_qconfig("x86")
    with pytest.raises((TypeError, ValueError), match="cannot save"):
        mio.save(quant.prepare(model), tmp_path / "p.npz")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- your own classes
class Net(Module):
    """A user model: children created in __init__, a custom forward."""

    def __init__(self, hidden: int = 5, scale: float = 2.0) -> None:
        super().__init__()
        self.hidden, self.scale = hidden, scale
        self.body = nn.Sequential(nn.Linear(3, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.head(self.body(x)) * self.scale


class Scaled(Module):
    """Constructor arguments a signature cannot recover: an array, a dtype, a dict and a child."""

    def __init__(self, inner, table, dtype, options):
        super().__init__()
        self.inner, self.table, self.kind, self.options = inner, table, np.dtype(dtype), options

    def forward(self, x):
        return self.inner(x).astype(self.kind) * self.table[self.options["row"]]


class Affine(Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = Parameter(np.ones(n, np.float32))

    def forward(self, x):
        return x * self.w


def test_unregistered_classes_cannot_be_saved(tmp_path, registry):
    with pytest.raises(TypeError, match=r"cannot save a Net .*register_module\(Net\)"):
        mio.save(Net(), tmp_path / "net.npz")
    assert not (tmp_path / "net.npz").exists()


def test_registered_class_round_trips_and_is_required_to_load(tmp_path, registry):
    register_module(Net)
    model = Net(hidden=7, scale=0.5)
    x = np.random.default_rng(4).standard_normal((4, 3)).astype(np.float32)
    loaded = round_trip(model, tmp_path)
    assert isinstance(loaded, Net) and loaded.hidden == 7 and loaded.scale == 0.5
    np.testing.assert_array_equal(run(loaded, x), run(model, x))

    del registry[f"{Net.__module__}.Net"]  # a process that never registered Net
    with pytest.raises(FileFormatError, match=r"the root module is a '.*Net', which is not a known module class"):
        mio.load(tmp_path / "model.npz")


def test_channel_surgery_inside_a_registered_class(tmp_path, registry):
    """Saved children replace what the constructor builds, so a smaller body loads fine."""
    register_module(Net)
    model = Net(hidden=6)
    model.body = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    model.head = nn.Linear(2, 2)
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(run(round_trip(model, tmp_path), x), run(model, x))


def test_custom_config_functions(tmp_path, registry):
    register_module(Scaled, to_config=lambda m: {"inner": m.inner, "table": m.table, "dtype": m.kind,
                                                 "options": m.options},
                    from_config=lambda c: Scaled(**c), name="tests.Scaled")
    model = Scaled(nn.Linear(3, 4), np.arange(8.0).reshape(2, 4), np.float64, {"row": 1, "tags": ("a", "b")})
    loaded = round_trip(model, tmp_path)
    assert loaded.kind == np.float64 and loaded.options == {"row": 1, "tags": ("a", "b")}
    np.testing.assert_array_equal(loaded.table, model.table)
    assert loaded.inner is loaded._modules["inner"]
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(run(loaded, x), run(model, x))


def test_unstorable_config_values_are_explained(tmp_path, registry):
    register_module(Scaled, to_config=lambda m: {"inner": m.inner, "table": m.table, "dtype": m.kind,
                                                 "options": {"f": print}}, name="tests.Scaled")
    with pytest.raises(TypeError, match="'options.f' is a builtin_function_or_method"):
        mio.save(Scaled(nn.Identity(), np.ones(2), np.float32, {}), tmp_path / "s.npz")
    register_module(Scaled, to_config=lambda m: {"dtype": object}, name="tests.Scaled")
    with pytest.raises(TypeError, match="'dtype' is a type"):
        mio.save(Scaled(nn.Identity(), np.ones(2), np.float32, {}), tmp_path / "s.npz")
    assert not list(tmp_path.iterdir())


def test_a_config_that_would_not_load_back_is_refused_at_save(tmp_path, registry):
    register_module(Affine, to_config=lambda m: {"n": 3})  # the weight has 5 entries
    with pytest.raises(ValueError, match=r"would not load back: .*'w' has shape \(5,\)"):
        mio.save(Affine(5), tmp_path / "n.npz")
    register_module(nn.LeakyReLU, to_config=lambda m: {}, name="tests.LeakyReLU")  # forgets the slope
    with pytest.raises(ValueError, match=r"module 1 would load back as LeakyReLU\(negative_slope=0.01"):
        mio.save(nn.Sequential(nn.Identity(), nn.LeakyReLU(0.5)), tmp_path / "l.npz")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- refused files
def rewrite_architecture(path, change):
    """A copy of model file ``path`` whose architecture.json went through ``change(dict)``."""
    data = path.read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "architecture.json":
                architecture = json.loads(content)
                change(architecture)
                content = json.dumps(architecture).encode()
            dst.writestr(info, content)
    bad = path.with_name("bad.npz")
    bad.write_bytes(out.getvalue())
    return bad


def set_root_class(name):
    return lambda a: a["model"].__setitem__("class", name)


@pytest.mark.parametrize("change, message", [
    (set_root_class("os.system"), "'os.system', which is not a known module class"),
    (set_root_class("booby_trap_module.Model"), "not a known module class"),
    (set_root_class("minicompress.io.model_file.save"), "not a known module class"),
    (lambda a: a["model"]["children"]["0"]["config"].__setitem__("in_features", "six"), "cannot rebuild module '0'"),
    (lambda a: a["model"]["children"]["0"]["config"].__setitem__("in_features", 7), r"'0.weight' has shape \(8, 6\)"),
    (lambda a: a["model"]["children"]["0"]["config"].__setitem__("evil", {"__import__": "os"}), "invalid config"),
    (lambda a: a.__setitem__("format_version", 99), "model format 99 .* upgrade minicompress"),
    (lambda a: a.__setitem__("format", "other"), "does not describe a minicompress.model file"),
    (lambda a: a["state"].pop(), "do not match the state keys"),
    (lambda a: a["model"]["children"].pop("5"), r"unexpected \['5.bias', '5.weight'\]"),
    (lambda a: a["model"]["children"]["0"].__setitem__("pruned", ["weight"]), "marked pruned on 'weight'"),
    (lambda a: a.__setitem__("model", []), "lacks 'model'"),
])
def test_corrupt_architectures_are_refused(tmp_path, change, message, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "booby_trap_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Model: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mio.save(mlp(), tmp_path / "m.npz")
    bad = rewrite_architecture(tmp_path / "m.npz", change)
    with no_code_execution(), pytest.raises(FileFormatError, match=message):
        mio.load(bad)
    assert not marker.exists() and "booby_trap_module" not in sys.modules


def test_state_dict_files_are_not_model_files(tmp_path):
    mio.save_state_dict_file(mlp().state_dict(), tmp_path / "sd.npz")
    with pytest.raises(FileFormatError, match="no architecture.json.*load_state_dict_file"):
        mio.load(tmp_path / "sd.npz")


def test_pickled_arrays_inside_a_model_file_are_refused(tmp_path):
    path = tmp_path / "m.npz"
    mio.save(mlp(), path, compress=False)
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        buffer = io.BytesIO()
        np.save(buffer, np.array([print], dtype=object), allow_pickle=True)
        dst.writestr("config/x.npy", buffer.getvalue())
    path.write_bytes(out.getvalue())
    with no_code_execution(), pytest.raises(FileFormatError, match=r"array 'config/x' has dtype object, Python objects"):
        mio.load(path)


@given(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=4),
       st.none() | st.integers(0, 5000))
def test_fuzz_mutated_model_file(tmp_path_factory, mutations, cut):
    tmp = tmp_path_factory.mktemp("fz")
    mio.save(mlp(), tmp / "m.npz", compress=False)
    data = bytearray((tmp / "m.npz").read_bytes())
    for position, value in mutations:
        data[position % len(data)] = value
    (tmp / "m.npz").write_bytes(bytes(data[:cut]))
    try:
        with no_code_execution():
            mio.load(tmp / "m.npz")
    except FileFormatError:
        pass


# --------------------------------------------------------------------------- atomic writes
def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    mio.save(mlp(), path)
    before = path.read_bytes()
    calls = []

    def failing_write_array(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    real = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", failing_write_array)
    with pytest.raises(OSError, match="disk full"):
        mio.save(cnn(), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        mio.save(cnn(), tmp_path / "new.npz")
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_atomic_write_creates_files_with_the_usual_permissions(tmp_path):
    with mio.atomic_write(tmp_path / "a.bin") as f:
        f.write(b"x")
    (tmp_path / "b.bin").write_bytes(b"x")
    assert (tmp_path / "a.bin").stat().st_mode == (tmp_path / "b.bin").stat().st_mode


# --------------------------------------------------------------------------- describe
def test_describe_lists_layers_tensors_sparsity_and_size(tmp_path):
    model = mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    mio.save(model, tmp_path / "m.npz", metadata={"stage": "pruned"})
    text = mio.describe(tmp_path / "m.npz")
    assert "minicompress model file (format 1" in text and "stage: pruned" in text
    assert "(0) Linear(in_features=6, out_features=8, bias=True)  [pruned: weight]" in text
    assert "(6) LogSoftmax(dim=1)" in text
    mask_row = next(line for line in text.splitlines() if line.startswith("0.weight_mask"))
    assert mask_row.split()[1:] == ["(8,", "6)", "float32", "48", "50.0%", "192"]
    assert f"size on disk: {os.path.getsize(tmp_path / 'm.npz')} bytes" in text
    mio.save_state_dict_file(model.state_dict(), tmp_path / "sd.safetensors", metadata={"by": "test"})
    text = mio.describe(tmp_path / "sd.safetensors")
    assert "safetensors file" in text and "by: test" in text and "total: 6 tensors" in text
