"""The SSTable of a TensorFlow ``.index`` file (LevelDB's table format, as TensorFlow's table builder writes it).

::

    data block ... | metaindex block | index block | footer (48 bytes)
    block   = entries | u32 restart[n] | u32 n, then a 5-byte trailer: type u8 (0: stored) | u32 masked CRC-32C
    entry   = varint shared | varint unshared | varint value_len | key[shared:] | value
    footer  = handle(metaindex) | handle(index) | zero padding to 40 bytes | u64 magic 0xdb4775248b80fb57
    handle  = varint offset | varint size

Everything is checked before an offset is trusted: the footer's magic and handles, each block's
trailer (type 0, CRC-32C over the block and its type byte, masked as LevelDB masks it), each
block's restart array (inside the block, ascending, the first at 0), and every entry's lengths
against its block; keys must be strictly ascending, and an entry at a restart point shares no
prefix. Errors are :class:`TableError`, which the reader turns into an InputError naming its file.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator

from .._protobuf import WireError, read_varint
from ._crc32c import masked_crc32c

MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
TRAILER_BYTES = 5


class TableError(ValueError):
    """The table is malformed (the message says where)."""


def _handle(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos, end)
    size, pos = read_varint(buf, pos, end)
    return offset, size, pos


def footer(data: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (offset, size) of the metaindex and index blocks, from a checked footer."""
    if len(data) < FOOTER_BYTES:
        raise TableError(f"{len(data)} bytes is shorter than a table's footer")
    foot = data[-FOOTER_BYTES:]
    if struct.unpack_from("<Q", foot, 40)[0] != MAGIC:
        raise TableError("the footer's magic number is wrong (not a TensorFlow .index table)")
    try:
        meta_offset, meta_size, pos = _handle(foot, 0, 40)
        index_offset, index_size, _ = _handle(foot, pos, 40)
    except WireError as exc:
        raise TableError(f"the footer's block handles are malformed ({exc})") from None
    return (meta_offset, meta_size), (index_offset, index_size)


def block(data: bytes, handle: tuple[int, int], what: str) -> bytes:
    """The contents of a block, its trailer checked (type 0, CRC-32C)."""
    offset, size = handle
    limit = len(data) - FOOTER_BYTES
    if offset + size + TRAILER_BYTES > limit:
        raise TableError(f"{what} (offset {offset}, {size} bytes) runs past the end of the table")
    contents = data[offset : offset + size]
    kind = data[offset + size]
    if kind != 0:
        raise TableError(f"{what} is compressed (type {kind}); TensorFlow writes blocks uncompressed")
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if masked_crc32c(data[offset : offset + size + 1]) != stored:
        raise TableError(f"{what} (offset {offset}): CRC-32C mismatch (the file is damaged)")
    return contents


def entries(contents: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a block, the restart array and every length checked."""
    if len(contents) < 4:
        raise TableError(f"{what} is too short to hold its restart count")
    (count,) = struct.unpack_from("<I", contents, len(contents) - 4)
    end = len(contents) - 4 - 4 * count
    if count == 0 or end < 0:
        raise TableError(f"{what} declares {count} restart points, which it cannot hold")
    restarts = struct.unpack_from(f"<{count}I", contents, end)
    ascending = all(a < b for a, b in itertools.pairwise(restarts))
    if restarts[0] != 0 or not ascending or (end and restarts[-1] >= end) or (not end and count != 1):
        raise TableError(f"{what} has a restart array that is not ascending inside the block")
    points = set(restarts)
    pos, key = 0, b""
    try:
        while pos < end:
            at = pos
            shared, pos = read_varint(contents, pos, end)
            unshared, pos = read_varint(contents, pos, end)
            length, pos = read_varint(contents, pos, end)
            if shared > len(key) or (at in points and shared):
                raise TableError(f"{what}: the entry at offset {at} shares {shared} bytes of a {len(key)}-byte key")
            if unshared + length > end - pos:
                raise TableError(f"{what}: the entry at offset {at} runs past the block")
            new = key[:shared] + contents[pos : pos + unshared]
            if at and new <= key:
                raise TableError(f"{what}: keys are not in ascending order at offset {at}")
            key = new
            pos += unshared
            yield key, contents[pos : pos + length]
            pos += length
    except WireError as exc:
        raise TableError(f"{what}: {exc}") from None


def read_table(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the table, in key order, through its index block."""
    _, index = footer(data)
    last = b""
    for n, (separator, value) in enumerate(entries(block(data, index, "the index block"), "the index block")):
        try:
            offset, size, _ = _handle(value, 0, len(value))
        except WireError as exc:
            raise TableError(f"index entry {n}: a malformed block handle ({exc})") from None
        for key, item in entries(block(data, (offset, size), f"data block {n}"), f"data block {n}"):
            if key > separator or (last and key <= last):
                raise TableError(f"data block {n}: key order disagrees with the index")
            last = key
            yield key, item
