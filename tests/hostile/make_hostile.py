"""Write the hostile-input corpus: small files that every ckptsurgeon reader must refuse cleanly.

Run ``python tests/hostile/make_hostile.py [DIR]`` (default: this script's folder). The output is
deterministic: the same numpy / h5py versions give byte-identical files, and ``EXPECTED.json``
records, for each file, the exit code ``ckpt`` must give and a fragment of its one-line message.
Nothing here needs torch: pickles are written with :func:`pickle.dumps` (never loaded) and the
torch-like zip is assembled by hand. Files that must be "big" to be hostile only declare their
size in a header (a shape, an extent, a zip size field); none is larger than a few tens of kB.

Layout of the corpus (paths relative to the folder):

- ``safetensors/``, ``npz/``, ``hdf5/``, ``keras/``, ``gguf/``, ``misc/``: one hostile file each, plus a
  directory per sharded case (its index is the hostile file; the shards beside it are support);
- ``sentinel/``: files that hostile HDF5 files point at (links, external storage, virtual
  datasets). Their content, :data:`SENTINEL`, must never appear in anything ``ckpt`` prints, and
  ``ckpt`` must never open them;
- ``partner/``: a small valid checkpoint to pair with a hostile file in ``ckpt transfer``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
SENTINEL = b"CKPTSURGEON-SENTINEL-3b9e1f-NEVER-READ-THIS!"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
EXIT_BAD_INPUT = 3

# name -> {"format", "exit", "message", "why"}; filled by @case
EXPECTED: dict[str, dict[str, object]] = {}
BUILDERS: list[tuple[str, Callable[[Path], None]]] = []


def case(name: str, fmt: str, message: str | list[str], why: str, exit: int = EXIT_BAD_INPUT) -> Callable:
    """Register a builder writing the file ``name`` (relative to the corpus folder)."""

    def register(build: Callable[[Path], None]) -> Callable[[Path], None]:
        assert name not in EXPECTED, name
        EXPECTED[name] = {"format": fmt, "exit": exit, "message": message, "why": why}
        BUILDERS.append((name, build))
        return build

    return register


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def st_bytes(header: bytes | dict, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def t(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


GOOD_HEADER = {"w": t("F32", [2], 0, 8)}
GOOD_DATA = struct.pack("<2f", 1.0, 2.0)


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)  # object arrays pickle here; nothing is loaded
    return buf.getvalue()


def raw_npy(descr: str, shape: tuple, data: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def good_npy(n: int = 4) -> bytes:
    return npy(np.arange(n, dtype=np.float32))


def zip_bytes(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buf, "w", compression=method) as zf:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
                info.create_system = 3
                info.external_attr = 0o644 << 16
                zf.writestr(info, data, compress_type=method)
    return buf.getvalue()


def central_entries(data: bytes) -> dict[str, int]:
    """Offsets of each central directory record by member name (no comment, no ZIP64)."""
    _, _, _, _, count, _, cd_offset, _ = struct.unpack("<4s4H2LH", data[-22:])
    out, pos = {}, cd_offset
    for _ in range(count):
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        out[data[pos + 46 : pos + 46 + n].decode("cp437")] = pos
        pos += 46 + n + m + k
    return out


def local_offset(data: bytes, name: str) -> int:
    return struct.unpack_from("<L", data, central_entries(data)[name] + 42)[0]


def h5file(path: Path, **kwargs: object) -> h5py.File:
    """A new HDF5 file written the same way every time (no timestamps, fixed format versions)."""
    return h5py.File(path, "w", libver=("earliest", "v110"), track_order=False, **kwargs)


def keras3_weights(path: Path) -> None:
    """A tiny valid Keras 3 ``.weights.h5``: one dense layer."""
    with h5file(path) as f:
        vars_ = f.create_group("layers/dense/vars")
        vars_.attrs["name"] = "dense"
        vars_.create_dataset("0", data=np.arange(6, dtype=np.float32).reshape(2, 3), track_times=False)
        vars_.create_dataset("1", data=np.zeros(3, np.float32), track_times=False)


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


# --------------------------------------------------------------------------------------------------
# support files: the sentinel and the partner
# --------------------------------------------------------------------------------------------------


def support(root: Path) -> None:
    (root / "sentinel").mkdir(parents=True, exist_ok=True)
    (root / "sentinel/secret.bin").write_bytes(SENTINEL * 4)
    with h5file(root / "sentinel/secret.h5") as f:
        f.create_dataset("secret", data=np.frombuffer(SENTINEL * 4, np.uint8), track_times=False)
    (root / "partner").mkdir(parents=True, exist_ok=True)
    header = {"__metadata__": {"format": "pt"}, "w": t("F32", [2], 0, 8), "b": t("F32", [1], 8, 12)}
    write(root / "partner/valid.safetensors", st_bytes(header, GOOD_DATA + struct.pack("<f", 3.0)))


# --------------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------------
S = "safetensors"


@case("safetensors/header_len_past_end.safetensors", S, "runs past the end", "header length larger than the file")
def _(p: Path) -> None:
    write(p, st_bytes(GOOD_HEADER, GOOD_DATA, length=10_000))


@case("safetensors/header_len_huge.safetensors", S, "100 MB", "header length 2**63: would allocate before validating")
def _(p: Path) -> None:
    write(p, st_bytes(GOOD_HEADER, GOOD_DATA, length=2**63))


@case("safetensors/header_len_short.safetensors", S, "not valid JSON", "header length cuts the JSON in half")
def _(p: Path) -> None:
    raw = json.dumps(GOOD_HEADER).encode()
    write(p, st_bytes(raw, GOOD_DATA, length=len(raw) // 2))


@case("safetensors/truncated_length_field.safetensors", S, "truncated", "5 bytes: not even the length field")
def _(p: Path) -> None:
    write(p, b"\x05\x00\x00\x00\x00")


@case("safetensors/huge_shape.safetensors", S, "offsets span", "shape whose product overflows 64 bits, 8 bytes of data")
def _(p: Path) -> None:
    write(p, st_bytes({"w": t("F32", [2**62, 2**62, 2**62], 0, 8)}, GOOD_DATA))


@case("safetensors/dim_beyond_u64.safetensors", S, "offsets span", "a dimension larger than any 64-bit integer")
def _(p: Path) -> None:
    write(p, st_bytes({"w": t("F32", [2**64 + 2], 0, 8)}, GOOD_DATA))


@case("safetensors/offset_overflow.safetensors", S, "truncated or corrupt", "data_offsets past 2**64")
def _(p: Path) -> None:
    write(p, st_bytes({"w": t("F32", [2], 2**64 - 4, 2**64 + 4)}, GOOD_DATA))


@case("safetensors/huge_int_literal.safetensors", S, "not valid JSON", "a 5000-digit integer (Python's int parsing limit)")
def _(p: Path) -> None:
    write(p, st_bytes(b'{"w":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,8]}}', GOOD_DATA))


@case("safetensors/nan_token.safetensors", S, "NaN", "NaN token (not JSON)")
def _(p: Path) -> None:
    write(p, st_bytes(b'{"__metadata__":{"x":NaN},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', GOOD_DATA))


@case("safetensors/infinity_dim.safetensors", S, "Infinity", "Infinity token as a dimension")
def _(p: Path) -> None:
    write(p, st_bytes(b'{"w":{"dtype":"F32","shape":[Infinity],"data_offsets":[0,8]}}', GOOD_DATA))


@case("safetensors/duplicate_key.safetensors", S, "duplicate key", "the same tensor twice: which one wins?")
def _(p: Path) -> None:
    entry = b'{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    write(p, st_bytes(b'{"w":' + entry + b',"w":' + entry + b"}", GOOD_DATA))


@case("safetensors/duplicate_metadata_key.safetensors", S, "duplicate key", "a metadata key twice")
def _(p: Path) -> None:
    write(p, st_bytes(b'{"__metadata__":{"a":"1","a":"2"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
                      GOOD_DATA))


@case("safetensors/deep_nesting.safetensors", S, "invalid safetensors header", "20000 nested arrays (stack exhaustion)")
def _(p: Path) -> None:
    write(p, st_bytes(b'{"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"))


@case("safetensors/bom.safetensors", S, "does not start with '{'", "a UTF-8 byte order mark before the JSON")
def _(p: Path) -> None:
    write(p, st_bytes("\ufeff".encode() + json.dumps(GOOD_HEADER).encode(), GOOD_DATA))


@case("safetensors/not_utf8.safetensors", S, "not valid JSON", "a tensor name that is not UTF-8")
def _(p: Path) -> None:
    write(p, st_bytes(b'{"w\xff":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', GOOD_DATA))


@case("safetensors/lone_surrogate.safetensors", S, ["not valid JSON", "unpaired surrogate"],
      "a \\ud800 escape: valid to Python's json, no UTF-8 string (the reference parser refuses it)")
def _(p: Path) -> None:
    write(p, st_bytes(b'{"w\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', GOOD_DATA))


@case("safetensors/bool_dim.safetensors", S, "non-negative integers", "true as a dimension")
def _(p: Path) -> None:
    write(p, st_bytes({"w": t("F32", [True, 2], 0, 8)}, GOOD_DATA))


@case("safetensors/float_dim.safetensors", S, "non-negative integers", "2.0 as a dimension")
def _(p: Path) -> None:
    write(p, st_bytes({"w": t("F32", [2.0], 0, 8)}, GOOD_DATA))


@case("safetensors/exponent_dim.safetensors", S, "non-negative integers", "2e0 as a dimension")
def _(p: Path) -> None:
    write(p, st_bytes(b'{"w":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]}}', GOOD_DATA))


@case("safetensors/negative_offset.safetensors", S, "two non-negative integers", "a negative data offset")
def _(p: Path) -> None:
    write(p, st_bytes({"w": t("F32", [2], -8, 0)}, GOOD_DATA))


@case("safetensors/trailing_bytes.safetensors", S, "data section holds", "bytes after the last tensor")
def _(p: Path) -> None:
    write(p, st_bytes(GOOD_HEADER, GOOD_DATA + b"TRAILING"))


@case("safetensors/overlap.safetensors", S, "overlaps", "two tensors sharing bytes")
def _(p: Path) -> None:
    write(p, st_bytes({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 4, 12)}, bytes(12)))


@case("safetensors/aliased.safetensors", S, "overlaps", "two tensors at the very same bytes")
def _(p: Path) -> None:
    write(p, st_bytes({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 0, 8)}, bytes(8)))


@case("safetensors/hole.safetensors", S, "hole", "unaccounted bytes between two tensors")
def _(p: Path) -> None:
    write(p, st_bytes({"a": t("F32", [1], 0, 4), "b": t("F32", [1], 8, 12)}, bytes(12)))


@case("safetensors/unknown_dtype.safetensors", S, "unknown dtype", "dtype Q4_K")
def _(p: Path) -> None:
    write(p, st_bytes({"w": t("Q4_K", [2], 0, 8)}, GOOD_DATA))


@case("safetensors/header_is_array.safetensors", S, "does not start with '{'", "a JSON array instead of an object")
def _(p: Path) -> None:
    write(p, st_bytes(b"[1, 2, 3]"))


@case("safetensors/header_is_string.safetensors", S, "does not start with '{'", "a JSON string instead of an object")
def _(p: Path) -> None:
    write(p, st_bytes(b'"{}"'))


@case("safetensors/metadata_not_strings.safetensors", S, "strings to strings", "metadata values that are numbers")
def _(p: Path) -> None:
    write(p, st_bytes({"__metadata__": {"epochs": 3}, **GOOD_HEADER}, GOOD_DATA))


@case("safetensors/metadata_nested.safetensors", S, "strings to strings", "metadata holding an object")
def _(p: Path) -> None:
    write(p, st_bytes({"__metadata__": {"cfg": {"a": "b"}}, **GOOD_HEADER}, GOOD_DATA))


@case("safetensors/extra_field.safetensors", S, "exactly dtype", "a tensor entry with an extra field")
def _(p: Path) -> None:
    write(p, st_bytes({"w": {**t("F32", [2], 0, 8), "offsets": [0, 8]}}, GOOD_DATA))


@case("safetensors/terminal_escape_name.safetensors", S, "U+001B",
      "a tensor name holding ESC sequences (set the terminal title, clear the screen)")
def _(p: Path) -> None:
    write(p, st_bytes({"\x1b]0;pwned\x07w\x1b[2J": t("F32", [2], 0, 8)}, GOOD_DATA))


@case("safetensors/bidi_name.safetensors", S, "U+202E", "a tensor name with a right-to-left override")
def _(p: Path) -> None:
    write(p, st_bytes({"head.w\u202etxt.exe": t("F32", [2], 0, 8)}, GOOD_DATA))


@case("safetensors/escape_metadata.safetensors", S, "U+001B", "a metadata value holding an OSC 8 hyperlink")
def _(p: Path) -> None:
    write(p, st_bytes({"__metadata__": {"license": "\x1b]8;;https://example.invalid\x07MIT\x1b]8;;\x07"},
                       **GOOD_HEADER}, GOOD_DATA))


@case("safetensors/polyglot_zip.safetensors", S, "data section holds",
      "a valid safetensors file with an npz archive appended (a zip reader sees other tensors)")
def _(p: Path) -> None:
    write(p, st_bytes(GOOD_HEADER, GOOD_DATA) + zip_bytes([("w.npy", good_npy())]))


def _shards(d: Path, index: dict, first: dict | None = None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    first = first or {"a": t("F32", [2], 0, 8)}
    write(d / "model-00001-of-00002.safetensors", st_bytes(first, bytes(first[max(first)]["data_offsets"][1])))
    write(d / "model-00002-of-00002.safetensors", st_bytes({"b": t("F32", [2], 0, 8)}, GOOD_DATA))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 16}, "weight_map": index}))


@case("safetensors/sharded_outside/model.safetensors.index.json", S, "points outside",
      "a shard named ../ (outside the index's directory)")
def _(p: Path) -> None:
    _shards(p.parent, {"a": "model-00001-of-00002.safetensors", "b": "../hole.safetensors"})


@case("safetensors/sharded_absolute/model.safetensors.index.json", S, "points outside", "a shard named by an absolute path")
def _(p: Path) -> None:
    _shards(p.parent, {"a": "model-00001-of-00002.safetensors", "b": "/etc/hostname"})


@case("safetensors/sharded_missing/model.safetensors.index.json", S, "does not exist", "a shard that is not there")
def _(p: Path) -> None:
    _shards(p.parent, {"a": "model-00001-of-00002.safetensors", "b": "model-00003-of-00002.safetensors"})


@case("safetensors/sharded_escape/model.safetensors.index.json", S, "does not exist",
      "a missing shard whose name holds ESC sequences (echoed in the message)")
def _(p: Path) -> None:
    _shards(p.parent, {"a": "model-00001-of-00002.safetensors", "b": "\x1b]0;pwned\x07\x1b[2J.safetensors"})


@case("safetensors/sharded_lacks_tensor/model.safetensors.index.json", S, "which does not hold it",
      "the index puts a tensor in a shard that lacks it")
def _(p: Path) -> None:
    _shards(p.parent, {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"})


@case("safetensors/sharded_unlisted/model.safetensors.index.json", S, "which the index does not list",
      "a shard holds a tensor the index does not name")
def _(p: Path) -> None:
    _shards(p.parent, {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
            first={"a": t("F32", [2], 0, 8), "c": t("F32", [2], 8, 16)})


# --------------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------------
N = "npz"


@case("npz/object_array.npz", N, "pickles are never loaded", "an object array (numpy pickles it)")
def _(p: Path) -> None:
    write(p, zip_bytes([("a.npy", npy(np.array([{"x": 1}, None], dtype=object)))]))


@case("npz/raw_pickle_member.npz", N, "pickle", "a member that is a bare pickle")
def _(p: Path) -> None:
    write(p, zip_bytes([("a.npy", good_npy()), ("b.npy", pickle.dumps({"w": [1.0, 2.0]}, protocol=2))]))


@case("npz/non_npy_member.npz", N, "neither an npz", "a member that is not .npy")
def _(p: Path) -> None:
    write(p, zip_bytes([("a.npy", good_npy()), ("notes.txt", b"hello")]))


@case("npz/duplicate_names.npz", N, "appears twice", "the same member name twice")
def _(p: Path) -> None:
    write(p, zip_bytes([("a.npy", good_npy()), ("a.npy", good_npy(8))]))


@case("npz/dotdot_name.npz", N, "'..' path component", "a member named ../evil.npy")
def _(p: Path) -> None:
    write(p, zip_bytes([("../evil.npy", good_npy())]))


@case("npz/absolute_name.npz", N, "absolute path", "a member named /tmp/evil.npy")
def _(p: Path) -> None:
    write(p, zip_bytes([("/tmp/evil.npy", good_npy())]))


@case("npz/zip_bomb.npz", N, "zip bomb", "a deflated member claiming 4 GiB from a few bytes")
def _(p: Path) -> None:
    data = bytearray(zip_bytes([("a.npy", npy(np.zeros(1000, np.float32)))], zipfile.ZIP_DEFLATED))
    cd = central_entries(bytes(data))["a.npy"]
    struct.pack_into("<L", data, cd + 24, 2**32 - 1)
    struct.pack_into("<L", data, local_offset(bytes(data), "a.npy") + 22, 2**32 - 1)
    write(p, bytes(data))


@case("npz/shape_larger_than_member.npz", N, "header declares", "a .npy header declaring 10**6 floats over 16 bytes")
def _(p: Path) -> None:
    write(p, zip_bytes([("a.npy", raw_npy("<f4", (10**6,), bytes(16)))]))


@case("npz/huge_shape.npz", N, "too large", "a .npy header declaring 2**40 x 2**40 floats")
def _(p: Path) -> None:
    write(p, zip_bytes([("a.npy", raw_npy("<f4", (2**40, 2**40), bytes(16)))]))


@case("npz/truncated.npz", N, "a damaged zip archive", "the archive cut at two thirds")
def _(p: Path) -> None:
    data = zip_bytes([("a.npy", good_npy(500)), ("b.npy", good_npy(500))])
    write(p, data[: len(data) * 2 // 3])


@case("npz/encrypted.npz", N, "encrypted", "the encryption flag set on a member")
def _(p: Path) -> None:
    data = bytearray(zip_bytes([("a.npy", good_npy())]))
    struct.pack_into("<H", data, central_entries(bytes(data))["a.npy"] + 8, 1)
    struct.pack_into("<H", data, local_offset(bytes(data), "a.npy") + 6, 1)
    write(p, bytes(data))


@case("npz/bad_local_header.npz", N, "bad local header signature", "the second member's local header signature broken")
def _(p: Path) -> None:
    data = bytearray(zip_bytes([("a.npy", good_npy()), ("b.npy", good_npy())]))
    data[local_offset(bytes(data), "b.npy") + 3] = 0x09
    write(p, bytes(data))


@case("npz/local_name_differs.npz", N, "its local header names", "local and central names disagree (smuggling)")
def _(p: Path) -> None:
    data = bytearray(zip_bytes([("a.npy", good_npy())]))
    data[30] = ord("z")
    write(p, bytes(data))


@case("npz/header_code.npz", N, "bad .npy header", "a .npy header that is Python code, not a dict literal")
def _(p: Path) -> None:
    text = b"__import__('os').system('echo pwned')"
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    write(p, zip_bytes([("a.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text)]))


@case("npz/torch_save_like.npz", N, "PyTorch pickle checkpoint",
      "a torch.save zip (archive/data.pkl) named .npz; the pickle is never loaded")
def _(p: Path) -> None:
    pkl = pickle.dumps({"w": "storage 0"}, protocol=2)
    write(p, zip_bytes([("archive/data.pkl", pkl), ("archive/byteorder", b"little"), ("archive/data/0", bytes(8)),
                        ("archive/version", b"3\n")]))


# --------------------------------------------------------------------------------------------------
# HDF5 (sentinel paths are relative to the hostile file: HDF5 resolves them from the file's folder)
# --------------------------------------------------------------------------------------------------
H = "hdf5"


@case("hdf5/external_link.h5", H, "external link", "a link to a dataset in ../sentinel/secret.h5")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("w", data=np.zeros(3, np.float32), track_times=False)
        f["g/leak"] = h5py.ExternalLink("../sentinel/secret.h5", "/secret")


@case("hdf5/escape_in_link.h5", H, "external link", "an external link whose target name holds ESC sequences")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("w", data=np.zeros(3, np.float32), track_times=False)
        f["leak"] = h5py.ExternalLink("\x1b]0;pwned\x07\x1b[2J.h5", "/\x1b[31mx")


@case("hdf5/soft_link.h5", H, "soft link", "a soft link (a path inside the file)")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("a/w", data=np.zeros(3, np.float32), track_times=False)
        f["alias"] = h5py.SoftLink("/a/w")


@case("hdf5/external_storage.h5", H, "external file", "a dataset whose bytes live in ../sentinel/secret.bin")
def _(p: Path) -> None:
    n = len(SENTINEL) * 4
    with h5file(p) as f:
        f.create_dataset("leak", shape=(n,), dtype="u1", external=[("../sentinel/secret.bin", 0, n)], track_times=False)


@case("hdf5/virtual_dataset.h5", H, "virtual dataset", "a virtual dataset mapping ../sentinel/secret.h5")
def _(p: Path) -> None:
    n = len(SENTINEL) * 4
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)  # what h5py's create_virtual_dataset cannot say: no timestamp
    space = h5py.h5s.create_simple((n,))
    dcpl.set_virtual(space, b"../sentinel/secret.h5", b"secret", h5py.h5s.create_simple((n,)))
    with h5file(p) as f:
        h5py.h5d.create(f.id, b"leak", h5py.h5t.NATIVE_UINT8, space, dcpl=dcpl)


@case("hdf5/string_dataset.h5", H, "strings", "a dataset of fixed-length strings")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("s", data=np.array([b"abc", b"de"]), track_times=False)


@case("hdf5/vlen_dataset.h5", H, "variable-length", "a dataset of variable-length int sequences")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("v", shape=(2,), dtype=h5py.vlen_dtype(np.int32), track_times=False)


@case("hdf5/compound_dataset.h5", H, "compound", "a dataset of compound records")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("c", data=np.zeros(2, dtype=[("a", "<i4"), ("b", "<f4")]), track_times=False)


@case("hdf5/reference_dataset.h5", H, "references", "a dataset of object references")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("w", data=np.zeros(2, np.float32), track_times=False)
        refs = f.create_dataset("r", shape=(1,), dtype=h5py.ref_dtype, track_times=False)
        refs[0] = f["w"].ref


@case("hdf5/huge_extent_unallocated.h5", H, "stores none", "a contiguous dataset of 10**12 doubles, never written")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("huge", shape=(10**12,), dtype="f8", track_times=False)


@case("hdf5/huge_extent_patched.h5", H, ["past the end", "likely file corruption"], "a written dataset whose dimensions were patched 1000x larger")
def _(p: Path) -> None:
    dims = 12_347
    with h5file(p) as f:
        f.create_dataset("w", data=np.zeros(dims, np.uint8), track_times=False)
    raw = p.read_bytes()
    old, new = dims.to_bytes(8, "little"), (dims * 1000).to_bytes(8, "little")
    assert raw.count(old) >= 1
    write(p, raw.replace(old, new))


@case("hdf5/chunked_bomb.h5", H, "decompression bomb", "a gzip dataset declaring 80 GB with one chunk stored")
def _(p: Path) -> None:
    with h5file(p) as f:
        d = f.create_dataset("bomb", shape=(10**9, 10), dtype="f8", chunks=(100, 10), compression="gzip",
                             track_times=False)
        d[:100] = 1.0


@case("hdf5/plugin_filter.h5", H, "plugin", "a dataset using filter 32001 (blosc): would load plugin code")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("z", shape=(10,), dtype="f4", chunks=(5,), compression=32001, allow_unknown_filter=True,
                         track_times=False)


@case("hdf5/truncated.h5", H, ["not a readable HDF5 file", "past the end"], "an HDF5 file cut in half")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("w", data=np.arange(2000, dtype=np.float64), track_times=False)
    raw = p.read_bytes()
    write(p, raw[: len(raw) // 2])


@case("hdf5/garbage_after_magic.h5", H, "not a readable HDF5 file", "the HDF5 signature followed by zeros")
def _(p: Path) -> None:
    write(p, b"\x89HDF\r\n\x1a\n" + bytes(200))


@case("hdf5/deep_groups.h5", H, "deeper than", "groups nested 300 deep")
def _(p: Path) -> None:
    with h5py.File(p, "w", libver="latest") as f:  # compact groups: a few hundred bytes each
        f.create_group("/".join(["g"] * 260))


@case("hdf5/hard_link_cycle.h5", H, "", "hard links back to the root and to a group itself: visited once, no loop",
      exit=0)
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("a/w", data=np.arange(3, dtype=np.float32), track_times=False)
        f["b"] = f["a/w"]
        f["a/loop"] = f["/"]
        f["a/self"] = f["a"]


@case("hdf5/polyglot_zip_tail.h5", H, "polyglot", "a valid HDF5 file with an npz archive appended")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("w", data=np.zeros(2, np.float32), track_times=False)
    write(p, p.read_bytes() + zip_bytes([("w.npy", good_npy())]))


# --------------------------------------------------------------------------------------------------
# Keras archives and sharded Keras weights
# --------------------------------------------------------------------------------------------------
K = "keras"


def _weights_bytes(tmp: Path) -> bytes:
    keras3_weights(tmp)
    data = tmp.read_bytes()
    tmp.unlink()
    return data


@case("keras/traversal_member.keras", K, "points outside the archive", "a member named ../../evil.txt")
def _(p: Path) -> None:
    weights = _weights_bytes(p.with_suffix(".tmp"))
    write(p, zip_bytes([("config.json", b"{}"), ("model.weights.h5", weights), ("../../evil.txt", b"x")]))


@case("keras/absolute_member.keras", K, "points outside the archive", "a member named /etc/cron.d/evil")
def _(p: Path) -> None:
    weights = _weights_bytes(p.with_suffix(".tmp"))
    write(p, zip_bytes([("model.weights.h5", weights), ("/etc/cron.d/evil", b"x")]))


@case("keras/weights_not_hdf5.keras", K, "not a readable HDF5 file", "model.weights.h5 is plain text")
def _(p: Path) -> None:
    write(p, zip_bytes([("config.json", b"{}"), ("model.weights.h5", b"hello, not HDF5\n" * 4)]))


@case("keras/weights_external_link.keras", K, "external link", "model.weights.h5 links to ../sentinel/secret.h5")
def _(p: Path) -> None:
    tmp = p.with_suffix(".tmp")
    with h5file(tmp) as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros(3, np.float32), track_times=False)
        f["layers/dense/vars/1"] = h5py.ExternalLink("../sentinel/secret.h5", "/secret")
    weights = tmp.read_bytes()
    tmp.unlink()
    write(p, zip_bytes([("model.weights.h5", weights)]))


@case("keras/zip_bomb_weights.keras", K, "zip bomb", "a deflated model.weights.h5 claiming 4 GiB")
def _(p: Path) -> None:
    data = bytearray(zip_bytes([("model.weights.h5", bytes(4096))], zipfile.ZIP_DEFLATED))
    struct.pack_into("<L", data, central_entries(bytes(data))["model.weights.h5"] + 24, 2**32 - 1)
    write(p, bytes(data))


@case("keras/corrupt_deflated_weights.keras", K, "not a readable zip archive",
      "a deflated model.weights.h5 whose compressed stream is damaged (zlib fails mid-way)")
def _(p: Path) -> None:
    weights = _weights_bytes(p.with_suffix(".tmp"))
    data = bytearray(zip_bytes([("model.weights.h5", weights)], zipfile.ZIP_DEFLATED))
    start = 30 + len("model.weights.h5")
    for k in range(200, 260):
        data[start + k] ^= 0x5A
    write(p, bytes(data))


def _keras_shards(d: Path, weight_map: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    keras3_weights(d / "model_00000.weights.h5")
    (d / "model.weights.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@case("keras/sharded_outside/model.weights.json", K, "not a plain file name",
      "a Keras sharded index naming ../sentinel/secret.h5")
def _(p: Path) -> None:
    _keras_shards(p.parent, {"/vars": ["model_00000.weights.h5"], "/layers/x/vars": ["../../sentinel/secret.h5"]})


@case("keras/sharded_missing/model.weights.json", K, "is missing", "a Keras sharded index naming a missing shard")
def _(p: Path) -> None:
    _keras_shards(p.parent, {"/vars": ["model_00000.weights.h5"], "/layers/x/vars": ["model_00001.weights.h5"]})


# --------------------------------------------------------------------------------------------------
# PyTorch: every pickle here is written opcode by opcode (class Pk); none is made by pickling live
# objects, and none is ever loaded. Payloads that would run (os.system, eval, subprocess) would
# create a file named PWNED-* in the working directory, which the tests watch.
# --------------------------------------------------------------------------------------------------
T = "torch"
TORCH_MAGIC = 0x1950A86A20F9469CFC6C


class Pk:
    """Pickle bytes built opcode by opcode for one protocol (0-5), the way CPython's pickler spells them."""

    def __init__(self, proto: int = 2) -> None:
        self.proto = proto
        self.out = bytearray()

    def raw(self, data: bytes) -> Pk:
        self.out += data
        return self

    def mark(self) -> Pk:
        return self.raw(b"(")

    def str(self, s: str) -> Pk:
        data = s.encode()
        if self.proto == 0:
            return self.raw(b"V" + s.encode("raw-unicode-escape") + b"\n")
        if self.proto >= 4 and len(data) < 256:
            return self.raw(b"\x8c" + bytes([len(data)]) + data + b"\x94")  # SHORT_BINUNICODE, MEMOIZE
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def int(self, n: int) -> Pk:
        if self.proto == 0:
            return self.raw(b"I%d\n" % n)
        if 0 <= n < 256:
            return self.raw(b"K" + bytes([n]))
        return self.raw(b"J" + struct.pack("<i", n))

    def false(self) -> Pk:
        return self.raw(b"\x89" if self.proto >= 2 else b"I00\n")

    def glob(self, module: str, name: str) -> Pk:
        if self.proto >= 4:
            return self.str(module).str(name).raw(b"\x93")  # STACK_GLOBAL
        return self.raw(b"c" + f"{module}\n{name}\n".encode())

    def tuple(self, items: list[Callable[[Pk], object]]) -> Pk:
        if self.proto >= 2 and 1 <= len(items) <= 3:
            for item in items:
                item(self)
            return self.raw(bytes([0x84 + len(items)]))  # TUPLE1/2/3
        if not items and self.proto >= 1:
            return self.raw(b")")
        self.mark()
        for item in items:
            item(self)
        return self.raw(b"t")

    def ints(self, values: tuple[int, ...]) -> Pk:
        return self.tuple([lambda p, v=v: p.int(v) for v in values])

    def call(self, module: str, name: str, args: list[Callable[[Pk], object]]) -> Pk:
        return self.glob(module, name).tuple(args).raw(b"R")

    def ordered_dict(self) -> Pk:
        return self.call("collections", "OrderedDict", [])

    def tensor(self, key: str, numel: int, offset: int, shape: tuple[int, ...], stride: tuple[int, ...],
               storage: str = "FloatStorage", legacy: bool = False) -> Pk:
        def pid(p: Pk) -> None:
            if p.proto == 0:  # protocol 0 has only a text persistent id: what CPython writes, str(pid)
                p.raw(b"P('storage', '%s', '%s', 'cpu', %d)\n" % (storage.encode(), key.encode(), numel))
                return
            fields: list[Callable[[Pk], object]] = [lambda q: q.str("storage"), lambda q: q.glob("torch", storage),
                                                    lambda q: q.str(key), lambda q: q.str("cpu"), lambda q: q.int(numel)]
            if legacy:
                fields.append(lambda q: q.raw(b"N"))
            p.tuple(fields).raw(b"Q")  # BINPERSID

        return self.call("torch._utils", "_rebuild_tensor_v2", [
            pid, lambda p: p.int(offset), lambda p: p.ints(shape), lambda p: p.ints(stride),
            lambda p: p.false(), lambda p: p.ordered_dict(),
        ])

    def state_dict(self, entries: list[tuple[str, Callable[[Pk], object]]]) -> Pk:
        self.ordered_dict()
        if self.proto == 0:  # SETITEM per entry
            for name, value in entries:
                self.str(name)
                value(self)
                self.raw(b"s")
            return self
        self.mark()
        for name, value in entries:
            self.str(name)
            value(self)
        return self.raw(b"u")  # SETITEMS

    def done(self) -> bytes:
        body = bytes(self.out) + b"."
        if self.proto < 2:
            return body
        head = b"\x80" + bytes([self.proto])
        if self.proto >= 4:  # one frame holding the rest, as CPython frames a small pickle
            return head + b"\x95" + struct.pack("<Q", len(body)) + body
        return head + body


