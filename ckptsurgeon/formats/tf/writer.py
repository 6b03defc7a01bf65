"""Writing TensorFlow tensor bundles: ``PREFIX.index`` and one data shard, ``PREFIX.data-00000-of-00001``.

Tensors are streamed into the data shard in the order given, each one's CRC-32C computed as its
bytes go by; the index is written last, as TensorFlow's table builder lays it out: entries sorted
by key in blocks of about 4 KiB with a restart point every 16 keys, each block followed by its
type byte and masked CRC-32C, then an empty metaindex block, the index block (one handle per data
block, keyed by the block's last key) and the 48-byte footer. The key ``""`` holds the
``BundleHeaderProto`` (one shard, little-endian, version 1); every tensor's
``BundleEntryProto`` holds its dtype, shape, offset, size and masked CRC-32C.

Written ``like`` a TensorFlow checkpoint (a transfer into a TF target), every entry of the target
that is not a written tensor (its ``_CHECKPOINTABLE_OBJECT_GRAPH``, string variables) is copied
byte for byte with its checksum, so ``tf.train.Checkpoint(...).restore`` finds the target's object
graph and restores its objects with the written values. A sliced target tensor is written whole.
Metadata, which a bundle has no place for, is one string scalar under the key
``_CKPTSURGEON_METADATA`` (compact JSON), written only when there is some; TensorFlow reads it as a
string tensor and ``Checkpoint.restore`` ignores it. Both files appear together or not at all
(:class:`~ckptsurgeon.atomic.AtomicFiles`, the index last).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...atomic import AtomicFiles
from ...errors import OutputError
from ...tensors import TensorSpec
from .. import base
from .._protobuf import FIXED32, VARINT, key, length_delimited, varint
from ._crc32c import crc32c, mask
from .reader import DT_STRING, DTYPES_BY_ENUM, METADATA_ENTRY, STRING_ENTRIES, Reader
from .sstable import MAGIC

ENUM_OF = {code: enum for enum, code in DTYPES_BY_ENUM.items()}
BLOCK_BYTES = 4096
RESTART_INTERVAL = 16


def prefix_of(path: str | Path) -> Path:
    """The bundle's prefix: the path given, less a ``.index`` suffix."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".index"))


