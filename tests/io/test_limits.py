"""The loaders' byte budget (io/limits.py): decompression bombs are refused from the sizes the zip
declares, before anything is inflated; a header that understates a member is caught while
inflating; ``max_bytes`` sets the budget. The 1 GiB bombs are loaded in a child process limited to
1.5 GiB of address space, so that a regression fails instead of eating the machine."""
import io
import json
import struct
import zipfile

import numpy as np
import pytest

import minicompress.io as mio
from io_testing import load_in_child, set_declared_size, state_dict_pickle, tensor_record, zeros_member
from minicompress import nn
from minicompress.io import FileFormatError, load_state_dict_file
from minicompress.io.limits import default_max_bytes

GIB = 1 << 30

def npy_header(shape, descr="<f4"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def deflated_zip(path, members):
    """A zip at ``path``: ``members`` maps a name to bytes, or to ``(header, n)``: header + n zero bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for member, content in members.items():
            if isinstance(content, tuple):
                zeros_member(archive, member, content[1], content[0])
            else:
                archive.writestr(member, content)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """A ~5 MB .pt holding one deflated 1 GiB storage, and a ~5 MB .npz holding one 1 GiB array."""
    folder = tmp_path_factory.mktemp("bombs")
    n = GIB // 4
    pkl = state_dict_pickle(w=tensor_record((n,), (1,), numel=n))
    pt = deflated_zip(folder / "bomb.pt", {"archive/data.pkl": pkl, "archive/byteorder": b"little",
                                          "archive/data/0": (b"", GIB)})
    npz = deflated_zip(folder / "bomb.npz", {"w.npy": (npy_header((n,)), GIB)})
    return {"pt": pt, "npz": npz}


def test_the_default_budget():
    assert default_max_bytes(0) == 256 << 20
    assert default_max_bytes(10 << 20) == (256 << 20) + 640 * (1 << 20)


def test_a_deflated_1_gib_storage_is_refused_before_inflating(bombs):
    assert bombs["pt"].stat().st_size < 6 << 20
    (out,), seconds = load_in_child([bombs["pt"]])
    assert out.startswith(f"refused: {bombs['pt']}: storage '0' would take {GIB} bytes, more than the"), out
    assert "256 MiB + 64 x the file's" in out and "pass a larger max_bytes=" in out
    assert seconds < 30


def test_a_deflated_1_gib_npz_member_is_refused_before_inflating(bombs):
    (out,), seconds = load_in_child([bombs["npz"]])
    assert out.startswith(f"refused: {bombs['npz']}: array 'w' ({GIB // 4},) float32 would take {GIB} bytes"), out
    assert seconds < 30


def test_max_bytes_lets_a_trusted_file_through(bombs):
    (out,), _ = load_in_child([bombs["npz"]], max_bytes=GIB + (1 << 20), memory=GIB * 2)
    assert out == f"loaded: {{'w': {GIB}}}", out


def test_max_bytes_lowers_the_budget_for_every_format(tmp_path, torch):
    sd = {"w": np.ones((256, 256), np.float32)}  # 256 KiB
    mio.save_state_dict_file(sd, tmp_path / "sd.npz", compress=True)
    mio.save_state_dict_file(sd, tmp_path / "sd.safetensors")
    torch.save({"w": torch.ones(256, 256)}, tmp_path / "sd.pt")
    torch.save({"w": torch.ones(256, 256)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    mio.save(nn.Linear(256, 256, bias=False), tmp_path / "model.npz")
    for name in ("sd.npz", "sd.safetensors", "sd.pt", "legacy.pt", "model.npz"):
        assert load_state_dict_file(tmp_path / name)["w" if name != "model.npz" else "weight"].shape == (256, 256)
        with pytest.raises(FileFormatError, match=r"would take 262144 bytes, more than the \d+ bytes left of this "
                                                  r"load's budget of 100000 bytes \(max_bytes\)") as info:
            load_state_dict_file(tmp_path / name, max_bytes=100_000)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(FileFormatError, match="max_bytes"):
        mio.load(tmp_path / "model.npz", max_bytes=100_000)
    with pytest.raises(FileFormatError, match="max_bytes"):
        mio.load_checkpoint(tmp_path / "sd.pt", max_bytes=100_000)
    with pytest.raises(FileFormatError, match="max_bytes"):
        mio.describe(tmp_path / "sd.safetensors", max_bytes=100_000)
    with pytest.raises(ValueError, match="max_bytes must be a non-negative int"):
        load_state_dict_file(tmp_path / "sd.npz", max_bytes=-1)


def test_bf16_counts_as_the_float32_it_becomes(tmp_path):
    text = json.dumps({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(8))
    assert load_state_dict_file(path, max_bytes=16)["x"].dtype == np.float32
    with pytest.raises(FileFormatError, match="tensor 'x' BF16 \\[4\\] would take 16 bytes"):
        load_state_dict_file(path, max_bytes=15)


# --------------------------------------------------------------------------- zip headers that lie
def test_a_member_inflating_beyond_its_declared_size_is_cut_and_refused(tmp_path):
    """The header says 16 bytes of data; the deflated stream holds 64 MiB: 16 are read, the CRC fails."""
    data = deflated_zip(tmp_path / "lie.npz", {"w.npy": (npy_header((4,)), 64 << 20)}).read_bytes()
    header = len(npy_header((4,)))
    (tmp_path / "lie.npz").write_bytes(set_declared_size(data, "w.npy", header + 16))
    with pytest.raises(FileFormatError, match="lie.npz: corrupt .npz archive \\(BadZipFile: Bad CRC-32"):
        load_state_dict_file(tmp_path / "lie.npz", max_bytes=1 << 20)
    pkl = state_dict_pickle(w=tensor_record((4,), (1,)))
    data = deflated_zip(tmp_path / "lie.pt", {"archive/data.pkl": pkl, "archive/data/0": (b"", 64 << 20)}).read_bytes()
    (tmp_path / "lie.pt").write_bytes(set_declared_size(data, "archive/data/0", 16))
    with pytest.raises(FileFormatError, match="lie.pt: cannot read archive/data/0 \\(BadZipFile: Bad CRC-32"):
        load_state_dict_file(tmp_path / "lie.pt", max_bytes=1 << 20)


def test_a_member_shorter_than_declared_is_refused(tmp_path):
    data = deflated_zip(tmp_path / "short.npz", {"w.npy": npy_header((4,)) + bytes(16)}).read_bytes()
    (tmp_path / "short.npz").write_bytes(set_declared_size(data, "w.npy", len(npy_header((4,))) + 1000))
    with pytest.raises(FileFormatError, match="array 'w' declares shape \\(4,\\) of float32 \\(16 bytes\\) but its "
                                              "member holds 1000 bytes"):
        load_state_dict_file(tmp_path / "short.npz")


@pytest.mark.parametrize("shape, message", [
    ((1 << 40,), r"declares shape \(1099511627776,\) of float32 \(4398046511104 bytes\) but its member holds 16"),
    ((2, 3), r"declares shape \(2, 3\) of float32 \(24 bytes\) but its member holds 16"),
])
def test_npy_headers_must_match_their_member(tmp_path, shape, message):
    path = deflated_zip(tmp_path / "h.npz", {"w.npy": npy_header(shape) + bytes(16)})
    with pytest.raises(FileFormatError, match=message):
        load_state_dict_file(path)


def test_bzip2_and_lzma_members_are_refused(tmp_path):
    for method, number in ((zipfile.ZIP_BZIP2, 12), (zipfile.ZIP_LZMA, 14)):
        path = tmp_path / "c.npz"
        with zipfile.ZipFile(path, "w", method) as archive:
            archive.writestr("w.npy", npy_header((4,)) + bytes(16))
        with pytest.raises(FileFormatError, match=f"member 'w.npy' uses zip compression method {number}; only "
                                                  f"stored and deflated"):
            load_state_dict_file(path)


def test_npz_arrays_in_fortran_order_big_endian_and_0_d_read_back_equal(tmp_path):
    arrays = {"f": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)), "b": np.arange(5, dtype=">i4"),
              "s": np.array(2.5), "e": np.zeros((0, 3), np.int8), "z": np.array([1 + 2j], np.complex64)}
    np.savez(tmp_path / "a.npz", **arrays)
    loaded = load_state_dict_file(tmp_path / "a.npz")
    for key, value in arrays.items():
        assert loaded[key].shape == value.shape and loaded[key].flags.c_contiguous and loaded[key].flags.writeable
        assert loaded[key].dtype == value.dtype.newbyteorder("=")
        np.testing.assert_array_equal(loaded[key], value)
