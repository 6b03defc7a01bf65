"""Where an HDF5 file ends, from its superblock: bytes after that end, or a file cut short, are refused.

An HDF5 file's superblock records the end-of-file address, the first byte past all HDF5 data. A
closed file written by the HDF5 library ends exactly there, user block included. Bytes after it
are not HDF5 data: something appended (random bytes, a pickle, a second checkpoint) that another
tool may read instead, so a file with any is refused as a possible polyglot; an end beyond the file
means the file was cut short. The superblock is read here in pure Python, before HDF5 opens the file.

The superblock lies at 0 or, after a user block, at 512, 1024, 2048, ... (the first signature found
is the one HDF5 uses). Its layout, by version (``O`` = the "size of offsets" byte, 2, 4 or 8; all
numbers little-endian)::

    versions 0 and 1: signature (8), version (1) at 8, four version / reserved bytes, size of
        offsets (1) at 13, size of lengths (1) at 14, reserved (1), group leaf node K (2), group
        internal node K (2), file consistency flags (4); version 1 only: indexed storage internal
        node K (2), reserved (2); then base address (O) at 24 (version 0) or 28 (version 1),
        free-space info address (O), end of file address (O), driver information address (O) ...
    versions 2 and 3: signature (8), version (1) at 8, size of offsets (1) at 9, size of lengths
        (1) at 10, file consistency flags (1) at 11, base address (O) at 12, superblock extension
        address (O), end of file address (O), root group object header address (O), checksum (4).

Addresses are relative to the base address; where the superblock is found elsewhere than the base
address says (a user block added or removed after writing), HDF5 moves the base to the superblock
and the end of file with it. So the file ends at ``end of file address - base address + superblock
offset``.

Standard library only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from ckptsurgeon.errors import InputError, UnsafeInputError

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_FORMATS = {2: "<H", 4: "<I", 8: "<Q"}
_EOF_FIELD = {0: 24, 1: 28, 2: 12, 3: 12}  # where the base address starts; the end of file is two fields on


def signature_offsets(size: int) -> list[int]:
    """Where HDF5 looks for its signature in a file of ``size`` bytes: 0, 512, 1024, 2048, ..."""
    out, offset = [], 0
    while offset + len(SIGNATURE) <= size:
        out.append(offset)
        offset = 512 if offset == 0 else offset * 2
    return out


def hdf5_end(label: Path, read_at: Callable[[int, int], bytes], size: int) -> int:
    """The offset where the HDF5 data of a ``size``-byte file ends, from its superblock.

    ``read_at(offset, n)`` reads up to ``n`` bytes at ``offset``. Refuses a file without a
    signature, an unknown superblock version, sizes of offsets other than 2, 4 and 8, and an
    undefined end of file address.
    """
    for offset in signature_offsets(size):
        head = read_at(offset, 64)
        if head.startswith(SIGNATURE):
            break
    else:
        raise _unreadable(label, "no HDF5 signature at 0, 512, 1024, ...")
    if len(head) < 9:
        raise _unreadable(label, f"the HDF5 superblock at offset {offset} is cut short")
    version = head[8]
    if version not in _EOF_FIELD:
        raise _unreadable(label, f"HDF5 superblock version {version} at offset {offset} is not one ckptsurgeon reads (0 to 3)")
    width = head[13] if version < 2 else head[9]
    fmt = _FORMATS.get(width)
    if fmt is None:
        raise _unreadable(label, f"the HDF5 superblock at offset {offset} gives {width}-byte addresses (2, 4 or 8 expected)")
    start = _EOF_FIELD[version]
    if len(head) < start + 3 * width:
        raise _unreadable(label, f"the HDF5 superblock at offset {offset} is cut short")
    base = struct.unpack_from(fmt, head, start)[0]
    eof = struct.unpack_from(fmt, head, start + 2 * width)[0]
    undefined = (1 << (8 * width)) - 1
    if eof == undefined or base == undefined or eof < base:
        raise _unreadable(label, f"the HDF5 superblock at offset {offset} has no valid end of file address")
    return eof - base + offset


def _unreadable(label: Path, problem: str) -> InputError:
    return InputError(label, f"not a readable HDF5 file ({problem})")


def check_end(label: Path, read_at: Callable[[int, int], bytes], size: int) -> None:
    """Refuse an HDF5 file with bytes after its end of file address, or one that ends before it."""
    end = hdf5_end(label, read_at, size)
    if end < size:
        raise UnsafeInputError(
            label, f"{size - end} bytes after the HDF5 end of file at offset {end}; refusing a possible polyglot "
            "(something appended to an HDF5 file)",
        )
    if end > size:
        raise InputError(
            label, f"truncated: the HDF5 superblock puts the end of file at offset {end}, past the end of the {size}-byte file"
        )