def entry_proto(enum: int, shape: Iterable[int], offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(length_delimited(2, key(1, VARINT) + varint(d)) for d in shape)
    return (key(1, VARINT) + varint(enum) + length_delimited(2, dims) + key(4, VARINT) + varint(offset)
            + key(5, VARINT) + varint(size) + key(6, FIXED32) + struct.pack("<I", crc))


def string_scalar(text: str) -> tuple[bytes, int]:
    """A DT_STRING scalar's stored bytes (length varint, masked CRC-32C of the length, the bytes) and its
    entry checksum, as TensorFlow writes one."""
    raw = text.encode("utf-8")
    length = crc32c((len(raw) & 0xFFFFFFFF).to_bytes(4, "little"))
    checksum = struct.pack("<I", mask(length))
    return varint(len(raw)) + checksum + raw, mask(crc32c(raw, crc32c(checksum, length)))


def header_proto() -> bytes:
    """``BundleHeaderProto``: one shard, little-endian (the default), ``version {producer: 1}``."""
    return key(1, VARINT) + varint(1) + length_delimited(3, key(1, VARINT) + varint(1))


def _block(items: list[tuple[bytes, bytes]]) -> bytes:
    out, restarts, last = bytearray(), [], b""
    for i, (k, v) in enumerate(items):
        shared = 0
        if i % RESTART_INTERVAL == 0:
            restarts.append(len(out))
        else:
            limit = min(len(k), len(last))
            while shared < limit and k[shared] == last[shared]:
                shared += 1
        out += varint(shared) + varint(len(k) - shared) + varint(len(v)) + k[shared:] + v
        last = k
    if not restarts:
        restarts.append(0)
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def table(items: list[tuple[bytes, bytes]]) -> bytes:
    """An SSTable of ``items`` (sorted by key), as TensorFlow's table builder writes one, uncompressed."""
    out = bytearray()
    index: list[tuple[bytes, bytes]] = []

    def emit(contents: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(contents))
        out.extend(contents + b"\x00" + struct.pack("<I", mask(crc32c(contents + b"\x00"))))
        return handle

    pending: list[tuple[bytes, bytes]] = []
    size = 0
    for k, v in items:
        pending.append((k, v))
        size += len(k) + len(v) + 12
        if size >= BLOCK_BYTES:
            index.append((pending[-1][0], emit(_block(pending))))
            pending, size = [], 0
    if pending:
        index.append((pending[-1][0], emit(_block(pending))))
    meta = emit(_block([]))
    handle = emit(_block(index))
    footer = (meta + handle).ljust(40, b"\x00") + struct.pack("<Q", MAGIC)
    return bytes(out + footer)


class Writer(base.PieceWriter):
    """Streams a TensorFlow bundle (module docstring); ``path`` is its prefix (or its ``.index``)."""

    format = "tf"
    caps = base.WriterCaps(streams_chunks=True, like=("tf",), commits=True, dtypes=frozenset(ENUM_OF))

    def __init__(self, path: str | Path, *, metadata: Mapping[str, str] | None = None, like: Any = None) -> None:
        super().__init__(prefix_of(path), metadata=metadata, like=like)
        self.index_path = self.path.with_name(self.path.name + ".index")
        self.data_path = self.path.with_name(self.path.name + ".data-00000-of-00001")
        self._files = AtomicFiles(name=self.index_path)
        self._fd: int | None = None
        self._position = 0
        self._entries: dict[bytes, bytes] = {}

    @classmethod
    def destination(cls, out: str | Path) -> Path:
        return prefix_of(out)

    def _begin(self) -> None:
        for spec in self.specs:
            if spec.dtype not in ENUM_OF:
                raise OutputError(self.path, f"tensor {spec.name!r}: dtype {spec.dtype} has no TensorFlow equivalent")
        self._fd = os.open(self._files.temp(self.data_path), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                           | getattr(os, "O_CLOEXEC", 0), 0o644)

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data).cast("B")
        while len(view):
            n = os.write(self._fd, view)
            view = view[n:]
            self._position += n

    def _stream(self, spec: TensorSpec, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        start, crc = self._position, 0
        for piece in pieces:
            crc = crc32c(piece, crc)
            self._emit(piece)
        self._entries[spec.name.encode("utf-8")] = entry_proto(ENUM_OF[spec.dtype], spec.shape, start,
                                                               self._position - start, mask(crc))

    def _carried(self) -> None:
        """The like-file's entries that are not written tensors (its object graph, string variables), as they are."""
        like = self.like
        if not isinstance(like, Reader):
            return
        for name, entry in like.entries.items():
            raw = name.encode("utf-8")
            if raw in self._entries or entry.slices or name == METADATA_ENTRY:
                continue
            if name in like:
                continue  # a tensor of the target the output does not hold (renamed or left out)
            data = like.entry_bytes(name)
            start = self._position
            self._emit(data)
            self._entries[raw] = entry_proto(entry.dtype, entry.shape, start, len(data), entry.crc or 0)

    def _metadata(self) -> None:
        import json

        metadata = {k: v for k, v in self.metadata.items() if k != STRING_ENTRIES}  # the reader's own note
        if not metadata:
            return
        data, crc = string_scalar(json.dumps({"ckptsurgeon": 1, "metadata": metadata}, ensure_ascii=False,
                                             separators=(",", ":")))
        start = self._position
        self._emit(data)
        self._entries[METADATA_ENTRY.encode()] = entry_proto(DT_STRING, (), start, len(data), crc)

    def _finish(self) -> None:
        self._carried()
        self._metadata()
        fd, self._fd = self._fd, None
        assert fd is not None
        os.close(fd)
        items = [(b"", header_proto()), *sorted(self._entries.items())]
        with open(self._files.temp(self.index_path), "xb") as f:
            f.write(table(items))
        self._files.commit()

    def abort(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self._files.discard()
        super().abort()


__all__ = ["Writer", "entry_proto", "header_proto", "prefix_of", "table"]