def f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


#: The valid state dict of the protocol variants: w = arange(6) as 2x3; wt = w.t() (a strided view of
#: the same storage); row = w[1] (an offset view); b = 2 floats of a second storage.
TORCH_STORAGES = {"0": f32(*range(6)), "1": f32(0.5, -1.5)}


def torch_entries(legacy: bool = False) -> list[tuple[str, Callable[[Pk], object]]]:
    return [
        ("w", lambda p: p.tensor("0", 6, 0, (2, 3), (3, 1), legacy=legacy)),
        ("wt", lambda p: p.tensor("0", 6, 0, (3, 2), (1, 3), legacy=legacy)),
        ("row", lambda p: p.tensor("0", 6, 3, (3,), (1,), legacy=legacy)),
        ("b", lambda p: p.tensor("1", 2, 0, (2,), (1,), legacy=legacy)),
    ]


def torch_zip(pkl: bytes, storages: dict[str, bytes] | None = None, extra: list[tuple[str, bytes]] = ()) -> bytes:
    records = [(f"archive/data/{k}", v) for k, v in (TORCH_STORAGES if storages is None else storages).items()]
    return zip_bytes([("archive/data.pkl", pkl), ("archive/byteorder", b"little"), *records,
                      ("archive/version", b"3\n"), *extra])


