"""safetensors without the safetensors package: bytes follow the spec, all dtypes round-trip, bad
files are refused with a message naming the file and the problem."""
import json
import struct

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from minicompress.io import FileFormatError, load_state_dict_file, save_state_dict_file
from minicompress.io.safetensors import parse_safetensors, read_safetensors, safetensors_bytes

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
          "U64": np.uint64, "BOOL": np.bool_}


def by_hand(entries, metadata=None):
    """A safetensors file written straight from the spec: ``entries`` = [(name, dtype, shape, raw)]."""
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(raw for *_, raw in entries)


# --------------------------------------------------------------------------- bytes match the spec
def test_reference_vectors_from_the_safetensors_crate():
    # tensor.rs test_serialization / test_empty: the exact bytes the reference writer produces
    expected = bytes([64, 0, 0, 0, 0, 0, 0, 0]) + (
        b'{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}'
    ) + np.arange(6, dtype="<f4").tobytes()
    assert safetensors_bytes({"attn.0": np.arange(6, dtype=np.float32).reshape(1, 2, 3)}) == expected
    assert safetensors_bytes({}) == bytes([8, 0, 0, 0, 0, 0, 0, 0]) + b"{}" + b" " * 6
    assert safetensors_bytes({}, {"framework": "pt"}) == (
        bytes([40, 0, 0, 0, 0, 0, 0, 0]) + b'{"__metadata__":{"framework":"pt"}}' + b" " * 5)
    tensors, _ = parse_safetensors(expected)
    np.testing.assert_array_equal(tensors["attn.0"], np.arange(6, dtype=np.float32).reshape(1, 2, 3))


def test_writer_matches_a_file_written_by_hand_sorted_by_dtype_then_name():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1.5, -2.0], dtype=np.float64)
    n = np.array(7, dtype=np.int64)
    m = np.array([[True, False]])
    q = np.array([-1, 2, 3], dtype=np.int8)
    # reference order: descending dtype rank (I64 > F64 > F32 > I8 > BOOL), then by name
    hand = by_hand([("n", "I64", [], n.tobytes()), ("b", "F64", [2], b.tobytes()),
                    ("w", "F32", [2, 3], w.tobytes()), ("q", "I8", [3], q.tobytes()),
                    ("m", "BOOL", [1, 2], m.tobytes())], metadata={"format": "pt"})
    ours = safetensors_bytes({"w": w, "b": b, "n": n, "m": m, "q": q}, {"format": "pt"})
    assert ours == hand
    tensors, metadata = parse_safetensors(hand, "hand.safetensors")
    assert metadata == {"format": "pt"}
    for key, value in {"w": w, "b": b, "n": n, "m": m, "q": q}.items():
        assert tensors[key].dtype == value.dtype and tensors[key].shape == value.shape
        np.testing.assert_array_equal(tensors[key], value)


def test_bf16_is_read_into_float32():
    values = np.array([1.0, -2.5, 3.140625, 0.0, np.inf], dtype=np.float32)  # exact in bfloat16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    tensors, _ = parse_safetensors(by_hand([("x", "BF16", [5], raw)]))
    assert tensors["x"].dtype == np.float32
    np.testing.assert_array_equal(tensors["x"], values)


def test_bf16_matches_torch(torch):
    t = torch.randn(4, 5).to(torch.bfloat16)
    raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
    tensors, _ = parse_safetensors(by_hand([("x", "BF16", [4, 5], raw)]))
    np.testing.assert_array_equal(tensors["x"], t.float().numpy())


# --------------------------------------------------------------------------- round trips
arrays = st.builds(
    lambda dtype, shape, seed: np.random.default_rng(seed).integers(-100, 100, size=shape).astype(dtype)
    if dtype != np.bool_ else np.random.default_rng(seed).integers(0, 2, size=shape).astype(bool),
    st.sampled_from(list(DTYPES.values())),
    st.lists(st.integers(0, 4), max_size=3).map(tuple),
    st.integers(0, 2**16))
state_dicts = st.dictionaries(st.text("abc.0_é", min_size=1, max_size=6), arrays, max_size=6)


@given(state_dicts)
def test_round_trip_every_dtype(tmp_path_factory, sd):
    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    save_state_dict_file(sd, path, metadata={"k": "v"})
    back = load_state_dict_file(path)
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        np.testing.assert_array_equal(back[key], value)
    assert read_safetensors(path)[1] == {"k": "v"}


def test_non_contiguous_and_big_endian_inputs_are_written_in_little_endian_c_order(tmp_path):
    x = np.arange(12, dtype=">f4").reshape(3, 4).T
    save_state_dict_file({"x": x}, tmp_path / "x.safetensors")
    np.testing.assert_array_equal(load_state_dict_file(tmp_path / "x.safetensors")["x"], x)


