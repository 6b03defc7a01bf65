"""npz reader and writer: the real corpus, round trips, numpy interop and hostile archives."""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import pickle
import shutil
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptsurgeon.atomic import TEMP_MARK, atomic_path
from ckptsurgeon.errors import InputError, OutputError, UnsafeInputError
from ckptsurgeon.formats import detect, open_checkpoint
from ckptsurgeon.formats.npz import reader as npz_reader
from ckptsurgeon.formats.npz import writer as npz_writer
from ckptsurgeon.tensors import DTYPES, TensorSpec

from ...support.fixtures import CliRunner

MANIFEST_DTYPES = {
    "float32": "F32", "float16": "F16", "float64": "F64", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "uint8": "U8", "bool": "BOOL",
}
NPZ_FILES = ["npz/weights.npz", "npz/weights_compressed.npz", "npz/flax_cnn_variables.npz"]


# --- helpers ----------------------------------------------------------------------------------------
def sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def sample(code: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random raw bytes of a dtype (NaNs and all); BOOL gets 0/1."""
    d = DTYPES[code]
    n = int(np.prod(shape, dtype=np.int64))
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 2 if code == "BOOL" else 256, size=n * d.itemsize, dtype=np.uint8)
    return raw.view(d.numpy).reshape(shape)


def write_npz(path: Path, arrays: dict[str, np.ndarray], **kwargs: object) -> Path:
    codes = {d.numpy: c for c, d in reversed(DTYPES.items())}
    writer = npz_writer.Writer(path, **kwargs)  # type: ignore[arg-type]
    writer.begin([TensorSpec(name, a.shape, codes[a.dtype]) for name, a in arrays.items()])
    for name, a in arrays.items():
        writer.write(name, a)
    writer.finish()
    return path


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def raw_npy(descr: str, shape: tuple[int, ...], data: bytes, fortran: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue() + data


def make_zip(path: Path, members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression=method) as zf:
            for name, data in members:
                zf.writestr(zipfile.ZipInfo(name, date_time=npz_writer.ZIP_EPOCH), data, compress_type=method)
    return path


def savez(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def good_member(name: str = "a.npy", n: int = 4) -> tuple[str, bytes]:
    return name, npy_bytes(np.arange(n, dtype=np.float32))


def central_entries(data: bytes) -> dict[str, int]:
    """Offsets of each central directory record, by member name (archives without comment/ZIP64)."""
    _, _, _, _, count, _, cd_offset, _ = struct.unpack("<4s4H2LH", data[-22:])
    out, pos = {}, cd_offset
    for _ in range(count):
        assert data[pos : pos + 4] == b"PK\x01\x02"
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        out[data[pos + 46 : pos + 46 + n].decode("cp437")] = pos
        pos += 46 + n + m + k
    return out


def local_offset(data: bytes, name: str) -> int:
    return struct.unpack_from("<L", data, central_entries(data)[name] + 42)[0]


def patch(path: Path, edit: Callable[[bytearray], None]) -> Path:
    data = bytearray(path.read_bytes())
    edit(data)
    path.write_bytes(bytes(data))
    return path


def read_everything(path: Path, **kwargs: object) -> dict[str, np.ndarray]:
    with npz_reader.Reader(path, **kwargs) as r:  # type: ignore[arg-type]
        out = {}
        for t in r.tensors:
            out[t.name] = np.array(r.read(t.name))
            assert r.sha256(t.name) == sha(out[t.name])
            r.byte_range(t.name)
        return out


# --- the real corpus --------------------------------------------------------------------------------
@pytest.mark.parametrize("rel", NPZ_FILES)
def test_corpus_matches_manifest(corpus: Path, manifest: dict, rel: str) -> None:
    entry = next(f for f in manifest["files"] if f["path"] == rel)
    with open_checkpoint(corpus / rel) as r:
        assert r.format == "npz"
        assert r.metadata == {}
        assert [t.name for t in r.tensors] == [t["name"] for t in entry["tensors"]]
        for t in entry["tensors"]:
            info = r[t["name"]]
            assert list(info.shape) == t["shape"]
            assert info.dtype == MANIFEST_DTYPES[t["dtype"]]
            assert r.sha256(t["name"]) == t["sha256"]
            assert sha(r.read(t["name"])) == t["sha256"]


def test_corpus_byte_ranges(corpus: Path, manifest: dict) -> None:
    entry = next(f for f in manifest["files"] if f["path"] == "npz/weights.npz")
    data = (corpus / entry["path"]).read_bytes()
    with npz_reader.Reader(corpus / entry["path"]) as r:
        for t in entry["tensors"]:
            path, offset, length = r.byte_range(t["name"])  # type: ignore[misc]
            assert path == corpus / entry["path"]
            assert hashlib.sha256(data[offset : offset + length]).hexdigest() == t["sha256"]
            assert not r.read(t["name"]).flags.writeable  # a view of the memory map
    with npz_reader.Reader(corpus / "npz/weights_compressed.npz") as r:
        assert all(r.byte_range(t.name) is None for t in r.tensors)


def test_detected_by_content_not_name(corpus: Path, tmp_path: Path) -> None:
    for rel in NPZ_FILES:
        copy = tmp_path / (Path(rel).stem + ".bin")
        shutil.copyfile(corpus / rel, copy)
        assert detect(copy) == "npz"
        with open_checkpoint(copy) as r:
            assert isinstance(r, npz_reader.Reader) and len(r) > 0
    zipped = tmp_path / "other.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a.npy", b"x")
        z.writestr("notes.txt", b"y")
    with pytest.raises(InputError, match="neither an npz"):
        detect(zipped)


def test_np_savez_of_nothing_is_an_npz_with_no_tensors(tmp_path: Path, cli: CliRunner) -> None:
    path = tmp_path / "empty.npz"
    np.savez(path)  # an empty zip archive: nothing inside says npz but the name
    with open_checkpoint(path) as r:
        assert isinstance(r, npz_reader.Reader) and len(r) == 0
    assert cli("inspect", path).code == 0
    result = cli("convert", path, "-o", tmp_path / "out.safetensors")
    assert result.code == 3 and "holds no tensors" in result.line
    other = tmp_path / "empty.zip"
    shutil.copyfile(path, other)
    with pytest.raises(InputError, match="an empty zip archive"):
        detect(other)


# --- round trips ------------------------------------------------------------------------------------
SHAPES = [(), (0,), (0, 3), (5,), (3, 4), (2, 3, 5)]


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "deflated"])
def test_round_trip_every_dtype_and_shape(tmp_path: Path, compress: bool) -> None:
    arrays = {f"{code}/{'x'.join(map(str, shape)) or 'scalar'}": sample(code, shape, i)
              for i, (code, shape) in enumerate(itertools.product([c for c, d in DTYPES.items() if not d.is_block], SHAPES))}
    path = write_npz(tmp_path / "out.npz", arrays, compress=compress)
    with npz_reader.Reader(path) as r:
        assert [t.name for t in r.tensors] == list(arrays)
        for name, a in arrays.items():
            info = r[name]
            assert info.dtype == name.split("/")[0] and info.shape == a.shape
            got = r.read(name)
            assert got.dtype == a.dtype and got.flags.c_contiguous
            assert got.tobytes() == a.tobytes()
            assert r.sha256(name) == sha(a)
            assert (r.byte_range(name) is None) == compress
    with np.load(path, allow_pickle=False) as loaded:
        assert list(loaded.files) == list(arrays)
        for name, a in arrays.items():
            value = loaded[name]
            assert value.shape == a.shape
            if value.dtype.kind == "V":  # BF16 and float8 come back as raw void bytes
                assert value.dtype.itemsize == a.dtype.itemsize
                value = value.view(a.dtype)
            assert value.dtype == a.dtype and value.tobytes() == a.tobytes()


def test_large_tensor_streams_in_chunks(tmp_path: Path) -> None:
    a = sample("F32", (257, 1031), 7)
    b = sample("F64", (3, 1001), 8).astype(">f8")  # big-endian: chunks must stay item-aligned
    for compress in (False, True):
        path = write_npz(tmp_path / f"big{compress}.npz", {"a": a}, compress=compress)
        with npz_reader.Reader(path) as r:
            assert b"".join(bytes(c) for c in r.iter_bytes("a", chunk_bytes=999)) == a.tobytes()
            assert sha(r.read("a")) == sha(a)
    path = tmp_path / "be.npz"
    np.savez(path, b=b)
    with npz_reader.Reader(path) as r:
        assert b"".join(bytes(c) for c in r.iter_bytes("b", chunk_bytes=1001)) == b.astype("<f8").tobytes()


def test_stored_data_is_aligned(tmp_path: Path) -> None:
    arrays = {f"t{i}" * (i + 1): sample("F32", (i + 1,), i) for i in range(20)}
    path = write_npz(tmp_path / "a.npz", arrays)
    with npz_reader.Reader(path) as r:
        for name in arrays:
            _, offset, _ = r.byte_range(name)  # type: ignore[misc]
            assert offset % npz_writer.ALIGNMENT == 0
            assert r.read(name).flags.aligned


def test_metadata_round_trip_and_comment_only_when_needed(tmp_path: Path) -> None:
    meta = {"format": "pt", "note": "naïve – ünïcode", "empty": ""}
    path = write_npz(tmp_path / "m.npz", {"w": sample("F32", (2, 2))}, metadata=meta)
    with npz_reader.Reader(path) as r:
        assert r.metadata == meta
    plain = write_npz(tmp_path / "plain.npz", {"w": sample("F32", (2, 2)), "b": sample("BF16", (3,))})
    with zipfile.ZipFile(plain) as zf:
        assert zf.comment == b""
    f8 = write_npz(tmp_path / "f8.npz", {"q": sample("F8_E4M3", (4,)), "r": sample("F8_E5M2", (4,))})
    with zipfile.ZipFile(f8) as zf:
        assert zf.comment == b'{"ckptsurgeon":1,"dtypes":{"q":"F8_E4M3","r":"F8_E5M2"}}'
    with npz_reader.Reader(f8) as r:
        assert [t.dtype for t in r.tensors] == ["F8_E4M3", "F8_E5M2"] and r.metadata == {}


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "deflated"])
def test_output_is_byte_identical(tmp_path: Path, compress: bool) -> None:
    arrays = {"a": sample("BF16", (4, 4)), "b": sample("F8_E4M3", (9,)), "c": sample("I64", ())}
    one = write_npz(tmp_path / "one.npz", arrays, metadata={"k": "v"}, compress=compress)
    two = write_npz(tmp_path / "two.npz", arrays, metadata={"k": "v"}, compress=compress)
    assert one.read_bytes() == two.read_bytes()
    with zipfile.ZipFile(one) as zf:
        assert all(i.date_time == npz_writer.ZIP_EPOCH for i in zf.infolist())
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED}


def test_zip64_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)  # every member and offset now needs ZIP64 records
    arrays = {"a": sample("F32", (64,)), "b": sample("U8", (300,)), "c": sample("F16", ())}
    path = write_npz(tmp_path / "z64.npz", arrays)
    monkeypatch.undo()
    with zipfile.ZipFile(path) as zf:
        assert all(i.extract_version >= 45 for i in zf.infolist())
    with npz_reader.Reader(path) as r:
        for name, a in arrays.items():
            assert r.read(name).tobytes() == a.tobytes()
            assert r.byte_range(name)[1] % npz_writer.ALIGNMENT == 0  # type: ignore[index]
    with np.load(path) as loaded:
        assert all(loaded[n].tobytes() == a.tobytes() for n, a in arrays.items())


def test_writer_follows_like(corpus: Path, tmp_path: Path) -> None:
    with npz_reader.Reader(corpus / "npz/weights_compressed.npz") as like:
        assert npz_writer.Writer(tmp_path / "x.npz", like=like).compress
    with npz_reader.Reader(corpus / "npz/weights.npz") as like:
        assert not npz_writer.Writer(tmp_path / "y.npz", like=like).compress
    assert npz_writer.Writer(tmp_path / "z.npz", compress=True).compress


# --- files written by numpy itself ------------------------------------------------------------------
def test_flax_style_bfloat16_reads_as_bf16(tmp_path: Path) -> None:
    a = sample("BF16", (3, 5), 1)
    path = tmp_path / "flax.npz"
    savez(path, **{"params/Dense_0/kernel": a, "raw": a.view("V2")})  # "<V2" and "|V2"
    with npz_reader.Reader(path) as r:
        assert [t.dtype for t in r.tensors] == ["BF16", "BF16"]
        for name in ("params/Dense_0/kernel", "raw"):
            got = r.read(name)
            assert got.dtype == ml_dtypes.bfloat16 and got.tobytes() == a.tobytes()
        assert r["params/Dense_0/kernel"].layer == "params/Dense_0"


def test_numpy_saved_float8(tmp_path: Path) -> None:
    e5m2, e4m3 = sample("F8_E5M2", (6,), 2), sample("F8_E4M3", (6,), 3)
    path = tmp_path / "e5m2.npz"
    np.savez(path, x=e5m2)  # numpy writes descr "<f1", which numpy.load itself rejects
    with npz_reader.Reader(path) as r:
        assert r["x"].dtype == "F8_E5M2" and r.read("x").tobytes() == e5m2.tobytes()
    path = tmp_path / "e4m3.npz"
    np.savez(path, x=e4m3)  # "<V1": E4M3 or another 1-byte type, the file cannot say
    with pytest.raises(InputError, match="1-byte void") as err:
        npz_reader.Reader(path)
    assert type(err.value) is InputError and str(path) in str(err.value)
    with npz_reader.Reader(path, float8="F8_E4M3") as r:
        assert r.read("x").dtype == ml_dtypes.float8_e4m3fn and r.read("x").tobytes() == e4m3.tobytes()
    with pytest.raises(ValueError):
        npz_reader.Reader(path, float8="F32")


def test_big_endian_and_fortran_members(tmp_path: Path) -> None:
    base = sample("F32", (3, 4, 5), 4)
    arrays = {
        "be_f4": base.astype(">f4"),
        "be_i8": sample("I64", (7,), 5).astype(">i8"),
        "be_f2": sample("F16", (2, 3), 6).astype(">f2"),
        "fortran": np.asfortranarray(base),
        "fortran_be": np.asfortranarray(base.astype(">f4")),
        "fortran_vector": np.asfortranarray(base[0, 0]),
    }
    for compress in (False, True):
        path = tmp_path / f"np{compress}.npz"
        if compress:
            np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        else:
            savez(path, **arrays)
        with npz_reader.Reader(path) as r:
            for name, a in arrays.items():
                want = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<")))
                got = r.read(name)
                assert got.shape == a.shape and got.dtype == want.dtype and got.flags.c_contiguous
                assert got.tobytes() == want.tobytes()
                assert r.sha256(name) == sha(want)
            assert r.byte_range("be_f4") is None and r.byte_range("fortran") is None
            assert (r.byte_range("fortran_vector") is None) == compress


# --- hostile and malformed archives -----------------------------------------------------------------
def _object_array(p: Path) -> Path:
    return savez(p, a=np.array([{"x": 1}, None], dtype=object))


def _pickle_member(p: Path) -> Path:
    return make_zip(p, [good_member(), ("b.npy", pickle.dumps({"w": [1, 2, 3]}))])


def _deflated_pickle_member(p: Path) -> Path:
    return make_zip(p, [("b.npy", pickle.dumps([1.0] * 50))], zipfile.ZIP_DEFLATED)


def _nul_name(p: Path) -> Path:
    make_zip(p, [good_member("aXb.npy")])  # zipfile cuts names at NUL: put it in afterwards
    p.write_bytes(p.read_bytes().replace(b"aXb.npy", b"a\x00b.npy"))
    return p


def _shape_larger(p: Path) -> Path:
    return make_zip(p, [("a.npy", raw_npy("<f4", (1000,), bytes(16)))])


def _shape_smaller(p: Path) -> Path:
    return make_zip(p, [("a.npy", raw_npy("<f4", (2,), bytes(16)))])


def _huge_shape(p: Path) -> Path:
    return make_zip(p, [("a.npy", raw_npy("<f4", (2**40, 2**40), bytes(16)))])


def _zip_bomb(p: Path) -> Path:
    make_zip(p, [("a.npy", npy_bytes(np.zeros(100_000, np.float32)))], zipfile.ZIP_DEFLATED)

    def edit(d: bytearray) -> None:  # claim far more than deflate can inflate these bytes to
        struct.pack_into("<L", d, central_entries(bytes(d))["a.npy"] + 24, 2**32 - 1)

    return patch(p, edit)


def _encrypted(p: Path) -> Path:
    make_zip(p, [good_member()])

    def edit(d: bytearray) -> None:
        cd = central_entries(bytes(d))["a.npy"]
        struct.pack_into("<H", d, cd + 8, 1)
        struct.pack_into("<H", d, local_offset(bytes(d), "a.npy") + 6, 1)

    return patch(p, edit)


def _bad_local_signature(p: Path) -> Path:
    make_zip(p, [good_member("a.npy"), good_member("b.npy")])

    def edit(d: bytearray) -> None:
        d[local_offset(bytes(d), "b.npy") + 3] = 0x09

    return patch(p, edit)


def _local_name_differs(p: Path) -> Path:
    make_zip(p, [good_member("a.npy")])

    def edit(d: bytearray) -> None:
        d[30] = ord("z")  # the first byte of the local header's name

    return patch(p, edit)


def _local_header_outside(p: Path) -> Path:
    make_zip(p, [good_member("a.npy")])

    def edit(d: bytearray) -> None:
        struct.pack_into("<L", d, central_entries(bytes(d))["a.npy"] + 42, len(d) + 100)

    return patch(p, edit)


def _overlapping(p: Path) -> Path:
    make_zip(p, [good_member("a.npy"), good_member("b.npy")])

    def edit(d: bytearray) -> None:
        cd = central_entries(bytes(d))["a.npy"]
        size = struct.unpack_from("<L", d, cd + 20)[0] + 100
        struct.pack_into("<LL", d, cd + 20, size, size)

    return patch(p, edit)


def _truncated(p: Path) -> Path:
    make_zip(p, [good_member("a.npy", 500), good_member("b.npy", 500)])
    p.write_bytes(p.read_bytes()[: p.stat().st_size * 2 // 3])
    return p


def _tail_cut(p: Path) -> Path:
    make_zip(p, [good_member("a.npy", 500)])
    p.write_bytes(p.read_bytes()[:-5])
    return p


def _data_cut(p: Path) -> Path:
    make_zip(p, [good_member("a.npy", 500)])

    def edit(d: bytearray) -> None:  # shrink the member's data: the directory still points past it
        cd = central_entries(bytes(d))["a.npy"]
        del d[cd - 100 : cd]
        struct.pack_into("<L", d, len(d) - 6, cd - 100)

    return patch(p, edit)


def _comment_from_the_future(p: Path) -> Path:
    make_zip(p, [good_member()])
    with zipfile.ZipFile(p, "a") as zf:
        zf.comment = b'{"ckptsurgeon": 99}'
    return p


def _comment_bad_dtype(p: Path) -> Path:
    make_zip(p, [good_member()])
    with zipfile.ZipFile(p, "a") as zf:
        zf.comment = b'{"ckptsurgeon": 1, "dtypes": {"a": "F9"}}'
    return p


def _comment_wrong_size(p: Path) -> Path:
    make_zip(p, [("a.npy", raw_npy("|V1", (4,), bytes(4)))])
    with zipfile.ZipFile(p, "a") as zf:
        zf.comment = b'{"ckptsurgeon": 1, "dtypes": {"a": "BF16"}}'
    return p


HOSTILE: dict[str, tuple[Callable[[Path], Path], type[InputError]]] = {
    "object-array": (_object_array, UnsafeInputError),
    "pickle-member": (_pickle_member, UnsafeInputError),
    "deflated-pickle-member": (_deflated_pickle_member, UnsafeInputError),
    "not-npy-member": (lambda p: make_zip(p, [good_member(), ("notes.txt", b"hello")]), InputError),
    "empty-name": (lambda p: make_zip(p, [good_member(".npy")]), InputError),
    "duplicate-names": (lambda p: make_zip(p, [good_member(), good_member()]), InputError),
    "dotdot-name": (lambda p: make_zip(p, [good_member("../evil.npy")]), UnsafeInputError),
    "nested-dotdot-name": (lambda p: make_zip(p, [good_member("a/../../evil.npy")]), UnsafeInputError),
    "absolute-name": (lambda p: make_zip(p, [good_member("/etc/evil.npy")]), UnsafeInputError),
    "backslash-name": (lambda p: make_zip(p, [good_member("..\\evil.npy")]), UnsafeInputError),
    "nul-name": (_nul_name, UnsafeInputError),
    "truncated": (_truncated, InputError),
    "tail-cut": (_tail_cut, InputError),
    "data-cut": (_data_cut, InputError),
    "not-a-zip": (lambda p: (p.write_bytes(b"PK\x03\x04 but nothing else"), p)[1], InputError),
    "shape-larger-than-member": (_shape_larger, InputError),
    "shape-smaller-than-member": (_shape_smaller, InputError),
    "huge-shape": (_huge_shape, InputError),
    "negative-shape": (lambda p: make_zip(p, [("a.npy", raw_npy("<f4", (-4,), bytes(16)))]), InputError),
    "zip-bomb": (_zip_bomb, InputError),
    "encrypted": (_encrypted, InputError),
    "bad-local-signature": (_bad_local_signature, InputError),
    "local-name-differs": (_local_name_differs, InputError),
    "local-header-outside": (_local_header_outside, InputError),
    "overlapping-members": (_overlapping, InputError),
    "bzip2-member": (lambda p: make_zip(p, [good_member()], zipfile.ZIP_BZIP2), InputError),
    "structured-dtype": (lambda p: savez(p, a=np.zeros(3, "f4,i4")), InputError),
    "complex-dtype": (lambda p: savez(p, a=np.zeros(3, np.complex64)), InputError),
    "string-dtype": (lambda p: savez(p, a=np.array(["ab", "c"])), InputError),
    "void-4": (lambda p: make_zip(p, [("a.npy", raw_npy("|V4", (2,), bytes(8)))]), InputError),
    "bad-magic": (lambda p: make_zip(p, [("a.npy", b"\x93NUMPZ" + bytes(100))]), InputError),
    "short-member": (lambda p: make_zip(p, [("a.npy", b"\x93NU")]), InputError),
    "npy-version-9": (lambda p: make_zip(p, [("a.npy", b"\x93NUMPY\x09\x00" + bytes(100))]), InputError),
    "header-too-long": (
        lambda p: make_zip(p, [("a.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 10**6) + bytes(64))]), InputError
    ),
    "header-not-a-dict": (lambda p: make_zip(p, [("a.npy", b"\x93NUMPY\x01\x00\x08\x00[1, 2] \n")]), InputError),
    "header-code": (lambda p: make_zip(p, [("a.npy", b"\x93NUMPY\x01\x00\x10\x00__import__('os')\n")]), InputError),
    "comment-version": (_comment_from_the_future, InputError),
    "comment-bad-dtype": (_comment_bad_dtype, InputError),
    "comment-wrong-size": (_comment_wrong_size, InputError),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archives_are_refused(tmp_path: Path, case: str) -> None:
    build, expected = HOSTILE[case]
    path = build(tmp_path / f"{case}.npz")
    with pytest.raises(InputError) as err:
        read_everything(path)
    assert type(err.value) is expected, err.value
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert len(err.value.problem) < 400


def test_corrupt_stored_data_fails_the_crc_check(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "a.npz", {"w": sample("F32", (64,))})
    with npz_reader.Reader(path) as r:
        offset = r.byte_range("w")[1]  # type: ignore[index]
    data = bytearray(path.read_bytes())
    data[offset + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    for use in ("read", "byte_range", "sha256", "iter_bytes"):  # zero-copy reads and byte ranges included
        with npz_reader.Reader(path) as r, pytest.raises(InputError, match="CRC mismatch"):
            list(getattr(r, use)("w") or ())


def test_a_damaged_stored_member_is_never_copied(tmp_path: Path, cli: CliRunner) -> None:
    path = write_npz(tmp_path / "a.npz", {"w": sample("F32", (64,)), "b": sample("F32", (8,))})
    with npz_reader.Reader(path) as r:
        offset = r.byte_range("b")[1]  # type: ignore[index]
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    out = tmp_path / "out.safetensors"
    result = cli("convert", path, "-o", out)
    assert result.code == 3
    assert "CRC mismatch" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


def test_corrupt_deflated_data_is_refused(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "a.npz", {"w": sample("F32", (64, 64))}, compress=True)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("w.npy")
    middle = info.header_offset + 30 + len(b"w.npy") + len(info.extra) + info.compress_size // 2
    data = bytearray(path.read_bytes())
    data[middle] ^= 0x55
    path.write_bytes(bytes(data))
    with npz_reader.Reader(path) as r, pytest.raises(InputError):
        r.read("w")


def test_highly_compressible_tensor_is_not_a_bomb(tmp_path: Path) -> None:
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, z=np.zeros(1 << 20, np.float32))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("z.npy")
        assert info.file_size / info.compress_size > 1000
    with npz_reader.Reader(path) as r:
        assert not r.read("z").any()


# The real npz files to mutate: one stored, one deflated.
MUTATION_BASES = ["npz/weights.npz", "npz/weights_compressed.npz"]
_counter = itertools.count()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.sampled_from(MUTATION_BASES),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
    headers_only=st.booleans(),
    keep=st.one_of(st.none(), st.floats(0.3, 1)),
)
def test_mutated_archives_fail_cleanly(
    corpus: Path, tmp_path: Path, base: str, edits: list[tuple[float, int]], headers_only: bool, keep: float | None
) -> None:
    data = bytearray((corpus / base).read_bytes())
    # aim half the examples at the structure: the first member's .npy header and the central directory
    spots = [range(0, 160), range(len(data) - 700, len(data))] if headers_only else [range(len(data))]
    for where, value in edits:
        span = spots[int(where * len(spots))]
        data[span[int((where * len(spots) % 1) * len(span))]] = value
    if keep is not None:
        del data[int(len(data) * keep) :]
    path = tmp_path / f"m{next(_counter)}.npz"
    path.write_bytes(bytes(data))
    try:
        read_everything(path)
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))


# --- the writer's contract --------------------------------------------------------------------------
def test_writer_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    dest = tmp_path / "out.npz"
    dest.write_bytes(b"the previous file")
    a, b = sample("F32", (100,)), sample("I8", (3,))
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(dest) as tmp:
        writer = npz_writer.Writer(tmp)
        writer.begin([TensorSpec("a", a.shape, "F32"), TensorSpec("b", b.shape, "I8")])
        writer.write("a", a)
        try:
            raise RuntimeError("interrupted")
        except RuntimeError:
            writer.abort()
            raise
    assert dest.read_bytes() == b"the previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]
    assert not any(TEMP_MARK in p.name for p in tmp_path.iterdir())


def test_disk_full_mid_member_is_an_output_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out.npz"
    calls = itertools.count()
    real_write = zipfile._ZipWriteFile.write  # type: ignore[attr-defined]

    def failing_write(self: object, data: bytes) -> int:
        if next(calls) == 3:  # inside the second member
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(zipfile._ZipWriteFile, "write", failing_write)  # type: ignore[attr-defined]
    arrays = {"a": sample("F32", (10,)), "b": sample("F32", (10,))}
    with pytest.raises(OutputError, match="no space left"), atomic_path(dest) as tmp:
        writer = npz_writer.Writer(tmp)
        try:
            writer.begin([TensorSpec(n, a.shape, "F32") for n, a in arrays.items()])
            for n, a in arrays.items():
                writer.write(n, a)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
    assert list(tmp_path.iterdir()) == []


def test_writer_through_atomic_path(tmp_path: Path) -> None:
    dest = tmp_path / "out.npz"
    arrays = {"a": sample("BF16", (4,))}
    with atomic_path(dest) as tmp:
        write_npz(tmp, arrays)
    assert read_everything(dest)["a"].tobytes() == arrays["a"].tobytes()
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_writer_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "exists.npz"
    path.write_bytes(b"keep me")
    writer = npz_writer.Writer(path)
    with pytest.raises(FileExistsError):
        writer.begin([TensorSpec("a", (1,), "F32")])
    assert path.read_bytes() == b"keep me"


@pytest.mark.parametrize("name", ["../up", "/abs", "a\\b", "nul\x00", ""])
def test_writer_refuses_path_like_names(tmp_path: Path, name: str) -> None:
    path = tmp_path / "o.npz"
    with pytest.raises(OutputError):
        npz_writer.Writer(path).begin([TensorSpec(name, (1,), "F32")])
    assert not path.exists()


def test_writer_refuses_non_string_metadata(tmp_path: Path) -> None:
    path = tmp_path / "o.npz"
    with pytest.raises(OutputError, match="strings"):
        npz_writer.Writer(path, metadata={"step": 3}).begin([TensorSpec("a", (1,), "F32")])  # type: ignore[dict-item]
    assert not path.exists()


def test_writer_refuses_a_comment_too_large(tmp_path: Path) -> None:
    path = tmp_path / "o.npz"
    with pytest.raises(OutputError, match="65535"):
        npz_writer.Writer(path, metadata={"blob": "x" * 70_000}).begin([TensorSpec("a", (1,), "F32")])
    assert not path.exists()


def test_arrays_outlive_the_reader(tmp_path: Path) -> None:
    a = sample("F32", (10,))
    path = write_npz(tmp_path / "a.npz", {"a": a})
    r = npz_reader.Reader(path)
    view = r.read("a")
    r.close()  # the map is still exported to `view`: closing must not fail
    assert view.tobytes() == a.tobytes()
    with pytest.raises(InputError, match="closed"):
        r.read("a")
    r.close()
