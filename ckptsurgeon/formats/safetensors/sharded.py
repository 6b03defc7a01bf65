"""Sharded safetensors output in the Hugging Face layout: numbered shards and a JSON index beside them.

Layout (what ``transformers`` ``save_pretrained`` and ``huggingface_hub`` write and load)::

    DIR/model.safetensors.index.json       {"metadata": {"total_size": N, ...}, "weight_map": {tensor: shard}}
    DIR/model-00001-of-00003.safetensors   each shard's __metadata__: {"format": "pt", ...}
    DIR/model-00002-of-00003.safetensors
    DIR/model-00003-of-00003.safetensors

The shard prefix is the index name without ``.safetensors.index.json``. ``total_size`` is the sum
of the tensors' bytes (headers not counted), as Hugging Face counts it. Other metadata goes into
the index's ``metadata`` and into every shard's ``__metadata__``.

Shards are filled greedily in tensor order: a tensor that would push the current shard past the
shard size starts the next one, and a tensor larger than the shard size gets a shard of its own.
(``huggingface_hub`` sets an oversized tensor's shard ahead of the partly filled one; here shards
always follow the tensor order, so shard *k* only holds tensors that come before shard *k+1*'s.)
The index is written even when everything fits in one shard (``model-00001-of-00001``).

**Shard names.** A shard is named as Hugging Face names it, ``model-00002-of-00003.safetensors``,
unless the checkpoint already in the folder (the index being replaced) or another index there
names that file: then every shard of the new checkpoint takes the next free stem,
``model.1-00002-of-00003.safetensors`` (``model.2``, ... only if that is taken too; a stem that
has an index of its own is never used). Rewriting a checkpoint with the same shard count so
alternates between two sets of names, and never writes over a file that a live index names.
``transformers`` and ``huggingface_hub`` load shards by the names in the index; both names match
the pattern ``transformers``' ``save_pretrained`` cleans up (``model*-NNNNN-of-NNNNN``).

**Commit.** Several files appear together or not at all (:class:`ckptsurgeon.atomic.AtomicFiles`):
every shard and the index are written to temporary files in the destination directory and
fsynced; then the shards are renamed to their fresh names (no index names them yet, so nothing a
reader sees changes), and the index is renamed over the old one: that one rename is the commit
point. Then the old checkpoint's shards are removed. At every instant the index names a complete
set of shards, the old or the new; a run killed between the renames leaves unlisted files of
the side that lost, which the next sharded write into the folder removes (a journal beside the
index says which; see :mod:`ckptsurgeon.atomic`). On an error or interruption every temporary
file is removed and existing files are untouched. The whole write holds the folder's lock
(:class:`ckptsurgeon.lock.FolderLock`): a second writer into the same folder fails at once
with exit 4 and writes nothing.

**Files this write supersedes** are the shard files of the same prefix (of any stem above)
already in the folder: those in the same position as a new shard (``-00002-of-00003``) are
replaced, as a file of the same name would be; others (``model-00004-of-00004.safetensors``
when writing three) are refused by :func:`stale_shards`' callers unless forced, and then removed
after the commit. Files another index in the folder names are never touched, nor inputs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...atomic import AtomicFiles, interrupted_commit_leftovers
from ...errors import CkptError, UsageError
from ...lock import FolderLock
from ...tensors import TensorSpec
from .. import base
from .._index import ShardIndex
from . import writer as st

if TYPE_CHECKING:
    import numpy as np



@dataclass(frozen=True)
class Naming:
    """How a sharded layout names its files: ``PREFIX-00002-of-00003SUFFIX`` beside ``PREFIXSUFFIX.index.json``.

    Hugging Face names safetensors shards ``model-...safetensors`` and PyTorch ones
    ``pytorch_model-...bin``; everything else about the layout is the same.
    """

    suffix: str  # of a shard file
    default_prefix: str  # of the index written into a directory

    @property
    def index_suffix(self) -> str:
        return self.suffix + ".index.json"

    @property
    def default_index(self) -> str:
        return self.default_prefix + self.index_suffix

    @property
    def shard_file(self) -> re.Pattern[str]:
        return re.compile(r"(?P<stem>.*)-(?P<k>\d+)-of-(?P<n>\d+)" + re.escape(self.suffix))


SAFETENSORS = Naming(".safetensors", "model")
INDEX_SUFFIX = SAFETENSORS.index_suffix
DEFAULT_INDEX_NAME = SAFETENSORS.default_index
SHARD_FORMAT_METADATA = {"format": "pt"}  # what transformers expects in a PyTorch-style shard

def index_path(dest: str | Path, naming: Naming = SAFETENSORS) -> Path:
    """The index file a sharded output goes to: ``dest`` itself, or ``model.safetensors.index.json`` in a directory.

    ``dest`` names a directory when it is one, ends with a slash, or does not exist and has no
    extension (a new directory, created when the checkpoint is written).
    """
    text = str(dest)
    path = Path(dest)
    if text.endswith(("/", os.sep)) or path.is_dir() or (not path.suffix and not path.exists()):
        return path / naming.default_index
    if not path.name.endswith(naming.index_suffix) or path.name == naming.index_suffix:
        raise UsageError(path, f"a sharded output is named by its index, PREFIX{naming.index_suffix}, or a directory",
                         hint=f"e.g. -o {path.parent / naming.default_index}")
    return path


def shard_prefix(index: Path, naming: Naming = SAFETENSORS) -> str:
    return index.name[: -len(naming.index_suffix)]


def shard_name(prefix: str, number: int, count: int, naming: Naming = SAFETENSORS) -> str:
    """Hugging Face's shard file name: ``model-00002-of-00005.safetensors`` (numbers from 1)."""
    return f"{prefix}-{number:05d}-of-{count:05d}{naming.suffix}"


