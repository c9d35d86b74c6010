"""PyTorch checkpoints read without torch: every tensor torch.save writes (zip and legacy format,
all dtypes, views with strides and offsets, storages shared between tensors, nested containers)
comes back equal to ``tensor.numpy()``."""
import io
import subprocess
import sys
import textwrap

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

from io_testing import assert_same, no_code_execution, torch_to_numpy
from minicompress.io import (FileFormatError, UnsafePickleError, load_checkpoint, load_state_dict_file,
                             save_state_dict_file)

DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
          "complex64", "uint16", "uint32", "uint64"]
VIEWS = ["contiguous", "transpose", "slice", "step", "expand", "reinterpret"]


def make(torch, dtype_name, shape, seed):
    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, dtype_name)
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=g).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    low, high = (0, 256) if not dtype.is_signed else (-128, 128)
    return torch.randint(low, high, shape, generator=g).to(dtype)


def build_view(torch, dtype, shape, view, seed):
    """A tensor of ``shape`` whose storage layout follows ``view`` (non-contiguous, offset, stride 0...)."""
    if view == "transpose":
        return make(torch, dtype, shape[::-1], seed).permute(tuple(reversed(range(len(shape)))))
    if view == "slice":
        base = make(torch, dtype, tuple(n + 2 for n in shape), seed)
        return base[tuple(slice(1, 1 + n) for n in shape)]
    if view == "step":
        return make(torch, dtype, tuple(2 * n + 1 for n in shape), seed)[tuple(slice(None, None, 2) for _ in shape)]
    if view == "expand":
        return make(torch, dtype, tuple(1 if i % 2 else n for i, n in enumerate(shape)), seed).expand(shape)
    if view == "reinterpret" and dtype in ("float32", "int32"):  # same storage, other dtype
        return make(torch, "float32", shape, seed).view(getattr(torch, dtype))
    return make(torch, dtype, shape, seed)


recipes = st.lists(st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 3), max_size=3).map(tuple),
                             st.sampled_from(VIEWS), st.integers(0, 1000)), min_size=1, max_size=4)


def save(torch, obj, path, legacy=False):
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@given(recipes, st.booleans())
def test_tensors_written_by_torch_read_back_equal(torch, tmp_path_factory, recipe, legacy):
    sd = {f"t{i}": build_view(torch, *r) for i, r in enumerate(recipe)}
    first = sd["t0"]
    sd["shared"] = first.reshape(-1)[1:] if first.numel() > 1 and first.is_contiguous() else first
    path = save(torch, sd, tmp_path_factory.mktemp("pt") / "sd.pt", legacy)
    with no_code_execution():
        loaded = load_state_dict_file(path)
    assert_same(loaded, {k: torch_to_numpy(v) for k, v in sd.items()})
    assert all(v.flags.c_contiguous and v.flags.writeable for v in loaded.values())