def torch_legacy(obj: bytes, storages: dict[str, bytes] | None = None, *, cut: int = 0) -> bytes:
    """A legacy torch.save file: magic, protocol, system info, the object, the storage keys, the records."""
    storages = TORCH_STORAGES if storages is None else storages
    magic = b"\x80\x02\x8a\x0a" + TORCH_MAGIC.to_bytes(10, "little") + b"."
    protocol = Pk().int(1001).done()
    info = Pk().raw(b"}").mark().str("protocol_version").int(1001).str("little_endian").raw(b"\x88").raw(b"u").done()
    keys = Pk().raw(b"]").mark()
    for k in storages:
        keys.str(k)
    records = b"".join(struct.pack("<q", len(v) // 4) + v for v in storages.values())
    data = magic + protocol + info + obj + keys.raw(b"e").done() + records
    return data[: len(data) - cut] if cut else data


def payload(p: Pk, module: str, name: str, command: str) -> Pk:
    return p.call(module, name, [lambda q: q.str(command)])


@case("torch/rce_os_system.pt", T, "os.system", "a torch zip whose data.pkl calls os.system (pickle RCE)")
def _(p: Path) -> None:
    write(p, torch_zip(payload(Pk(), "os", "system", "touch PWNED-os-system").done()))


@case("torch/rce_posix_system.pt", T, "posix.system", "os.system as CPython pickles it (posix.system) in data.pkl")
def _(p: Path) -> None:
    write(p, torch_zip(payload(Pk(), "posix", "system", "touch PWNED-posix").done()))


@case("torch/rce_builtins_eval.pt", T, "__builtin__.eval",
      "__builtin__.eval, as a protocol 2 pickle spells builtins.eval (no name mapping may allow it)")
def _(p: Path) -> None:
    write(p, torch_zip(payload(Pk(), "__builtin__", "eval", "open('PWNED-eval', 'w')").done()))


@case("torch/rce_subprocess.pt", T, "subprocess.Popen", "subprocess.Popen nested inside a state dict's entry")
def _(p: Path) -> None:
    entries = [*torch_entries(), ("evil", lambda q: payload(q, "subprocess", "Popen", "touch PWNED-popen"))]
    write(p, torch_zip(Pk().state_dict(entries).done()))


@case("torch/rce_stack_global_proto4.pt", T, "os.system", "os.system by STACK_GLOBAL in a protocol 4 frame")
def _(p: Path) -> None:
    write(p, torch_zip(payload(Pk(4), "os", "system", "touch PWNED-proto4").done()))


@case("torch/global_getattr.pt", T, "builtins.getattr", "GLOBAL builtins.getattr (a step to any attribute)")
def _(p: Path) -> None:
    pk = Pk().call("builtins", "getattr", [lambda q: q.ordered_dict(), lambda q: q.str("__class__")])
    write(p, torch_zip(pk.done()))


@case("torch/inst_opcode.pt", T, "opcode INST", "the INST opcode (imports and instantiates a class)")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().mark().str("touch PWNED-inst").raw(b"ios\nsystem\n").done()))