def plan_shards(sizes: Sequence[int], shard_size: int) -> list[range]:
    """Split tensors of the given byte sizes, in order, into shards: one ``range`` of positions each.

    Greedy: a tensor that would take the current shard past ``shard_size`` starts a new shard; a
    tensor larger than ``shard_size`` gets a shard of its own. No shard is empty.
    """
    shards: list[range] = []
    start, filled = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (filled + size > shard_size or size > shard_size):
            shards.append(range(start, i))
            start, filled = i, 0
        filled += size
        if size > shard_size:  # alone: close it now
            shards.append(range(i, i + 1))
            start, filled = i + 1, 0
    if start < len(sizes):
        shards.append(range(start, len(sizes)))
    return shards


_INDEX_NAMES = (".index.json", ".weights.json")  # indexes whose shards are never touched: HF's and Keras 3's


def shard_stem(prefix: str, generation: int) -> str:
    """The stem of a checkpoint's shard names: the prefix, or ``PREFIX.G`` for a later set beside a live one."""
    return prefix if generation == 0 else f"{prefix}.{generation}"


@dataclass(frozen=True)
class Folder:
    """What a sharded write finds in the destination directory before it plans names."""

    directory: Path
    names: frozenset[str]  # every entry
    live: frozenset[str]  # the shards the index being replaced names
    others: frozenset[str]  # the shards other indexes in the folder name
    leftovers: frozenset[str]  # unlisted files of a killed run, removed when the next writer takes the lock

    @classmethod
    def survey(cls, index: Path) -> Folder:
        directory = index.parent if str(index.parent) else Path(".")
        try:
            names = frozenset(os.listdir(directory))
        except OSError:
            return cls(directory, frozenset(), frozenset(), frozenset(), frozenset())
        live: frozenset[str] = frozenset()
        others: set[str] = set()
        for name in names:
            if name == index.name:
                live = _named_by(directory / name)
            elif name.endswith(_INDEX_NAMES):
                others |= _named_by(directory / name)
        return cls(directory, names, live, frozenset(others), frozenset(interrupted_commit_leftovers(directory)))

    def slot(self, prefix: str, name: str, naming: Naming = SAFETENSORS) -> tuple[int, int] | None:
        """``(k, n)`` when ``name`` is a shard file of ``prefix`` (any stem) that no other index claims
        (``(0, 0)`` when its numbers are not spelled ``-00002-of-00003``)."""
        m = naming.shard_file.fullmatch(name)
        if m is None or name in self.others:
            return None
        stem = m.group("stem")
        if stem != prefix:
            generation = stem[len(prefix) + 1:] if stem.startswith(prefix + ".") else ""
            if not (generation.isdigit() and generation[0] != "0") or stem + naming.index_suffix in self.names:
                return None
        k, n = int(m.group("k")), int(m.group("n"))
        return (k, n) if name == shard_name(stem, k, n, naming) else (0, 0)  # not spelled as ckptsurgeon would: never replaced


