"""The checked zip reader (formats/_zip.py): real archives from zipfile and numpy.savez, damaged byte by byte."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckptsurgeon.errors import InputError, UnsafeInputError
from ckptsurgeon.formats import _zip
from ckptsurgeon.formats._zip import DEFLATED, MAX_DEFLATE_RATIO, STORED, ZipArchive, name_problem

from ..conftest import ROOT
from ..support.fixtures import CliRunner
from ..support.isolated import run_isolated

EPOCH = (1980, 1, 1, 0, 0, 0)
PAYLOADS = {"a.bin": bytes(range(256)) * 3, "b/c.txt": b"hello zip\n" * 40, "empty": b""}


# --- helpers ----------------------------------------------------------------------------------------
def make_zip(path: Path, members: dict[str, bytes] | list[tuple[str, bytes]], method: int = STORED) -> Path:
    items = members.items() if isinstance(members, dict) else members
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in items:
                zf.writestr(zipfile.ZipInfo(name, date_time=EPOCH), data, compress_type=method)
    return path


def central(data: bytes | bytearray) -> dict[str, int]:
    """Offsets of each central directory record, by member name (archives without ZIP64 or comment)."""
    count, _, cd_offset = struct.unpack_from("<HLL", data, len(data) - 12)
    out, pos = {}, cd_offset
    for _ in range(count):
        assert data[pos : pos + 4] == b"PK\x01\x02"
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        out[bytes(data[pos + 46 : pos + 46 + n]).decode("cp437")] = pos
        pos += 46 + n + m + k
    return out


def local(data: bytes | bytearray, name: str) -> int:
    return struct.unpack_from("<L", data, central(data)[name] + 42)[0]


def damage(path: Path, edit: Callable[[bytearray], None]) -> Path:
    data = bytearray(path.read_bytes())
    edit(data)
    path.write_bytes(bytes(data))
    return path


def read_all(archive: ZipArchive) -> dict[str, bytes]:
    """Every member's bytes, by every way there is to read them (they must agree)."""
    out = {}
    for m in archive:
        with archive.open(m) as stream:
            streamed = stream.read()
        chunked = b"".join(archive.chunks(m, chunk_bytes=7))
        assert chunked == streamed
        if m.stored:
            assert bytes(archive.view(m)) == streamed
            offset, length = archive.data_range(m)  # type: ignore[misc]
            assert archive.path.read_bytes()[offset : offset + length] == streamed
        out[m.name] = streamed
    return out


# --- reading good archives ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_members_of_a_zipfile_archive(tmp_path: Path, method: int) -> None:
    path = make_zip(tmp_path / "a.zip", PAYLOADS, method)
    data = path.read_bytes()
    with ZipArchive(path) as archive, zipfile.ZipFile(path) as zf:
        assert archive.names() == list(PAYLOADS) and len(archive) == 3 and "b/c.txt" in archive
        for m, info in zip(archive, zf.infolist(), strict=True):
            assert (m.name, m.method, m.size, m.compressed_size, m.crc) == (
                info.filename, method, info.file_size, info.compress_size, info.CRC)
            assert m.header_offset == info.header_offset and m.data_end == m.data_offset + m.compressed_size
            assert m.stored == (method == STORED)
            if m.stored:
                assert data[m.data_offset : m.data_end] == PAYLOADS[m.name]
                assert archive.peek(m, 5) == PAYLOADS[m.name][:5]
            else:
                assert archive.data_range(m) is None
                assert zlib.decompress(data[m.data_offset : m.data_end], -15) == PAYLOADS[m.name]
        assert read_all(archive) == PAYLOADS
        assert b"".join(archive.chunks(archive["a.bin"], start=700, chunk_bytes=16)) == PAYLOADS["a.bin"][700:]
        with pytest.raises(KeyError):
            archive["missing"]


