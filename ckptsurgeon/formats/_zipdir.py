"""A zip archive's structure read from its bytes: the end records and the central directory.

:func:`directory_of` parses the end-of-central-directory record (and the ZIP64 end record and its
locator, if present) and walks the central directory itself, with :mod:`struct`, so that what
ckptsurgeon reads is what the bytes say, not only what :mod:`zipfile` makes of them:

- the end record and the ZIP64 end record agree (each 16- or 32-bit field equals the 64-bit one or
  is its "see ZIP64" marker); the locator points at the ZIP64 end record right before it; the
  archive lies on one disk;
- the members counted on this disk and in all are the same number, and the central directory holds
  exactly that many records;
- the central directory lies exactly between its offset and the (ZIP64) end record: no gap, no
  overlap, its records filling it to the last byte.

:func:`agree` then checks that :mod:`zipfile` lists the same records (names, flags, method, CRC,
sizes, local header offsets). Errors are one-line InputErrors naming
the file, with real file offsets.
"""

from __future__ import annotations

import mmap
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

FLAG_UTF8 = 0x0800
MAX_EXTRACT_VERSION = 63  # the highest "version needed to extract" zipfile reads (6.3)
ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disks, counts, directory size and offset
ZIP64_END_SIGNATURE = b"PK\x06\x06"
ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk of the ZIP64 end record, its offset, number of disks
ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
END = struct.Struct("<4s4H2LH")  # signature, disk, directory's disk, counts (this disk, total), directory size and offset, comment length
CENTRAL = struct.Struct("<4s6H3L5H2L")  # signature, versions, flags, method, time, date, crc, sizes, lengths, disk, attributes, offset
CENTRAL_SIGNATURE = b"PK\x01\x02"


@dataclass(frozen=True)
class Central:
    """One central directory record as its bytes say (ZIP64 fields resolved)."""

    at: int  # the record's offset
    name: str
    flags: int
    method: int
    needed: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int


def zip64(extra: bytes, fields: Sequence[tuple[int, int]]) -> list[int] | None:
    """``fields`` (value, marker) with each value equal to its marker replaced, in order, by the next
    8 bytes of the ZIP64 extra field (id 1) in ``extra``; None when the ZIP64 field is too short for them."""
    values, pos = [v for v, _ in fields], 0
    while pos + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, pos)
        if kind == 1:
            data, at = extra[pos + 4 : pos + 4 + length], 0
            for i, (value, marker) in enumerate(fields):
                if value == marker:
                    if at + 8 > len(data):
                        return None
                    (values[i],) = struct.unpack_from("<Q", data, at)
                    at += 8
            return values
        pos += 4 + length
    return values


def decode(raw: bytes, flags: int) -> str | None:
    try:
        return raw.decode("utf-8") if flags & FLAG_UTF8 else raw.decode("cp437")
    except UnicodeDecodeError:
        return None


