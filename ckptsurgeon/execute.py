"""The only code that moves tensor bytes: run a plan's steps into a writer, one tensor at a time.

A tensor that keeps its dtype is copied as a byte range when the reader knows where its bytes lie
and the writer can take a range (safetensors to safetensors: ``copy_file_range``, no Python
memory); otherwise it is read as one array (a memory-mapped view where the format allows) and
written. A cast converts the array with numpy / ml_dtypes and counts the values that overflowed.
Progress is reported through a callback; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .formats.base import Reader, Writer
from .plan import Plan
from .tensors import DTYPES, TensorSpec

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


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


def cast_array(arr: np.ndarray, code: str) -> tuple[np.ndarray, int]:
    """``arr`` converted to dtype ``code`` (numpy's / ml_dtypes' own conversion) and the overflow count.

    Float casts count values that were finite and are not after the cast (inf, or NaN for float8
    types without inf); integer casts count values outside the new type's range.
    """
    want = DTYPES[code]
    if arr.dtype == want.numpy:
        return arr, 0
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(want.numpy)
        if want.kind == "float":
            overflow = np.count_nonzero(np.isfinite(_values(arr)) & ~np.isfinite(_values(out)))
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


@dataclass(frozen=True)
class Move:
    """One output tensor: its spec, and the reader and tensor name its values come from."""

    out: TensorSpec
    reader: Reader
    name: str


def write_tensor(move: Move, writer: Writer, outcome: Outcome) -> np.ndarray | None:
    """Write one tensor (a byte-range copy when the dtype stays); return the array written, if one was made."""
    info = move.reader[move.name]
    if info.dtype == move.out.dtype:
        where = move.reader.byte_range(move.name)
        if where is not None and writer.write_range(move.out.name, *where):
            outcome.byte_copy = True
            return None
        arr = move.reader.read(move.name)
        writer.write(move.out.name, arr)
        return arr
    arr, outcome.overflow = cast_array(move.reader.read(move.name), move.out.dtype)
    writer.write(move.out.name, arr)
    return arr


def copy_tensors(
    moves: Sequence[Move],
    writer: Writer,
    *,
    progress: Progress | None = None,
    after: Callable[[Move, np.ndarray | None, Outcome], None] | None = None,
) -> dict[str, Outcome]:
    """Write every move, in order, into ``writer`` (already begun with their specs); return the outcomes."""
    total = sum(m.out.nbytes for m in moves)
    done = 0
    outcomes: dict[str, Outcome] = {}
    for move in moves:
        outcome = outcomes[move.out.name] = Outcome()
        written = write_tensor(move, writer, outcome)
        if after is not None:
            after(move, written, outcome)
        done += move.out.nbytes
        if progress is not None:
            progress(done, total)
    return outcomes


def plan_moves(plan: Plan, source: Reader, target: Reader) -> list[Move]:
    """The moves of a transfer plan: kept tensors from the target, the rest from the source."""
    moves = []
    for step in plan.steps:
        spec = TensorSpec(step.name, step.shape, step.dtype)
        if step.action == "keep":
            moves.append(Move(spec, target, step.name))
        else:
            assert step.source is not None
            moves.append(Move(spec, source, step.source))
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
    actions = {s.name: s.action for s in plan.steps}

    def count(move: Move, written: np.ndarray | None, outcome: Outcome) -> None:
        if actions[move.out.name] == "keep":
            outcome.changed = 0
        elif actions[move.out.name] == "replace":
            new = written if written is not None else move.reader.read(move.name)
            outcome.changed = count_changed(new, target.read(move.out.name))

    return copy_tensors(plan_moves(plan, source, target), writer, progress=progress,
                        after=count if count_changes else None)