def test_numpy_savez_archive(tmp_path: Path) -> None:
    """numpy writes each member with a ZIP64 local field: the data offset must skip it."""
    arrays: dict[str, np.ndarray] = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.int64)}
    np.savez(tmp_path / "a.npz", **arrays)  # type: ignore[arg-type]
    np.savez_compressed(tmp_path / "c.npz", **arrays)  # type: ignore[arg-type]
    for name in ("a.npz", "c.npz"):
        with ZipArchive(tmp_path / name) as archive:
            assert archive.names() == ["w.npy", "b.npy"]
            for m in archive:
                assert archive.peek(m, 6) == b"\x93NUMPY"
                want = np.load(io.BytesIO(b"".join(archive.chunks(m))))
                assert np.array_equal(want, arrays[m.name[:-4]])


def test_real_keras_and_torch_archives(corpus: Path) -> None:
    for rel in ("keras3/mlp.keras", "keras3/cnn.keras", "torch/smallcnn.pt"):
        with ZipArchive(corpus / rel) as archive:
            for m in archive:
                archive.verify(m)
            assert archive.names()


def test_a_window_onto_a_stored_member_is_a_seekable_file(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", PAYLOADS)
    with ZipArchive(path) as archive:
        m = archive["a.bin"]
        with archive.window(m) as w:
            assert w.seekable() and w.readable() and not w.writable()
            assert w.read(4) == PAYLOADS["a.bin"][:4] and w.tell() == 4
            assert w.seek(-10, io.SEEK_END) == m.size - 10
            assert w.read() == PAYLOADS["a.bin"][-10:] and w.read(5) == b""
            w.seek(100)
            assert w.seek(6, io.SEEK_CUR) == 106 and w.read(3) == PAYLOADS["a.bin"][106:109]
            with pytest.raises(ValueError):
                w.seek(-1)
            buffer = io.BufferedReader(w)
            buffer.seek(0)
            assert buffer.read() == PAYLOADS["a.bin"]
    with ZipArchive(make_zip(tmp_path / "d.zip", PAYLOADS, DEFLATED)) as archive, pytest.raises(ValueError):
        archive.window(archive["a.bin"])


def test_h5py_opens_a_stored_member_through_a_window(corpus: Path) -> None:
    """How a .keras archive is read: model.weights.h5 in place, never extracted."""
    import h5py

    with ZipArchive(corpus / "keras3/mlp.keras") as archive:
        m = archive["model.weights.h5"]
        assert m.stored
        archive.verify(m)
        with archive.window(m) as w, h5py.File(w, "r") as f:
            names: list[str] = []
            f.visit(names.append)
            assert names


def test_a_closed_archive_refuses_reads_but_views_outlive_it(tmp_path: Path) -> None:
    archive = ZipArchive(make_zip(tmp_path / "a.zip", PAYLOADS))
    m = archive["a.bin"]
    view = archive.view(m)
    archive.close()
    assert archive.closed and bytes(view) == PAYLOADS["a.bin"]
    for use in (archive.view, archive.verify, archive.open, archive.window):
        with pytest.raises(InputError, match="closed"):
            use(m)
    archive.close()


# --- damaged and hostile archives -------------------------------------------------------------------
def test_overlapping_members_are_refused(tmp_path: Path) -> None:
    def overlap(d: bytearray) -> None:  # a's data claims 100 bytes of b's local header and data, in both headers
        cd = central(d)["a.bin"]
        size = struct.unpack_from("<L", d, cd + 20)[0] + 100
        struct.pack_into("<LL", d, cd + 20, size, size)
        struct.pack_into("<LL", d, local(d, "a.bin") + 18, size, size)

    path = damage(make_zip(tmp_path / "a.zip", PAYLOADS), overlap)
    with pytest.raises(InputError, match=r"'a\.bin' and 'b/c\.txt' overlap"):
        ZipArchive(path)


def test_a_member_running_into_the_central_directory_is_refused(tmp_path: Path) -> None:
    def grow(d: bytearray) -> None:
        cd = central(d)["b"]
        struct.pack_into("<LL", d, cd + 20, 30, 30)  # 27 bytes of data claim 30

    path = damage(make_zip(tmp_path / "a.zip", {"a": b"x", "b": bytes(27)}), grow)
    with pytest.raises(InputError, match="central directory"):
        ZipArchive(path)


def test_two_members_at_the_same_offset_are_refused(tmp_path: Path) -> None:
    def alias(d: bytearray) -> None:  # b's directory entry points at a's local header (and name)
        struct.pack_into("<L", d, central(d)["b"] + 42, local(d, "a"))

    path = damage(make_zip(tmp_path / "a.zip", {"a": b"1234", "b": b"5678"}), alias)
    with pytest.raises(InputError, match=r"local header names|overlap"):
        ZipArchive(path)


def test_a_member_hidden_from_the_central_directory_is_refused(tmp_path: Path) -> None:
    def swallow(d: bytearray) -> None:  # a.bin's record claims b's record as its comment: zipfile lists one member
        struct.pack_into("<H", d, central(d)["a.bin"] + 32, 46 + len("b/c.txt"))

    path = damage(make_zip(tmp_path / "a.zip", {"a.bin": b"1", "b/c.txt": b"2"}), swallow)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["a.bin"]
    with pytest.raises(InputError, match="end record counts 2 members, but the central directory holds 1"):
        ZipArchive(path)

    def drop(d: bytearray) -> None:  # b's record removed and the end record fixed: b's local entry stays
        cd = central(d)
        start, end = cd["b/c.txt"], cd["empty"]
        del d[start:end]
        count, cd_size = struct.unpack_from("<HL", d, len(d) - 12)
        struct.pack_into("<HHL", d, len(d) - 14, count - 1, count - 1, cd_size - (end - start))

    path = damage(make_zip(tmp_path / "b.zip", PAYLOADS), drop)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["a.bin", "empty"]
    with pytest.raises(UnsafeInputError, match=r"437 bytes after member 'a\.bin' \(offset 803\) belong to no member"):
        ZipArchive(path)


def test_the_member_count_of_a_zip64_end_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # zipfile then writes a ZIP64 end record
    path = make_zip(tmp_path / "a.zip", PAYLOADS)
    monkeypatch.undo()

    def defer(d: bytearray) -> None:  # the 16-bit counts say "see the ZIP64 record"
        struct.pack_into("<HH", d, len(d) - 14, 0xFFFF, 0xFFFF)

    damage(path, defer)
    with ZipArchive(path) as archive:
        assert archive.names() == list(PAYLOADS)

    def miscount(d: bytearray) -> None:  # the ZIP64 record's counts on this disk and in all: its 7th and 8th fields
        struct.pack_into("<QQ", d, len(d) - 22 - 20 - 56 + 24, 7, 7)

    with pytest.raises(InputError, match="counts 7 members, but the central directory holds 3"):
        ZipArchive(damage(path, miscount))


class Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_data_descriptors_are_accounted_for(tmp_path: Path, method: int) -> None:
    """A writer to a pipe puts each member's CRC and sizes after its data (flag 0x0008), as PyTorch does."""
    out = Unseekable()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in PAYLOADS.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=EPOCH), data, compress_type=method)
    path = tmp_path / "a.zip"
    path.write_bytes(bytes(out.data))
    with ZipArchive(path) as archive:
        assert all(m.info.flag_bits & 0x08 for m in archive)
        assert read_all(archive) == PAYLOADS
        end = archive["a.bin"].data_end
    damage(path, lambda d: d.__setitem__(end + 5, d[end + 5] ^ 1))  # the descriptor's CRC
    with pytest.raises(InputError, match=rf"'a\.bin': no data descriptor that agrees with the central directory at offset {end}"):
        ZipArchive(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.__setitem__(local(d, "b/c.txt") + 3, 0x09), "bad local header signature"),
        (lambda d: d.__setitem__(local(d, "a.bin") + 30, ord("z")), "its local header names b'z.bin'"),
        (lambda d: struct.pack_into("<H", d, local(d, "a.bin") + 8, DEFLATED), "compression methods differ"),
        (lambda d: struct.pack_into("<H", d, local(d, "a.bin") + 6, 1), "encrypted"),
        (lambda d: struct.pack_into("<H", d, local(d, "a.bin") + 6, 0x40), "zip features"),
        (lambda d: struct.pack_into("<L", d, central(d)["a.bin"] + 42, len(d) - 10), "lies outside the archive"),
    ],
    ids=["signature", "name", "method", "encrypted", "strong-encryption", "outside"],
)
def test_a_bad_local_header_is_refused(tmp_path: Path, edit: Callable[[bytearray], None], message: str) -> None:
    path = damage(make_zip(tmp_path / "a.zip", PAYLOADS), edit)
    with pytest.raises(InputError, match=message) as err:
        ZipArchive(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: struct.pack_into("<H", d, central(d)["a.bin"] + 8, 1), "encrypted"),
        (lambda d: struct.pack_into("<L", d, central(d)["a.bin"] + 20, 5), "compressed size 5 != size 768"),
        (lambda d: struct.pack_into("<H", d, central(d)["a.bin"] + 10, 12), "compression method 12"),
    ],
    ids=["encrypted", "sizes", "bzip2"],
)
def test_a_bad_central_record_is_refused(tmp_path: Path, edit: Callable[[bytearray], None], message: str) -> None:
    path = damage(make_zip(tmp_path / "a.zip", PAYLOADS), edit)
    with pytest.raises(InputError, match=message):
        ZipArchive(path)


