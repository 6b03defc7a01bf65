"""Writing PyTorch checkpoints: the zip format of ``torch.save``, holding a flat state dict.

``torch.load(path, weights_only=True)`` returns an ``OrderedDict`` mapping each tensor's name to a
contiguous CPU tensor of its dtype and shape, in the order written; ``load_state_dict`` takes it
as it is. The archive is laid out as ``torch.save`` (torch 2.13) lays out the same dict::

    PREFIX/data.pkl                  the pickle (protocol 2; see _pickle_out), written first
    PREFIX/.format_version           b"1"
    PREFIX/.storage_alignment        b"64"
    PREFIX/byteorder                 b"little"
    PREFIX/extra/ckptsurgeon.json    the metadata, only when there is some (see below)
    PREFIX/data/0 ... data/N-1       each tensor's bytes, its own storage, in the declared order
    PREFIX/version                   b"3\\n"
    PREFIX/.data/serialization_id    40 digits

``PREFIX`` is the output file's name without its last extension, as torch names it
(``model.pt`` -> ``model/``; ``pytorch_model-00001-of-00002.bin`` -> ``pytorch_model-00001-of-00002/``),
or ``archive`` when that would be empty, not ASCII, or not a plain member name. The name is
taken from the destination, not from the temporary file the output is written to first.

Every member is STORED, its data starting at a multiple of 64 bytes: the local header carries
torch's padding extra field (id ``FB``, padded with ``Z``). As torch's zip writer (miniz) does,
local headers hold zero for CRC and sizes, with flag bit 3 set, and a data descriptor follows
each non-empty member's data (an empty member has neither); names are flagged UTF-8; every
timestamp and attribute is zero. So the same tensors and metadata give the same bytes, and
without metadata the file is byte for byte what ``torch.save`` writes for that dict but for one
member: torch's ``.data/serialization_id`` is partly random, this one is derived from the content
(sha256 of ``data.pkl`` and every member's name, CRC-32 and size), so outputs are reproducible.
The archive ends, as torch's do, with a ZIP64 end record and its locator before the classic end
record (whose fields hold the "see ZIP64" marker only where a value does not fit). Other ZIP64
fields are written where needed: a member of 4 GiB or more (in both its headers, and 8-byte
sizes in its data descriptor) and a member starting past 4 GiB (in its central record).

Tensor bytes are streamed straight into their member: a member's size is known from its shape
and dtype before its first byte, and its CRC-32 is computed as the bytes go by, so memory stays
bounded whatever the tensor's size (``write_chunks`` keeps no piece; ``write_range`` reads a
source file range through one reused buffer).

Metadata (``dict[str, str]``) has no place in a state dict that torch would not hand to
``load_state_dict``, so it goes into a member torch never reads:
``PREFIX/extra/ckptsurgeon.json`` = ``{"ckptsurgeon": 1, "metadata": {...}}`` (compact UTF-8
JSON). ``torch.load`` ignores it; written only when there is metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...atomic import TEMP_MARK, is_temp_name
from ...errors import InputError, OutputError
from ...tensors import TensorSpec
from .. import base
from .._io import CHECKSUM_BYTES, CHUNK_BYTES, SourceFds, Writeback, read_into
from .._zip import DESCRIPTOR_SIGNATURE, LOCAL_HEADER, LOCAL_SIGNATURE, ZipMember, name_problem
from .._zipdir import CENTRAL, CENTRAL_SIGNATURE, END, ZIP64_END, ZIP64_END_SIGNATURE, ZIP64_LOCATOR
from .._zipdir import ZIP64_LOCATOR_SIGNATURE as LOCATOR_SIGNATURE
from ..safetensors import sharded
from . import METADATA_MEMBER
from ._pickle_out import STORAGE_TYPES, state_dict_pickle
from .update import Update
from .update import plan as plan_update

if TYPE_CHECKING:
    import numpy as np

ALIGNMENT = 64
PAD_EXTRA_ID = 0x4246  # b"FB": torch's padding field
PAD_BYTE = b"Z"
FLAG_DESCRIPTOR = 0x0008
FLAG_UTF8 = 0x0800
ZIP64_EXTRA_ID = 0x0001
ZIP64_VERSION = 45  # "version needed to extract" of a member with ZIP64 fields
ZIP64_MADE_BY = 0x031E  # "version made by" of torch's ZIP64 end record: Unix, zip 3.0
U32_MAX = 0xFFFFFFFF
U16_MAX = 0xFFFF
DEFAULT_ARCHIVE = "archive"
# (member, content) torch writes before the storages and after them
HEAD_RECORDS = ((".format_version", b"1"), (".storage_alignment", str(ALIGNMENT).encode()), ("byteorder", b"little"))
VERSION_RECORD = ("version", b"3\n")
SERIALIZATION_ID = ".data/serialization_id"


def archive_name(path: str | Path) -> str:
    """The member prefix torch gives a file saved at ``path``: its name without the last extension.

    For one of ckptsurgeon's temporary files (:mod:`ckptsurgeon.atomic`) the name is the
    destination's. ``archive`` when the result is empty, not ASCII (torch then saves through a
    stream, which it names so) or not a plain member name.
    """
    name = Path(path).name
    if is_temp_name(name) and name.startswith("."):
        name = name[1 : name.rindex(TEMP_MARK)]
    stem = name[: name.rindex(".")] if "." in name else name
    if not stem or not stem.isascii() or not stem.isprintable() or name_problem(stem + "/data.pkl") is not None:
        return DEFAULT_ARCHIVE
    return stem


def metadata_json(metadata: Mapping[str, str]) -> bytes:
    return json.dumps({"ckptsurgeon": 1, "metadata": dict(metadata)}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


class _Member:
    """One member being written or written: what its central directory record needs."""

    __slots__ = ("crc", "name", "offset", "size", "written")

    def __init__(self, name: bytes, offset: int, size: int) -> None:
        self.name, self.offset, self.size = name, offset, size
        self.crc = 0
        self.written = 0


class Writer(base.Writer):
    """Streams a PyTorch zip checkpoint: a flat state dict, one storage per tensor (module docstring).

    ``archive``: the member prefix (default: torch's, from the output's name; :func:`archive_name`).
    """

    format = "torch"
    caps = base.WriterCaps(byte_ranges=True, streams_chunks=True, like=("torch",), updates=True)
    #: sizes and offsets from which ZIP64 fields are written (lowered in tests to exercise them)
    zip64_limit: int = U32_MAX

    def __init__(self, path: str | Path, *, metadata: Mapping[str, str] | None = None, like: Any = None,
                 archive: str | None = None, update: bool = False) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        self.update = update
        self._carry: Update | None = None
        self._written_keys: set[str] = set()
        self.archive = archive if archive is not None else archive_name(self.path)
        self._fd: int | None = None
        self._position = 0
        self._members: list[_Member] = []
        self._current: _Member | None = None
        self._pickle = b""
        self._sources = SourceFds()
        self._buffer: bytearray | None = None
        self._writeback: Writeback | None = None

    # --- checks and the head of the archive --------------------------------------------------
    def _check(self) -> None:
        problem = name_problem(self.archive + "/data.pkl") if self.archive else "is empty"
        if problem is not None or "/" in self.archive:
            raise OutputError(self.path, f"the archive name {self.archive!r} cannot prefix zip members: it {problem or 'has a slash'}")
        for spec in self.specs:
            if spec.dtype not in STORAGE_TYPES:
                raise OutputError(self.path, f"tensor {spec.name!r}: dtype {spec.dtype} has no PyTorch equivalent")
            try:
                spec.name.encode("utf-8")
            except UnicodeEncodeError:
                raise OutputError(self.path, f"tensor name {spec.name!r} cannot be written as UTF-8") from None
        for key, value in self.metadata.items():
            if not (isinstance(key, str) and isinstance(value, str)):
                raise OutputError(self.path, "PyTorch checkpoint metadata must map strings to strings")
            try:
                (key + value).encode("utf-8")
            except UnicodeEncodeError:
                raise OutputError(self.path, f"metadata {key!r} cannot be written as UTF-8") from None

    def _begin(self) -> None:
        self._check()
        if self.update:
            self._carry, self.layout_fallback = plan_update(self.like, self.specs, self.origins)
        carry = self._carry
        if carry is not None:
            self._pickle = carry.pickle()
            self.read_back = carry.like.options  # the same pickle: the same options list the same tensors
            self.updated = True
            own = carry.like.container_metadata  # already in the pickle: not repeated in the metadata member
            self.metadata = {k: v for k, v in self.metadata.items() if own.get(k) != v}
        else:
            self._pickle = state_dict_pickle((spec, str(i)) for i, spec in enumerate(self.specs))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        self._writeback = Writeback(self._fd)
        self._record("data.pkl", self._pickle)
        if carry is not None:
            for name, member in carry.members(head=True):
                self._copy_member(name, member)
        else:
            for name, content in HEAD_RECORDS:
                self._record(name, content)
        if self.metadata:
            self._record(METADATA_MEMBER, metadata_json(self.metadata))

    # --- members -----------------------------------------------------------------------------
    def _zip64(self, size: int) -> bool:
        return size >= self.zip64_limit

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None and self._writeback is not None
        view = memoryview(data)
        while len(view):
            n = os.write(self._fd, view)
            view = view[n:]
            self._position += n
        self._writeback.written_up_to(self._position)

    def _open_member(self, name: str, size: int) -> None:
        """Write the local header of member ``ARCHIVE/name`` of ``size`` bytes, padded so its data starts aligned."""
        assert self._current is None
        raw = f"{self.archive}/{name}".encode()
        zip64 = self._zip64(size)
        extra = struct.pack("<HHQQ", ZIP64_EXTRA_ID, 16, size, size) if zip64 else b""
        pad = -(self._position + LOCAL_HEADER.size + len(raw) + len(extra)) % ALIGNMENT
        if pad < 4:  # the field's id and length take 4 bytes
            pad += ALIGNMENT
        extra += struct.pack("<HH", PAD_EXTRA_ID, pad - 4) + PAD_BYTE * (pad - 4)
        flags = FLAG_UTF8 | (FLAG_DESCRIPTOR if size else 0)
        shown = U32_MAX if zip64 else 0
        header = LOCAL_HEADER.pack(LOCAL_SIGNATURE, ZIP64_VERSION if zip64 else 0, flags, 0, 0, 0, 0, shown, shown,
                                   len(raw), len(extra))
        member = _Member(raw, self._position, size)
        self._emit(header + raw + extra)
        self._current = member

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        member = self._current
        assert member is not None
        view = base.byte_view(data) if not isinstance(data, bytes) else memoryview(data)
        if member.written + len(view) > member.size:  # the callers check sizes; this guards the archive
            raise AssertionError(f"member {member.name!r}: more than {member.size} bytes")
        member.crc = zlib.crc32(view, member.crc)
        member.written += len(view)
        self._emit(view)

    def _close_member(self) -> None:
        member, self._current = self._current, None
        assert member is not None and member.written == member.size
        if member.size:
            if self._zip64(member.size):
                self._emit(struct.pack("<4sLQQ", DESCRIPTOR_SIGNATURE, member.crc, member.size, member.size))
            else:
                self._emit(struct.pack("<4sLLL", DESCRIPTOR_SIGNATURE, member.crc, member.size, member.size))
        self._members.append(member)

    def _record(self, name: str, content: bytes | bytearray) -> None:
        self._open_member(name, len(content))
        self._feed(content)
        self._close_member()

    def _copy_member(self, name: str, member: ZipMember) -> None:
        """A member of the target's archive, copied as it is under ``name`` (CRC-checked as it is read)."""
        carry = self._carry
        assert carry is not None and carry.like.archive is not None
        self._open_member(name, member.size)
        for chunk in carry.like.archive.chunks(member, chunk_bytes=CHECKSUM_BYTES):
            self._feed(chunk)
        self._close_member()

    # --- tensors -----------------------------------------------------------------------------
    def _storage(self, spec: TensorSpec) -> str:
        if self._carry is not None:
            key = self._carry.streamed[spec.name]
            self._written_keys.add(key)
            return f"data/{key}"
        return f"data/{self._next - 1}"  # _take has counted the tensor being written

    def _held(self, name: str) -> bool:
        return self._carry is not None and name in self._carry.held

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        import numpy as np

        if self._carry is not None and spec.name in self._carry.held:
            self._carry.hold(spec.name, data)
            return
        self._open_member(self._storage(spec), spec.nbytes)
        flat = data.reshape(-1).view(np.uint8)
        for start in range(0, spec.nbytes, CHUNK_BYTES):
            self._feed(flat[start : start + CHUNK_BYTES].data)
        self._close_member()

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write the next tensor piece by piece, straight into its member (no piece is kept)."""
        if self._held(name):
            super().write_chunks(name, chunks)  # assembled, then held by _write
            return
        spec = self._take(name)
        self._open_member(self._storage(spec), spec.nbytes)
        for view in self._exact_pieces(spec, chunks):
            self._feed(view)
        self._close_member()

    def write_range(self, name: str, src: Path, offset: int, length: int) -> bool:
        """Copy the next tensor's bytes from a file range, through one reused buffer (its CRC-32 needs them)."""
        spec = self._peek(name)
        if self._held(name):
            return False  # held as values: the caller hands them over as pieces
        if length != spec.nbytes:
            raise InputError(src, f"tensor {name!r}: {length} bytes in the file, {spec.nbytes} declared")
        fd = self._sources.fd(src)
        self._take(name)
        if self._buffer is None:
            self._buffer = bytearray(CHECKSUM_BYTES)
        buffer = memoryview(self._buffer)
        self._open_member(self._storage(spec), length)
        done = 0
        while done < length:
            n = read_into(fd, buffer[: min(len(buffer), length - done)], offset + done)
            if n == 0:
                raise InputError(src, f"tensor {name!r}: the file ended {length - done} bytes early while copying")
            self._feed(buffer[:n])
            done += n
        self._close_member()
        return True

    # --- the end of the archive --------------------------------------------------------------
    def serialization_id(self) -> str:
        """40 digits derived from the content (torch's are partly random): ``data.pkl`` and every member's CRC and size."""
        h = hashlib.sha256(self._pickle)
        for m in self._members:
            h.update(struct.pack("<H", len(m.name)) + m.name + struct.pack("<LQ", m.crc, m.size))
        digest = h.digest()
        return f"{int.from_bytes(digest[:8], 'little'):020d}{int.from_bytes(digest[8:16], 'little'):020d}"

    def _central(self, m: _Member) -> bytes:
        big_size, big_offset = self._zip64(m.size), self._zip64(m.offset)
        fields = ([m.size, m.size] if big_size else []) + ([m.offset] if big_offset else [])
        extra = struct.pack(f"<HH{len(fields)}Q", ZIP64_EXTRA_ID, 8 * len(fields), *fields) if fields else b""
        needed = ZIP64_VERSION if fields else 0
        flags = FLAG_UTF8 | (FLAG_DESCRIPTOR if m.size else 0)
        size = U32_MAX if big_size else m.size
        return CENTRAL.pack(CENTRAL_SIGNATURE, 0, needed, flags, 0, 0, 0, m.crc, size, size, len(m.name), len(extra),
                            0, 0, 0, 0, U32_MAX if big_offset else m.offset) + m.name + extra

    def _finish(self) -> None:
        carry = self._carry
        if carry is None:
            self._record(*VERSION_RECORD)
        else:
            for key, member in carry.storages():
                if key in self._written_keys:
                    continue
                if key in carry.values:
                    self._record(f"data/{key}", carry.patched(key, self.path))
                else:
                    self._copy_member(f"data/{key}", member)
            for name, member in carry.members(head=False):
                self._copy_member(name, member)
            self.follows, self.notes = dict(carry.follows), list(carry.notes)
        self._record(SERIALIZATION_ID, self.serialization_id().encode("ascii"))
        start = self._position
        self._emit(b"".join(self._central(m) for m in self._members))
        size, count = self._position - start, len(self._members)
        record = self._position  # a ZIP64 end record always, as torch writes one
        self._emit(ZIP64_END.pack(ZIP64_END_SIGNATURE, ZIP64_END.size - 12, ZIP64_MADE_BY, ZIP64_VERSION, 0, 0,
                                  count, count, size, start))
        self._emit(ZIP64_LOCATOR.pack(LOCATOR_SIGNATURE, 0, record, 1))
        count = count if count < U16_MAX else U16_MAX
        size, start = (U32_MAX if self._zip64(v) else v for v in (size, start))
        self._emit(END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0))
        self._close()

    def _close(self) -> None:
        self._sources.close()
        self._buffer = None
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def abort(self) -> None:
        """Close what is open after an error; the caller removes the temporary file."""
        self._current = None
        self._close()
        super().abort()


