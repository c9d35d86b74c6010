"""What a model file's arrays must be before they become a model: shapes checked against the config
before a layer is built (a few hundred bytes of architecture cannot cost gigabytes), no random
initialisation of what the file replaces, dtypes that fit, and valid quantization parameters."""
import io
import zipfile

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

import minicompress.io as mio
from io_testing import load_in_child, no_code_execution, run_limited
from minicompress import nn, prune, quant
from minicompress.io import FileFormatError
from minicompress.io.layer_shapes import SHAPES, expected_shapes
from minicompress.io.registry import spec_for_class
from test_model_file import cnn, cnn1d, mlp, rewrite_architecture, static_int8


def with_array(path, key, array):
    """A copy of model file ``path`` (as ``bad.npz``) whose array ``key`` is ``array``."""
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == key + ".npy":
                buffer = io.BytesIO()
                np.save(buffer, array, allow_pickle=True)
                content = buffer.getvalue()
            dst.writestr(info, content)
    bad = path.with_name("bad.npz")
    bad.write_bytes(out.getvalue())
    return bad


def saved(model, tmp_path, name="m.npz"):
    mio.save(model, tmp_path / name, compress=False)
    return tmp_path / name


def int8_model():
    x = np.random.default_rng(5).standard_normal((4, 2, 8, 8)).astype(np.float32)
    return static_int8(quant.get_default_qconfig("x86"), x)


# --------------------------------------------------------------------------- item 10: huge configs
def set_config(child, **config):
    return lambda a: a["model"]["children"][child]["config"].update(config)


HUGE = {  # small files whose architecture asks for a layer of gigabytes
    "Linear": (mlp, set_config("0", in_features=2**15, out_features=2**15),
               r"'0.weight' has shape \(8, 6\) but the architecture gives module '0' \(Linear\(in_features=32768, "
               r"out_features=32768, bias=True\)\) a weight of shape \(32768, 32768\)"),
    "Conv2d": (cnn, set_config("0", out_channels=2**14, in_channels=2**14),
               r"'0.weight' has shape \(4, 2, 3, 3\) but .* a weight of shape \(16384, 16384, 3, 3\)"),
    "BatchNorm2d": (cnn, set_config("1", num_features=2**30),
                    r"'1.weight' has shape \(4,\) but .* a weight of shape \(1073741824,\)"),
    "QuantizedLinear": (int8_model, set_config("6", in_features=2**16, out_features=2**16),
                        r"'6.weight' has shape \(8, 16\) but .*QuantizedLinearReLU.* a weight of shape \(65536, 65536\)"),
}


def test_a_huge_layer_in_a_small_file_is_refused_before_it_is_built(tmp_path):
    """366 bytes of architecture used to cost 1.8 GB and 4 s before the refusal."""
    paths = []
    for kind, (make, change, _) in HUGE.items():
        paths.append(rewrite_architecture(saved(make(), tmp_path), change).rename(tmp_path / f"{kind}.npz"))
    lines, seconds = load_in_child(paths, "load", memory=1 << 30)
    for (kind, (_, _, message)), line in zip(HUGE.items(), lines):
        assert line.startswith(f"refused: {tmp_path / kind}.npz: "), line
        assert __import__("re").search(message, line), (kind, line)
    assert seconds < 20


TABLE = """
import numpy as np
import minicompress.io as mio
from minicompress import nn


class Table(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.n = n
        self.w = nn.Parameter(np.ones(n, np.float32))


mio.register_module(Table, name="tests.Table")
"""


def test_a_huge_registered_class_fails_cleanly_under_a_memory_limit(tmp_path, registry):
    """A class outside the shape table is checked once built; under RLIMIT_AS, building it fails cleanly."""
    namespace = {}
    exec(TABLE, namespace)
    mio.save(namespace["Table"](3), tmp_path / "table.npz")
    paths = []
    for n in (4, 2**31):
        paths.append(rewrite_architecture(tmp_path / "table.npz", lambda a: a["model"]["config"].update(n=n)))
        paths[-1] = paths[-1].rename(tmp_path / f"table{n}.npz")
    out, _ = run_limited(TABLE + """
import sys
for path in sys.argv[1:]:
    try:
        mio.load(path)
    except mio.FileFormatError as e:
        print(e)
""", *map(str, paths), memory=1 << 30, timeout=60)
    small, huge = out.splitlines()
    assert "'w' has shape (3,) but the architecture gives Table() a w of shape (4,)" in small, small
    assert "cannot rebuild the root module as tests.Table(**{'n': 2147483648}): MemoryError" in huge, huge


