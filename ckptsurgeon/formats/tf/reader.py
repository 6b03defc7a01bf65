"""Reading TensorFlow tensor bundles without TensorFlow.

The ``.index`` table (:mod:`.sstable`, every block checked) maps each key to a protobuf:

- key ``""``: ``BundleHeaderProto`` (``num_shards`` = 1, ``endianness`` = 2, ``version`` = 3);
- every other key: ``BundleEntryProto`` (``dtype`` = 1, ``shape`` = 2, ``shard_id`` = 3,
  ``offset`` = 4, ``size`` = 5, ``crc32c`` = 6 (fixed32, masked CRC-32C of the bytes),
  ``slices`` = 7).

Numeric tensors are listed under their keys exactly as stored, in key order; their bytes lie at
``offset`` in ``PREFIX.data-{shard_id:05d}-of-{num_shards:05d}``, checked against the shard's size
when opened and against the entry's CRC-32C on first use (a byte-range copy checks it beside the
copy, :meth:`Reader.checks_beside`). ``DT_STRING`` entries (the ``_CHECKPOINTABLE_OBJECT_GRAPH``
of an object-based checkpoint, string variables) are not tensors: their names are listed in the
metadata ``tf.string_entries``; ckptsurgeon's own metadata entry (:data:`METADATA_ENTRY`) is read
back as metadata. A **sliced** tensor (its entry holds ``slices``, its pieces are
entries under binary keys built from its name and each slice, :func:`slice_key`) is reassembled in
memory when read; the pieces must tile it exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...files import check_input, open_input, open_input_fd
from ...tensors import DTYPES, default_layer, make_info
from .. import base
from .._io import CHECKSUM_BYTES, Beside, checking_beside, drop_pages
from .._protobuf import FIXED32, LEN, VARINT, WireError, as_int64, fields, read_varint
from . import pointer_like
from ._crc32c import crc32c, mask, unmask
from .sstable import TableError, read_table

#: TensorFlow's DataType enum -> dtype code (DT_STRING = 7 is listed apart)
DTYPES_BY_ENUM = {1: "F32", 2: "F64", 3: "I32", 4: "U8", 5: "I16", 6: "I8", 9: "I64", 10: "BOOL", 14: "BF16",
                  17: "U16", 19: "F16", 22: "U32", 23: "U64"}
DT_STRING = 7
MAX_INDEX_BYTES = 256 << 20
MAX_STRING_CHECK = 64 << 20  # string entries up to this size are checked when the bundle is opened
MAX_DIMS = 64
MAX_SLICES = 4096  # slices of one tensor (TensorFlow's partitioners make a few to hundreds)
STRING_ENTRIES = "tf.string_entries"
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
ATTRIBUTE = "/.ATTRIBUTES/VARIABLE_VALUE"  # what --tf-names short leaves off an object-based key
METADATA_ENTRY = "_CKPTSURGEON_METADATA"  # ckptsurgeon's metadata, a string scalar of JSON (see the writer)
_POINTER_LINE = re.compile(rb'^\s*model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"\s*$', re.M)


@dataclass(frozen=True)
class Entry:
    """A ``BundleEntryProto``: dtype enum, shape, where the bytes are, their masked CRC-32C, slices."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int | None
    slices: tuple[tuple[tuple[int, int | None], ...], ...]  # per slice, per dim: (start, length or None: all)


@dataclass(frozen=True)
class Piece:
    """Bytes of a tensor in a shard, and (for a slice) where they go: per dim (start, length)."""

    shard: int
    offset: int
    size: int
    crc: int | None
    extent: tuple[tuple[int, int], ...] | None


# --- the names of slices -------------------------------------------------------------------------
_HEADER_BITS = [(0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0), (0xFE, 0), (0xFF, 0),
                (0xFF, 0x80), (0xFF, 0xC0)]


def _num_increasing(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(raw)]) + raw


