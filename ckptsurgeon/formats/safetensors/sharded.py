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

Several files appear together or not at all (:class:`ckptsurgeon.atomic.AtomicFiles`): every shard
and the index are written to temporary files in the destination directory and fsynced; then the
shards are renamed into place and the index last, so a reader never sees an index naming missing
shards; then the directory is fsynced. On an error or interruption every temporary file is removed
and existing files are untouched; the temporary files of a killed run are removed by the next run
that writes into the directory.
Rewriting a checkpoint in place with the same shard names swaps the shards before the index, so a
reader opening it during those renames can pair new shards with the old index.

Shards of an earlier checkpoint with the same prefix that this run would not overwrite
(``model-00004-of-00004.safetensors`` when writing three) are refused by :func:`stale_shards`'
callers, unless forced; then they are removed after the new index is in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...atomic import AtomicFiles
from ...errors import UsageError
from ...tensors import TensorSpec
from .. import base
from . import writer as st

if TYPE_CHECKING:
    import numpy as np

INDEX_SUFFIX = ".safetensors.index.json"
DEFAULT_INDEX_NAME = "model" + INDEX_SUFFIX
SHARD_FORMAT_METADATA = {"format": "pt"}  # what transformers expects in a PyTorch-style shard

def index_path(dest: str | Path) -> Path:
    """The index file a sharded output goes to: ``dest`` itself, or ``model.safetensors.index.json`` in a directory.

    ``dest`` names a directory when it is one, ends with a slash, or does not exist and has no
    extension (a new directory, created when the checkpoint is written).
    """
    text = str(dest)
    path = Path(dest)
    if text.endswith(("/", os.sep)) or path.is_dir() or (not path.suffix and not path.exists()):
        return path / DEFAULT_INDEX_NAME
    if not path.name.endswith(INDEX_SUFFIX) or path.name == INDEX_SUFFIX:
        raise UsageError(path, f"a sharded output is named by its index, PREFIX{INDEX_SUFFIX}, or a directory",
                         hint=f"e.g. -o {path.parent / DEFAULT_INDEX_NAME}")
    return path


def shard_prefix(index: Path) -> str:
    return index.name[: -len(INDEX_SUFFIX)]


def shard_name(prefix: str, number: int, count: int) -> str:
    """Hugging Face's shard file name: ``model-00002-of-00005.safetensors`` (numbers from 1)."""
    return f"{prefix}-{number:05d}-of-{count:05d}.safetensors"


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


@dataclass(frozen=True)
class ShardLayout(base.ShardPlan):
    """Which tensors go into which shard file; the index's content, before anything is written."""

    index: Path
    names: tuple[str, ...]  # shard file names, in order
    groups: tuple[tuple[TensorSpec, ...], ...]  # the tensors of each shard, in order

    @classmethod
    def plan(cls, index: Path, specs: Sequence[TensorSpec], shard_size: int) -> ShardLayout:
        ranges = plan_shards([s.nbytes for s in specs], shard_size)
        prefix = shard_prefix(index)
        names = tuple(shard_name(prefix, k + 1, len(ranges)) for k in range(len(ranges)))
        groups = tuple(tuple(specs[i] for i in r) for r in ranges)
        return cls(index, names, groups)

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


_SHARD_FILE = re.compile(r"(?P<prefix>.*)-(?P<k>\d+)-of-(?P<n>\d+)\.safetensors")


def stale_shards(layout: ShardLayout) -> list[Path]:
    """Shard files of another checkpoint with the same prefix that writing ``layout`` would not replace."""
    directory = layout.index.parent if str(layout.index.parent) else Path(".")
    prefix, keep = shard_prefix(layout.index), set(layout.names)
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return []
    stale = []
    for entry in entries:
        m = _SHARD_FILE.fullmatch(entry)
        if m and m.group("prefix") == prefix and entry not in keep:
            stale.append(directory / entry)
    return stale