def test_loading_skips_the_random_initialisation(tmp_path, monkeypatch):
    model = cnn()
    path = saved(model, tmp_path)

    def no_random_init(*args, **kwargs):
        raise AssertionError("a layer was randomly initialised while loading")

    monkeypatch.setattr(nn.init, "get_rng", no_random_init)     # every random init draws through it
    loaded = mio.load(path)
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    mio.save(loaded, tmp_path / "again.npz")  # verify=True rebuilds the same way
    with pytest.raises(AssertionError, match="randomly initialised"):
        nn.Linear(2, 2)  # only the loader skips it


def recurrent():
    return nn.ModuleList([nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2), nn.LSTM(2, 3, bias=False),
                          nn.GRU(3, 4, num_layers=2, bidirectional=True, bias=False), nn.RNN(3, 2, nonlinearity="relu"),
                          nn.RNNCell(3, 4), nn.LSTMCell(2, 3, bias=False), nn.GRUCell(3, 2)])


@pytest.mark.parametrize("make", [mlp, cnn, cnn1d, int8_model, recurrent,
                                  lambda: quant.quantize_dynamic(mlp(), {nn.Linear: quant.per_channel_dynamic_qconfig})])
def test_the_shape_table_matches_the_real_layers(make):
    model = make()
    checked = 0
    for where, module in model.named_modules():
        spec = spec_for_class(type(module))
        if spec.name in SHAPES:
            own = {k: v.shape for k, v in module.state_dict().items() if "." not in k}
            assert expected_shapes(spec.name, spec.to_config(module)) == own, where
            checked += 1
    assert checked