@case("torch/build_on_global.pt", T, "BUILD on", "BUILD setting state on a storage class (not a dict or tensor)")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().glob("torch", "FloatStorage").raw(b"}").raw(b"b").done()))


@case("torch/legacy_rce.pt", T, "os.system", "a legacy torch.save file whose object pickle calls os.system")
def _(p: Path) -> None:
    write(p, torch_legacy(payload(Pk(), "os", "system", "touch PWNED-legacy").done()))


@case("torch/view_exceeds_storage.pt", T, "reaches",
      "_rebuild_tensor_v2 whose view (4x4 floats) is larger than its storage (6 floats)")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().state_dict([("w", lambda q: q.tensor("0", 6, 0, (4, 4), (4, 1)))]).done(), {"0": f32(*range(6))}))


@case("torch/offset_past_storage.pt", T, "reaches", "a view whose storage offset lies past its storage's end")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().state_dict([("w", lambda q: q.tensor("0", 6, 6, (1,), (1,)))]).done(), {"0": f32(*range(6))}))


@case("torch/record_shorter_than_declared.pt", T, "declares",
      "a storage record (data/0) shorter than its persistent id's element count says")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().state_dict([("w", lambda q: q.tensor("0", 16, 0, (2,), (1,)))]).done(), {"0": f32(1, 2)}))


