"""The only code that moves tensor bytes: run a plan's steps into a writer, one tensor at a time.

:func:`write_checkpoint` is the one entry: it holds the atomic open / begin / copy / finish /
abort sequence for every command that writes (transfer, rename, convert, sharded or not).

:func:`write_tensor` moves a tensor the cheapest way that applies:

1. **Byte range.** The dtype stays, the reader knows where the raw bytes lie and the writer takes a
   range (safetensors to safetensors: ``copy_file_range``). The bytes never enter Python.
   Or **stored as is**: where the writer can take the reader's storage directly (HDF5 to HDF5 with
   the same chunking and filters), the compressed chunks are copied without decoding them.
   With ``--count-changes`` a replaced tensor still goes as a byte range; a worker thread compares
   its values with the target's meanwhile (:class:`_CountBeside`).
2. **Pieces.** The values go through in flat, element-aligned pieces of at most :data:`PIECE_BYTES`
   into :meth:`Writer.write_chunks <ckptsurgeon.formats.base.Writer.write_chunks>`; a cast converts
   each piece, and ``--count-changes`` (where no byte range applies) compares each piece with the target's piece on the way
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

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .commits import Committed
from .errors import CheckFailed, Failure, UsageError, describe
from .formats.base import OpenOptions, Reader, Writer
from .plan import Plan
from .tensors import DTYPES, TensorSpec, numel
from .transforms import Transform

if TYPE_CHECKING:  # values.py (numpy) is imported only when a tensor's values are touched
    import numpy as np

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
Cast = Callable[["np.ndarray", str], tuple["np.ndarray", int]]  # (values, dtype code) -> (cast values, overflow count)

# Bytes of the widest dtype involved in one piece. Large enough that per-piece overhead is small,
# small enough that numpy's temporaries for a cast or a comparison stay near the CPU caches.
PIECE_BYTES = 4 * 1024 * 1024


@dataclass
class Outcome:
    """What happened to one output tensor while it was written."""

    overflow: int = 0  # values that were finite before a cast and are not after it (or out of range)
    changed: int | None = None  # values that differ from the target's (with --count-changes)
    byte_copy: bool = False  # moved as a byte range, never through Python memory
    nonfinite: int | None = None  # NaN / Inf values the input already held (counted with --fail-on-nonfinite)


@dataclass(frozen=True)
class ValueGates:
    """Checks on the values written, made after the last tensor and before anything is committed.

    A cast that overflows (a finite value that is Inf or NaN after it, an integer out of range)
    fails unless ``allow_overflow``; with ``fail_on_nonfinite`` every float tensor written is
    scanned in the input (also the ones copied as byte ranges) and any NaN or Inf fails.
    """

    allow_overflow: bool = False
    fail_on_nonfinite: bool = False

    def failures(self, outcomes: Mapping[str, Outcome], files: Mapping[str, str] | None = None) -> list[Failure]:
        """The gates ``outcomes`` fail; ``files`` (output tensor -> the input its values came from) says
        which file each is about: one failure per gate and file, in the order the tensors were written."""
        from .text import listing, plural

        def by_file(names: list[str]) -> dict[str | None, list[str]]:
            groups: dict[str | None, list[str]] = {}
            for name in names:
                groups.setdefault((files or {}).get(name), []).append(name)
            return groups

        out = []
        if not self.allow_overflow:
            for file, over in by_file([name for name, o in outcomes.items() if o.overflow]).items():
                values = sum(outcomes[name].overflow for name in over)
                out.append(Failure(
                    "overflow", f"{plural(values, 'value')} overflowed in a cast to a narrower dtype "
                    f"({plural(len(over), 'tensor')}: {listing(over)}); nothing was written",
                    file=file, accept="allow_overflow", count=values, names=tuple(over),
                ))
        if self.fail_on_nonfinite:
            for file, bad in by_file([name for name, o in outcomes.items() if o.nonfinite]).items():
                out.append(Failure(
                    "nonfinite", f"{plural(len(bad), 'tensor')} to write already {'holds' if len(bad) == 1 else 'hold'} NaN or Inf "
                    f"in the input ({listing(bad)}); nothing was written",
                    file=file, option="fail_on_nonfinite", count=len(bad), names=tuple(bad),
                ))
        return out


class GateFailed(CheckFailed):
    """A :class:`ValueGates` check failed; nothing was committed. ``outcomes`` holds every tensor's counts."""

    def __init__(self, failures: list[Failure], outcomes: dict[str, Outcome]) -> None:
        lead = failures[0].file if failures else None
        super().__init__(lead, describe(failures, lead), failures=failures)
        self.outcomes = outcomes