def _signed_num_increasing(value: int) -> bytes:
    x = ~value if value < 0 else value
    n = next(n for n in range(1, 11) if n == 10 or x < 1 << (7 * n - 1))
    out = bytearray(value.to_bytes(10, "big", signed=True)[10 - n :])
    first, second = _HEADER_BITS[n]
    out[0] ^= first
    if n > 1:
        out[1] ^= second
    return bytes(out)


def slice_key(name: str, extent: tuple[tuple[int, int | None], ...]) -> bytes:
    """The table key of one slice of tensor ``name`` (TensorFlow's ``EncodeTensorNameSlice``, OrderedCode)."""
    key = _num_increasing(0) + _escape(name.encode("utf-8")) + b"\x00\x01" + _num_increasing(len(extent))
    for start, length in extent:
        key += _signed_num_increasing(start) + _signed_num_increasing(-1 if length is None else length)
    return key


def _escape(raw: bytes) -> bytes:
    return b"".join(b"\x00\xff" if b == 0 else b"\xff\x00" if b == 0xFF else bytes([b]) for b in raw)


# --- parsing -------------------------------------------------------------------------------------
def _message(value: bytes, what: str) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    try:
        yield from fields(value, 0, len(value))
    except WireError as exc:
        raise TableError(f"{what}: {exc}") from None


def _entry(value: bytes, what: str) -> Entry:
    dtype = shard = offset = size = 0
    crc: int | None = None
    shape: list[int] = []
    slices: list[tuple[tuple[int, int | None], ...]] = []
    for number, wire, item in _message(value, what):
        if number == 1 and wire == VARINT:
            dtype = int(item)  # type: ignore[arg-type]
        elif number == 2 and wire == LEN:
            assert isinstance(item, tuple)
            for n, w, dim in _message(value[item[0] : item[1]], what):
                if n == 2 and w == LEN:
                    assert isinstance(dim, tuple)
                    size_of = [as_int64(int(v)) for k, t, v in _message(value[item[0] : item[1]][dim[0] : dim[1]], what)  # type: ignore[arg-type]
                               if k == 1 and t == VARINT]
                    shape.append(size_of[-1] if size_of else 0)
                elif n == 3 and w == VARINT and dim:
                    raise TableError(f"{what}: a shape of unknown rank")
                if len(shape) > MAX_DIMS:
                    raise TableError(f"{what}: more than {MAX_DIMS} dims")
        elif number == 3 and wire == VARINT:
            shard = int(item)  # type: ignore[arg-type]
        elif number == 4 and wire == VARINT:
            offset = as_int64(int(item))  # type: ignore[arg-type]
        elif number == 5 and wire == VARINT:
            size = as_int64(int(item))  # type: ignore[arg-type]
        elif number == 6 and wire == FIXED32:
            crc = int(item)  # type: ignore[arg-type]
        elif number == 7 and wire == LEN:
            assert isinstance(item, tuple)
            extent: list[tuple[int, int | None]] = []
            for n, w, ext in _message(value[item[0] : item[1]], what):
                if n == 1 and w == LEN:
                    assert isinstance(ext, tuple)
                    start, length = 0, None
                    for k, t, v in _message(value[item[0] : item[1]][ext[0] : ext[1]], what):
                        if k == 1 and t == VARINT:
                            start = as_int64(int(v))  # type: ignore[arg-type]
                        elif k == 2 and t == VARINT:
                            length = as_int64(int(v))  # type: ignore[arg-type]
                    extent.append((start, length))
            slices.append(tuple(extent))
    if any(d < 0 for d in shape) or offset < 0 or size < 0:
        raise TableError(f"{what}: a negative dim, offset or size")
    return Entry(dtype, tuple(shape), shard, offset, size, crc, tuple(slices))