def test_unsupported_dtypes_are_refused_on_write(tmp_path):
    with pytest.raises(TypeError, match="'z'.*complex64"):
        save_state_dict_file({"z": np.zeros(2, np.complex64)}, tmp_path / "z.safetensors")
    with pytest.raises(TypeError, match="'s'.*<U1"):
        save_state_dict_file({"s": np.array(["a"])}, tmp_path / "s.safetensors")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- refused files
GOOD = by_hand([("a", "F32", [2], np.ones(2, np.float32).tobytes()),
                ("b", "I64", [1], np.ones(1, np.int64).tobytes())])


def with_header(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def raw_header(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


BAD = {
    "absurd header length": (struct.pack("<Q", 2**62) + b"{}", "header length 4611686018427387904 bytes is absurd"),
    "header beyond file": (with_header({}, length=1000), "goes beyond the end of the file"),
    "too short": (b"\x01\x02", "too short"),
    "not json": (raw_header(b"{nope}"), "not valid JSON"),
    "not utf-8": (raw_header(b"{\xff"), "not UTF-8"),
    "not an object": (raw_header(b"[]"), "does not start with '{'"),
    "unknown dtype": (with_header({"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
                      "tensor 'a': unsupported dtype 'F7'"),
    "dtype not a string": (with_header({"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
                           "tensor 'a': unsupported dtype \\['F32'\\]"),
    "dtype an object": (with_header({"a": {"dtype": {"F32": 1}, "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
                        "tensor 'a': unsupported dtype \\{'F32': 1\\}"),
    "fp8 dtype": (with_header({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
                  "unsupported dtype 'F8_E4M3'"),
    "negative shape": (with_header({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}, b"\0"),
                       "shape must be a list of non-negative integers"),
    "size mismatch": (with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
                      "F32 \\[2\\] needs 8 bytes"),
    "overlap": (with_header({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                             "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, b"\0" * 6),
                "tensor 'b' data_offsets \\[2, 6\\] overlaps the previous tensor"),
    "gap": (with_header({"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, b"\0" * 4), "leaves a gap"),
    "offsets beyond file": (with_header({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}}, b"\0" * 3),
                            "go beyond the end of the file"),
    "reversed offsets": (with_header({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}}),
                         "0 <= begin <= end"),
    "trailing bytes": (GOOD + b"\0\0", "2 bytes after the last tensor"),
    "truncated data": (GOOD[:-3], "beyond the end of the file"),
    "duplicate key": (raw_header(b'{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},'
                                 b'"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'), "names 'a' twice"),
    "metadata not strings": (with_header({"__metadata__": {"k": 1}}), "__metadata__ must map strings to strings"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_refused_with_a_clear_message(tmp_path, case):
    data, message = BAD[case]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    with pytest.raises(FileFormatError, match=message) as info:
        load_state_dict_file(path)
    assert str(path) in str(info.value)


@given(st.binary(max_size=200))
def test_fuzz_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fz") / "f.safetensors"
    path.write_bytes(data)
    with pytest.raises(FileFormatError):
        load_state_dict_file(path)


@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.none() | st.integers(0, len(GOOD)))
def test_fuzz_mutated_valid_file(mutations, cut):
    data = bytearray(GOOD)
    for position, value in mutations:
        data[position] = value
    data = bytes(data[:cut])
    try:
        tensors, _ = parse_safetensors(data, "mutated.safetensors")
    except FileFormatError:
        return
    assert all(isinstance(v, np.ndarray) for v in tensors.values())


FIELD_VALUES = [None, True, -1, 2**64, 1.5, "F32", "BF16", "BOOL", "U64", [], {}, [1], [2**62, 2**62], ["x"], [[1]],
                1e300, [0, 2**63], {"dtype": "F32"}]


@given(st.sampled_from(["a", "b", "__metadata__"]), st.sampled_from(["dtype", "shape", "data_offsets", "extra", None]),
       st.sampled_from(FIELD_VALUES), st.sampled_from([None, 0, 1, -8, 8, 2**64 - 1]))
@settings(max_examples=400)  # cheap: 1,620 combinations in all
def test_fuzz_header_fields(key, field, value, length_change):
    """A header with one field (or a whole entry) replaced, and its length field possibly wrong."""
    header = json.loads(GOOD[8:8 + struct.unpack("<Q", GOOD[:8])[0]])
    header.setdefault("__metadata__", {"k": "v"})
    if field is None or key == "__metadata__":
        header[key] = value
    else:
        header[key][field] = value
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    length = len(text) if length_change is None else (len(text) + length_change) % 2**64
    data = struct.pack("<Q", length) + text + GOOD[8 + struct.unpack("<Q", GOOD[:8])[0]:]
    try:
        tensors, _ = parse_safetensors(data, "fuzzed.safetensors")
    except FileFormatError as e:
        assert str(e).startswith("fuzzed.safetensors: ")
        return
    assert all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in tensors.values())
