"""A bounded reader and writer of the protobuf wire format, for the few messages checkpoint formats use.

No generated code and no protobuf runtime: a message is read field by field from a buffer (bytes,
a memory map) between two offsets, and every varint and every length is checked against those
bounds before it is used, so a hostile length can neither allocate nor read past its message:

- a varint has at most 10 bytes, and its value fits 64 bits;
- a length-delimited field lies inside its message;
- a fixed-width field (wire types 1 and 5) lies inside its message;
- group wire types (3 and 4) and the reserved ones (6 and 7) are refused.

:func:`fields` yields ``(number, wire type, value)``: the integer of a varint or fixed field, or
``(start, end)`` offsets of a length-delimited one (its bytes are not copied). Errors are
:class:`WireError`, which a reader turns into an InputError naming its file. The writing half
(:func:`varint`, :func:`key`, :func:`length_delimited`) emits the same encoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
MAX_VARINT_BYTES = 10


class Buffer(Protocol):
    def __getitem__(self, index: int, /) -> int: ...
    def __len__(self) -> int: ...


class WireError(ValueError):
    """The bytes are not a well-formed message (the message says where)."""


def read_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` (before ``end``) and the offset after it."""
    value = shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= end:
            raise WireError(f"a varint at offset {pos} runs past the end of its message")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >= 1 << 64:
                raise WireError(f"the varint at offset {pos} does not fit 64 bits")
            return value, pos + i + 1
        shift += 7
    raise WireError(f"the varint at offset {pos} is longer than {MAX_VARINT_BYTES} bytes")


def fields(buf: Buffer, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """Every field of the message in ``buf[start:end]``: (field number, wire type, value or (start, end))."""
    pos = start
    while pos < end:
        tag_at = pos
        tag, pos = read_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at offset {tag_at}")
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield number, wire, value
        elif wire == LEN:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise WireError(f"field {number} at offset {tag_at} declares {length} bytes; its message holds "
                                f"{end - pos} more")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if size > end - pos:
                raise WireError(f"field {number} at offset {tag_at} runs past the end of its message")
            yield number, wire, int.from_bytes(bytes(buf[pos + i] for i in range(size)), "little")
            pos += size
        else:
            raise WireError(f"field {number} at offset {tag_at} has wire type {wire}, which is not read")


def packed_varints(buf: Buffer, start: int, end: int) -> list[int]:
    """The varints of a packed repeated field."""
    out: list[int] = []
    pos = start
    while pos < end:
        value, pos = read_varint(buf, pos, end)
        out.append(value)
    return out


def as_int64(value: int) -> int:
    """A varint read as a signed 64-bit integer (two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


# --- writing -----------------------------------------------------------------------------------------
def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_delimited(number: int, payload: bytes) -> bytes:
    return key(number, LEN) + varint(len(payload)) + payload


__all__ = ["FIXED32", "FIXED64", "LEN", "VARINT", "WireError", "as_int64", "fields", "key", "length_delimited",
           "packed_varints", "read_varint", "varint"]