def _header(value: bytes) -> tuple[int, int]:
    shards, endianness = 1, 0
    for number, wire, item in _message(value, "the bundle header"):
        if number == 1 and wire == VARINT:
            shards = int(item)  # type: ignore[arg-type]
        elif number == 2 and wire == VARINT:
            endianness = int(item)  # type: ignore[arg-type]
    return shards, endianness


class Reader(base.Reader):
    """A TensorFlow checkpoint: the index parsed when opened, shard bytes on demand (module docstring).

    ``path`` is the ``.index`` file and ``prefix`` the checkpoint's prefix (``…/model.ckpt-2``);
    ``files`` are the index and the data shards (and the ``checkpoint`` file it was named by).
    ``prefix_from`` names the ``checkpoint`` file the prefix was taken from, if it was.
    """

    format = "tf"
    caps = base.ReaderCaps(byte_ranges=True, release=True)

    def __init__(self, path: Path, options: base.OpenOptions | None = None) -> None:
        super().__init__(Path(path), options)
        self.prefix_from: Path | None = None
        self.index_path = Path(path)
        self.shard_paths: list[Path] = []
        self.entries: dict[str, Entry] = {}
        self._maps: dict[int, mmap.mmap] = {}
        self._fds: dict[int, int] = {}
        self._verified: set[tuple[int, int]] = set()
        self._beside: Beside | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- opening ----------------------------------------------------------------------------------
    def _open(self) -> None:
        check_input(self.path)
        from .._probe import Probe

        if pointer_like(Probe(self.path)):
            self.prefix_from = self.path
            self.index_path = self._from_pointer(self.path)
        prefix = self.index_path.with_name(self.index_path.name.removesuffix(".index"))
        self.prefix = prefix
        self.path = self.index_path
        with open_input(self.index_path) as f:
            size = os.fstat(f.fileno()).st_size  # read(n) would allocate n bytes first, whatever the file holds
            if size > MAX_INDEX_BYTES:
                raise InputError(self.index_path, f"an index of more than {MAX_INDEX_BYTES} bytes; refusing it")
            data = f.read(size + 1)
        if len(data) > MAX_INDEX_BYTES:
            raise InputError(self.index_path, f"an index of more than {MAX_INDEX_BYTES} bytes; refusing it")
        try:
            table = dict(read_table(data))
            if b"" not in table:
                raise TableError("no bundle header (the entry under the empty key)")
            shards, endianness = _header(table.pop(b""))
            if endianness != 0:
                raise InputError(self.index_path, "a big-endian tensor bundle; ckptsurgeon reads little-endian ones")
            if not 1 <= shards <= 100_000:
                raise TableError(f"the header declares {shards} shards")
            self.shard_paths = [prefix.with_name(f"{prefix.name}.data-{k:05d}-of-{shards:05d}") for k in range(shards)]
            self._list(table)
        except TableError as exc:
            raise InputError(self.index_path, f"not a readable TensorFlow index: {exc}") from None
        if self.options.tf_names == "short":
            short = {t.name: t.name.removesuffix(ATTRIBUTE) for t in self.tensors if t.name.endswith(ATTRIBUTE)}
            stored = {t.name for t in self.tensors}
            if len(set(short.values())) == len(short) and not set(short.values()) & stored:
                self.match_names = short
        kind = "object-based" if OBJECT_GRAPH in self.entries else "name-based"
        taken = f"; {self.prefix_from.name} names {prefix.name}" if self.prefix_from else ""
        self.layout = f"{kind}, {shards} shard{'s' if shards != 1 else ''}{taken}"

    def _from_pointer(self, pointer: Path) -> Path:
        text = pointer.read_bytes()[:1 << 20]
        found = _POINTER_LINE.search(text)
        if found is None:
            raise InputError(pointer, "a checkpoint file without a model_checkpoint_path line")
        name = found.group(1).decode("utf-8", "replace")
        target = Path(name) if Path(name).is_absolute() else pointer.parent / name
        if ".." in Path(name).parts or (Path(name).is_absolute() and target.parent != pointer.parent):
            raise InputError(pointer, f"names {name!r}, outside its directory; refusing it")
        index = target.with_name(target.name + ".index")
        if not index.is_file():
            raise InputError(pointer, f"names the prefix {name!r}, whose .index does not exist")
        return index

    def _list(self, table: dict[bytes, bytes]) -> None:
        strings: list[str] = []
        sizes: dict[int, int] = {}
        pieces_of: dict[str, list[Piece]] = {}
        stored: list[tuple[int, int, int, str]] = []  # (shard, offset, size, name) of every entry's bytes
        for raw, value in table.items():
            if raw.startswith(b"\x00"):
                continue  # a slice: read through its tensor's entry
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TableError(f"the key {raw[:40]!r} is not UTF-8") from None
            entry = _entry(value, f"entry {name!r}")
            self.entries[name] = entry
            if entry.dtype == DT_STRING:
                piece = Piece(entry.shard, entry.offset, entry.size, entry.crc, None)
                self._check_range(name, piece, sizes)
                stored.append((piece.shard, piece.offset, piece.size, name))
                self._check_strings(name, entry, piece)
                if name == METADATA_ENTRY:
                    self.metadata.update(self._stored_metadata(entry))
                else:
                    strings.append(name)
                continue
            code = DTYPES_BY_ENUM.get(entry.dtype)
            if code is None:
                raise InputError(self.index_path, f"tensor {name!r} has TensorFlow dtype {entry.dtype}, which "
                                 "ckptsurgeon does not read")
            if math.prod(entry.shape) * DTYPES[code].itemsize >= 1 << 62:
                raise InputError(self.index_path, f"tensor {name!r}: shape {list(entry.shape)} overflows")
            nbytes = math.prod(entry.shape) * DTYPES[code].itemsize
            if entry.slices:
                pieces = [self._slice(name, entry, extent, table, code) for extent in entry.slices]
                _check_tiling(self.index_path, name, entry.shape, [p.extent for p in pieces if p.extent is not None])
            else:
                if entry.size != nbytes:
                    raise InputError(self.index_path, f"tensor {name!r}: {entry.size} bytes stored; shape "
                                     f"{list(entry.shape)} of {code} needs {nbytes}")
                pieces = [Piece(entry.shard, entry.offset, entry.size, entry.crc, None)]
            for piece in pieces:
                self._check_range(name, piece, sizes)
                stored.append((piece.shard, piece.offset, piece.size, name))
            pieces_of[name] = pieces
            layer = default_layer(name.removesuffix(ATTRIBUTE))  # an object's attribute path, not ".ATTRIBUTES"
            self.tensors.append(make_info(name, entry.shape, code, layer, pieces))
        if strings:
            self.metadata[STRING_ENTRIES] = json.dumps(strings)
        self._check_disjoint(stored)

    def _check_disjoint(self, stored: list[tuple[int, int, int, str]]) -> None:
        """No two entries (or slices) share bytes: a bundle stores each once, and bytes read under several
        names would let a small file declare tensors far larger than itself."""
        last: tuple[int, int, int, str] | None = None
        for here in sorted(r for r in stored if r[2]):
            if last is not None and last[0] == here[0] and last[1] + last[2] > here[1]:
                what = f"tensor {here[3]!r}: two of its slices" if here[3] == last[3] else \
                    f"tensors {last[3]!r} and {here[3]!r}"
                raise InputError(self.shard_paths[here[0]], f"{what} share the bytes at offset {here[1]} (a bundle "
                                 "stores each tensor's bytes once)")
            last = here

    def _slice(self, name: str, entry: Entry, extent: tuple[tuple[int, int | None], ...], table: dict[bytes, bytes],
               code: str) -> Piece:
        if len(extent) != len(entry.shape):
            raise InputError(self.index_path, f"tensor {name!r}: a slice of {len(extent)} dims of a {len(entry.shape)}-dim tensor")
        full = tuple((s, d - s if n is None else n) for (s, n), d in zip(extent, entry.shape, strict=True))
        if any(s < 0 or n < 0 or s + n > d for (s, n), d in zip(full, entry.shape, strict=True)):
            raise InputError(self.index_path, f"tensor {name!r}: slice {list(full)} lies outside shape {list(entry.shape)}")
        key = slice_key(name, extent)
        if key not in table:
            raise InputError(self.index_path, f"tensor {name!r}: its slice {list(full)} has no entry")
        piece = _entry(table[key], f"slice {list(full)} of {name!r}")
        nbytes = math.prod(n for _, n in full) * DTYPES[code].itemsize
        if piece.size != nbytes or piece.dtype != entry.dtype:
            raise InputError(self.index_path, f"tensor {name!r}: slice {list(full)} holds {piece.size} bytes of dtype "
                             f"{piece.dtype}; it needs {nbytes} of {entry.dtype}")
        return Piece(piece.shard, piece.offset, piece.size, piece.crc, full)

    def _stored_metadata(self, entry: Entry) -> dict[str, str]:
        data = self.entry_bytes(METADATA_ENTRY)
        try:
            length, pos = read_varint(data, 0, len(data))
            doc = json.loads(data[pos + 4 : pos + 4 + length].decode("utf-8"))
        except (WireError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(self.shard_paths[entry.shard], f"{METADATA_ENTRY} is not UTF-8 JSON ({exc})") from None
        meta = doc.get("metadata") if isinstance(doc, dict) and doc.get("ckptsurgeon") == 1 else None
        if entry.shape or not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                               for k, v in meta.items()):
            raise InputError(self.shard_paths[entry.shard], f'{METADATA_ENTRY} is not {{"ckptsurgeon": 1, '
                             '"metadata": {text: text}}')
        return meta

    def _check_strings(self, name: str, entry: Entry, piece: Piece) -> None:
        """A string entry's layout and CRC-32C, as TensorFlow writes them: each element's length as a varint,
        a masked CRC-32C of the lengths (each as its low 4 bytes, little-endian), then the bytes; the
        entry's CRC-32C runs over those 4-byte lengths, the length checksum and the bytes. Entries over
        :data:`MAX_STRING_CHECK` bytes are only range-checked."""
        if piece.size > MAX_STRING_CHECK:
            return
        data = bytes(self._map(piece.shard)[piece.offset : piece.offset + piece.size])
        shard = self.shard_paths[piece.shard]
        count, pos, total, crc, run = math.prod(entry.shape), 0, 0, 0, bytearray()
        if count > len(data):  # each length takes a byte at least
            raise InputError(shard, f"string entry {name!r}: {count} strings in {len(data)} bytes cannot be (the "
                             "data is damaged)")
        try:
            for _ in range(count):  # the lengths' CRC taken in runs: no list of them is kept
                length, pos = read_varint(data, pos, len(data))
                total += length
                run += (length & 0xFFFFFFFF).to_bytes(4, "little")
                if len(run) >= 1 << 16:
                    crc = crc32c(run, crc)
                    run.clear()
        except WireError as exc:
            raise InputError(shard, f"string entry {name!r}: its lengths are malformed ({exc})") from None
        crc = crc32c(run, crc)
        checksum = data[pos : pos + 4]
        if len(checksum) != 4 or int.from_bytes(checksum, "little") != mask(crc) or pos + 4 + total != len(data):
            raise InputError(shard, f"string entry {name!r}: its lengths do not match their checksum or its size "
                             "(the data is damaged)")
        crc = crc32c(data[pos + 4 :], crc32c(checksum, crc))
        if entry.crc is not None and crc != unmask(entry.crc):
            raise InputError(shard, f"string entry {name!r}: CRC-32C mismatch (the data is damaged)")

    def _check_range(self, name: str, piece: Piece, sizes: dict[int, int]) -> None:
        if piece.shard >= len(self.shard_paths):
            raise InputError(self.index_path, f"tensor {name!r} lies in shard {piece.shard}; the bundle has "
                             f"{len(self.shard_paths)}")
        if piece.shard not in sizes:
            shard = self.shard_paths[piece.shard]
            if not shard.is_file():
                raise InputError(self.index_path, f"its data shard {shard.name} does not exist")
            sizes[piece.shard] = shard.stat().st_size
        if piece.offset + piece.size > sizes[piece.shard]:
            raise InputError(self.shard_paths[piece.shard], f"tensor {name!r} ends at byte {piece.offset + piece.size}; "
                             f"the shard holds {sizes[piece.shard]} (truncated?)")

    @property
    def files(self) -> list[Path]:
        pointer = [self.prefix_from] if self.prefix_from else []
        return [*pointer, self.index_path, *self.shard_paths]

    # --- data -------------------------------------------------------------------------------------
    def _map(self, shard: int) -> mmap.mmap:
        found = self._maps.get(shard)
        if found is None:
            with open_input(self.shard_paths[shard]) as f:
                found = self._maps[shard] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) \
                    if f.seek(0, 2) else mmap.mmap(-1, 1)
        return found

    def _pieces(self, name: str) -> list[Piece]:
        pieces = self[name].loc
        assert isinstance(pieces, list)
        return pieces

    def _verify(self, name: str, piece: Piece) -> None:
        """The piece's bytes against the entry's CRC-32C, once (InputError on a mismatch). Read in pieces of
        :data:`~.._io.CHECKSUM_BYTES` with ``pread``, so that no page of the shard stays mapped."""
        if piece.crc is None or (piece.shard, piece.offset) in self._verified:
            return
        fd = self._fds.get(piece.shard)
        if fd is None:
            fd = self._fds[piece.shard] = open_input_fd(self.shard_paths[piece.shard])
        crc, pos, end = 0, piece.offset, piece.offset + piece.size
        while pos < end:
            data = os.pread(fd, min(CHECKSUM_BYTES, end - pos), pos)
            if not data:
                raise InputError(self.shard_paths[piece.shard], f"tensor {name!r}: the shard ends inside its bytes")
            crc = crc32c(data, crc)
            pos += len(data)
        if crc != unmask(piece.crc):
            raise InputError(self.shard_paths[piece.shard], f"tensor {name!r}: CRC-32C mismatch (the data is damaged)")
        self._verified.add((piece.shard, piece.offset))

    def read(self, name: str) -> np.ndarray:
        info = self[name]
        dtype = DTYPES[info.dtype].numpy
        pieces = self._pieces(name)
        for piece in pieces:
            self._verify(name, piece)
        if pieces[0].extent is None:
            piece = pieces[0]
            flat = np.frombuffer(self._map(piece.shard), dtype=np.uint8, count=piece.size, offset=piece.offset)
            return self._check_array(info, flat.view(dtype).reshape(info.shape))
        out = np.empty(info.shape, dtype=dtype)
        for piece in pieces:
            assert piece.extent is not None
            shape = tuple(n for _, n in piece.extent)
            raw = np.frombuffer(self._map(piece.shard), dtype=np.uint8, count=piece.size, offset=piece.offset)
            out[tuple(slice(s, s + n) for s, n in piece.extent)] = raw.view(dtype).reshape(shape)
        return self._check_array(info, out)

    def byte_range(self, name: str) -> tuple[Path, int, int] | None:
        pieces = self._pieces(name)
        if len(pieces) != 1 or pieces[0].extent is not None:
            return None
        piece = pieces[0]
        if self._beside is not None:
            self._beside.submit(f"{piece.shard}:{piece.offset}", lambda: self._verify(name, piece))
        else:
            self._verify(name, piece)
        return self.shard_paths[piece.shard], piece.offset, piece.size

    def entry_bytes(self, name: str) -> bytes:
        """The stored bytes of an unsliced entry (a string entry's too), as they are in its shard."""
        entry = self.entries[name]
        return bytes(self._map(entry.shard)[entry.offset : entry.offset + entry.size])

    def stored_ranges(self, name: str) -> list[tuple[Path, int, int]] | None:
        return [(self.shard_paths[p.shard], p.offset, p.size) for p in self._pieces(name)]

    def iter_bytes(self, name: str, chunk_bytes: int = base.CHUNK_BYTES) -> Iterator[memoryview]:
        pieces = self._pieces(name)
        if pieces[0].extent is not None:
            yield from super().iter_bytes(name, chunk_bytes)
            return
        piece = pieces[0]
        self._verify(name, piece)
        mapped = self._map(piece.shard)
        view = memoryview(mapped)
        for pos in range(piece.offset, piece.offset + piece.size, chunk_bytes):
            end = min(pos + chunk_bytes, piece.offset + piece.size)
            yield view[pos:end]
            drop_pages(mapped, pos, end)

    def checks_beside(self) -> contextlib.AbstractContextManager[None]:
        """CRC-32C of byte ranges handed out are checked on a worker thread beside the copy (see the base class)."""
        return checking_beside(self)

    def release(self, name: str) -> None:
        for piece in self._pieces(name):
            mapped = self._maps.get(piece.shard)
            if mapped is not None:
                drop_pages(mapped, piece.offset, piece.offset + piece.size)

    def close(self) -> None:
        beside, self._beside = self._beside, None
        if beside is not None:
            beside.stop()
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)
        maps, self._maps = self._maps, {}
        for mapped in maps.values():
            with contextlib.suppress(BufferError):
                mapped.close()