def _end_fields(path: Path, data: mmap.mmap, end: int) -> tuple[int, int, int, int]:
    """The end record's (ZIP64 end record's, if it has one) member count, directory offset, directory size,
    and where the directory must end: the end records agree, on one disk, and follow the directory."""
    _, disk, cd_disk, here, total, cd_size, cd_offset, _ = END.unpack_from(data, end)
    stop, locator = end, end - ZIP64_LOCATOR.size
    if locator >= 0 and data[locator : locator + 4] == ZIP64_LOCATOR_SIGNATURE:
        _, record_disk, record, disks = ZIP64_LOCATOR.unpack_from(data, locator)
        stop = locator - ZIP64_END.size
        if stop < 0 or record != stop or record_disk != 0 or disks > 1 or data[stop : stop + 4] != ZIP64_END_SIGNATURE:
            raise InputError(path, f"the zip64 end record locator at offset {locator} points to offset {record}, "
                             f"not to a zip64 end record right before it (at {stop}); a damaged archive")
        fields = ZIP64_END.unpack_from(data, stop)
        if fields[1] != ZIP64_END.size - 12:
            raise InputError(path, f"the zip64 end record at offset {stop} has size {fields[1]}, not {ZIP64_END.size - 12}")
        short = (disk, cd_disk, here, total, cd_size, cd_offset)
        for what, value, wide, marker in zip(
            ("disk number", "directory's disk", "member count on this disk", "member count", "directory size", "directory offset"),
            short, fields[4:], (0xFFFF,) * 4 + (0xFFFFFFFF,) * 2, strict=True,
        ):
            if value not in (wide, marker):
                raise InputError(path, f"the zip end record and zip64 end record disagree on the {what} ({value} != {wide})")
        disk, cd_disk, here, total, cd_size, cd_offset = fields[4:]
    if disk or cd_disk:
        raise InputError(path, "a multi-disk (split) zip archive; not read")
    if here != total:
        raise InputError(path, f"the zip end record counts {here} members on this disk but {total} in all")
    if cd_offset + cd_size != stop:
        raise InputError(path, f"the zip end record puts the central directory at offsets {cd_offset} to {cd_offset + cd_size}, "
                         f"but it must end where the end record starts (offset {stop})")
    return total, cd_offset, cd_size, stop


def directory_of(path: Path, data: mmap.mmap, end: int) -> tuple[int, list[Central]]:
    """The central directory's offset and records, read from the bytes: exactly as many records as the
    end record counts, filling the directory to its end."""
    total, pos, _, stop = _end_fields(path, data, end)
    start, records = pos, []
    while pos < stop:
        if pos + CENTRAL.size > stop or data[pos : pos + 4] != CENTRAL_SIGNATURE:
            raise InputError(path, f"no central directory record at offset {pos} (a damaged central directory)")
        f = CENTRAL.unpack_from(data, pos)
        name_at, n, m, k = pos + CENTRAL.size, f[10], f[11], f[12]
        following = name_at + n + m + k
        if following > stop:
            raise InputError(path, f"the central directory record at offset {pos} runs past the directory's end (offset {stop})")
        raw = bytes(data[name_at : name_at + n])
        fields = zip64(data[name_at + n : name_at + n + m], [(f[9], 0xFFFFFFFF), (f[8], 0xFFFFFFFF), (f[16], 0xFFFFFFFF)])
        name = decode(raw, f[3])
        if fields is None or name is None:
            raise InputError(path, f"the central directory record at offset {pos} ({raw[:80]!r}) is damaged")
        if f[13]:
            raise InputError(path, f"member {name!r} lies on another disk (a split archive); not read")
        records.append(Central(pos, name, f[3], f[4], f[2], f[7], fields[1], fields[0], fields[2]))
        pos = following
        if len(records) > total:
            break
    if len(records) != total:
        found = f"more than {total}" if pos < stop else str(len(records))
        raise InputError(path, f"the zip end record counts {total} members, but the central directory holds {found}")
    return start, records


def agree(path: Path, records: Sequence[Central], infos: Sequence[zipfile.ZipInfo]) -> None:
    """zipfile lists the members the directory's bytes describe (else ckptsurgeon refuses, rather than read another archive)."""
    if len(records) != len(infos):
        raise InputError(path, f"zipfile lists {len(infos)} members where the central directory holds {len(records)}")
    for r, i in zip(records, infos, strict=True):
        if (r.name, r.flags, r.method, r.crc, r.compressed_size, r.size, r.header_offset) != (
            i.orig_filename, i.flag_bits, i.compress_type, i.CRC, i.compress_size, i.file_size, i.header_offset
        ):
            raise InputError(path, f"member {r.name!r}: zipfile reads its central directory record (offset {r.at}) differently")


__all__ = ["MAX_EXTRACT_VERSION", "Central", "agree", "decode", "directory_of", "zip64"]