def _nonfinite_counting(flow: Iterable[np.ndarray], outcome: Outcome) -> Iterator[np.ndarray]:
    """Pass ``flow`` (input values) through, counting its NaN and Inf values into ``outcome``."""
    from .values import count_nonfinite

    outcome.nonfinite = 0
    for piece in flow:
        outcome.nonfinite += count_nonfinite(piece)
        yield piece


def _scan_nonfinite(move: Move, outcome: Outcome) -> None:
    """Count the NaN and Inf values of a move's input tensor (one more read, where the bytes went as a range)."""
    from .values import count_nonfinite, pieces

    elements = _piece_elements(move.reader[move.name].dtype)
    outcome.nonfinite = sum(count_nonfinite(p) for p in pieces(move.reader, move.name, elements))


def _is_float(code: str) -> bool:
    return DTYPES[code].kind == "float"


def _cast_pieces(flow: Iterable[np.ndarray], code: str, outcome: Outcome, cast: Cast) -> Iterator[np.ndarray]:
    for piece in flow:
        out, overflow = cast(piece, code)
        outcome.overflow += overflow
        yield out


def _counting(flow: Iterable[np.ndarray], old: Iterable[np.ndarray], outcome: Outcome) -> Iterator[np.ndarray]:
    """Pass ``flow`` through, counting how many values differ from the matching pieces of ``old``."""
    from .values import changed_in_piece

    outcome.changed = 0
    for new, before in zip(flow, old, strict=True):
        outcome.changed += changed_in_piece(new, before)
        yield new


def _as_bytes(pieces: Iterable[np.ndarray]) -> Iterator[memoryview]:
    for piece in pieces:
        yield piece.reshape(-1).view("u1").data


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
    transforms: tuple[Transform, ...] = ()  # applied to the inputs: (reader, name) and then ``more``
    more: tuple[tuple[Reader, str], ...] = ()  # further inputs (a concatenation's parts; a resize's target)

    @property
    def inputs(self) -> tuple[tuple[Reader, str], ...]:
        return ((self.reader, self.name), *self.more)


