"""The only code that moves tensor bytes: run a plan's steps into a writer, one tensor at a time.

:func:`write_tensor` moves a tensor the cheapest way that applies:

1. **Byte range.** The dtype stays, the reader knows where the raw bytes lie and the writer takes a
   range (safetensors to safetensors: ``copy_file_range``). The bytes never enter Python.
2. **Pieces.** The values go through in flat, element-aligned pieces of at most :data:`PIECE_BYTES`
   into :meth:`Writer.write_chunks <ckptsurgeon.formats.base.Writer.write_chunks>`; a cast converts
   each piece, and ``--count-changes`` compares each piece with the target's piece on the way
   (identical bytes skip the arithmetic). The safetensors and npz writers stream the pieces; other
   writers assemble the tensor.
3. **Whole array.** A tensor that keeps its dtype, for a writer that does not stream pieces (HDF5),
   is handed over as one array: a view of the memory-mapped input where the format allows.

After each tensor the pages of it that an input mapped are released (``Reader.release``, where the
reader has one), so memory is bounded by a few pieces (by the largest tensor on path 3), not by the
model. Casting and comparing work element by element, so pieces give the same bytes and counts as
whole arrays. Progress is reported through a callback; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .formats.base import Reader, Writer
from .plan import Plan
from .tensors import DTYPES, TensorSpec, code_of, numel

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
Cast = Callable[[np.ndarray, str], tuple[np.ndarray, int]]  # (values, dtype code) -> (cast values, overflow count)

# Bytes of the widest dtype involved in one piece. Large enough that per-piece overhead is small,
# small enough that numpy's temporaries for a cast or a comparison stay near the CPU caches.
PIECE_BYTES = 4 * 1024 * 1024


@dataclass
class Outcome:
    """What happened to one output tensor while it was written."""

    overflow: int = 0  # values that were finite before a cast and are not after it (or out of range)
    changed: int | None = None  # values that differ from the target's (with --count-changes)
    byte_copy: bool = False  # moved as a byte range, never through Python memory


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
                overflow = np.count_nonzero(nonfinite(out) & ~nonfinite(arr))
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
    """A tensor's values as flat arrays of ``elements`` values each (the last may be shorter), in order.

    Cut from the reader's byte chunks: a piece is a view of a chunk (of a memory map, where the
    format reads that way) when it lies inside one, the tensor's last piece included, and a copy
    only where it straddles two chunks.
    """
    info = reader[name]
    dt = DTYPES[info.dtype].numpy
    size = max(1, elements) * dt.itemsize
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
            yield np.frombuffer(bytes(pending), dtype=dt)
            left -= len(pending)
            pending.clear()
        while start < len(view):
            n = min(size, len(view) - start)
            if n < size and n != left:  # a short piece that is not the tensor's last: wait for the next chunk
                pending += view[start:]
                break
            yield np.frombuffer(view[start : start + n], dtype=dt)
            left -= n
            start += n
    if pending or left:
        raise InputError(reader.path, f"tensor {name!r}: its data ends {left} bytes early")


def _cast_pieces(values: Iterable[np.ndarray], code: str, outcome: Outcome, cast: Cast) -> Iterator[np.ndarray]:
    for piece in values:
        out, overflow = cast(piece, code)
        outcome.overflow += overflow
        yield out


def _counting(values: Iterable[np.ndarray], old: Iterable[np.ndarray], outcome: Outcome) -> Iterator[np.ndarray]:
    """Pass ``values`` through, counting how many differ from the matching pieces of ``old``."""
    outcome.changed = 0
    for new, before in zip(values, old, strict=True):
        outcome.changed += changed_in_piece(new, before)
        yield new


def _as_bytes(values: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for piece in values:
        yield piece.reshape(-1).view(np.uint8)


@dataclass(frozen=True)
class Move:
    """One output tensor: its spec, and the reader and tensor name its values come from.

    ``against``: count how many values change from that reader's tensor named like the output
    (the target, with ``--count-changes``).
    """

    out: TensorSpec
    reader: Reader
    name: str
    against: Reader | None = None


def _piece_elements(*codes: str) -> int:
    return max(1, PIECE_BYTES // max(DTYPES[c].itemsize for c in codes))


def write_tensor(move: Move, writer: Writer, outcome: Outcome, *, cast: Cast = cast_array) -> None:
    """Write one tensor (see the module docstring for the three ways); fill in ``outcome``.

    ``cast`` converts one piece to a dtype code and counts its overflow (default :func:`cast_array`).
    """
    info = move.reader[move.name]
    out = move.out
    same_dtype = info.dtype == out.dtype
    against = move.against
    if against is not None and against[out.name].shape != out.shape:
        outcome.changed = numel(out.shape)  # nothing to compare value by value
        against = None
    if same_dtype and against is None:
        where = move.reader.byte_range(move.name)
        if where is not None and writer.write_range(out.name, *where):
            outcome.byte_copy = True
            return
    if same_dtype and not writer.streams_chunks:
        writer.write(out.name, move.reader.read(move.name))
        if against is not None:
            elements = _piece_elements(info.dtype, against[out.name].dtype)
            new, old = pieces(move.reader, move.name, elements), pieces(against, out.name, elements)
            outcome.changed = sum(changed_in_piece(a, b) for a, b in zip(new, old, strict=True))
        return
    codes = [info.dtype, out.dtype] + ([against[out.name].dtype] if against is not None else [])
    elements = _piece_elements(*codes)
    values = pieces(move.reader, move.name, elements)
    if not same_dtype:
        values = _cast_pieces(values, out.dtype, outcome, cast)
    if against is not None:
        values = _counting(values, pieces(against, out.name, elements), outcome)
    writer.write_chunks(out.name, _as_bytes(values))


def align_output(writer: Writer, moves: Sequence[Move]) -> None:
    """Let a writer that can (``align_window`` / ``align_data``: safetensors) place its data section where
    most of the bytes to be copied as ranges line up with their sources; see the safetensors Writer."""
    window = getattr(writer, "align_window", None)
    if not window:
        return
    votes: dict[int, int] = {}  # residue of (source offset - output offset) -> bytes
    offset = 0
    for move in moves:
        if move.against is None and move.reader[move.name].dtype == move.out.dtype:
            where = move.reader.byte_range(move.name)
            if where is not None and where[2]:
                residue = (where[1] - offset) % window
                votes[residue] = votes.get(residue, 0) + where[2]
        offset += move.out.nbytes
    if votes:
        writer.align_data(max(votes, key=lambda r: votes[r]))  # type: ignore[attr-defined]


def release(reader: Reader, name: str) -> None:
    """Let go of the memory-mapped pages of a tensor the caller is done with (readers that map files)."""
    drop = getattr(reader, "release", None)
    if drop is not None:
        drop(name)


def copy_tensors(moves: Sequence[Move], writer: Writer, *, progress: Progress | None = None,
                 cast: Cast = cast_array) -> dict[str, Outcome]:
    """Write every move, in order, into ``writer`` (already begun with their specs); return the outcomes."""
    align_output(writer, moves)
    total = sum(m.out.nbytes for m in moves)
    done = 0
    outcomes: dict[str, Outcome] = {}
    for move in moves:
        outcome = outcomes[move.out.name] = Outcome()
        write_tensor(move, writer, outcome, cast=cast)
        release(move.reader, move.name)
        if move.against is not None:
            release(move.against, move.out.name)
        done += move.out.nbytes
        if progress is not None:
            progress(done, total)
    return outcomes


def plan_moves(plan: Plan, source: Reader, target: Reader, *, count_changes: bool = False) -> list[Move]:
    """The moves of a transfer plan: kept tensors from the target, the rest from the source.

    With ``count_changes``, replaced tensors are compared with the target's values as they are written.
    """
    moves = []
    for step in plan.steps:
        spec = TensorSpec(step.name, step.shape, step.dtype)
        if step.action == "keep":
            moves.append(Move(spec, target, step.name))
        else:
            assert step.source is not None
            against = target if count_changes and step.action == "replace" else None
            moves.append(Move(spec, source, step.source, against))
    return moves


def execute(
    plan: Plan,
    source: Reader,
    target: Reader,
    writer: Writer,
    *,
    count_changes: bool = False,
    progress: Progress | None = None,
) -> dict[str, Outcome]:
    """Write a transfer plan into ``writer`` (already begun); with ``count_changes``, count changed values."""
    moves = plan_moves(plan, source, target, count_changes=count_changes)
    outcomes = copy_tensors(moves, writer, progress=progress)
    if count_changes:
        for step in plan.steps:
            if step.action == "keep":
                outcomes[step.name].changed = 0
    return outcomes