@case("torch/missing_record.pt", T, "no record", "a storage key with no data/<key> record in the archive")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().state_dict([("w", lambda q: q.tensor("7", 2, 0, (2,), (1,)))]).done(), {"0": f32(1, 2)}))


@case("torch/storage_key_traversal.pt", T, "not a plain name", "a storage key '../../x' (a path out of the archive)")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().state_dict([("w", lambda q: q.tensor("../../x", 2, 0, (2,), (1,)))]).done()))


@case("torch/zip_slip.pt", T, "'..' path component", "a member named ../../x beside archive/data.pkl")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().state_dict(torch_entries()).done(), extra=[("../../x", b"PWNED")]))


@case("torch/legacy_truncated_record.pt", T, "truncated", "a legacy file whose last storage record is cut short")
def _(p: Path) -> None:
    write(p, torch_legacy(Pk().state_dict(torch_entries(legacy=True)).done(), cut=4))


@case("torch/deep_nesting.pt", T, "deeper than", "a tensor nested 5000 lists deep (deeper than Python recursion goes)")
def _(p: Path) -> None:
    pk = Pk().raw(b"]" * 5000)
    pk.tensor("1", 2, 0, (2,), (1,))
    write(p, torch_zip(pk.raw(b"a" * 5000).done()))


@case("torch/mark_bomb.pt", T, "MARK", "a pickle pushing 20,000 MARKs")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().raw(b"(" * 20_000).raw(b")").done()))