def test_truncated_data_and_unreadable_archives(tmp_path: Path) -> None:
    def cut(d: bytearray) -> None:  # b's data shrinks; the directory still points past it
        cd = min(central(d).values())
        del d[cd - 100 : cd]
        struct.pack_into("<L", d, len(d) - 6, cd - 100)

    path = damage(make_zip(tmp_path / "a.zip", {"a.bin": bytes(500), "b/c.txt": bytes(200)}), cut)
    with pytest.raises(InputError, match=r"'b/c\.txt' overlaps the archive's central directory"):
        ZipArchive(path)

    def grow(d: bytearray) -> None:
        struct.pack_into("<LL", d, central(d)["a.bin"] + 20, 10**6, 10**6)
        struct.pack_into("<LL", d, local(d, "a.bin") + 18, 10**6, 10**6)

    path = damage(make_zip(tmp_path / "b.zip", {"a.bin": bytes(500)}), grow)
    with pytest.raises(InputError, match="runs past the end"):
        ZipArchive(path)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 and nothing else")
    with pytest.raises(InputError, match="not a readable npz archive"):
        ZipArchive(junk, what="npz archive")


@pytest.mark.parametrize(
    ("name", "unsafe", "message"),
    [
        ("../up.bin", True, "'..' path component"),
        ("a/../../up.bin", True, "'..' path component"),
        ("/etc/evil", True, "absolute path"),
        ("C:evil", True, "drive letter"),
        ("a\\b", True, "backslash"),
        ("", True, "is empty"),
    ],
)
def test_unsafe_names_are_refused(tmp_path: Path, name: str, unsafe: bool, message: str) -> None:
    path = make_zip(tmp_path / "a.zip", [("ok", b"1"), (name, b"2")])
    with pytest.raises(UnsafeInputError if unsafe else InputError, match=message):
        ZipArchive(path)