# --------------------------------------------------------------------------- item 13: dtypes and values
BAD_ARRAYS = {
    "int64 weight": ("0.weight", np.ones((8, 6), np.int64), "holds int64 values but Linear.* keeps its weight as "
                                                             "float32: a floating-point array"),
    "bool weight": ("0.weight", np.ones((8, 6), bool), "holds bool values"),
    "complex weight": ("0.weight", np.ones((8, 6), np.complex64), "holds complex64 values"),
    "string weight": ("0.weight", np.full((8, 6), "1.0"), r"array '0.weight' has dtype <U3, not numbers"),
    "object array of None": ("0.weight", np.full((8, 6), None), r"dtype object, Python objects \(a pickle\)"),
    "dates": ("0.bias", np.zeros(8, "M8[s]"), "dtype datetime64"),
    "structured": ("0.bias", np.zeros(8, [("a", "f4")]), r"dtype \[\('a', '<f4'\)\], not numbers"),
    "wrong shape": ("5.bias", np.ones(3, np.float32), r"'5.bias' has shape \(3,\) but the architecture gives"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_arrays_of_the_wrong_kind_are_refused(tmp_path, case):
    key, array, message = BAD_ARRAYS[case]
    bad = with_array(saved(mlp(), tmp_path), key, array)
    with no_code_execution(), pytest.raises(FileFormatError, match=message) as info:
        mio.load(bad)
    assert str(tmp_path / "bad.npz") in str(info.value)


def test_a_float_count_of_batches_is_refused_and_float16_weights_load(tmp_path):
    path = saved(cnn(), tmp_path)
    with pytest.raises(FileFormatError, match="'1.num_batches_tracked' holds float64 values but BatchNorm2d.* keeps "
                                              "its num_batches_tracked as int64: a signed integer array"):
        mio.load(with_array(path, "1.num_batches_tracked", np.array(0.0)))
    loaded = mio.load(with_array(path, "0.weight", np.ones((4, 2, 3, 3), np.float16)))  # as after .to(float16)
    assert loaded[0].weight.dtype == np.float16


BAD_QPARAMS = {
    "scale 0": ("6.scale", np.array(0.0), r"'6.scale' = 0.0 is not a valid quantization scale"),
    "scale NaN": ("6.scale", np.array(np.nan), "'6.scale' = nan is not a valid quantization scale"),
    "scale inf": ("1.scale", np.array(np.inf), "'1.scale' = inf is not a valid"),
    "negative weight scale": ("1.weight_scale", -np.ones(4), r"'1.weight_scale' = \[-1.0, .* is not a valid"),
    "input scale 0": ("0.scale", np.zeros(1, np.float32), r"'0.scale' = \[0.0\] is not a valid"),
    "zero point 300": ("6.zero_point", np.array(300), r"'6.zero_point' = 300 is not a valid quint8 zero point "
                                                      r"\(integers in \[0, 255\]\)"),
    "negative zero point": ("0.zero_point", np.array([-1]), r"'0.zero_point' = \[-1\] is not a valid quint8"),
    "weight zero point 200": ("8.weight_zero_point", np.full(3, 200), r"'8.weight_zero_point' = \[200, 200, 200\] is "
                                                                       r"not a valid qint8 zero point \(integers in "
                                                                       r"\[-128, 127\]\)"),
    "int64 codes": ("8.weight", np.zeros((3, 8), np.int64), "'8.weight' holds int64 values but QuantizedLinear.* keeps "
                                                            "its weight as int8 codes"),
    "float codes": ("8.weight", np.zeros((3, 8), np.float32), "holds float32 values but QuantizedLinear"),
}


@pytest.mark.parametrize("case", sorted(BAD_QPARAMS))
def test_invalid_quantization_parameters_are_refused_on_load(tmp_path, case):
    key, array, message = BAD_QPARAMS[case]
    with pytest.raises(FileFormatError, match=message):
        mio.load(with_array(saved(int8_model(), tmp_path), key, array))


def test_a_pruning_mask_must_match_its_weight(tmp_path):
    model = mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    path = saved(model, tmp_path)
    with pytest.raises(FileFormatError, match="marked pruned on 'weight' but the file lacks matching "
                                              r"weight_orig/weight_mask arrays \(same shape and dtype\)"):
        mio.load(with_array(path, "0.weight_mask", np.ones((8, 6), np.float64)))
    with pytest.raises(FileFormatError, match="'0.weight_orig' holds int8 values but Linear"):
        mio.load(with_array(with_array(path, "0.weight_orig", np.ones((8, 6), np.int8)), "0.weight_mask",
                            np.ones((8, 6), np.int8)))


REPLACEMENTS = [np.float64, np.float16, np.int8, np.int64, np.uint8, np.bool_, np.complex64, "U3", "M8[s]", object,
                "nan", "inf", "zero", "big", "negative"]


def replacement(original, kind):
    """``original`` as dtype ``kind``, or filled with extreme values (integers stay integers, as int64)."""
    if kind is object:
        return np.full(original.shape, None, object)
    if kind in ("nan", "inf"):
        return np.full(original.shape, np.nan if kind == "nan" else np.inf,
                       original.dtype if original.dtype.kind == "f" else np.float64)
    if kind in ("zero", "big", "negative"):
        value = {"zero": 0, "big": 1000, "negative": -1000}[kind]
        return np.full(original.shape, value, original.dtype if original.dtype.kind == "f" else np.int64)
    return original.astype(kind)


def pruned_mlp():
    model = mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    return model


@pytest.fixture(scope="module")
def fuzzed_models():
    return {"int8": int8_model(), "pruned": pruned_mlp()}


@given(st.sampled_from(["int8", "pruned"]), st.integers(0, 100), st.sampled_from(REPLACEMENTS))
@settings(max_examples=60)
def test_fuzz_the_arrays_of_a_model_file(tmp_path_factory, fuzzed_models, which, pick, kind):
    """Any array replaced by another dtype or by extreme values: refused, or a model that is valid."""
    tmp = tmp_path_factory.mktemp("fz")
    model = fuzzed_models[which]
    path = saved(model, tmp)
    keys = list(model.state_dict())
    key = keys[pick % len(keys)]
    bad = with_array(path, key, replacement(model.state_dict()[key], kind))
    try:
        with no_code_execution():
            loaded = mio.load(bad)
    except FileFormatError as e:
        assert str(e).startswith(str(tmp / "bad.npz"))
        return
    for k, value in loaded.state_dict().items():
        assert value.dtype.kind in "biuf" and value.shape == model.state_dict()[k].shape
        if k.endswith("scale"):
            assert np.all(np.isfinite(value)) and np.all(value > 0)