@case("torch/huge_string_length.pt", T, "truncated", "a BINUNICODE8 declaring 2**60 bytes (an allocation bomb)")
def _(p: Path) -> None:
    write(p, torch_zip(Pk(4).raw(b"\x8d" + struct.pack("<Q", 1 << 60) + b"xx").done()))


@case("torch/huge_long_length.pt", T, "truncated", "a LONG4 declaring 2**31-1 bytes of integer")
def _(p: Path) -> None:
    write(p, torch_zip(Pk().raw(b"\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01").done()))


@case("torch/shared_reference_bomb.pt", T, "shared reference", "60 levels of lists holding the level below twice (2**60 paths)")
def _(p: Path) -> None:
    pk = Pk().raw(b"}").str("w")
    pk.tensor("1", 2, 0, (2,), (1,))
    pk.raw(b"s").raw(b"q\x000")  # SETITEM, BINPUT 0, POP
    for level in range(60):  # x[n+1] = (x[n], x[n]): TUPLE2 of two BINGETs, BINPUT, POP
        pk.raw(b"h" + bytes([level]) + b"h" + bytes([level]) + b"\x86" + b"q" + bytes([level + 1]) + b"0")
    write(p, torch_zip(pk.raw(b"h\x3c").done()))


@case("torch/cyclic.pt", T, "refers to itself", "a list that holds itself and a tensor")
def _(p: Path) -> None:
    pk = Pk().raw(b"]q\x00").raw(b"h\x00a")  # L = []; L.append(L)
    pk.tensor("1", 2, 0, (2,), (1,))
    write(p, torch_zip(pk.raw(b"a").done()))


