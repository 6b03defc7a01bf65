"""Zip archives (npz, ``.keras``): the checks every archive passes before a reader trusts it."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError, UnsafeInputError

ZIP_END = b"PK\x05\x06"
ZIP_END_SIZE = 22
# What zipfile raises on a damaged archive (NotImplementedError: an unknown "version needed to extract").
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError,
              RuntimeError, OverflowError, struct.error)


def end_record(path: Path, size: int) -> int | None:
    """The offset of a zip end-of-central-directory record whose comment ends exactly at the end of the file."""
    span = min(size, ZIP_END_SIZE + 0xFFFF)
    with open(path, "rb") as f:
        f.seek(size - span)
        tail = f.read(span)
    pos = tail.rfind(ZIP_END)
    while pos >= 0:
        if pos + ZIP_END_SIZE <= len(tail):
            (comment,) = struct.unpack_from("<H", tail, pos + 20)
            if pos + ZIP_END_SIZE + comment == len(tail):
                return size - span + pos
        pos = tail.rfind(ZIP_END, 0, pos)
    return None


def _member_data(path: Path, infos: list[zipfile.ZipInfo]) -> list[tuple[int, int]]:
    """``[start, end)`` of each member's stored bytes, from the lengths in its local header."""
    spans = []
    with open(path, "rb") as f:
        for info in infos:
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) != 30:
                continue  # the reader refuses the member itself
            name_len, extra_len = struct.unpack_from("<HH", local, 26)
            start = info.header_offset + 30 + name_len + extra_len
            spans.append((start, start + info.compress_size))
    return spans


def member_names(path: Path, size: int, hdf5_offsets: Sequence[int]) -> list[str]:
    """The member names of a zip archive; a damaged archive or a polyglot is refused.

    Refused: bytes after the end record, and an HDF5 signature (at one of ``hdf5_offsets``)
    outside every member's data.
    """
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
        if end_record(path, size) is None:
            raise UnsafeInputError(
                path, "bytes follow the zip archive's end record; refusing a polyglot (or a damaged archive)"
            )
        if hdf5_offsets:
            spans = _member_data(path, infos)
            for offset in hdf5_offsets:
                if not any(start <= offset < end for start, end in spans):
                    raise UnsafeInputError(
                        path, f"a polyglot: a zip archive that is also an HDF5 file (signature at offset {offset}, "
                        "outside every member); refusing an ambiguous file",
                    )
    except ZIP_ERRORS as exc:
        raise InputError(path, f"a damaged zip archive ({exc or type(exc).__name__})") from exc
    return [i.filename for i in infos]