@pytest.mark.parametrize("legacy", [False, True])
def test_module_state_dict_and_nested_checkpoint(torch, tmp_path, legacy):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))
    model(torch.randn(2, 1, 8, 8))  # update BN running statistics and num_batches_tracked
    expected = {k: torch_to_numpy(v) for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    expected_after = {k: torch_to_numpy(v) for k, v in model.state_dict().items()}

    path = save(torch, model.state_dict(), tmp_path / "sd.pth", legacy)
    assert_same(load_state_dict_file(path), expected_after)
    del expected

    checkpoint = {"epoch": 3, "best": 0.91, "model_state_dict": model.state_dict(),
                  "optimizer_state_dict": opt.state_dict(), "note": "run 7", "flags": (True, None)}
    path = save(torch, checkpoint, tmp_path / "ckpt.pt", legacy)
    assert_same(load_state_dict_file(path), expected_after)
    assert_same(load_state_dict_file(path, key="model_state_dict"), expected_after)
    with pytest.raises(FileFormatError, match="'optimizer_state_dict'.* not a mapping of names to tensors"):
        load_state_dict_file(path, key="optimizer_state_dict")
    with pytest.raises(KeyError, match="no key 'nope'"):
        load_state_dict_file(path, key="nope")
    obj = load_checkpoint(path)  # the whole checkpoint, tensors as ndarrays
    assert obj["epoch"] == 3 and obj["note"] == "run 7" and obj["flags"] == (True, None)
    step = obj["optimizer_state_dict"]["state"][0]["step"]
    np.testing.assert_array_equal(step, opt.state_dict()["state"][0]["step"].numpy())


@pytest.mark.parametrize("legacy", [False, True])
def test_unsigned_16_32_and_64_bit_tensors_load(torch, tmp_path, legacy):
    """torch 2.3+ has uint16/uint32/uint64 (saved through UntypedStorage): legitimate, not unsafe."""
    sd = {f"{bits}": torch.tensor([0, 1, 2**bits - 1, 2**(bits - 1)], dtype=getattr(torch, f"uint{bits}"))
          for bits in (16, 32, 64)}
    sd["view"] = sd["16"].reshape(2, 2).t()
    path = save(torch, sd, tmp_path / "u.pt", legacy)
    loaded = load_state_dict_file(path)
    for bits in (16, 32, 64):
        assert loaded[f"{bits}"].dtype == np.dtype(f"uint{bits}")
        assert loaded[f"{bits}"].tolist() == [0, 1, 2**bits - 1, 2**(bits - 1)]
    np.testing.assert_array_equal(loaded["view"], np.array([[0, 2**16 - 1], [1, 2**15]], np.uint16))


def test_float8_tensors_are_refused_with_a_reason(torch, tmp_path):
    path = save(torch, {"x": torch.ones(2).to(torch.float8_e4m3fn)}, tmp_path / "f8.pt")
    with pytest.raises(UnsafePickleError, match="float8 tensors cannot be read: NumPy has no float8 type"):
        load_state_dict_file(path)


def test_plain_values_in_a_checkpoint(torch, tmp_path):
    """What protocol 2 spells with REDUCE (sets, bytes, complex, slices, devices) is allowed."""
    values = {"set": {1, 2}, "frozen": frozenset({3}), "bytes": b"\x00\xffab", "complex": 1 + 2j,
              "slice": slice(1, None, 2), "range": range(4), "bytearray": bytearray(b"xy"),
              "nested": [(1, "a"), {"k": None}]}
    for legacy in (False, True):
        path = save(torch, {**values, "device": torch.device("cuda", 1), "w": torch.ones(2)}, tmp_path / "v.pt", legacy)
        obj = load_checkpoint(path)
        assert {k: obj[k] for k in values} == values and obj["device"] == "cuda:1"
        np.testing.assert_array_equal(obj["w"], np.ones(2, np.float32))


def test_checkpoint_without_a_state_dict_is_explained(torch, tmp_path):
    path = save(torch, {"epoch": 1, "losses": [0.5, 0.25]}, tmp_path / "c.pt")
    with pytest.raises(FileFormatError, match=r"no flat mapping of names to tensors; "
                                              r"top-level keys: \['epoch', 'losses'\]"):
        load_state_dict_file(path)
    path = save(torch, [torch.ones(2)], tmp_path / "l.pt")
    with pytest.raises(FileFormatError, match="holds a list, not a state dict"):
        load_state_dict_file(path)


def test_parameters_scalars_and_empty_tensors(torch, tmp_path):
    sd = {"p": torch.nn.Parameter(torch.randn(3, 2)), "s": torch.tensor(2.5, dtype=torch.float64),
          "e": torch.empty(0, 3), "n": torch.tensor(7)}
    for legacy in (False, True):
        path = save(torch, sd, tmp_path / f"p{legacy}.pt", legacy)
        assert_same(load_state_dict_file(path), {k: torch_to_numpy(v) for k, v in sd.items()})


def test_whole_pickled_module_is_refused_with_a_hint(torch, tmp_path):
    path = save(torch, torch.nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(UnsafePickleError, match=r"refusing to load 'torch\.nn\.modules\.linear\.Linear' .*"
                                                r"save model\.state_dict\(\) instead"):
        load_state_dict_file(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_is_refused(torch, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(FileFormatError, match="TorchScript"):
        load_state_dict_file(path)


def test_format_is_recognised_by_content_not_name(torch, tmp_path):
    sd = {"w": torch.randn(2, 3)}
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(buffer.getvalue())
    assert_same(load_state_dict_file(path), {"w": sd["w"].numpy()})
    save_state_dict_file({"w": sd["w"].numpy()}, tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").rename(tmp_path / "w.pt")
    assert_same(load_state_dict_file(tmp_path / "w.pt"), {"w": sd["w"].numpy()})


def test_a_torch_state_dict_runs_in_the_equivalent_minicompress_model(torch, tmp_path):
    from minicompress import nn, no_grad
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 10))
    tmodel(torch.randn(8, 1, 8, 8))  # BatchNorm statistics
    tmodel.eval()
    torch.save(tmodel.state_dict(), tmp_path / "cnn.pt")
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 10)).eval()
    model.load_state_dict(load_state_dict_file(tmp_path / "cnn.pt"))
    x = torch.randn(5, 1, 8, 8)
    with no_grad(), torch.no_grad():
        np.testing.assert_allclose(model(x.numpy()), tmodel(x).numpy(), rtol=1e-5, atol=1e-6)


def test_loads_in_a_process_where_torch_cannot_be_imported(torch, tmp_path):
    """The issue's scenario: a checkpoint made with torch, used on a machine without it."""
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    torch.save({"model": model.state_dict(), "epoch": 2}, tmp_path / "ckpt.pt")
    x = torch.randn(6, 5)
    np.save(tmp_path / "x.npy", x.numpy())
    child = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import numpy as np
        import minicompress.io as mio
        from minicompress import nn
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch is importable")
        checkpoint, x_file, out = sys.argv[1:]
        sd = mio.load_state_dict_file(checkpoint)
        mio.save_state_dict_file(sd, out + ".npz")
        model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
        model.load_state_dict(sd)
        np.save(out + ".npy", model(np.load(x_file)))
        assert "torch" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
    """)
    out = tmp_path / "converted"
    result = subprocess.run([sys.executable, "-c", child, str(tmp_path / "ckpt.pt"), str(tmp_path / "x.npy"),
                             str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_same(load_state_dict_file(tmp_path / "converted.npz"), {k: v.numpy() for k, v in model.state_dict().items()})
    with torch.no_grad():
        np.testing.assert_allclose(np.load(tmp_path / "converted.npy"), model(x).numpy(), rtol=1e-5, atol=1e-6)