@case("torch/proto0_state_dict.pt", T, "persistent id",
      "a protocol 0 state dict: its persistent ids are text (torch.load cannot read it either)")
def _(p: Path) -> None:
    write(p, torch_zip(Pk(0).state_dict(torch_entries()).done()))


for _proto in (1, 2, 3, 4, 5):
    @case(f"torch/proto{_proto}_state_dict.pt", T, "", f"a valid state dict in protocol {_proto}: read exactly", exit=0)
    def _(p: Path, proto: int = _proto) -> None:
        write(p, torch_zip(Pk(proto).state_dict(torch_entries()).done()))


@case("torch/legacy_state_dict.pt", T, "", "a valid legacy torch.save file of the same state dict: read exactly", exit=0)
def _(p: Path) -> None:
    write(p, torch_legacy(Pk().state_dict(torch_entries(legacy=True)).done()))


# --------------------------------------------------------------------------------------------------
# not checkpoints at all, and extensions that lie
# --------------------------------------------------------------------------------------------------
M = "misc"


def _legacy_torch_pickle() -> bytes:
    """What a legacy (protocol 2) torch.save file starts with: magic number, protocol, sys info, then the data."""
    parts = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}, {"w": "storage 0"}]
    return b"".join(pickle.dumps(x, protocol=2) for x in parts)


@case("misc/legacy_torch.pt", M, "storage list pickle is malformed or truncated",
      "a legacy torch.save file (protocol 2 pickles) that ends after its object pickle")
def _(p: Path) -> None:
    write(p, _legacy_torch_pickle())


@case("misc/pickle_named.h5", M, "pickles are never loaded", "a pickle with an .h5 extension")
def _(p: Path) -> None:
    write(p, pickle.dumps({"w": [1.0, 2.0]}, protocol=4))


@case("misc/pickle_protocol0.bin", M, "pickle", "a protocol 0 pickle (text opcodes, no magic byte)")
def _(p: Path) -> None:
    write(p, pickle.dumps({"w": [1.0, 2.0]}, protocol=0))


@case("misc/pickle_protocol1.safetensors", M, "pickle", "a protocol 1 pickle named .safetensors")
def _(p: Path) -> None:
    write(p, pickle.dumps({"w": [1.0, 2.0]}, protocol=1))