def _named_by(index: Path) -> frozenset[str]:
    """The shard files an index names (nothing when it cannot be read as one)."""
    try:
        if not index.is_file():
            return frozenset()
        return frozenset(ShardIndex.read(index).shards)
    except (CkptError, OSError):
        return frozenset()


def fresh_names(prefix: str, count: int, folder: Folder, naming: Naming = SAFETENSORS) -> tuple[str, ...]:
    """Shard names for ``count`` shards that no index in ``folder`` names: Hugging Face's when they are free."""
    taken = folder.live | folder.others
    for generation in itertools.count():
        stem = shard_stem(prefix, generation)
        if generation and stem + naming.index_suffix in folder.names:
            continue  # the stem of another checkpoint
        names = tuple(shard_name(stem, k + 1, count, naming) for k in range(count))
        if taken.isdisjoint(names):
            return names
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ShardLayout(base.ShardPlan):
    """Which tensors go into which shard file; the index's content, before anything is written."""

    index: Path
    names: tuple[str, ...]  # shard file names, in order
    groups: tuple[tuple[TensorSpec, ...], ...]  # the tensors of each shard, in order
    naming: Naming = SAFETENSORS

    @classmethod
    def plan(cls, index: Path, specs: Sequence[TensorSpec], shard_size: int, folder: Folder | None = None,
             naming: Naming = SAFETENSORS) -> ShardLayout:
        """The layout, with shard names no index in the folder names (:func:`fresh_names`; ``folder``: surveyed now)."""
        ranges = plan_shards([s.nbytes for s in specs], shard_size)
        folder = folder or Folder.survey(index)
        names = fresh_names(shard_prefix(index, naming), len(ranges), folder, naming)
        groups = tuple(tuple(specs[i] for i in r) for r in ranges)
        return cls(index, names, groups, naming)

    @classmethod
    def assigned(cls, index: Path, specs: Sequence[TensorSpec], assignment: Mapping[str, str],
                 naming: Naming = SAFETENSORS) -> ShardLayout:
        """The layout of another checkpoint: each tensor in the shard file ``assignment`` names (a
        tensor it does not name goes to the last shard), the shards in name order, each shard's
        tensors in ``specs``' order. Shard names are written as given: use it for a new folder only."""
        names = tuple(sorted(set(assignment.values())))
        if not names:
            raise ValueError("an assignment names at least one shard")
        groups: dict[str, list[TensorSpec]] = {n: [] for n in names}
        for s in specs:
            groups[assignment.get(s.name, names[-1])].append(s)
        kept = tuple(n for n in names if groups[n])
        return cls(index, kept, tuple(tuple(groups[n]) for n in kept), naming)

    @property
    def paths(self) -> list[Path]:
        return [self.index.parent / n for n in self.names]

    @property
    def total_size(self) -> int:
        return sum(s.nbytes for group in self.groups for s in group)

    def weight_map(self) -> dict[str, str]:
        return {s.name: name for name, group in zip(self.names, self.groups, strict=True) for s in group}

    def index_bytes(self, metadata: Mapping[str, str]) -> bytes:
        """The index file: ``total_size`` first, then the other metadata; the weight map in tensor order."""
        meta: dict[str, Any] = {"total_size": self.total_size}
        meta.update((k, v) for k, v in metadata.items() if k != "total_size")
        doc = {"metadata": meta, "weight_map": self.weight_map()}
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def superseded(layout: ShardLayout, folder: Folder | None = None) -> tuple[list[Path], list[Path]]:
    """The shard files of the layout's prefix already in the folder: ``(replaced, stale)``.

    Replaced: in the position of one of the new shards (same ``-K-of-N``); stale: the others.
    Files of the new layout itself, files other indexes name and a killed run's leftovers are neither.
    """
    folder = folder or Folder.survey(layout.index)
    prefix, count = shard_prefix(layout.index, layout.naming), len(layout.names)
    replaced: list[Path] = []
    stale: list[Path] = []
    for name in sorted(folder.names - set(layout.names) - folder.leftovers):
        slot = folder.slot(prefix, name, layout.naming)
        if slot is not None:
            (replaced if slot[1] == count and 1 <= slot[0] <= count else stale).append(folder.directory / name)
    return replaced, stale


