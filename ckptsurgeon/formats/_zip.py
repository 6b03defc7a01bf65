"""Zip archives, read checked: every zip-based format (npz, ``.keras``, PyTorch zips) opens its file here.

:class:`ZipArchive` reads the central directory with :mod:`zipfile`, then checks the archive once,
before any member is read:

- member names are plain relative names: not empty, no NUL, no backslash, not absolute, no drive
  letter, no ``..`` component (:func:`name_problem`), and none appears twice;
- no member is encrypted or uses zip features other readers would read differently (patched data,
  strong encryption, a masked directory), in the central directory or its local header;
- every member is STORED or DEFLATED; a STORED member's two sizes agree; a DEFLATED member claims to
  inflate at most :data:`MAX_DEFLATE_RATIO` times its compressed size (a bomb cannot claim more);
- the end record (and ZIP64 end record) agrees with the central directory, parsed from the bytes
  (:mod:`._zipdir`): member counts, the directory's size and offset (it lies exactly before the end
  record), one disk; :mod:`zipfile` lists the same records;
- every local header lies in the file, has the local signature and agrees with its central record:
  name, flags (the encryption bit included), compression method, CRC and sizes (with the
  data-descriptor flag: zero there, and a data descriptor after the data agrees instead);
  every member's data lies in the file; no two members' bytes (local header and data) overlap,
  none runs into the central directory, and no bytes lie before, between or after them but data
  descriptors (no member hidden from the central directory);
- it is no polyglot: no bytes follow the end-of-central-directory record, and no HDF5 signature
  lies where HDF5 looks for one outside every member's data (:func:`hdf5_offsets`).

A member is then read as a stream (:meth:`ZipArchive.open`, :meth:`ZipArchive.chunks`; :mod:`zipfile`
inflates DEFLATED data, never past the declared size, and checks the CRC as the stream ends) or, when
STORED, in place: a view of a memory map (:meth:`ZipArchive.view`), a byte range of the file
(:meth:`ZipArchive.data_range`) or a seekable window (:meth:`ZipArchive.window`). A STORED member is
checked against its CRC before its bytes are first used in place (once per archive), a window
included, so a damaged archive never yields data, and never reaches HDF5. The one exception is
opted into: within :meth:`ZipArchive.checks_beside`, :meth:`ZipArchive.data_range` hands out a
range at once and checks the CRC on a worker thread while the caller copies the bytes; the context
raises on leaving if any member was damaged, and the caller commits nothing before it has left.

Errors are :class:`~ckptsurgeon.errors.InputError` (:class:`~ckptsurgeon.errors.UnsafeInputError` for
names that point outside the archive and for polyglots), one line naming the file. This module uses
the standard library only.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import CkptError, InputError, UnsafeInputError
from ._io import CHECKSUM_BYTES, CHUNK_BYTES, Beside, checking_beside, drop_pages, read_into
from ._probe import HDF5_MAGIC
from ._probe import ZIP_MAGICS as MAGICS
from ._zipdir import MAX_EXTRACT_VERSION, Central, agree, decode, directory_of, zip64

STORED = zipfile.ZIP_STORED
DEFLATED = zipfile.ZIP_DEFLATED
# Deflate cannot expand data more than 1032:1 (a 258-byte match coded in 2 bits). A member whose
# sizes claim more is corrupt or hostile. Zero-filled tensors legitimately reach about 1030:1, so
# the bound cannot be set lower without refusing real files.
MAX_DEFLATE_RATIO = 1032
LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, versions, flags, method, time, date, crc, sizes, lengths
LOCAL_SIGNATURE = b"PK\x03\x04"
ZIP64_LOCAL_EXTRA = 20  # a local header's ZIP64 field: id, length, two 8-byte sizes
END_SIGNATURE = b"PK\x05\x06"
END_SIZE = 22
FLAG_ENCRYPTED = 0x0001
FLAG_UNSUPPORTED = 0x0020 | 0x0040 | 0x2000  # patched data, strong encryption, masked directory
FLAG_DESCRIPTOR = 0x0008  # sizes and CRC follow the data
DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
FLAG_OPTIONS = 0x0006  # deflate's speed options: the only flags local header and central directory may disagree on
_DRIVE = re.compile(r"[A-Za-z]:")

# What the standard library raises on a damaged archive (NotImplementedError: an unknown "version
# needed to extract"); each becomes an InputError.
ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, OSError, EOFError, ValueError,
    OverflowError, NotImplementedError, RuntimeError,
)


def short(exc: BaseException, limit: int = 160) -> str:
    """An exception's text on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_problem(name: str) -> str | None:
    """Why a member name is not a plain relative name (other tools could write it outside a directory), or None."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash (a Windows path)"
    if name.startswith("/"):
        return "is an absolute path (it points outside the archive)"
    if _DRIVE.match(name):
        return "starts with a drive letter (it points outside the archive)"
    if ".." in name.split("/"):
        return "contains a '..' path component (it points outside the archive)"
    return None


# --- polyglots ------------------------------------------------------------------------------------
def _end_in(tail: bytes, base: int) -> int | None:
    """The offset (``base`` + position) of an end record in ``tail`` whose comment ends exactly where ``tail`` does."""
    pos = tail.rfind(END_SIGNATURE)
    while pos >= 0:
        if pos + END_SIZE <= len(tail):
            (comment,) = struct.unpack_from("<H", tail, pos + 20)
            if pos + END_SIZE + comment == len(tail):
                return base + pos
        pos = tail.rfind(END_SIGNATURE, 0, pos)
    return None


def end_record(path: Path, size: int) -> int | None:
    """The offset of a zip end-of-central-directory record whose comment ends exactly at the end of the file."""
    span = min(size, END_SIZE + 0xFFFF)
    with open(path, "rb") as f:
        f.seek(size - span)
        tail = f.read(span)
    return _end_in(tail, size - span)


def _search_offsets(size: int) -> Iterator[int]:
    offset = 0
    while offset + len(HDF5_MAGIC) <= size:
        yield offset
        offset = 512 if offset == 0 else offset * 2


def hdf5_offsets(path: Path, size: int) -> list[int]:
    """Where HDF5 finds its signature in ``path``: at 0 or, after a user block, at 512, 1024, 2048, ..."""
    found = []
    with open(path, "rb") as f:
        for offset in _search_offsets(size):
            f.seek(offset)
            if f.read(len(HDF5_MAGIC)) == HDF5_MAGIC:
                found.append(offset)
    return found


def _trailing_bytes(path: Path) -> UnsafeInputError:
    return UnsafeInputError(path, "bytes follow the zip archive's end record; refusing a polyglot (or a damaged archive)")


def _refuse_hdf5(path: Path, signatures: Iterable[int], spans: Sequence[tuple[int, int]]) -> None:
    for offset in signatures:
        if not any(start <= offset < end for start, end in spans):
            raise UnsafeInputError(
                path, f"a polyglot: a zip archive that is also an HDF5 file (signature at offset {offset}, "
                "outside every member); refusing an ambiguous file",
            )


def refuse_polyglot(path: Path, size: int, infos: Sequence[zipfile.ZipInfo]) -> None:
    """Refuse a zip archive with bytes after its end record, or an HDF5 file hiding outside its members.

    For format detection, before the archive is checked in full: members' data are located from
    their local headers as far as those can be read (:class:`ZipArchive` refuses the rest).
    """
    if end_record(path, size) is None:
        raise _trailing_bytes(path)
    hdf5 = hdf5_offsets(path, size)
    if not hdf5:
        return
    spans = []
    with open(path, "rb") as f:
        for info in infos:
            if info.header_offset < 0:  # an offset zipfile shifted: ZipArchive refuses the archive
                continue
            f.seek(info.header_offset)
            local = f.read(LOCAL_HEADER.size)
            if len(local) == LOCAL_HEADER.size:
                name_len, extra_len = struct.unpack_from("<HH", local, 26)
                start = info.header_offset + LOCAL_HEADER.size + name_len + extra_len
                spans.append((start, start + info.compress_size))
    _refuse_hdf5(path, hdf5, spans)


def member_names(path: Path, size: int) -> list[str]:
    """The member names of a zip archive, for format detection: a damaged archive or a polyglot is refused.

    The reader of the format detected then opens it as a :class:`ZipArchive`, which checks the rest.
    """
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
        refuse_polyglot(path, size, infos)
    except ZIP_ERRORS as exc:
        raise InputError(path, f"a damaged zip archive ({exc or type(exc).__name__})") from exc
    return [i.filename for i in infos]


@contextlib.contextmanager
def zip_errors(path: Path, what: str) -> Iterator[None]:
    """Turn a standard-library error on an archive into a one-line InputError: ``path: what: error``."""
    try:
        yield
    except CkptError:
        raise
    except ZIP_ERRORS as exc:
        raise InputError(path, f"{what}: {short(exc)}") from exc


# --- the archive ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZipMember:
    """One checked member: where its data lies in the archive and how it is stored."""

    name: str  # as written in the archive (zipfile's ``orig_filename``)
    method: int  # STORED or DEFLATED
    compressed_size: int
    size: int
    crc: int
    header_offset: int  # its local header
    data_offset: int  # its (compressed) data, after the local header
    info: zipfile.ZipInfo = field(repr=False, compare=False)

    @property
    def stored(self) -> bool:
        return self.method == STORED

    @property
    def data_end(self) -> int:
        return self.data_offset + self.compressed_size


def _is_descriptor(gap: bytes, member: ZipMember) -> bool:
    """True when ``gap`` is the data descriptor of ``member`` (flag 0x0008): its CRC and sizes, with or
    without a signature, 4- or (ZIP64) 8-byte sizes."""
    if len(gap) in (16, 24) and gap.startswith(DESCRIPTOR_SIGNATURE):
        gap = gap[4:]
    if len(gap) not in (12, 20):
        return False
    fields = struct.unpack("<3L" if len(gap) == 12 else "<L2Q", gap)
    return fields == (member.crc, member.compressed_size, member.size)


class ZipArchive:
    """A zip archive opened and checked (see the module docstring); members are read on demand.

    ``what`` names the archive in the message of an archive :mod:`zipfile` cannot read
    (``"not a readable npz archive: ..."``). Members keep their central directory order.
    """

    def __init__(self, path: str | Path, *, what: str = "zip archive") -> None:
        self.path = Path(path)
        self.what = what
        self.comment = b""
        self.members: tuple[ZipMember, ...] = ()
        self._zip: zipfile.ZipFile | None = None
        self._map: mmap.mmap | None = None
        self._fd: int | None = None
        self._by_name: dict[str, ZipMember] = {}
        self._verified: set[str] = set()  # STORED members whose CRC matched
        self._beside: Beside | None = None  # within checks_beside: the CRC checks running on a worker
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- opening ----------------------------------------------------------------------------------
    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return zip_errors(self.path, what)

    def _open(self) -> None:
        with self._errors(f"not a readable {self.what}"):
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
            self.comment = self._zip.comment
            zipfile_directory = getattr(self._zip, "start_dir", None)
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._fd = os.dup(f.fileno())  # the file mapped, for checksum passes (read, not mapped)
        size = len(self._map)
        tail = min(size, END_SIZE + 0xFFFF)
        end = _end_in(self._map[size - tail :], size - tail)
        if end is None:
            raise _trailing_bytes(self.path)
        directory, records = directory_of(self.path, self._map, end)
        agree(self.path, records, infos)
        if zipfile_directory != directory or self.comment != self._map[end + END_SIZE :]:
            raise InputError(self.path, f"zipfile reads another end record than the one at offset {end}")
        self._check_names(infos)
        members = tuple(self._locate(record, info) for record, info in zip(records, infos, strict=True))
        self._check_layout(members, directory)
        signatures = [o for o in _search_offsets(size) if self._map[o : o + len(HDF5_MAGIC)] == HDF5_MAGIC]
        _refuse_hdf5(self.path, signatures, [(m.data_offset, m.data_end) for m in members])
        self.members = members
        self._by_name = {m.name: m for m in members}

    def _check_names(self, infos: Sequence[zipfile.ZipInfo]) -> None:
        seen: set[str] = set()
        for info in infos:
            name = info.orig_filename
            problem = name_problem(name)
            if problem is not None:
                raise UnsafeInputError(self.path, f"member {name!r} {problem}")
            if name in seen:
                raise InputError(self.path, f"member {name!r} appears twice")
            seen.add(name)

    def _check_flags(self, name: str, flags: int) -> None:
        if flags & FLAG_ENCRYPTED:
            raise InputError(self.path, f"member {name!r} is encrypted; encrypted archives are not read")
        if flags & FLAG_UNSUPPORTED:
            raise InputError(self.path, f"member {name!r} uses zip features ckptsurgeon does not read (flags {flags:#06x})")

    def _locate(self, record: Central, info: zipfile.ZipInfo) -> ZipMember:
        """Check a member's flags, method, sizes and local header; the member with its data offset."""
        name, method, csize, usize = record.name, record.method, record.compressed_size, record.size
        assert self._map is not None
        self._check_flags(name, record.flags)
        if method == STORED:
            if csize != usize:
                raise InputError(self.path, f"stored member {name!r} has compressed size {csize} != size {usize}")
        elif method == DEFLATED:
            if usize > MAX_DEFLATE_RATIO * csize:
                raise InputError(
                    self.path,
                    f"member {name!r} claims to inflate {csize} bytes to {usize}, "
                    f"more than deflate can (ratio {MAX_DEFLATE_RATIO}); a corrupt archive or a zip bomb",
                )
        else:
            raise InputError(self.path, f"member {name!r} uses compression method {method}; only STORED and DEFLATED are read")
        offset, size = record.header_offset, len(self._map)
        if offset + LOCAL_HEADER.size > size:
            raise InputError(self.path, f"member {name!r}: local header at offset {offset} lies outside the archive")
        start = self._check_local(record, offset)
        if start + csize > size:
            raise InputError(self.path, f"member {name!r}: its data runs past the end of the archive (truncated?)")
        return ZipMember(name, method, csize, usize, record.crc, offset, start, info)

    def _check_local(self, record: Central, offset: int) -> int:
        """The local header at ``offset`` agrees with the member's central record; where its data starts."""
        assert self._map is not None
        name, where = record.name, f"member {record.name!r}: its local header (offset {offset})"
        signature, needed, flags, method, _, _, crc, csize, usize, name_length, extra_length = LOCAL_HEADER.unpack_from(self._map, offset)
        if signature != LOCAL_SIGNATURE:
            raise InputError(self.path, f"member {name!r}: bad local header signature at offset {offset}")
        name_start = offset + LOCAL_HEADER.size
        raw_name = self._map[name_start : name_start + name_length]
        if decode(raw_name, flags) != name:
            raise InputError(self.path, f"member {name!r}: its local header names {raw_name[:80]!r}")
        self._check_flags(name, flags)
        if (flags ^ record.flags) & ~FLAG_OPTIONS:
            raise InputError(self.path, f"{where} has flags {flags:#06x}, the central directory {record.flags:#06x}")
        if method != record.method:
            raise InputError(self.path, f"member {name!r}: local and central compression methods differ")
        if max(needed, record.needed) > MAX_EXTRACT_VERSION:
            raise InputError(self.path, f"member {name!r} needs zip version {max(needed, record.needed) / 10:.1f} to extract")
        extra = self._map[name_start + name_length : name_start + name_length + extra_length]
        sizes = zip64(extra, [(usize, 0xFFFFFFFF), (csize, 0xFFFFFFFF)])
        if sizes is None:
            raise InputError(self.path, f"{where} has a ZIP64 field too short for its sizes")
        local, central = (crc, *sizes), (record.crc, record.size, record.compressed_size)
        deferred = record.flags & FLAG_DESCRIPTOR  # the values may be zero here, the data descriptor has them
        if any(a != b and not (deferred and a == 0) for a, b in zip(local, central, strict=True)):
            raise InputError(
                self.path, f"{where} gives CRC {local[0]:#010x}, size {local[1]}, compressed size {local[2]}; "
                f"the central directory CRC {central[0]:#010x}, size {central[1]}, compressed size {central[2]}",
            )
        return name_start + name_length + extra_length

    def _check_layout(self, members: Sequence[ZipMember], directory: int) -> None:
        """Members follow each other from the start of the file to the central directory: none overlaps
        another, and no bytes lie between them but a member's data descriptor (where a hidden member,
        which a reader of local headers would list, could be)."""
        pos, previous = 0, None
        for m in sorted(members, key=lambda m: m.header_offset):
            if m.header_offset < pos:
                raise InputError(self.path, f"members {previous.name if previous else ''!r} and {m.name!r} overlap in the archive")
            self._check_gap(previous, pos, m.header_offset)
            pos, previous = m.data_end, m
        if pos > directory:
            raise InputError(self.path, f"member {previous.name if previous else ''!r} overlaps the archive's central directory")
        self._check_gap(previous, pos, directory)

    def _check_gap(self, member: ZipMember | None, start: int, end: int) -> None:
        """Between ``member``'s data and what follows it: nothing, or exactly its data descriptor if it has one."""
        assert self._map is not None
        if member is not None and member.info.flag_bits & FLAG_DESCRIPTOR:
            if end - start <= 24 and _is_descriptor(self._map[start:end], member):
                return
            if end - start <= 24:
                raise InputError(self.path, f"member {member.name!r}: no data descriptor that agrees with the central directory at offset {start}")
        if start == end:
            return
        where = "before the first member" if member is None else f"after member {member.name!r}"
        raise UnsafeInputError(
            self.path, f"{end - start} bytes {where} (offset {start}) belong to no member (a hidden member or a polyglot); refusing an ambiguous file"
        )

    # --- members ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[ZipMember]:
        return iter(self.members)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> ZipMember:
        """The member named ``name`` (KeyError if there is none)."""
        return self._by_name[name]

    def names(self) -> list[str]:
        return [m.name for m in self.members]

    @property
    def closed(self) -> bool:
        return self._map is None

    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            raise InputError(self.path, "the archive is closed")
        return self._map

    # --- reading ----------------------------------------------------------------------------------
    def open(self, member: ZipMember) -> io.BufferedIOBase:
        """A stream of the member's (inflated) bytes, never more than its declared size, CRC-checked at its end.

        Read errors are InputErrors (``not a readable <what>: member ...``).
        """
        self._mapped()
        assert self._zip is not None
        with self._errors(f"not a readable {self.what}: member {member.name!r}"):
            stream = self._zip.open(member.info)
        return _Checked(stream, self, f"not a readable {self.what}: member {member.name!r}")

    def peek(self, member: ZipMember, n: int) -> bytes:
        """The first ``n`` bytes of the member (fewer if it is shorter), to parse a header before its data is used.

        Not checked against the CRC, unless a DEFLATED member is read to its end.
        """
        if member.stored:
            return self._mapped()[member.data_offset : member.data_offset + min(n, member.size)]
        with self.open(member) as stream:
            return stream.read(n)

    def chunks(self, member: ZipMember, start: int = 0, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """The member's bytes from ``start`` to its end, in chunks of ``chunk_bytes`` (the last one shorter).

        A STORED member's chunks view the memory map (pages a chunk has gone past are dropped from the
        process), and its CRC, over all its bytes, is checked after the last chunk; a DEFLATED member
        is inflated as a stream of exactly its declared size. A mismatch raises InputError after
        the last chunk: a caller must not commit what it built from the chunks before then.
        """
        if not 0 <= start <= member.size:
            raise ValueError(f"start {start} lies outside member {member.name!r} of {member.size} bytes")
        if member.stored:
            yield from self._stored_chunks(member, start, chunk_bytes)
            return
        left = member.size - start
        with self.open(member) as stream:
            _skip(stream, start, self, member)
            while left:
                chunk = stream.read(min(chunk_bytes, left))
                if not chunk:
                    raise InputError(self.path, f"member {member.name!r} inflates to {member.size - left} of {member.size} bytes")
                left -= len(chunk)
                yield memoryview(chunk)
            if stream.read(1):
                raise InputError(self.path, f"member {member.name!r} inflates to more than its {member.size} bytes")

    def _stored_chunks(self, member: ZipMember, start: int, chunk_bytes: int) -> Iterator[memoryview]:
        mapped = self._mapped()
        view = memoryview(mapped)
        begin, end = member.data_offset + start, member.data_end
        crc = zlib.crc32(view[member.data_offset : begin])
        for pos in range(begin, end, chunk_bytes):
            chunk = view[pos : min(pos + chunk_bytes, end)]
            crc = zlib.crc32(chunk, crc)
            yield chunk
            drop_pages(mapped, pos, min(pos + chunk_bytes, end))
        if crc != member.crc:
            raise InputError(self.path, f"member {member.name!r}: CRC mismatch (the archive is damaged)")
        self._verified.add(member.name)

    def verify(self, member: ZipMember) -> None:
        """Check the member against its CRC, once (InputError on a mismatch).

        A STORED member is read in pieces of :data:`~._io.CHECKSUM_BYTES` into one buffer, each
        checksummed while it is in the CPU cache; nothing of it stays mapped. A DEFLATED one is inflated.
        """
        self._mapped()
        if member.name in self._verified:
            return
        if not member.stored or self._fd is None:
            for _ in self.chunks(member):
                pass
        else:
            buffer = memoryview(bytearray(min(CHECKSUM_BYTES, max(member.size, 1))))
            crc, pos, end = 0, member.data_offset, member.data_end
            while pos < end:
                n = read_into(self._fd, buffer[: min(len(buffer), end - pos)], pos)
                if n == 0:
                    raise InputError(self.path, f"member {member.name!r}: the file ends inside its data (truncated)")
                crc = zlib.crc32(buffer[:n], crc)
                pos += n
            if crc != member.crc:
                raise InputError(self.path, f"member {member.name!r}: CRC mismatch (the archive is damaged)")
        self._verified.add(member.name)

    def view(self, member: ZipMember) -> memoryview:
        """A STORED member's bytes in place (a read-only view of the memory map), checked against its CRC first.

        The view keeps the map alive after :meth:`close` until it is released.
        """
        self._need_stored(member)
        self.verify(member)
        return memoryview(self._mapped())[member.data_offset : member.data_end]

    def data_range(self, member: ZipMember) -> tuple[int, int] | None:
        """``(offset, length)`` of a STORED member's bytes in the archive file, checked against its CRC
        first (a caller copies them verbatim); None for a DEFLATED member.

        Within :meth:`checks_beside` the check is started on the worker thread instead, and the
        range returned at once.
        """
        if not member.stored:
            return None
        if self._beside is not None and member.name not in self._verified:
            self._mapped()
            self._beside.submit(member.name, lambda: self.verify(member))
        else:
            self.verify(member)
        return member.data_offset, member.size

    def checks_beside(self) -> contextlib.AbstractContextManager[None]:
        """Check the CRCs of the ranges :meth:`data_range` hands out on a worker thread, beside the copy
        (:func:`~._io.checking_beside`: leaving the context raises the first InputError, a damaged member)."""
        return checking_beside(self)

    def window(self, member: ZipMember) -> io.RawIOBase:
        """A seekable read-only file object over a STORED member's bytes in the archive file (no copy).

        The member is checked against its CRC first (:meth:`verify`): a reader of a window (HDF5)
        never sees a byte of a damaged member. It has a file handle of its own, so it may outlive
        the archive; close it when done.
        """
        self._need_stored(member)
        self.verify(member)
        return _Window(self.path, member.data_offset, member.size)

    def release(self, member: ZipMember) -> None:
        """Drop the process's pages of a STORED member's bytes (views of them stay valid)."""
        if member.stored and self._map is not None:
            drop_pages(self._map, member.data_offset, member.data_end)

    def _need_stored(self, member: ZipMember) -> None:
        if not member.stored:
            raise ValueError(f"member {member.name!r} is compressed; only a STORED member is read in place")

    # --- life cycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the archive. Views of the map keep it alive until they are freed."""
        beside, self._beside = self._beside, None
        if beside is not None:
            beside.stop()
        zf, self._zip = self._zip, None
        mm, self._map = self._map, None
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        if zf is not None:
            zf.close()
        if mm is not None:
            with contextlib.suppress(BufferError):  # views still export the map: it is unmapped when they go
                mm.close()

    def __enter__(self) -> ZipArchive:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _skip(stream: io.BufferedIOBase, n: int, archive: ZipArchive, member: ZipMember) -> None:
    while n:
        got = len(stream.read(min(n, CHUNK_BYTES)))
        if not got:
            raise InputError(archive.path, f"member {member.name!r} inflates to fewer than its {member.size} bytes")
        n -= got


class _Checked(io.BufferedIOBase):
    """A member stream whose standard-library errors are one-line InputErrors naming the archive."""

    def __init__(self, inner: IO[bytes], archive: ZipArchive, what: str) -> None:
        super().__init__()
        self._inner = inner
        self._archive = archive
        self._what = what

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        with self._archive._errors(self._what):
            return self._inner.read(-1 if size is None else size)

    read1 = read

    def close(self) -> None:
        with contextlib.suppress(*ZIP_ERRORS):
            self._inner.close()
        super().close()


class _Window(io.RawIOBase):
    """A read-only file object over bytes [start, start+size) of a file (a STORED zip member)."""

    def __init__(self, path: Path, start: int, size: int) -> None:
        super().__init__()
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR, io.SEEK_END):
            raise ValueError(f"invalid whence ({whence})")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(view[:n])
        self._pos += got
        return got

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()
        super().close()


__all__ = [
    "DEFLATED",
    "MAGICS",
    "MAX_DEFLATE_RATIO",
    "STORED",
    "ZIP_ERRORS",
    "ZipArchive",
    "ZipMember",
    "end_record",
    "hdf5_offsets",
    "name_problem",
    "refuse_polyglot",
]