@case("misc/lfs_pointer.safetensors", M, "Git LFS pointer", "a Git LFS pointer instead of the weights")
def _(p: Path) -> None:
    oid = hashlib.sha256(b"weights").hexdigest()
    write(p, f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 548105171\n".encode())


@case("misc/html_page.safetensors", M, "HTML page", "an HTML error page saved as the checkpoint")
def _(p: Path) -> None:
    write(p, b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n")


@case("misc/empty.safetensors", M, "empty", "an empty file")
def _(p: Path) -> None:
    write(p, b"")


@case("misc/npy_named.npz", M, "single .npy array", "a bare .npy file named .npz")
def _(p: Path) -> None:
    write(p, good_npy())


@case("misc/npz_named.safetensors", M, "pickles are never loaded",
      "an npz (with an object array) named .safetensors: read by content, refused for the pickle")
def _(p: Path) -> None:
    write(p, zip_bytes([("a.npy", npy(np.array([{"x": 1}], dtype=object)))]))


@case("misc/hdf5_named.npz", M, "soft link", "an HDF5 file (with a soft link) named .npz: read by content")
def _(p: Path) -> None:
    with h5file(p) as f:
        f.create_dataset("a/w", data=np.zeros(3, np.float32), track_times=False)
        f["alias"] = h5py.SoftLink("/a/w")


@case("misc/json_not_index.safetensors.index.json", M, "not a sharded checkpoint index", "JSON without a weight_map")
def _(p: Path) -> None:
    p.write_text(json.dumps({"metadata": {"total_size": 0}, "weights": {}}))


@case("misc/polyglot_zip_hdf5.npz", M, "polyglot",
      "an npz archive whose bytes also hold an HDF5 file after a 1024-byte user block")
def _(p: Path) -> None:
    tmp = p.with_suffix(".tmp")
    with h5file(tmp, userblock_size=1024) as f:
        f.create_dataset("other", data=np.ones(2, np.float32), track_times=False)
    hdf5 = bytearray(tmp.read_bytes())
    tmp.unlink()
    archive = zip_bytes([("w.npy", good_npy())])
    cd_offset = struct.unpack_from("<L", archive, len(archive) - 6)[0]
    members, directory, eocd = archive[:cd_offset], archive[cd_offset:-22], bytearray(archive[-22:])
    assert len(members) <= 1024
    hdf5[: len(members)] = members  # the members (local headers and data) fill the user block
    struct.pack_into("<L", eocd, 16, len(hdf5))  # the central directory and end record follow the HDF5 file
    write(p, bytes(hdf5) + directory + bytes(eocd))


@case("misc/gzip.safetensors", M, "gzip", "a gzip-compressed checkpoint")
def _(p: Path) -> None:
    import gzip

    write(p, gzip.compress(st_bytes(GOOD_HEADER, GOOD_DATA), mtime=0))


# --------------------------------------------------------------------------------------------------
# GGUF: header, metadata and tensor infos assembled by hand (little-endian, version 3)
# --------------------------------------------------------------------------------------------------
G = "gguf"
GG_F32, GG_Q8_0 = 0, 8  # ggml type numbers
GG_U32, GG_STRING, GG_ARRAY = 4, 8, 9  # metadata value types


def gg_str(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def gg_kv(key: bytes, vtype: int, value: bytes) -> bytes:
    return gg_str(key) + struct.pack("<I", vtype) + value


def gg_info(name: bytes, ne: list[int], ggml_type: int = GG_F32, offset: int = 0) -> bytes:
    return gg_str(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, ggml_type, offset)


GG_ARCH = gg_kv(b"general.architecture", GG_STRING, gg_str(b"llama"))


def gguf_bytes(kvs: list[bytes], infos: list[bytes], data: bytes, *, n_kv: int | None = None,
               n_tensors: int | None = None, version: int = 3, alignment: int = 32) -> bytes:
    """A GGUF file: header, metadata, tensor infos, padding to ``alignment``, then ``data``."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    return head + bytes(-len(head) % alignment) + data


GG_W = np.arange(8, dtype="<f4").tobytes()  # a [2, 4] float32 tensor's 32 bytes


@case("gguf/truncated_header.gguf", G, "truncated", "6 bytes: the magic and half the version")
def _(p: Path) -> None:
    write(p, b"GGUF\x03\x00")


@case("gguf/version_1.gguf", G, "version", "GGUF version 1 (32-bit counts)")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [4, 2])], GG_W, version=1))


@case("gguf/tensor_count_huge.gguf", G, "more than the", "2**40 tensors declared in a small file")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [4, 2])], GG_W, n_tensors=2**40))


@case("gguf/kv_count_huge.gguf", G, "more than the", "2**40 metadata entries declared in a small file")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [4, 2])], GG_W, n_kv=2**40))


@case("gguf/string_past_end.gguf", G, "runs past the end", "a metadata string of 2**62 bytes")
def _(p: Path) -> None:
    kv = gg_str(b"general.name") + struct.pack("<IQ", GG_STRING, 2**62) + b"x" * 8
    write(p, gguf_bytes([GG_ARCH, kv], [], b""))


@case("gguf/array_count_huge.gguf", G, "does not fit", "a UINT32 array of 2**40 values in a small file")
def _(p: Path) -> None:
    kv = gg_kv(b"tokenizer.ggml.token_type", GG_ARRAY, struct.pack("<IQ", GG_U32, 2**40) + bytes(16))
    write(p, gguf_bytes([GG_ARCH, kv], [gg_info(b"w", [4, 2])], GG_W))


@case("gguf/arrays_nested_deep.gguf", G, "nested more than", "arrays of arrays 100 deep")
def _(p: Path) -> None:
    value = struct.pack("<IQ", GG_U32, 0)
    for _ in range(100):
        value = struct.pack("<IQ", GG_ARRAY, 1) + value
    write(p, gguf_bytes([GG_ARCH, gg_kv(b"deep", GG_ARRAY, value)], [], b""))


@case("gguf/token_not_utf8.gguf", G, "tokenizer.ggml.tokens'[1] is not valid UTF-8",
      "a string array whose second element is not UTF-8")
def _(p: Path) -> None:
    tokens = struct.pack("<IQ", GG_STRING, 3) + gg_str(b"a") + gg_str(b"\xc3\x28") + gg_str(b"c")
    write(p, gguf_bytes([GG_ARCH, gg_kv(b"tokenizer.ggml.tokens", GG_ARRAY, tokens)], [gg_info(b"w", [4, 2])], GG_W))


@case("gguf/token_past_end.gguf", G, "runs past the end", "a string array whose second element is 2**40 bytes long")
def _(p: Path) -> None:
    tokens = struct.pack("<IQ", GG_STRING, 3) + gg_str(b"a") + struct.pack("<Q", 2**40) + gg_str(b"c")
    write(p, gguf_bytes([GG_ARCH, gg_kv(b"tokenizer.ggml.tokens", GG_ARRAY, tokens)], [gg_info(b"w", [4, 2])], GG_W))


@case("gguf/unknown_value_type.gguf", G, "unknown value type", "a metadata value of type 13")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH, gg_kv(b"odd", 13, bytes(8))], [gg_info(b"w", [4, 2])], GG_W))


@case("gguf/bad_utf8_key.gguf", G, "not valid UTF-8", "a metadata key that is not UTF-8")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH, gg_kv(b"general.\xff\xfe", GG_U32, struct.pack("<I", 1))], [], b""))


@case("gguf/alignment_not_power_of_two.gguf", G, "power of two", "general.alignment 24")
def _(p: Path) -> None:
    kv = gg_kv(b"general.alignment", GG_U32, struct.pack("<I", 24))
    write(p, gguf_bytes([GG_ARCH, kv], [gg_info(b"w", [4, 2])], GG_W, alignment=24))


@case("gguf/offset_past_end.gguf", G, "runs past the end", "a tensor at data offset 2**20 of a 32-byte data section")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [4, 2], offset=2**20)], GG_W))


@case("gguf/offset_misaligned.gguf", G, "not a multiple of the alignment", "a tensor at data offset 4 (alignment 32)")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [4, 2], offset=4)], GG_W + bytes(32)))


@case("gguf/data_truncated.gguf", G, "runs past the end", "a [2, 4] float32 tensor with 10 bytes of data")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [4, 2])], GG_W[:10]))


@case("gguf/dims_huge.gguf", G, "runs past the end", "dimensions [2**40, 2**40]: 2**82 bytes declared")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [2**40, 2**40])], GG_W))


@case("gguf/dim_beyond_int64.gguf", G, "beyond ggml's int64", "a dimension of 2**64 - 1")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [2**64 - 1, 1])], GG_W))


@case("gguf/five_dims.gguf", G, "at most 4", "a tensor of five dimensions")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [1, 1, 1, 1, 1])], GG_W))


@case("gguf/unknown_ggml_type.gguf", G, "unknown ggml type", "a tensor of ggml type 99")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [4, 2], ggml_type=99)], GG_W))


@case("gguf/not_whole_blocks.gguf", G, "not a multiple of 32", "a Q8_0 tensor whose rows hold 33 elements")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"q", [33, 2], ggml_type=GG_Q8_0)], bytes(96)))


@case("gguf/duplicate_names.gguf", G, "appears twice", "two tensors named w")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w", [4, 2]), gg_info(b"w", [4, 2], offset=32)], GG_W * 2))


@case("gguf/duplicate_keys.gguf", G, "appears twice", "general.architecture twice")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH, GG_ARCH], [gg_info(b"w", [4, 2])], GG_W))


@case("gguf/overlapping_tensors.gguf", G, "overlap", "a [4, 4] tensor whose second half is another tensor")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"a", [4, 4]), gg_info(b"b", [4, 2], offset=32)], GG_W * 2))


@case("gguf/escape_in_name.gguf", G, "holds the character", "a tensor name holding an ESC sequence")
def _(p: Path) -> None:
    write(p, gguf_bytes([GG_ARCH], [gg_info(b"w\x1b[2J", [4, 2])], GG_W))


# --------------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """The libraries whose output the files depend on: HDF5 files are byte-identical only for the same ones."""
    import zlib

    return {"numpy": np.__version__, "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
            "zlib": zlib.ZLIB_RUNTIME_VERSION}


def build(root: Path) -> dict[str, dict[str, object]]:
    """Write every file under ``root`` and its EXPECTED.json; return the expectations."""
    os.environ["HDF5_PLUGIN_PRELOAD"] = "::"
    support(root)
    for name, builder in BUILDERS:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        builder(path)
    doc = {
        "about": "ckptsurgeon hostile-input corpus, written by make_hostile.py. For each file: the exit code "
                 "`ckpt inspect/transfer/convert` must give and a fragment of its one-line message "
                 "(`ckpt: error: <file>: <problem>`); exit 0 marks files that are legal but built to trap a "
                 "naive reader (they must read in bounded time and memory).",
        "sentinel": SENTINEL.decode(),
        "generated_with": versions(),
        "files": EXPECTED,
    }
    (root / "EXPECTED.json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return EXPECTED


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    expected = build(out)
    print(f"wrote {len(expected)} hostile files to {out}")