def test_nul_and_duplicate_names_are_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"aXb": b"1"})
    path.write_bytes(path.read_bytes().replace(b"aXb", b"a\x00b"))  # zipfile cuts names at NUL
    with pytest.raises(UnsafeInputError, match="NUL"):
        ZipArchive(path)
    with pytest.raises(InputError, match="'a' appears twice"):
        ZipArchive(make_zip(tmp_path / "b.zip", [("a", b"1"), ("a", b"2")]))
    assert name_problem("dir/sub/file.npy") is None and name_problem("dir/") is None


def test_bytes_after_the_end_record_are_a_polyglot(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", PAYLOADS)
    path.write_bytes(path.read_bytes() + b"trailing")
    with pytest.raises(UnsafeInputError, match="bytes follow the zip archive's end record"):
        ZipArchive(path)
    with zipfile.ZipFile(path) as zf:  # detection's check says the same, from zipfile's listing
        infos = zf.infolist()
    with pytest.raises(UnsafeInputError, match="polyglot"):
        _zip.refuse_polyglot(path, path.stat().st_size, infos)
    good = make_zip(tmp_path / "b.zip", PAYLOADS)
    with zipfile.ZipFile(good) as zf:
        _zip.refuse_polyglot(good, good.stat().st_size, zf.infolist())
    assert _zip.end_record(good, good.stat().st_size) == good.stat().st_size - 22


def test_an_hdf5_signature_outside_every_member_is_a_polyglot(tmp_path: Path) -> None:
    inner = make_zip(tmp_path / "inner.zip", PAYLOADS).read_bytes()
    path = tmp_path / "poly.zip"
    path.write_bytes(bytes(512) + _zip.HDF5_MAGIC + bytes(504) + inner)  # an HDF5 user block, then the zip
    with pytest.raises(InputError, match=r"central directory at offsets 1275 to 1430, but it must end .* \(offset 2454\)"):
        ZipArchive(path)
    assert _zip.hdf5_offsets(path, path.stat().st_size) == [512]
    with zipfile.ZipFile(path) as zf:  # detection's check names the HDF5 signature
        infos = zf.infolist()
    with pytest.raises(UnsafeInputError, match="signature at offset 512"):
        _zip.refuse_polyglot(path, path.stat().st_size, infos)
    # in the archive comment: outside every member's data
    path = make_zip(tmp_path / "comment.zip", {"a": b"x"})
    with zipfile.ZipFile(path, "a") as zf:
        zf.comment = bytes(512 - path.stat().st_size) + _zip.HDF5_MAGIC
    with pytest.raises(UnsafeInputError, match="signature at offset 512, outside every member"):
        ZipArchive(path)
    # the signature inside a member's data is that member's business (a .keras archive's weights)
    lead = 30 + len("w.h5")
    path = make_zip(tmp_path / "inside.zip", {"w.h5": bytes(512 - lead) + _zip.HDF5_MAGIC + bytes(100)})
    with ZipArchive(path) as archive:
        assert archive.peek(archive["w.h5"], 1000)[512 - lead :].startswith(_zip.HDF5_MAGIC)


def test_a_damaged_stored_member_fails_its_crc_on_first_use(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", PAYLOADS)
    with ZipArchive(path) as archive:
        offset = archive["a.bin"].data_offset
    damage(path, lambda d: d.__setitem__(offset + 300, d[offset + 300] ^ 0x01))
    with ZipArchive(path) as archive:  # opening reads no member's data
        m = archive["a.bin"]
        assert archive.peek(m, 4) == PAYLOADS["a.bin"][:4]  # headers may be parsed before the data is used
        for use in (archive.view, archive.data_range, archive.verify):
            with pytest.raises(InputError, match=r"'a\.bin': CRC mismatch"):
                use(m)
        chunks = archive.chunks(m, chunk_bytes=100)
        with pytest.raises(InputError, match="CRC mismatch"):  # after the last chunk
            for _ in chunks:
                pass
        with pytest.raises(InputError, match=r"not a readable zip archive: member 'a\.bin'"):  # zipfile's own check
            archive.open(m).read()
        assert bytes(archive.view(archive["b/c.txt"])) == PAYLOADS["b/c.txt"]  # the others are fine


def test_a_member_is_checked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_zip(tmp_path / "a.zip", PAYLOADS)
    with ZipArchive(path) as archive:
        m = archive["a.bin"]
        archive.verify(m)
        monkeypatch.setattr(zlib, "crc32", lambda *a: pytest.fail("checked twice"))
        assert archive.data_range(m) == (m.data_offset, m.size)
        assert bytes(archive.view(m)) == PAYLOADS["a.bin"]


def test_checks_beside_hand_out_ranges_at_once_and_raise_on_leaving(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", PAYLOADS)
    with ZipArchive(path) as archive:
        offset = archive["a.bin"].data_offset
    damage(path, lambda d: d.__setitem__(offset + 5, d[offset + 5] ^ 0x01))
    with ZipArchive(path) as archive:
        bad, good = archive["a.bin"], archive["b/c.txt"]
        handed: list[tuple[int, int] | None] = []
        with pytest.raises(InputError, match=r"'a\.bin': CRC mismatch"), archive.checks_beside():
            handed = [archive.data_range(good), archive.data_range(bad)]  # no error yet: checked beside
        assert handed == [(good.data_offset, good.size), (bad.data_offset, bad.size)]
        with pytest.raises(InputError, match="CRC mismatch"):  # outside the context: checked first, as before
            archive.data_range(bad)
        assert archive.data_range(good) == (good.data_offset, good.size)


def test_checks_beside_never_hide_the_error_that_stopped_the_copy(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", PAYLOADS)
    with ZipArchive(path) as archive:
        offset = archive["a.bin"].data_offset
    damage(path, lambda d: d.__setitem__(offset, d[offset] ^ 0x01))
    with ZipArchive(path) as archive:
        with pytest.raises(KeyError, match="stopped"), archive.checks_beside():
            archive.data_range(archive["a.bin"])
            raise KeyError("stopped")
        with archive.checks_beside():  # a clean archive-wide pass afterwards: the worker was let go of
            assert archive.data_range(archive["b/c.txt"]) is not None


def test_a_clean_archive_settles_quietly_and_checks_each_member_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_zip(tmp_path / "a.zip", PAYLOADS)
    with ZipArchive(path) as archive:
        with archive.checks_beside(), archive.checks_beside():  # nested: one worker
            for m in archive:
                archive.data_range(m)
                archive.data_range(m)
        monkeypatch.setattr(zlib, "crc32", lambda *a: pytest.fail("checked twice"))
        assert bytes(archive.view(archive["a.bin"])) == PAYLOADS["a.bin"]


def test_a_deflate_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "z.zip", {"z": bytes(1 << 20)}, DEFLATED)
    with ZipArchive(path) as archive:  # zeros reach close to deflate's limit and are fine
        m = archive["z"]
        assert m.size / m.compressed_size > 1000
        assert sum(len(c) for c in archive.chunks(m)) == 1 << 20

    def claim(d: bytearray) -> None:
        struct.pack_into("<L", d, central(d)["z"] + 24, MAX_DEFLATE_RATIO * m.compressed_size + 1)

    with pytest.raises(InputError, match="zip bomb"):
        ZipArchive(damage(path, claim))


def test_a_damaged_deflate_stream_is_an_input_error(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"t": np.random.default_rng(0).bytes(5000)}, DEFLATED)
    with ZipArchive(path) as archive:
        m = archive["t"]
    damage(path, lambda d: d.__setitem__(m.data_offset + m.compressed_size // 2, d[m.data_offset + m.compressed_size // 2] ^ 0x55))
    with ZipArchive(path, what="npz archive") as archive, pytest.raises(InputError, match="not a readable npz archive: member 't'"):
        b"".join(archive.chunks(archive["t"]))


@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_every_single_byte_damage_fails_cleanly_or_reads_the_same(tmp_path: Path, method: int) -> None:
    """Damage each byte of an archive in turn: it is refused with one line, or reads back unchanged."""
    original = make_zip(tmp_path / "a.zip", {"a.bin": bytes(range(40)), "b": b"xyz" * 9}, method).read_bytes()
    path = tmp_path / "d.zip"
    refused = 0
    for pos in range(len(original)):
        data = bytearray(original)
        data[pos] ^= 0xA5
        path.write_bytes(bytes(data))
        try:
            with ZipArchive(path) as archive:
                got = read_all(archive)
        except InputError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            refused += 1
            continue
        assert got == {"a.bin": bytes(range(40)), "b": b"xyz" * 9}, pos
    assert refused > len(original) // 2


def test_importing_the_zip_reader_and_the_npz_package_loads_no_numpy() -> None:
    code = ("import json, sys; import ckptsurgeon.formats._zip, ckptsurgeon.formats.npz; "
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = json.loads(done.stdout)
    assert [m for m in ("numpy", "h5py", "ml_dtypes", "ckptsurgeon.formats.npz.reader") if m in modules] == []


# --- the raw structure: end records, central directory and local headers agree -----------------------
def savez3(path: Path) -> Path:
    """A real npz archive of three arrays written by numpy (local headers carry a ZIP64 field)."""
    np.savez(path, x=np.arange(3.0), y=np.ones((2, 2), np.float32), z=np.zeros(5, np.int64))  # type: ignore[arg-type]
    return path


def test_a_central_record_damaged_by_one_byte_is_refused_not_shortened(tmp_path: Path, cli: CliRunner) -> None:
    """One byte (entry 2's comment length) makes zipfile list 2 of 3 arrays: refused, nothing written."""
    for length in (46 + len("z.npy"), 75):  # swallows entry 3 exactly; runs past the directory
        path = savez3(tmp_path / f"c{length}.npz")
        damage(path, lambda d, n=length: struct.pack_into("<H", d, central(d)["y.npy"] + 32, n))
        if length == 51:
            with zipfile.ZipFile(path) as zf:
                assert zf.namelist() == ["x.npy", "y.npy"]
        for argv in (["inspect", path], ["convert", path, "-o", tmp_path / "out.safetensors"]):
            result = cli(*argv)
            assert result.code == 3 and result.line.startswith(f"ckpt: error: {path}: "), result.err
            assert "central directory" in result.line
        assert not (tmp_path / "out.safetensors").exists()


def test_a_count_in_the_end_record_must_match(tmp_path: Path) -> None:
    for here, total, message in [
        (0, 0, "counts 0 members, but the central directory holds more than 0"),
        (0xFFFF, 0xFFFF, "counts 65535 members, but the central directory holds 3"),
        (3, 2, "counts 3 members on this disk but 2 in all"),
        (2, 2, "counts 2 members, but the central directory holds 3"),
    ]:
        path = damage(savez3(tmp_path / "a.npz"), lambda d, h=here, t=total: struct.pack_into("<HH", d, len(d) - 14, h, t))
        with pytest.raises(InputError, match=message):
            ZipArchive(path)


def test_the_central_directory_lies_exactly_before_the_end_record(tmp_path: Path, cli: CliRunner) -> None:
    """Its offset and size in the end record; an offset zipfile would shift is named as the file has it, never negative."""
    for field, delta in [(-6, 100), (-6, -1), (-10, 1), (-10, -1)]:  # offset, size
        path = damage(savez3(tmp_path / "a.npz"), lambda d, f=field, k=delta: struct.pack_into(
            "<L", d, len(d) + f, struct.unpack_from("<L", d, len(d) + f)[0] + k))
        result = cli("inspect", path)
        assert result.code == 3 and result.line.startswith(f"ckpt: error: {path}: "), result.err
        assert re.search(r"-\d", result.line.removeprefix(f"ckpt: error: {path}")) is None, result.line
    path = savez3(tmp_path / "a.npz")
    end = path.stat().st_size - 22
    size, offset = struct.unpack_from("<LL", path.read_bytes(), end + 12)
    damage(path, lambda d: struct.pack_into("<L", d, end + 16, offset + 100))
    with zipfile.ZipFile(path) as zf:  # zipfile shifts every member by -100 and reads on
        assert zf.infolist()[0].header_offset == -100
    with pytest.raises(InputError, match=rf"directory at offsets {offset + 100} to {offset + 100 + size}, but it must end .* \(offset {end}\)"):
        ZipArchive(path)


def first_local(d: bytearray | bytes) -> int:
    return local(d, "x.npy")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: struct.pack_into("<H", d, first_local(d) + 6, 1), "'x.npy' is encrypted"),
        (lambda d: struct.pack_into("<H", d, first_local(d) + 6, 0x0800), r"local header \(offset 0\) has flags 0x0800, the central directory 0x0000"),
        (lambda d: struct.pack_into("<L", d, first_local(d) + 14, 0), r"local header \(offset 0\) gives CRC 0x00000000"),
        (lambda d: struct.pack_into("<QQ", d, first_local(d) + 30 + 5 + 4, 0, 0), "size 0, compressed size 0; the central directory"),
        (lambda d: struct.pack_into("<H", d, first_local(d) + 4, 64), "needs zip version 6.4"),
    ],
    ids=["encrypted", "flags", "crc", "zip64-sizes-zero", "local-version"],
)
def test_a_local_header_disagreeing_with_its_central_record_is_refused(
    tmp_path: Path, edit: Callable[[bytearray], None], message: str,
) -> None:
    path = damage(savez3(tmp_path / "a.npz"), edit)
    with pytest.raises(InputError, match=message) as err:
        ZipArchive(path)
    assert str(err.value).startswith(f"{path}: member 'x.npy'") and "\n" not in str(err.value)


def test_a_data_descriptor_flag_needs_its_descriptor(tmp_path: Path) -> None:
    def flag(d: bytearray) -> None:  # both headers say "CRC and sizes follow the data": nothing follows
        struct.pack_into("<H", d, central(d)["x.npy"] + 8, 0x08)
        struct.pack_into("<H", d, first_local(d) + 6, 0x08)

    with pytest.raises(InputError, match=r"'x\.npy': no data descriptor that agrees"):
        ZipArchive(damage(savez3(tmp_path / "a.npz"), flag))


def test_the_zip64_end_record_agrees_with_the_end_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # zipfile then writes a ZIP64 end record
    path = make_zip(tmp_path / "a.zip", PAYLOADS)
    monkeypatch.undo()
    good = path.read_bytes()
    zip64 = len(good) - 22 - 20 - 56
    for edit, message in [
        (lambda d: struct.pack_into("<L", d, len(d) - 10, 9), "disagree on the directory size"),  # end record's size
        (lambda d: struct.pack_into("<Q", d, zip64 + 48, 7), "disagree on the directory offset"),
        (lambda d: struct.pack_into("<Q", d, len(d) - 22 - 12, zip64 - 1), "locator at offset .* points to offset"),
        (lambda d: struct.pack_into("<L", d, zip64 + 16, 1), "disagree on the disk number"),
    ]:
        path.write_bytes(good)
        with pytest.raises(InputError, match=message):
            ZipArchive(damage(path, edit))


def test_real_files_pass_the_raw_checks(corpus: Path, tmp_path: Path) -> None:
    """Archives numpy, Keras 3 and PyTorch wrote, and the ones ckptsurgeon writes, are read as before."""
    for rel in ("npz/weights.npz", "npz/weights_compressed.npz", "npz/flax_cnn_variables.npz",
                "keras3/mlp.keras", "keras3/cnn.keras", "torch/smallcnn.pt"):
        with ZipArchive(corpus / rel) as archive, zipfile.ZipFile(corpus / rel) as zf:
            assert archive.names() == zf.namelist()
    with ZipArchive(savez3(tmp_path / "a.npz")) as archive:
        assert archive.names() == ["x.npy", "y.npy", "z.npy"]


def damaged_member_byte(src: Path, dst: Path, offset: int) -> Path:
    """A copy of a .keras archive with one byte of its STORED model.weights.h5 changed."""
    data = bytearray(src.read_bytes())
    with ZipArchive(src) as archive:
        m = archive["model.weights.h5"]
        assert m.stored
        data[m.data_offset + offset] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


def test_hdf5_never_opens_a_damaged_keras_weights_member(corpus: Path, tmp_path: Path) -> None:
    """One byte of HDF5 metadata changed in the target's weights member once hung (or crashed) ``transfer``
    inside HDF5: now every path checks the CRC before HDF5 sees a byte. Run in child processes."""
    good = tmp_path / "good.keras"
    good.write_bytes((corpus / "keras3/mlp.keras").read_bytes())
    bad = damaged_member_byte(good, tmp_path / "damaged.keras", 1937)
    out = tmp_path / "o.keras"
    cases = [
        ["transfer", good, bad, "-o", out], ["transfer", bad, good, "-o", out], ["inspect", bad],
        ["diff", good, bad], ["verify", bad], ["convert", bad, "-o", tmp_path / "o.safetensors"],
        ["rename", bad, "--strip-prefix", "layers/", "-o", out],
    ]
    for argv, result in zip(cases, run_isolated(cases, seconds_per_case=20), strict=True):
        assert result.code == 3, (argv, result)
        assert result.line == f"ckpt: error: {bad}: member 'model.weights.h5': CRC mismatch (the archive is damaged)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.keras", "good.keras"]
