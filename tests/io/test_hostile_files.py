"""Hostile, corrupt and truncated files are refused with clear errors and without side effects.

A pickle that would run ``os.system`` / ``eval`` / ``subprocess`` (named with the GLOBAL, STACK_GLOBAL,
INST or EXT opcodes, alone or hidden inside a real checkpoint) must raise ``UnsafePickleError`` and
leave no trace: the marker file its payload would create never appears, the module it names is not
imported, and no audit event for running code or writing files fires. Fuzzing random and mutated
files may only ever raise ``FileFormatError``.
"""
import copyreg
import io
import os
import pickle
import subprocess
import sys
import zipfile

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

from io_testing import (legacy_checkpoint, no_code_execution, op_global, op_int, op_long, op_str, op_tuple,
                        replace_member, load_in_child, state_dict_pickle, tensor_record, zip_checkpoint)
from minicompress.io import FileFormatError, UnsafePickleError, load_checkpoint, load_state_dict_file



class Reduce:
    """Pickles as ``fn(*args)``: what a malicious checkpoint's ``__reduce__`` looks like."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(marker):
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Reduce(os.system, f"touch {marker}"),
        "eval": Reduce(eval, touch),
        "exec": Reduce(exec, touch),
        "subprocess": Reduce(subprocess.call, ["touch", str(marker)]),
        "getattr chain": Reduce(getattr, Reduce(__import__, "os"), "system"),
    }


FLOATS = np.arange(4, dtype="<f4").tobytes()
VALID_PKL = state_dict_pickle(w=tensor_record((2, 2), (1, 2)), b=tensor_record((3,), (1,), offset=1))
VALID_ZIP = zip_checkpoint(VALID_PKL, {"0": FLOATS})
VALID_LEGACY = legacy_checkpoint(
    state_dict_pickle(w=tensor_record((2, 2), (1, 2), legacy=True), b=tensor_record((3,), (1,), 1, legacy=True)),
    {"0": FLOATS})


def load_bytes(tmp_path, data, name="model.pt"):
    path = tmp_path / name
    path.write_bytes(data)
    with no_code_execution():
        return load_state_dict_file(path)


@pytest.mark.parametrize("data", [VALID_ZIP, VALID_LEGACY], ids=["zip", "legacy"])
def test_hand_made_checkpoints_load(tmp_path, data):
    """The builders above are right, so the refusals below are about the hostile part only."""
    sd = load_bytes(tmp_path, data)
    np.testing.assert_array_equal(sd["w"], np.arange(4, dtype=np.float32).reshape(2, 2).T)
    np.testing.assert_array_equal(sd["b"], np.array([1, 2, 3], dtype=np.float32))


# --------------------------------------------------------------------------- hostile pickles
@pytest.mark.parametrize("protocol", [0, 2, 4])  # 0 and 2: GLOBAL; 4: STACK_GLOBAL
@pytest.mark.parametrize("container", ["plain pickle", "zip", "legacy", "inside a state dict"])
@pytest.mark.parametrize("payload", ["os.system", "eval", "exec", "subprocess", "getattr chain"])
def test_malicious_reducers_are_refused_without_side_effects(tmp_path, protocol, container, payload):
    marker = tmp_path / "pwned"
    evil = payloads(marker)[payload]
    if container == "inside a state dict":  # a real tensor first, then the payload, in data.pkl
        pkl = state_dict_pickle(w=tensor_record((4,), (1,)), x=pickle.dumps(evil, protocol=protocol)[2:-1]) \
            if protocol else pickle.dumps({"w": 1, "x": evil}, protocol=protocol)
        data = zip_checkpoint(pkl, {"0": FLOATS})
    else:
        pkl = pickle.dumps(evil, protocol=protocol)
        data = {"plain pickle": pkl, "zip": zip_checkpoint(pkl), "legacy": legacy_checkpoint(pkl)}[container]
    if container == "plain pickle" and protocol == 0:  # no \x80 header: not even taken for a pickle
        expected = pytest.raises(FileFormatError, match="unrecognised leading bytes")
    else:
        expected = pytest.raises(UnsafePickleError, match=r"refusing to load '[\w.]+' from .*model\.pt: only "
                                                          r"tensors and plain containers are allowed")
    with expected:
        load_bytes(tmp_path, data)
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["os.system", "eval", "exec", "subprocess"])
def test_the_payloads_are_real(tmp_path, payload):
    """Unpickled the ordinary way, each payload does create its marker (and trips the audit hook)."""
    marker = tmp_path / "pwned"
    with pytest.raises(AssertionError, match="side effects"), no_code_execution():
        pickle.loads(pickle.dumps(payloads(marker)[payload], protocol=2))
    assert marker.exists()


def test_refusal_happens_before_import(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "booby_trap_module.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef f(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = b"\x80\x02" + op_global("booby_trap_module", "f") + b")R."
    with pytest.raises(UnsafePickleError, match="'booby_trap_module.f'"):
        load_bytes(tmp_path, data)
    assert "booby_trap_module" not in sys.modules and not marker.exists()


def test_inst_and_ext_opcodes_go_through_the_same_gate(tmp_path):
    marker = tmp_path / "pwned"
    inst = b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."  # protocol 0 INST
    with pytest.raises(UnsafePickleError, match="'os.system'"):
        load_bytes(tmp_path, legacy_checkpoint(inst))
    module = os.system.__module__  # 'posix' or 'nt'
    copyreg.add_extension(module, "system", 0x7F01)
    try:
        ext = pickle.dumps(Reduce(os.system, f"touch {marker}"), protocol=2)
        assert b"\x83" in ext  # EXT2 instead of GLOBAL
        with pytest.raises(UnsafePickleError, match=f"'{module}.system'"):
            load_bytes(tmp_path, legacy_checkpoint(ext[2:]))
    finally:
        copyreg.remove_extension(module, "system", 0x7F01)
    assert not marker.exists()


def test_only_the_listed_torch_names_are_allowed(tmp_path):
    for module, name in [("torch", "load"), ("torch._utils", "_rebuild_qtensor"), ("torch.serialization", "load"),
                         ("torch.nn.modules.linear", "Linear"), ("numpy", "load"), ("builtins", "getattr")]:
        with pytest.raises(UnsafePickleError, match=f"'{module}.{name}'"):
            load_bytes(tmp_path, zip_checkpoint(b"\x80\x02" + op_global(module, name) + b"."))


# --------------------------------------------------------------------------- stand-ins the pickle cannot change
def untyped_record(dtype="float32"):
    """A ``_rebuild_tensor_v3`` record over an ``UntypedStorage`` (how torch 2.x saves uint16, for one)."""
    pid = op_tuple(op_str("storage"), op_global("torch.storage", "UntypedStorage"), op_str("0"), op_str("cpu"),
                   op_int(16))
    return (op_global("torch._utils", "_rebuild_tensor_v3")
            + op_tuple(pid + b"Q", op_int(0), op_tuple(op_int(4)), op_tuple(op_int(1)), b"\x89",
                       op_global("collections", "OrderedDict") + b")R", op_global("torch", dtype))
            + b"R")


ALLOW_LISTED = [("torch.storage", "UntypedStorage"), ("torch", "float32"), ("torch", "FloatStorage"),
                ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_tensor_v2"), ("builtins", "set"),
                ("torch", "Size"), ("_codecs", "encode"), ("collections", "OrderedDict"), ("builtins", "range")]


@pytest.mark.parametrize("state", ["dict state", "slot state"])
@pytest.mark.parametrize("module, name", ALLOW_LISTED, ids=[f"{m}.{n}" for m, n in ALLOW_LISTED])
def test_a_pickle_cannot_modify_an_allow_listed_name(tmp_path, module, name, state):
    """BUILD on a stand-in (e.g. UntypedStorage's dtype code set to 'U4') must not reach the next load."""
    changes = b"}(" + op_str("code") + op_str("U4") + op_str("__defaults__") + b")u"
    build = changes if state == "dict state" else b"N" + changes + b"\x86"
    evil = b"\x80\x02" + op_global(module, name) + build + b"b0}."
    is_type = name in ("OrderedDict", "range")
    with pytest.raises(FileFormatError if is_type else UnsafePickleError,
                       match=r"corrupt data\.pkl: \w+Error" if is_type else f"refusing to modify [\\w.]*{name} \\(a BUILD"):
        load_bytes(tmp_path, zip_checkpoint(evil))
    np.testing.assert_array_equal(load_bytes(tmp_path, zip_checkpoint(state_dict_pickle(w=untyped_record()),
                                                                        {"0": FLOATS}))["w"], np.arange(4.0))
    test_hand_made_checkpoints_load(tmp_path, VALID_ZIP)


# --------------------------------------------------------------------------- containers of unbounded size
def unbounded(kind):
    huge = op_global("builtins", "range") + op_tuple(op_long(10**10)) + b"R"
    if kind == "frozenset via NEWOBJ":
        return b"\x80\x02" + op_global("builtins", "frozenset") + op_tuple(huge) + b"\x81."
    module, name = ("torch", "Size") if kind == "torch.Size" else ("builtins", kind)
    return b"\x80\x02" + op_global(module, name) + op_tuple(huge) + b"R."


def test_sets_of_a_range_are_refused_in_bounded_memory(tmp_path):
    """A 186-byte .pt with set(range(10**10)) used to grow without bound: now refused at once."""
    kinds = ["set", "frozenset", "torch.Size", "frozenset via NEWOBJ"]
    paths = []
    for kind in kinds:
        paths.append(tmp_path / f"{kind.replace(' ', '_')}.pt")
        paths[-1].write_bytes(zip_checkpoint(unbounded(kind)))
    assert len(paths[0].read_bytes()) < 400
    lines, seconds = load_in_child(paths, "load_checkpoint", memory=1 << 30)
    for kind, line in zip(kinds[:3], lines):
        assert f"unsupported {kind}(range) in a pickle: only a list or tuple of items is allowed" in line, line
    assert "NEWOBJ class argument must be a type" in lines[3], lines[3]
    assert seconds < 30


def test_sets_and_sizes_of_lists_and_tuples_still_load(tmp_path):
    items = op_tuple(b"]" + b"(" + op_int(3) + op_int(1) + b"e")  # ([3, 1],)
    data = b"\x80\x02}(" + b"".join(op_str(k) + op_global(m, n) + items + b"R" for k, (m, n) in {
        "s": ("builtins", "set"), "f": ("builtins", "frozenset"), "z": ("torch", "Size")}.items()) + b"u."
    path = tmp_path / "ok.pt"
    path.write_bytes(zip_checkpoint(data))
    assert load_checkpoint(path) == {"s": {1, 3}, "f": frozenset({1, 3}), "z": (3, 1)}


# --------------------------------------------------------------------------- malformed tensor records
BAD_RECORDS = {
    "reads past the storage": (tensor_record((3,), (2,)), "reads element 4 of storage '0', which has 4"),
    "offset past the storage": (tensor_record((1,), (1,), offset=4), "reads element 4"),
    "negative stride": (tensor_record((2,), (-1,)), "invalid stride -1"),
    "negative size": (tensor_record((-2,), (1,)), "invalid size -2"),
    "size/stride rank mismatch": (tensor_record((2, 2), (1,)), "differ in length"),
    "storage size lies": (tensor_record((2,), (1,), numel=1000), "storage '0' has 16 bytes, its record says 4000"),
    "missing storage": (tensor_record((2,), (1,), key="7"), "archive/data/7 is missing"),
    "unknown storage type": (tensor_record((2,), (1,), storage="QInt8Storage"), "'torch.QInt8Storage'"),
    "bytearray(n) allocation": (op_global("__builtin__", "bytearray") + op_tuple(op_int(2**31 - 1)) + b"R",
                                "unsupported _codecs.encode\\(int"),
    "codecs other than latin1": (op_global("_codecs", "encode") + op_tuple(op_str("x"), op_str("rot13")) + b"R",
                                 "unsupported _codecs.encode\\(str, 'rot13'\\)"),
    "huge broadcast": (tensor_record((2**20, 2**20, 2**10), (0, 0, 0)),
                       r"tensor of size \(1048576, 1048576, 1024\) from storage '0' would take 4503599627370496 "
                       r"bytes, more than the \d+ bytes left of this load's budget"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_malformed_tensor_records_are_refused(tmp_path, case):
    record, message = BAD_RECORDS[case]
    with pytest.raises(FileFormatError, match=message):
        load_bytes(tmp_path, zip_checkpoint(state_dict_pickle(w=record), {"0": FLOATS}))


def test_a_pickle_of_64_mib_of_opcodes_is_refused_fast_in_bounded_memory(tmp_path):
    """A 65 KB file whose data.pkl inflates to 64 MiB of opcodes took 15 s and 640 MB to scan."""
    opcodes = b"\x80\x02" + b"N" * (64 << 20) + b"."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", opcodes)
    (tmp_path / "ops.pt").write_bytes(out.getvalue())
    (tmp_path / "ops_legacy.pt").write_bytes(legacy_checkpoint(b"\x80\x02" + b"N0" * (1 << 21) + b"N."))
    assert (tmp_path / "ops.pt").stat().st_size < 100_000
    (zip_line, legacy_line), seconds = load_in_child([tmp_path / "ops.pt", tmp_path / "ops_legacy.pt"],
                                                     "load_checkpoint", memory=1 << 30)
    assert zip_line.endswith("ops.pt: data.pkl has more than 4194304 opcodes; a checkpoint of tensors needs about "
                             "35 per tensor"), zip_line
    assert legacy_line.endswith("ops_legacy.pt: checkpoint pickle has more than 4194304 opcodes; a checkpoint of "
                                "tensors needs about 35 per tensor"), legacy_line
    assert seconds < 15


def test_memo_bomb_is_refused_before_allocating(tmp_path):
    # 12 bytes that make the C unpickler fill a 4 GB memo if run unchecked
    with pytest.raises(FileFormatError, match="memo index 268435455"):
        load_bytes(tmp_path, zip_checkpoint(b"\x80\x02Nr\xff\xff\xff\x0f."))


# --------------------------------------------------------------------------- wrong magic, truncation
def _zip_with(member, content):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(member, content)
    return out.getvalue()


NOT_NPZ = _zip_with("notes.txt", "hello")


@pytest.mark.parametrize("name, data, message", [
    ("model.pt", b"GIF89a" + bytes(20), r"not a PyTorch checkpoint \(zip or pickle\): unrecognised leading bytes"),
    ("model.pt", b"PK\x03\x04" + bytes(30), "corrupt zip archive"),
    ("model.pt", VALID_ZIP[:len(VALID_ZIP) // 2], "corrupt zip archive"),
    ("model.pt", VALID_LEGACY[:-5], "storage '0' truncated"),
    ("model.pt", VALID_LEGACY[:40], "corrupt"),
    ("model.pt", pickle.dumps(12345, protocol=2), "wrong magic number"),
    ("model.pt", zip_checkpoint(b"\x80\x02}."), ""),
    ("model.npz", b"\x93NUMPY" + bytes(20), r"not an \.npz archive"),
    ("weights.npz", NOT_NPZ,
     "unexpected member 'notes.txt'"),
    ("weights.pt", NOT_NPZ, "a zip archive without data.pkl"),
    ("model.bin", b"", "unrecognised leading bytes b''"),
])
def test_wrong_magic_and_truncated_files(tmp_path, name, data, message):
    if not message:  # an empty state dict is a valid (if useless) checkpoint
        assert load_bytes(tmp_path, data, name) == {}
        return
    with pytest.raises(FileFormatError, match=message) as info:
        load_bytes(tmp_path, data, name)
    assert name in str(info.value)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(FileFormatError, match=r"objects.npz: array 'a' has dtype object, Python objects \(a pickle\)"):
        load_state_dict_file(path)


# --------------------------------------------------------------------------- fuzzing
def mutate(data, mutations):
    data = bytearray(data)
    for position, value in mutations:
        data[position % len(data)] = value
    return bytes(data)


mutation_lists = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=6)


def must_refuse_or_load(tmp_path, data, name="f.pt"):
    try:
        sd = load_bytes(tmp_path, data, name)
    except FileFormatError:
        return
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in sd.items())


@given(st.binary(max_size=300), st.sampled_from(["f.pt", "f.pth", "f.npz", "f.safetensors", "f.bin"]))
def test_fuzz_random_bytes(tmp_path_factory, data, name):
    with pytest.raises(FileFormatError):
        load_bytes(tmp_path_factory.mktemp("fz"), data, name)


@given(mutation_lists)
def test_fuzz_mutated_pickle_inside_a_valid_zip(tmp_path_factory, mutations):
    must_refuse_or_load(tmp_path_factory.mktemp("fz"), zip_checkpoint(mutate(VALID_PKL, mutations), {"0": FLOATS}))


@given(mutation_lists, st.none() | st.integers(0, len(VALID_LEGACY)))
def test_fuzz_mutated_legacy_checkpoint(tmp_path_factory, mutations, cut):
    must_refuse_or_load(tmp_path_factory.mktemp("fz"), mutate(VALID_LEGACY, mutations)[:cut])


@given(mutation_lists, st.none() | st.integers(0, len(VALID_ZIP)))
def test_fuzz_mutated_zip(tmp_path_factory, mutations, cut):
    must_refuse_or_load(tmp_path_factory.mktemp("fz"), mutate(VALID_ZIP, mutations)[:cut])


def test_fuzz_torch_written_file(torch, tmp_path):
    """Mutations of a real torch.save file, its data.pkl rezipped with a valid CRC."""
    buffer = io.BytesIO()
    torch.save({"a": torch.randn(3, 4).t(), "b": torch.arange(5)[1:], "n": {"c": torch.ones(2, dtype=torch.half)}},
               buffer)
    data = buffer.getvalue()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pkl = archive.read("archive/data.pkl")
    rng = np.random.default_rng(0)
    for _ in range(150):
        mutations = zip(rng.integers(0, len(pkl), 3).tolist(), rng.integers(0, 256, 3).tolist())
        must_refuse_or_load(tmp_path, replace_member(data, "data.pkl", mutate(pkl, mutations)))
