"""CRC-32C (Castagnoli), as TensorFlow's tables and tensor bundles use it, masked as LevelDB masks it.

The checksum comes from ``google-crc32c`` (Google's C extension, with a pure-Python fallback of its
own), imported here only, when a TensorFlow checkpoint is read or written.
"""

from __future__ import annotations

MASK_DELTA = 0xA282EAD8


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    import google_crc32c

    return int(google_crc32c.extend(crc, data if isinstance(data, bytes) else bytes(data)))  # it takes bytes only


def mask(crc: int) -> int:
    """LevelDB's mask: rotate right by 15 bits and add a constant (a CRC of data holding CRCs stays useful)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    return mask(crc32c(data))


__all__ = ["crc32c", "mask", "masked_crc32c", "unmask"]
