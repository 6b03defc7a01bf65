"""Writing npz archives: members in the declared order, STORED and 64-byte aligned by default, with
reproducible bytes (see :mod:`ckptsurgeon.formats.npz`)."""

from __future__ import annotations

import contextlib
import struct
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from ckptsurgeon.errors import OutputError
from ckptsurgeon.formats import base
from ckptsurgeon.formats._io import Writeback
from ckptsurgeon.formats._zip import LOCAL_HEADER, ZIP64_LOCAL_EXTRA, name_problem
from ckptsurgeon.formats.npz.npy import (
    MAX_COMMENT_BYTES,
    MEMBER_SUFFIX,
    archive_comment,
    is_str_map,
    npy_header,
    suffix_problem,
)
from ckptsurgeon.formats.npz.reader import Member, Reader
from ckptsurgeon.tensors import TensorSpec

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
ALIGNMENT = 64
ALIGNMENT_EXTRA_ID = 0xD935


def _zip_name_bytes(name: str) -> bytes:
    """A member name as :mod:`zipfile` encodes it (ASCII, else UTF-8)."""
    try:
        return name.encode("ascii")
    except UnicodeEncodeError:
        return name.encode("utf-8")


def alignment_extra(offset: int, name_length: int, zip64: bool) -> bytes:
    """A zip extra field that makes a STORED member's data start on an :data:`ALIGNMENT` boundary.

    ``offset`` is where the member's local header starts; zipfile appends its ZIP64 field after ours.
    """
    data_start = offset + LOCAL_HEADER.size + name_length + (ZIP64_LOCAL_EXTRA if zip64 else 0)
    pad = -data_start % ALIGNMENT
    if pad == 0:
        return b""
    if pad < 6:  # the field's own id, length and alignment take 6 bytes
        pad += ALIGNMENT
    return struct.pack("<HHH", ALIGNMENT_EXTRA_ID, pad - 4, ALIGNMENT) + bytes(pad - 6)


def _like_compress(like: base.Reader | None) -> bool:
    """Whether an npz like ``like`` compresses its members (most of them DEFLATED)."""
    if like is None or like.format != Reader.format:
        return False
    members = [t.loc for t in like.tensors if isinstance(t.loc, Member)]
    return sum(not m.stored for m in members) * 2 > len(members)


class Writer(base.Writer):
    """Write an npz archive member by member, streaming each tensor's bytes once.

    ``compress`` selects DEFLATED members (default: STORED, or what ``like`` uses if it is an npz).
    """

    format = "npz"
    caps = base.WriterCaps(streams_chunks=True, like=("npz",))

    def __init__(
        self,
        path: str | Path,
        *,
        metadata: Mapping[str, str] | None = None,
        like: base.Reader | None = None,
        compress: bool | None = None,
    ) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        self.compress = _like_compress(like) if compress is None else compress
        self._file: BinaryIO | None = None
        self._zip: zipfile.ZipFile | None = None
        self._comment = b""
        self._writeback: Writeback | None = None

    def _begin(self) -> None:
        for spec in self.specs:
            member = spec.name + MEMBER_SUFFIX
            problem = name_problem(member) or suffix_problem(member)
            if problem is not None:
                raise OutputError(self.path, f"tensor name {spec.name!r} cannot be an npz member: the name {problem}")
            if len(_zip_name_bytes(member)) > 0xFFFF:
                raise OutputError(self.path, f"tensor name {spec.name[:60]!r}... is longer than a zip member name can be")
        if not is_str_map(self.metadata):
            raise OutputError(self.path, "npz metadata must map strings to strings")
        self._comment = archive_comment(self.specs, self.metadata)
        if len(self._comment) > MAX_COMMENT_BYTES:
            raise OutputError(
                self.path,
                f"the npz archive comment (dtype names and metadata) would take {len(self._comment)} bytes; "
                f"a zip comment holds at most {MAX_COMMENT_BYTES}",
                hint="drop metadata, or write safetensors",
            )
        # O_CREAT | O_EXCL, never O_TRUNC; kept open across write calls and closed by finish/abort.
        self._file = open(self.path, "xb")  # noqa: SIM115
        self._writeback = Writeback(self._file.fileno())
        try:
            self._zip = zipfile.ZipFile(self._file, "w", allowZip64=True)
        except BaseException:
            self._file.close()
            self._file = None
            raise

    @contextlib.contextmanager
    def _member(self, spec: TensorSpec) -> Iterator[IO[bytes]]:
        """Open the member of ``spec`` and write its ``.npy`` header; the caller writes the data bytes."""
        assert self._zip is not None and self._file is not None
        header = npy_header(spec)
        member = spec.name + MEMBER_SUFFIX
        info = zipfile.ZipInfo(member, date_time=ZIP_EPOCH)
        info.compress_type = zipfile.ZIP_DEFLATED if self.compress else zipfile.ZIP_STORED
        info.create_system = 3  # Unix, whatever the platform: identical bytes everywhere
        info.external_attr = 0o644 << 16
        info.file_size = len(header) + spec.nbytes
        # zipfile's own rule for a member's ZIP64 record, decided here so the header length is known.
        zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT
        if not self.compress:
            info.extra = alignment_extra(self._file.tell(), len(_zip_name_bytes(member)), zip64)
        with self._zip.open(info, "w", force_zip64=zip64) as out:
            out.write(header)
            yield out

    def _written(self) -> None:
        """Let the disk start on what is written so far (see :class:`~ckptsurgeon.formats.safetensors.Writeback`)."""
        if self._writeback is not None and self._file is not None:
            self._writeback.written_up_to(self._file.tell())

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        flat = data.reshape(-1).view(np.uint8).data
        with self._member(spec) as out:
            for pos in range(0, spec.nbytes, base.CHUNK_BYTES):
                out.write(flat[pos : pos + base.CHUNK_BYTES])
                self._written()

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write the next tensor's member from its bytes, piece by piece (CRC and compression as they come)."""
        spec = self._take(name)
        with self._member(spec) as out:
            for view in self._exact_pieces(spec, chunks):
                out.write(view)
                self._written()

    def _finish(self) -> None:
        assert self._zip is not None and self._file is not None
        self._zip.comment = self._comment
        self._zip.close()
        self._zip = None
        self._file.close()
        self._file = None

    def abort(self) -> None:
        """Close the archive after an error; the caller removes the temporary file."""
        zf, self._zip = self._zip, None
        f, self._file = self._file, None
        try:
            if zf is not None:
                with contextlib.suppress(OSError, ValueError, RuntimeError):
                    zf.close()
        finally:
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
            super().abort()


__all__ = ["ALIGNMENT", "ALIGNMENT_EXTRA_ID", "ZIP_EPOCH", "Writer", "alignment_extra"]