def _piece_elements(*codes: str) -> int:
    return max(1, PIECE_BYTES // max(DTYPES[c].itemsize for c in codes))


def write_tensor(move: Move, writer: Writer, outcome: Outcome, *, cast: Cast | None = None,
                 nonfinite: bool = False) -> None:
    """Write one tensor (see the module docstring for the three ways); fill in ``outcome``.

    ``cast`` converts one piece to a dtype code and counts its overflow (default :func:`ckptsurgeon.values.cast_array`).
    ``nonfinite``: also count the NaN and Inf values the input tensor holds (float tensors).
    """
    if move.transforms:
        _write_transformed(move, writer, outcome, nonfinite=nonfinite)
        return
    info = move.reader[move.name]
    out = move.out
    same_dtype = info.dtype == out.dtype
    against = move.against
    nonfinite = nonfinite and _is_float(info.dtype)
    if against is not None and against[out.name].shape != out.shape:
        outcome.changed = numel(out.shape)  # nothing to compare value by value
        against = None
    if same_dtype and against is None:
        pieces = move.reader.byte_ranges(move.name)
        if pieces is not None and writer.write_ranges(out.name, pieces):
            outcome.byte_copy = done = True
        else:
            done = writer.write_stored(out.name, move.reader, move.name)  # stored as is, or not at all
        if done:
            if nonfinite:
                _scan_nonfinite(move, outcome)
            return
        if writer.caps.streams_chunks and not nonfinite:  # the reader's bytes as they come, untouched
            writer.write_chunks(out.name, move.reader.iter_bytes(move.name))
            return
    from . import values  # numpy: from here on the values are touched

    if same_dtype and not writer.caps.streams_chunks:
        array = move.reader.read(move.name)
        if nonfinite:
            outcome.nonfinite = values.count_nonfinite(array.reshape(-1))
        writer.write(out.name, array)
        del array
        if against is not None:
            elements = _piece_elements(info.dtype, against[out.name].dtype)
            new, old = values.pieces(move.reader, move.name, elements), values.pieces(against, out.name, elements)
            outcome.changed = sum(values.changed_in_piece(a, b) for a, b in zip(new, old, strict=True))
        return
    codes = [info.dtype, out.dtype] + ([against[out.name].dtype] if against is not None else [])
    elements = _piece_elements(*codes)
    flow = values.pieces(move.reader, move.name, elements)
    if nonfinite:
        flow = _nonfinite_counting(flow, outcome)
    if not same_dtype:
        flow = _cast_pieces(flow, out.dtype, outcome, cast or values.cast_array)
    if against is not None:
        flow = _counting(flow, values.pieces(against, out.name, elements), outcome)
    writer.write_chunks(out.name, _as_bytes(flow))


def _sub_ranges(ranges: Sequence[tuple[Path, int, int]], start: int, length: int) -> list[tuple[Path, int, int]]:
    """Bytes ``start:start+length`` of a tensor stored as ``ranges`` (in order), as file ranges."""
    out = []
    for path, offset, size in ranges:
        if length <= 0:
            break
        if start >= size:
            start -= size
            continue
        n = min(size - start, length)
        out.append((path, offset + start, n))
        length -= n
        start = 0
    return out


def transformed_ranges(move: Move) -> list[tuple[Path, int, int]] | None:
    """A transformed tensor's bytes as file ranges of its inputs, where they still are a plain byte range
    (a split or a concatenation along the first axis that is not 1, a reshape): None otherwise."""
    if len(move.transforms) != 1 or any(r[n].dtype != move.out.dtype for r, n in move.inputs) \
            or DTYPES[move.out.dtype].is_block:
        return None
    infos = [r[n] for r, n in move.inputs]
    parts = move.transforms[0].byte_parts([i.shape for i in infos], DTYPES[move.out.dtype].itemsize)
    if parts is None:
        return None
    pieces: list[tuple[Path, int, int]] = []
    for index, start, length in parts:
        reader, name = move.inputs[index]
        ranges = reader.byte_ranges(name)
        if ranges is None:
            return None
        pieces += _sub_ranges(ranges, start, length)
    return pieces


def transformed_blocks(move: Move, overflow: list[int]) -> Iterator[np.ndarray]:
    """The output of a move's transforms (and its cast) in C-order blocks of rows: views of the inputs
    where the format maps them, so at most the inputs' pages and one block are held."""
    from .transforms import blocks

    for reader, name in move.inputs:
        code = reader[name].dtype
        if DTYPES[code].is_block:
            raise UsageError(reader.path, f"tensor {name!r} is quantized ({code}): its blocks are moved as they are, "
                             "never split, joined, reshaped or cast")
    arrays = [reader.read(name) for reader, name in move.inputs]
    yield from blocks(move.transforms, arrays, move.out.dtype, overflow)


def value_blocks(move: Move, overflow: list[int]) -> Iterator[np.ndarray]:
    """A move's output values in order, cast to its dtype: :func:`transformed_blocks` when it has
    transforms, else the input streamed in pieces (never read whole), as :func:`write_tensor` casts."""
    if move.transforms:
        yield from transformed_blocks(move, overflow)
        return
    from .values import cast_array, pieces

    elements = _piece_elements(move.reader[move.name].dtype, move.out.dtype)
    for piece in pieces(move.reader, move.name, elements):
        out, over = cast_array(piece, move.out.dtype)
        overflow[0] += over
        yield out


def _write_transformed(move: Move, writer: Writer, outcome: Outcome, *, nonfinite: bool) -> None:
    """A tensor through its transforms: as file ranges of its inputs where the bytes stay in order
    (a split along the first axis), else block by block through :func:`transformed_blocks`."""
    if move.against is None:
        pieces = transformed_ranges(move)
        if pieces is not None and writer.write_ranges(move.out.name, pieces):
            outcome.byte_copy = True
            if nonfinite:
                for reader, name in move.inputs:
                    if _is_float(reader[name].dtype):
                        _scan_nonfinite(Move(move.out, reader, name), outcome)
            return
    from . import values

    if nonfinite:
        outcome.nonfinite = sum(values.count_nonfinite(r.read(n).reshape(-1)) for r, n in move.inputs if _is_float(r[n].dtype))
    overflow = [0]
    flow: Iterator[np.ndarray] = transformed_blocks(move, overflow)
    if move.against is not None:
        flow = _counting_blocks(flow, move.against, move.out, outcome)
    if writer.caps.streams_chunks:
        writer.write_chunks(move.out.name, (b.reshape(-1).view("u1").data for b in flow))
    else:
        import numpy as np

        whole = np.empty(move.out.shape, dtype=DTYPES[move.out.dtype].numpy)
        flat, at = whole.reshape(-1), 0
        for block in flow:
            flat[at : at + block.size] = block.reshape(-1)
            at += block.size
        writer.write(move.out.name, whole)
    outcome.overflow += overflow[0]
    for reader, name in move.more:
        release(reader, name)


def _counting_blocks(flow: Iterable[np.ndarray], against: Reader, out: TensorSpec, outcome: Outcome) -> Iterator[np.ndarray]:
    """Pass blocks through, counting how many values differ from ``against``'s tensor of the same name."""
    from .values import changed_in_piece

    if against[out.name].shape != out.shape:
        outcome.changed = numel(out.shape)
        yield from flow
        return
    old = against.read(out.name).reshape(-1)
    outcome.changed, at = 0, 0
    for block in flow:
        flat = block.reshape(-1)
        outcome.changed += changed_in_piece(flat, old[at : at + flat.size])
        at += flat.size
        yield block


def align_output(writer: Writer, moves: Sequence[Move]) -> None:
    """Let a writer that can (``align_window`` / ``align_data``: safetensors) place its data section where
    most of the bytes to be copied as ranges line up with their sources; see the safetensors Writer."""
    if not writer.caps.align:
        return
    window = writer.align_window
    votes: dict[int, int] = {}  # residue of (source offset - output offset) -> bytes
    offset = 0
    for move in moves:
        if move.against is None and not move.transforms and move.reader[move.name].dtype == move.out.dtype:
            where = move.reader.byte_range(move.name)
            if where is not None and where[2]:
                residue = (where[1] - offset) % window
                votes[residue] = votes.get(residue, 0) + where[2]
        offset += move.out.nbytes
    if votes:
        writer.align_data(max(votes, key=lambda r: votes[r]))


def release(reader: Reader, name: str) -> None:
    """Let go of the memory-mapped pages of a tensor the caller is done with (readers that map files)."""
    if reader.caps.release:
        reader.release(name)


class _CountBeside:
    """``--count-changes`` beside byte-range copies.

    A replaced tensor that keeps its dtype is copied as a byte range, exactly as without counting,
    while a worker thread compares the source's values with the target's (numpy releases the GIL),
    so the comparison overlaps the copy and the disk's writeback instead of adding to them. The
    counts are collected by :meth:`wait` before the writer finishes; an error in the worker is
    raised there. Only the calling thread touches the writer.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: list[tuple[Outcome, Future[int]]] = []

    def take(self, move: Move, writer: Writer, outcome: Outcome) -> bool:
        """Copy ``move`` as a byte range and count its changes in the worker; False if it does not apply."""
        against = move.against
        if against is None or move.transforms or move.reader[move.name].dtype != move.out.dtype \
                or against[move.out.name].shape != move.out.shape:
            return False
        where = move.reader.byte_range(move.name)
        if where is None or not writer.write_range(move.out.name, *where):
            return False
        outcome.byte_copy = True
        if self._pool is None:
            from . import values  # noqa: F401  (imported here, not first in the worker)

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-count")
        self._jobs.append((outcome, self._pool.submit(_count_changes, move)))
        return True

    def wait(self) -> None:
        for outcome, job in self._jobs:
            outcome.changed = job.result()

    def __enter__(self) -> _CountBeside:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # a failed run stops after the tensor in hand


def _count_changes(move: Move) -> int:
    """How many values of the move's tensor differ from the target's (then its pages are released)."""
    from .values import changed_in_piece, pieces

    against = move.against
    assert against is not None
    elements = _piece_elements(move.reader[move.name].dtype, against[move.out.name].dtype)
    new, old = pieces(move.reader, move.name, elements), pieces(against, move.out.name, elements)
    changed = sum(changed_in_piece(a, b) for a, b in zip(new, old, strict=True))
    release(move.reader, move.name)
    release(against, move.out.name)
    return changed


def copy_tensors(moves: Sequence[Move], writer: Writer, *, progress: Progress | None = None,
                 cast: Cast | None = None, nonfinite: bool = False) -> dict[str, Outcome]:
    """Write every move, in order, into ``writer`` (already begun with their specs); return the outcomes.

    ``nonfinite``: count the NaN and Inf values of every float tensor's input too.
    """
    align_output(writer, moves)
    total = sum(m.out.nbytes for m in moves)
    done = 0
    outcomes: dict[str, Outcome] = {}
    with _CountBeside() as beside:
        for move in moves:
            outcome = outcomes[move.out.name] = Outcome()
            if beside.take(move, writer, outcome):
                if nonfinite and _is_float(move.reader[move.name].dtype):
                    _scan_nonfinite(move, outcome)
            else:
                write_tensor(move, writer, outcome, cast=cast, nonfinite=nonfinite)
                release(move.reader, move.name)
                if move.against is not None:
                    release(move.against, move.out.name)
            done += move.out.nbytes
            if progress is not None:
                progress(done, total)
        beside.wait()
    return outcomes


def plan_moves(plan: Plan, readers: Mapping[str, Reader], *, count_changes: str | None = None) -> list[Move]:
    """The moves of a plan: each step's value read from its input, in the plan's order.

    ``count_changes`` names the input whose tensor of the same name each replaced tensor is
    compared with as it is written (a transfer's target, with ``--count-changes``).
    """
    moves = []
    against = readers[count_changes] if count_changes is not None else None
    for step in plan.steps:
        ref = step.origin
        more = tuple((readers[r.input], r.name) for r in step.inputs[1:])
        moves.append(Move(step.out, readers[ref.input], ref.name, against if step.action == "replace" else None,
                          step.transforms, more))
    return moves


def _origins(moves: Sequence[Move], like: Reader | None) -> dict[str, str]:
    """Output name -> the like-file tensor it stands for, where a tensor of the like-file is written renamed."""
    return {m.out.name: m.name for m in moves if like is not None and m.reader is like and m.name != m.out.name}


def _fill(writer: Writer, moves: Sequence[Move], like: Reader | None, progress: Progress | None,
          cast: Cast | None, gates: ValueGates | None) -> dict[str, Outcome]:
    """begin, copy every tensor, check the gates, finish; on any error (or interruption, or a failed
    gate: :class:`GateFailed`) abort the writer and re-raise, before anything is committed."""
    try:
        writer.begin([m.out for m in moves], origins=_origins(moves, like))
        nonfinite = gates is not None and gates.fail_on_nonfinite
        with contextlib.ExitStack() as checks:  # checksums of copied ranges run beside the copy: settled on leaving
            readers = {id(m.reader): m.reader for m in moves}
            if like is not None:  # a target laid out like, even when none of its tensors is copied
                readers.setdefault(id(like), like)
            for reader in readers.values():
                checks.enter_context(reader.checks_beside())
            outcomes = copy_tensors(moves, writer, progress=progress, cast=cast, nonfinite=nonfinite)
        failures = gates.failures(outcomes, {m.out.name: str(m.reader.path) for m in moves}) if gates is not None else []
        if failures:
            raise GateFailed(failures, outcomes)
        writer.finish()  # a writer of several files commits here: after the gates
    except BaseException:
        writer.abort()
        raise
    return outcomes


@dataclass
class Written:
    """What writing a plan did: each output tensor's outcome, and the writer's layout fallback (if any)."""

    outcomes: dict[str, Outcome]
    layout_fallback: str | None = None
    files: list[Committed] = field(default_factory=list)  # every file put in place: path, bytes, sha256
    follows: dict[str, str] = field(default_factory=dict)  # a tensor that shows another's values (Writer.follows)
    notes: list[str] = field(default_factory=list)  # what else the layout changed (Writer.notes)
    updated: bool = False  # the output is the like-file updated (Writer.updated)

    def layout(self) -> dict[str, Any]:
        """The ``layout`` entry of a JSON report's ``output``."""
        return {"updated": self.updated, "fallback": self.layout_fallback, "follows": dict(self.follows),
                "notes": list(self.notes)}


def write_checkpoint(
    dest: Path,
    fmt: str,
    plan: Plan,
    readers: Mapping[str, Reader],
    *,
    metadata: Mapping[str, str],
    like: Reader | None = None,
    update: bool = False,
    count_changes: str | None = None,
    progress: Progress | None = None,
    cast: Cast | None = None,
    verify: bool = False,
    writer_options: Mapping[str, Any] | None = None,
    gates: ValueGates | None = None,
    no_clobber: bool = False,
    hash_files: bool = True,
    encrypt: Any = None,
) -> Written:
    """Write ``plan`` as a checkpoint of format ``fmt`` at ``dest``: whole, or not at all.

    A single-file output is written to a temporary file beside ``dest``, fsynced and renamed into
    place (:func:`ckptsurgeon.atomic.atomic_path`); a writer that writes several files
    (``caps.sharded``) commits them itself, its index last. ``like`` lays the output out like that
    input (a tensor of it written under a new name keeps its place); with ``update`` a writer that
    can (``caps.updates``) writes ``like`` itself updated, all it holds beside the tensors carried
    through (a PyTorch training checkpoint stays resumable). ``verify`` re-reads the
    written file before it is renamed into place (:func:`verify_written`). With ``count_changes``
    (an input's name) replaced tensors are compared with that input's; kept ones count 0 changes.
    ``gates`` are checked after the last tensor is written and before anything is committed: a
    failed one raises :class:`GateFailed` (a CheckFailed carrying the outcomes) and nothing is written.
    Every file committed is recorded with its size and, with ``hash_files``, its sha256
    (``Written.files``, :mod:`ckptsurgeon.commits`);
    with ``no_clobber`` no existing file is replaced, not even one another run creates meanwhile.
    ``encrypt`` (a :class:`~ckptsurgeon.formats.mindspore.crypto.Encryption`) encrypts the output,
    for a writer that can (``caps.encrypts``); any other is a UsageError.
    """
    from .atomic import atomic_path, output_errors
    from .commits import recording
    from .formats import writer_for

    writer_class = writer_for(fmt)
    moves = plan_moves(plan, readers, count_changes=count_changes)
    options = dict(writer_options or {})
    if update and like is not None and writer_class.caps.updates:
        options["update"] = True
    if encrypt is not None:
        if not writer_class.caps.encrypts:
            raise UsageError(dest, f"--enc-key-file: a {fmt} output is not encrypted; only MindSpore .ckpt outputs are")
        options["encrypt"] = encrypt
    with recording(no_clobber=no_clobber, hashes=hash_files) as log:
        if writer_class.caps.sharded or writer_class.caps.commits:
            with output_errors(dest):
                writer = writer_class(dest, metadata=metadata, like=like, **options)
                outcomes = _fill(writer, moves, like, progress, cast, gates)
        else:
            with atomic_path(dest) as tmp:
                writer = writer_class(tmp, metadata=metadata, like=like, **options)
                outcomes = _fill(writer, moves, like, progress, cast, gates)
                if verify:
                    verify_written(tmp, moves, shown=dest, options=writer.read_back, follows=writer.follows)
    if count_changes is not None:
        for step in plan.steps:
            if step.action == "keep":
                outcomes[step.name].changed = 0
    return Written(outcomes, writer.layout_fallback, log.files, dict(writer.follows), list(writer.notes), writer.updated)


def verify_written(path: Path, moves: Sequence[Move], shown: Path | None = None, *,
                   options: OpenOptions | None = None, follows: Mapping[str, str] | None = None) -> None:
    """Re-read a written checkpoint and check every tensor against what was planned.

    Each tensor must hold its input's bytes (after the planned cast), but those the writer says
    show another's values (``follows``: tied storage). ``options`` open the file as the writer
    says it lists its tensors (``Writer.read_back``). Raises CheckFailed naming the first tensor
    that differs, and ``shown`` (the destination ``path`` is written for) or ``path``.
    """
    file = str(shown if shown is not None else path)
    import hashlib

    from .formats import open_checkpoint
    from .values import cast_array

    with open_checkpoint(path, options) as written:
        names = [t.name for t in written.tensors]
        if sorted(names) != sorted(m.out.name for m in moves):
            raise CheckFailed.of([Failure("verify", "the written file does not hold the planned tensors",
                                          file=file, option="verify")])
        for move in moves:
            if follows and move.out.name in follows:
                continue
            info = move.reader[move.name]
            if move.transforms:
                digest = hashlib.sha256()
                for block in transformed_blocks(move, [0]):
                    digest.update(block.reshape(-1).view("u1").data)
                expected = digest.hexdigest()
            elif info.dtype == move.out.dtype:
                expected = move.reader.sha256(move.name)
            else:
                converted, _ = cast_array(move.reader.read(move.name), move.out.dtype)
                expected = hashlib.sha256(converted.tobytes()).hexdigest()
            if written.sha256(move.out.name) != expected or written[move.out.name].shape != move.out.shape:
                raise CheckFailed.of([Failure(
                    "verify", f"tensor {move.out.name!r} as written differs from the plan; nothing was written",
                    file=file, option="verify", count=1, names=(move.out.name,),
                )])


def fill_arrays(plan: Plan, readers: Mapping[str, Reader], dest: Mapping[str, np.ndarray], *,
                gates: ValueGates | None = None) -> dict[str, Outcome]:
    """Write a plan's replaced tensors into arrays in memory (``dest``: output name -> a C-contiguous,
    writable array of the step's shape and dtype), in place; kept tensors are left as they are.

    All or nothing, as a file is: when ``gates`` could fail (a cast that may overflow, or
    ``fail_on_nonfinite``), the values are computed once without being stored and the gates checked
    first (:class:`GateFailed`); only then is anything written. Each tensor moves a block of rows
    at a time (:func:`value_blocks`), so memory holds its input's pages and one block.
    """
    import numpy as np

    moves = [m for m, s in zip(plan_moves(plan, readers), plan.steps, strict=True) if s.action == "replace"]
    for move in moves:
        array = dest[move.out.name]
        if tuple(array.shape) != move.out.shape or array.dtype != DTYPES[move.out.dtype].numpy:
            raise UsageError(None, f"{move.out.name!r}: the array is {array.dtype}{list(array.shape)}, "
                             f"the plan writes {move.out.dtype}{list(move.out.shape)}")
    outcomes = {m.out.name: Outcome() for m in moves}
    with contextlib.ExitStack() as checks:
        for reader in {id(r): r for m in moves for r, _ in m.inputs}.values():
            checks.enter_context(reader.checks_beside())
        nonfinite = gates is not None and gates.fail_on_nonfinite
        casts = {id(m) for m in moves if any(r[n].dtype != m.out.dtype for r, n in m.inputs)}
        if gates is not None and (nonfinite or (casts and not gates.allow_overflow)):
            from .values import count_nonfinite

            for move in moves:
                outcome, overflow = outcomes[move.out.name], [0]
                if nonfinite:  # NaN / Inf the inputs already hold, as a file's transfer counts them
                    outcome.nonfinite = sum(count_nonfinite(r.read(n).reshape(-1)) for r, n in move.inputs
                                            if _is_float(r[n].dtype))
                if id(move) in casts and not gates.allow_overflow:
                    for _ in value_blocks(move, overflow):
                        pass
                    outcome.overflow = overflow[0]
            failures = gates.failures(outcomes, {m.out.name: str(m.reader.path) for m in moves})
            if failures:
                raise GateFailed(failures, outcomes)
        for move in moves:
            flat, at, overflow = np.asarray(dest[move.out.name]).reshape(-1), 0, [0]
            for block in value_blocks(move, overflow):
                part = block.reshape(-1)
                flat[at : at + part.size] = part
                at += part.size
            outcomes[move.out.name].overflow = overflow[0]
            for reader, name in move.inputs:
                release(reader, name)
    return outcomes
