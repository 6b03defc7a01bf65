"""Value-level work on tensors, in numpy: casts with overflow counts, change counts, NaN/Inf tests,
and cutting a tensor into flat pieces.

Everything here works element by element, so a whole tensor and its pieces give the same bytes
and counts. Imported only when values are touched: a byte-range copy never loads numpy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .errors import InputError
from .formats.base import Reader
from .tensors import DTYPES, code_of

_NUMPY_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _values(a: np.ndarray) -> np.ndarray:
    """An array numpy's ufuncs handle: ml_dtypes floats (bfloat16, float8) widen exactly to float32."""
    if a.dtype.kind in "biu" or a.dtype in _NUMPY_FLOATS:
        return a
    return a.astype(np.float32)


# Float formats whose NaN and infinities are exactly the bit patterns with every bit of a mask set
# (the exponent; float8_e4m3fn, without infinities, has NaN at exponent and mantissa all ones).
_NONFINITE_BITS: dict[str, tuple[type[np.unsignedinteger], int]] = {
    "F64": (np.uint64, 0x7FF0_0000_0000_0000),
    "F32": (np.uint32, 0x7F80_0000),
    "F16": (np.uint16, 0x7C00),
    "BF16": (np.uint16, 0x7F80),
    "F8_E4M3": (np.uint8, 0x7F),
    "F8_E5M2": (np.uint8, 0x7C),
    "F8_E8M0": (np.uint8, 0xFF),
}


def nonfinite(a: np.ndarray) -> np.ndarray:
    """True where ``a`` holds NaN or ±inf: :func:`numpy.isfinite` negated, read from the bits (no widening)."""
    code = code_of(a.dtype)
    if code in _NONFINITE_BITS:
        word, mask = _NONFINITE_BITS[code]
        return (a.view(word) & word(mask)) == word(mask)
    return ~np.isfinite(_values(a))


def any_nonfinite(a: np.ndarray) -> bool:
    """Whether ``a`` holds a NaN or an infinity: one masked maximum (no boolean temporary) where the bits allow."""
    code = code_of(a.dtype)
    if code in _NONFINITE_BITS and a.size:
        word, mask = _NONFINITE_BITS[code]
        return int(np.bitwise_and(a.view(word), word(mask)).max()) == mask
    return bool(nonfinite(a).any())


def count_nonfinite(a: np.ndarray) -> int:
    """How many NaN and Inf values a float array holds (0 without a pass that allocates, when there are none)."""
    if not a.size or not any_nonfinite(a):
        return 0
    return int(np.count_nonzero(nonfinite(a)))


def cast_array(arr: np.ndarray, code: str) -> tuple[np.ndarray, int]:
    """``arr`` converted to dtype ``code`` (numpy's / ml_dtypes' own conversion) and the overflow count.

    Float casts count values that were finite and are not after the cast (inf, or NaN for float8
    types without inf); integer casts count values outside the new type's range. Works on a whole
    tensor or on any flat piece of one: the conversion is element by element.
    """
    want = DTYPES[code]
    if arr.dtype == want.numpy:
        return arr, 0
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(want.numpy)
        if want.kind == "float":
            overflow = 0
            if any_nonfinite(out):  # rare: only then find out which of them were finite before
                overflow = int(np.count_nonzero(nonfinite(out) & ~nonfinite(arr)))
        else:
            info = np.iinfo(want.numpy)
            overflow = np.count_nonzero(arr < info.min) + np.count_nonzero(arr > info.max)
    return out, int(overflow)


def count_changed(new: np.ndarray, old: np.ndarray) -> int:
    """How many elements differ in value (NaN equals NaN; -0.0 equals 0.0)."""
    if new.shape != old.shape:
        return int(new.size)
    a, b = _values(new), _values(old)
    with np.errstate(invalid="ignore"):
        same = a == b
        if a.dtype.kind == "f" and b.dtype.kind == "f":
            same |= np.isnan(a) & np.isnan(b)
    return int(new.size - np.count_nonzero(same))


def _words(a: np.ndarray) -> np.ndarray:
    """A flat array's bytes as the widest unsigned integers that divide them (fewer, faster comparisons)."""
    raw = a.reshape(-1).view(np.uint8)
    for word in (np.uint64, np.uint32, np.uint16):
        if raw.size % np.dtype(word).itemsize == 0:
            return raw.view(word)
    return raw


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two flat arrays hold the same bytes (a differing start answers without reading the rest)."""
    if a.nbytes != b.nbytes or a[:64].tobytes() != b[:64].tobytes():
        return False
    return bool(np.array_equal(_words(a), _words(b)))


def changed_in_piece(new: np.ndarray, old: np.ndarray) -> int:
    """:func:`count_changed` for two flat pieces of one length, with shortcuts that give the same count.

    Identical bytes mean no change. Integers compare directly. For numpy's own floats ``!=`` already
    treats -0.0 and 0.0 as equal; it counts a pair of NaNs as different, so such pairs are taken off
    when the new piece has a NaN (its maximum is NaN then: one pass, no temporary). Everything else
    (bfloat16, float8, mixed dtypes) widens.
    """
    if new.dtype == old.dtype:
        if same_bytes(new, old):
            return 0
        if new.dtype.kind in "biu":
            return int(np.count_nonzero(new != old))
        if new.dtype in _NUMPY_FLOATS:
            with np.errstate(invalid="ignore"):
                n = np.count_nonzero(new != old)
                if n and np.isnan(new.max()):
                    n -= np.count_nonzero(np.isnan(new) & np.isnan(old))
            return int(n)
    return count_changed(new, old)


def pieces(reader: Reader, name: str, elements: int) -> Iterator[np.ndarray]:
    """A tensor's values as flat arrays of ``elements`` values each (the last may be shorter), in order."""
    dt = DTYPES[reader[name].dtype].numpy
    for piece in element_chunks(reader, name, elements):
        yield np.frombuffer(piece, dtype=dt)


def element_chunks(reader: Reader, name: str, elements: int) -> Iterator[memoryview]:
    """A tensor's raw bytes in pieces of exactly ``elements`` elements (the last may be shorter), in order.

    Readers cut their byte streams where it suits the format (HDF5 by rows, safetensors by bytes),
    so pieces are re-cut here: a piece is a view of the reader's chunk (of a memory map, where the
    format reads that way) when it lies inside one, the tensor's last piece included, and a copy
    only where it straddles two chunks. At most one reader chunk and one piece are held.
    """
    info = reader[name]
    size = max(1, elements) * DTYPES[info.dtype].itemsize
    left = info.nbytes  # bytes of the tensor not yet yielded
    pending = bytearray()
    for chunk in reader.iter_bytes(name, size):
        view = memoryview(chunk)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        start = 0
        if pending:
            start = min(size - len(pending), len(view))
            pending += view[:start]
            if len(pending) < size and len(pending) < left:
                continue
            yield memoryview(bytes(pending))
            left -= len(pending)
            pending.clear()
        while start < len(view):
            n = min(size, len(view) - start)
            if n < size and n != left:  # a short piece that is not the tensor's last: wait for the next chunk
                pending += view[start:]
                break
            yield view[start : start + n]
            left -= n
            start += n
    if pending or left:
        raise InputError(reader.path, f"tensor {name!r}: its data ends {left} bytes early")