def stale_shards(layout: ShardLayout) -> list[Path]:
    """Shard files of another checkpoint with the same prefix that writing ``layout`` would not replace."""
    return superseded(layout)[1]


class Writer(base.ShardedWriter):
    """Writes a sharded safetensors checkpoint; ``path`` is the final index path (this writer is atomic itself).

    Unlike the single-file writers, which write the temporary file :func:`ckptsurgeon.atomic.atomic_path`
    hands them, this writer creates its own temporary files (it learns how many in ``begin``),
    commits them in ``finish`` and removes them in ``abort``. ``begin`` takes the folder's lock
    (:class:`~ckptsurgeon.lock.FolderLock`, held until ``finish`` or ``abort``; an
    :class:`~ckptsurgeon.errors.OutputError` when another writer holds it), plans fresh shard names
    and refuses stale shards of another checkpoint (see :func:`stale_shards`) unless ``force``;
    the files the new index supersedes are removed once it is in place (one among ``inputs`` is
    always refused). Shards are opened one at a time, as their first tensor arrives.
    """

    format = "safetensors-sharded"
    caps = base.WriterCaps(byte_ranges=True, streams_chunks=True, like=("safetensors",), sharded=True,
                           records_framework=True)
    naming = SAFETENSORS

    @classmethod
    def destination(cls, out: str | Path) -> Path:
        return index_path(out, cls.naming)

    @classmethod
    def plan_layout(cls, dest: Path, specs: Sequence[TensorSpec], shard_size: int) -> ShardLayout:
        return ShardLayout.plan(dest, specs, shard_size, naming=cls.naming)

    @classmethod
    def check_stale(cls, layout: base.ShardPlan, *, force: bool, inputs: Iterable[Path] = ()) -> list[Path]:
        assert isinstance(layout, ShardLayout)
        return check_stale(layout, force=force, inputs=inputs)

    def __init__(self, path: Path, *, metadata: Mapping[str, str] | None = None, like: Any = None,
                 shard_size: int | None = None, force: bool = False, inputs: Sequence[Path] = (),
                 assignment: Mapping[str, str] | None = None) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        if (shard_size is None) == (assignment is None):
            raise ValueError("a sharded writer takes a shard size or an assignment of tensors to shards")
        self.shard_size = shard_size
        self.assignment = dict(assignment) if assignment is not None else None
        self.force = force
        self.inputs = list(inputs)
        self.layout: ShardLayout | None = None
        self._files = AtomicFiles()
        self._superseded: list[Path] = []
        self._lock: FolderLock | None = None
        self._shard_of: dict[str, int] = {}
        self._open: dict[int, base.Writer] = {}  # the shards begun and not finished (several, with an assignment)
        self._left: dict[int, int] = {}

    def _begin(self) -> None:
        if not self.specs:
            raise UsageError(self.path, "no tensors to write; a sharded checkpoint needs at least one")
        self._lock = FolderLock(self.path.parent if str(self.path.parent) else Path(".")).acquire()
        try:
            if self.assignment is not None:  # another checkpoint's shards, in a new folder
                self.layout = ShardLayout.assigned(self.path, self.specs, self.assignment, self.naming)
            else:
                assert self.shard_size is not None
                self.layout = self.plan_layout(self.path, self.specs, self.shard_size)
            self._shard_of = {s.name: k for k, group in enumerate(self.layout.groups) for s in group}
            self._left = {k: len(group) for k, group in enumerate(self.layout.groups)}
            self._superseded = check_stale(self.layout, force=self.force, inputs=self.inputs)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _shard_writer(self, temp: Path, dest: Path) -> base.Writer:
        """The writer of one shard file (``temp``, which becomes ``dest``)."""
        return st.Writer(temp, metadata={**SHARD_FORMAT_METADATA, **self.metadata})

    def _target(self, name: str) -> base.Writer:
        """The writer of the shard holding ``name``, begun when its first tensor arrives."""
        assert self.layout is not None
        k = self._shard_of[name]
        if k not in self._open:
            dest = self.layout.paths[k]
            shard = self._shard_writer(self._files.temp(dest), dest)
            self._open[k] = shard
            shard.begin(self.layout.groups[k])
        return self._open[k]

    def _written_one(self, name: str) -> None:
        k = self._shard_of[name]
        self._left[k] -= 1
        if self._left[k] == 0:
            self._open.pop(k).finish()

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        self._target(spec.name).write(spec.name, data)
        self._written_one(spec.name)

    def write_range(self, name: str, src: Path, offset: int, length: int) -> bool:
        self._take(name)
        copied = self._target(name).write_range(name, src, offset, length)
        assert copied, "the safetensors writer copies every byte range"
        self._written_one(name)
        return True

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self._peek(name)
        self._target(name).write_chunks(name, chunks)
        self._take(name)
        self._written_one(name)

    def _finish(self) -> None:
        assert self.layout is not None and not self._open
        index_tmp = self._files.temp(self.path)  # asked for last: renamed into place last
        with open(index_tmp, "xb") as f:
            f.write(self.layout.index_bytes(self.metadata))
        self._files.commit(supersedes=self._superseded)
        self._release()

    def abort(self) -> None:
        try:
            while self._open:
                self._open.popitem()[1].abort()
            self._files.discard()
        finally:
            self._release()
        super().abort()


def check_stale(layout: ShardLayout, *, force: bool, inputs: Iterable[Path] = ()) -> list[Path]:
    """The files the commit of ``layout`` supersedes (removed after it); refuse stale shards without ``force``.

    Replaced shards are superseded always, stale ones (:func:`superseded`) only with ``force``. A
    superseded file that is one of ``inputs`` is refused even with ``force``: inputs are never touched.
    """
    replaced, stale = superseded(layout)
    for src in inputs:
        for path in [*replaced, *stale]:
            with contextlib.suppress(OSError):
                if os.path.samefile(src, path):
                    what = "a shard this run replaces" if path in replaced else "a stale shard of the destination"
                    raise UsageError(path, f"is an input and {what}; inputs are never removed",
                                     hint="write the sharded checkpoint to another directory or prefix")
    if stale and not force:
        shown = ", ".join(p.name for p in stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        raise UsageError(layout.index.parent, f"holds shards of another {shard_prefix(layout.index, layout.naming)!r} checkpoint "
                         f"that this run would not overwrite ({shown})",
                         hint="--force removes them once the new index is in place, or choose another directory")
    return [*replaced, *stale]
