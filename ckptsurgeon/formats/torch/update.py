"""A PyTorch checkpoint written *updated*: the target's own archive, with new values in its tensors.

A transfer into a training checkpoint (``{"model": ..., "optimizer": ..., "epoch": ...}``) or a
Lightning one must leave it resumable, so the output is the target's zip archive with only the
bytes of the written tensors' storages changed:

- ``data.pkl`` is copied byte for byte, so everything ``torch.load`` returns is the target's:
  epoch, hyper-parameters, optimizer and scheduler states, callbacks, loop state, Parameters, a
  state dict's ``_metadata``. Every other member is copied too (the metadata member and
  ``.data/serialization_id`` are written anew, under the output's own folder name).
- A written tensor that is the whole of its storage, in C order, and the only tensor of the
  checkpoint that views it (the usual case) is streamed straight into its storage's member.
- Any other (a view with an offset or strides, weights tied to one storage, a big-endian file) is
  held until the end, then written into a copy of its storage's bytes through its view, as
  ``load_state_dict`` copies into a tied parameter. A tensor whose values are the target's own is
  not written (it would undo a tied partner's new values); a tensor left as it was that shares bytes
  with a written one then shows that one's values, and is listed in ``follows``. Two written tensors
  that share bytes but bring different values cannot both be kept: :class:`~ckptsurgeon.errors.OutputError`.
- Storages no written tensor views (optimizer state, an EMA copy, tensors outside the listed
  state dict) are copied as they are.

Memory holds only the held tensors (and, at the end, one storage at a time). :func:`plan` says
when the target cannot be followed this way: a legacy file, or tensors that are not exactly the
target's listed ones (renamed, added, left out, or of another dtype or shape); the writer then
writes a flat state dict and reports why.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...errors import OutputError
from ...tensors import DTYPES, TensorSpec
from .reader import Loc, Reader, _span
from .unpickle import TensorRecord

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from .._zip import ZipMember

SERIALIZATION_ID = ".data/serialization_id"


@dataclass
class Update:
    """How the target is followed: which tensors stream into which member, which are held, what is copied."""

    like: Reader
    streamed: dict[str, str]  # tensor name -> the storage key whose member it fills
    held: dict[str, TensorRecord]  # tensor name -> its view, written at the end
    values: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)  # storage key -> held values
    follows: dict[str, str] = field(default_factory=dict)  # a tensor left as it was -> the written one it shows
    notes: list[str] = field(default_factory=list)  # what else changed with a shared storage

    @property
    def prefix(self) -> str:
        return self.like.prefix

    def pickle(self) -> bytes:
        """The target's ``data.pkl``, byte for byte."""
        archive = self.like.archive
        assert archive is not None
        member = archive[self.prefix + "data.pkl"]
        return bytes(archive.view(member)) if member.stored else archive.peek(member, member.size)

    def members(self, *, head: bool) -> Iterator[tuple[str, ZipMember]]:
        """The target's other members (not ``data.pkl``, a storage, or one written anew), as (name under the
        folder, member): ``head``, those before its first storage; else those after it."""
        from . import METADATA_MEMBER

        archive = self.like.archive
        assert archive is not None
        skip = {"data.pkl", METADATA_MEMBER, SERIALIZATION_ID}
        before = True
        for member in archive:
            name = member.name[len(self.prefix):]
            if name.startswith("data/"):
                before = False
            elif name not in skip and before == head:
                yield name, member

    def storages(self) -> Iterator[tuple[str, ZipMember]]:
        """Every storage member of the target, in the archive's order: (key, member)."""
        archive = self.like.archive
        assert archive is not None
        for member in archive:
            name = member.name[len(self.prefix):]
            if name.startswith("data/"):
                yield name[len("data/"):], member

    def hold(self, name: str, values: np.ndarray) -> None:
        import numpy as np

        record = self.held[name]
        self.values.setdefault(record.storage.key, []).append((name, np.array(values, copy=True, order="C")))

    def patched(self, key: str, path: Path) -> bytearray:
        """Storage ``key``'s bytes with every held value written through its view (see the module docstring)."""
        data = bytearray(self.like.storage_bytes(key))
        views = {name: self._view(data, self.held[name]) for name, _ in self.values[key]}
        before = {name: view.copy() for name, view in views.items()}
        written: list[tuple[str, np.ndarray]] = []
        for name, values in self.values[key]:
            if not _same(before[name], values):
                views[name][...] = _bits(values)
                written.append((name, values))
        for name, values in written:
            if not _same(views[name], values):
                other = next(n for n, _ in written if n != name)
                raise OutputError(path, f"tensors {other!r} and {name!r} share one storage in the target (tied), "
                                  "and the source gives them different values; the target's container keeps "
                                  "the tie: write only one of them (--skip-target), or write a flat file "
                                  "(-o OUT.safetensors)")
        for name, values in self.values[key]:
            if all(name != n for n, _ in written) and not _same(views[name], values):
                self.follows[name] = next(n for n, _ in written)
        others = self._others(key) if written else []
        if others:
            self.notes.append(f"{', '.join(others[:3])}{' ...' if len(others) > 3 else ''} (outside the state dict) "
                              f"shares storage with {written[0][0]!r} and holds its new values")
        return data

    def _others(self, key: str) -> list[str]:
        """Tensors outside the listed state dict that view storage ``key`` (their bytes change with it)."""
        listed = {id(t.loc.record) for t in self.like.tensors if isinstance(t.loc, Loc)}
        return [n for n, r in self.like.records.items() if r.storage.key == key and id(r) not in listed]

    def _view(self, data: bytearray, record: TensorRecord) -> np.ndarray:
        """A writable view of ``record`` in the storage bytes ``data``, as unsigned integers of the file's byte order."""
        import numpy as np

        itemsize = DTYPES[record.dtype].itemsize
        raw = np.dtype(f"{'>' if self.like.big_endian else '<'}u{itemsize}")
        if _span(record) == 0:
            return np.zeros(record.shape, dtype=raw)
        flat = np.frombuffer(data, dtype=raw, count=len(data) // itemsize)
        return np.lib.stride_tricks.as_strided(flat[record.offset:], shape=record.shape,
                                               strides=tuple(s * itemsize for s in record.stride))


def _bits(values: np.ndarray) -> np.ndarray:
    """A tensor's values as little-endian unsigned integers of its item size (the bit patterns, exactly)."""
    return values.view(f"<u{values.dtype.itemsize}")


def _same(view: np.ndarray, values: np.ndarray) -> bool:
    """The view holds exactly these values' bit patterns (NaN payloads and signed zeros included)."""
    import numpy as np

    return view.shape == values.shape and bool(np.array_equal(view, _bits(values)))


def plan(like: object, specs: Sequence[TensorSpec], origins: Mapping[str, str]) -> tuple[Update | None, str | None]:
    """How to write ``specs`` as ``like`` updated, or None and why not (None: nothing worth saying)."""
    if not isinstance(like, Reader):
        return None, None
    contained = like.dict_path is not None or len(like.records) > len(like.tensors)
    if like.kind != "zip":
        return None, ("the target is a legacy torch.save file, which is not rewritten in place" if contained else None)
    reason = _differs(like, specs, origins)
    if reason is not None:
        return None, reason if contained else None
    viewers: dict[str, set[int]] = {}
    for record in like.records.values():
        viewers.setdefault(record.storage.key, set()).add(id(record))
    streamed: dict[str, str] = {}
    held: dict[str, TensorRecord] = {}
    for spec in specs:
        loc = like[spec.name].loc
        assert isinstance(loc, Loc)
        record = loc.record
        whole = record.offset == 0 and loc.contiguous and _span(record) == record.storage.nbytes == spec.nbytes
        if whole and len(viewers[record.storage.key]) == 1 and not like.big_endian:
            streamed[spec.name] = record.storage.key
        else:
            held[spec.name] = record
    return Update(like, streamed, held), None


def _differs(like: Reader, specs: Sequence[TensorSpec], origins: Mapping[str, str]) -> str | None:
    """Why ``specs`` are not exactly the target's listed tensors, or None."""
    names = {s.name for s in specs}
    for spec in specs:
        if origins.get(spec.name, spec.name) != spec.name or spec.name not in like:
            return f"tensor {spec.name!r} is not one of the target's"
        info = like[spec.name]
        if (info.dtype, info.shape) != (spec.dtype, spec.shape):
            return (f"tensor {spec.name!r} is written as {spec.dtype}{list(spec.shape)}, the target holds "
                    f"{info.dtype}{list(info.shape)}")
    missing = [t.name for t in like.tensors if t.name not in names]
    if missing:
        return f"the target's tensor {missing[0]!r} is not written"
    return None


__all__ = ["Update", "plan"]