#: Hugging Face's names for PyTorch shards: ``pytorch_model-00001-of-00002.bin``, ``pytorch_model.bin.index.json``
BIN = sharded.Naming(".bin", "pytorch_model")


class ShardedWriter(sharded.Writer):
    """Sharded PyTorch checkpoints in the Hugging Face layout (``save_torch_state_dict(safe_serialization=False)``).

    ``DIR/pytorch_model.bin.index.json`` = ``{"metadata": {"total_size": N, ...}, "weight_map": {tensor: shard}}``
    beside ``pytorch_model-00001-of-00003.bin`` ...: each shard a :class:`Writer` file (a flat state
    dict, member prefix = the shard's stem, as ``torch.save`` names it), filled, named and committed
    together exactly as sharded safetensors are (:mod:`ckptsurgeon.formats.safetensors.sharded`).
    Metadata goes into the index only; the shards hold tensors alone, like torch's.
    """

    format = "torch-sharded"
    caps = base.WriterCaps(byte_ranges=True, streams_chunks=True, sharded=True)
    naming = BIN

    def _shard_writer(self, temp: Path, dest: Path) -> base.Writer:
        return Writer(temp, archive=archive_name(dest))


__all__ = ["ALIGNMENT", "BIN", "METADATA_MEMBER", "ShardedWriter", "Writer", "archive_name"]