class Writer(base.ShardedWriter):
    """Writes a sharded safetensors checkpoint; ``path`` is the final index path (this writer is atomic itself).

    Unlike the single-file writers, which write the temporary file :func:`ckptsurgeon.atomic.atomic_path`
    hands them, this writer creates its own temporary files (it learns how many in ``begin``),
    commits them in ``finish`` and removes them in ``abort``. ``begin`` refuses stale shards of
    another checkpoint (see :func:`stale_shards`) unless ``force``; with ``force`` they are removed
    once the new index is in place (a stale shard among ``inputs`` is always refused). Shards are
    opened one at a time, as their first tensor arrives.
    """

    format = "safetensors-sharded"
    caps = base.WriterCaps(byte_ranges=True, streams_chunks=True, like=("safetensors",), sharded=True)

    @classmethod
    def destination(cls, out: str | Path) -> Path:
        return index_path(out)

    @classmethod
    def plan_layout(cls, dest: Path, specs: Sequence[TensorSpec], shard_size: int) -> ShardLayout:
        return ShardLayout.plan(dest, specs, shard_size)

    @classmethod
    def check_stale(cls, layout: base.ShardPlan, *, force: bool, inputs: Iterable[Path] = ()) -> list[Path]:
        assert isinstance(layout, ShardLayout)
        return check_stale(layout, force=force, inputs=inputs)

    def __init__(self, path: Path, *, metadata: Mapping[str, str] | None = None, like: Any = None,
                 shard_size: int, force: bool = False, inputs: Sequence[Path] = ()) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        self.shard_size = shard_size
        self.force = force
        self.inputs = list(inputs)
        self.layout: ShardLayout | None = None
        self._files = AtomicFiles()
        self._stale: list[Path] = []
        self._shard = -1
        self._current: st.Writer | None = None
        self._left = 0

    def _begin(self) -> None:
        if not self.specs:
            raise UsageError(self.path, "no tensors to write; a sharded checkpoint needs at least one")
        self.layout = ShardLayout.plan(self.path, self.specs, self.shard_size)
        self._stale = check_stale(self.layout, force=self.force, inputs=self.inputs)

    def _target(self) -> st.Writer:
        if self._current is None:
            assert self.layout is not None
            self._shard += 1
            dest = self.layout.paths[self._shard]
            shard = st.Writer(self._files.temp(dest), metadata={**SHARD_FORMAT_METADATA, **self.metadata})
            self._current = shard
            shard.begin(self.layout.groups[self._shard])
            self._left = len(self.layout.groups[self._shard])
        return self._current

    def _written_one(self) -> None:
        self._left -= 1
        if self._left == 0 and self._current is not None:
            self._current.finish()
            self._current = None

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        self._target().write(spec.name, data)
        self._written_one()

    def write_range(self, name: str, src: Path, offset: int, length: int) -> bool:
        self._take(name)
        copied = self._target().write_range(name, src, offset, length)
        assert copied, "the safetensors writer copies every byte range"
        self._written_one()
        return True

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self._peek(name)
        self._target().write_chunks(name, chunks)
        self._take(name)
        self._written_one()

    def _finish(self) -> None:
        assert self.layout is not None and self._current is None
        index_tmp = self._files.temp(self.path)  # asked for last: renamed into place last
        with open(index_tmp, "xb") as f:
            f.write(self.layout.index_bytes(self.metadata))
        self._files.commit()
        for path in self._stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def abort(self) -> None:
        if self._current is not None:
            self._current.abort()
            self._current = None
        self._files.discard()
        super().abort()


def check_stale(layout: ShardLayout, *, force: bool, inputs: Iterable[Path] = ()) -> list[Path]:
    """The stale shards ``force`` would remove; without ``force``, refuse when there are any.

    A stale shard that is one of ``inputs`` is refused even with ``force``: inputs are never touched.
    """
    stale = stale_shards(layout)
    if not stale:
        return []
    for src in inputs:
        for path in stale:
            with contextlib.suppress(OSError):
                if os.path.samefile(src, path):
                    raise UsageError(path, "is an input and a stale shard of the destination; inputs are never removed",
                                     hint="write the sharded checkpoint to another directory or prefix")
    if not force:
        shown = ", ".join(p.name for p in stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        raise UsageError(layout.index.parent, f"holds shards of another {shard_prefix(layout.index)!r} checkpoint "
                         f"that this run would not overwrite ({shown})",
                         hint="--force removes them once the new index is in place, or choose another directory")
    return stale