def _check_tiling(path: Path, name: str, shape: tuple[int, ...], extents: list[tuple[tuple[int, int], ...]]) -> None:
    """The slices cover the tensor exactly once: their volumes add up and no two overlap.

    Slices are sorted along the dim with the most distinct starts and each is compared only with
    those starting before it ends there (vectorized), so a tensor partitioned along one dim costs
    a sort; the number of slices is capped (:data:`MAX_SLICES`), which bounds the worst case."""
    if len(extents) > MAX_SLICES:
        raise InputError(path, f"tensor {name!r} is stored in {len(extents)} slices; ckptsurgeon reads at most "
                         f"{MAX_SLICES}")
    if sum(math.prod(n for _, n in e) for e in extents) != math.prod(shape):
        raise InputError(path, f"tensor {name!r}: its slices do not tile its shape {list(shape)}")
    boxes = [e for e in extents if all(n for _, n in e)]  # an empty slice overlaps nothing
    if len(boxes) < 2 or not shape:
        return
    starts = np.array([[s for s, _ in e] for e in boxes], dtype=np.int64)
    ends = starts + np.array([[n for _, n in e] for e in boxes], dtype=np.int64)
    axis = max(range(len(shape)), key=lambda k: len(np.unique(starts[:, k])))
    order = np.argsort(starts[:, axis], kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.searchsorted(starts[:, axis], ends[:, axis], side="left")  # i meets only j < reach[i] along axis
    for i in range(len(boxes) - 1):
        hi = int(reach[i])
        if hi <= i + 1:
            continue
        hit = _meets(starts[i], ends[i], starts[i + 1 : hi], ends[i + 1 : hi])
        if hit.any():
            a, b = boxes[int(order[i])], boxes[int(order[i + 1 + int(np.argmax(hit))])]
            raise InputError(path, f"tensor {name!r}: slices {list(a)} and {list(b)} overlap")


def _meets(start: np.ndarray, end: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which of the boxes ``starts``/``ends`` (one per row) overlap the box ``start``/``end``."""
    return np.all((start < ends) & (starts < end), axis=1)


__all__ = ["DTYPES_BY_ENUM", "DT_STRING", "METADATA_ENTRY", "STRING_ENTRIES", "Entry", "Reader", "slice_key"]
