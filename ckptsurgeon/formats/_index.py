"""One reader for the JSON index of a sharded checkpoint.

Three libraries write the same idea: Hugging Face's ``model.safetensors.index.json`` (and
``pytorch_model.bin.index.json``) map each tensor name to one shard file; Keras 3's
``NAME.weights.json`` maps each layer path (``/layers/dense/vars``) to the shard files holding it,
as a list or, for a layer in one shard, as a plain string. Both have ``{"metadata": {...},
"weight_map": {...}}``. This module reads either form into a :class:`ShardIndex`; which format the
shards are is decided by the shards themselves (the registry probes the first one), never by the
index's name or the shape of its values.

The file is read strictly: at most :data:`MAX_INDEX_BYTES`, UTF-8 JSON with no duplicate keys and
no NaN/Infinity, a ``weight_map`` object of non-empty string keys, and shard names that are plain
file names beside the index (no directory part, no ``..``, no NUL). :meth:`ShardIndex.shard_path`
checks the file a name leads to (:func:`ckptsurgeon.files.shard_path`): a regular file whose links
stay inside the index's directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InputError, UnsafeInputError
from ..files import check_input, read_input
from ..files import shard_path as checked_shard_path
from ._io import CHUNK_BYTES
from .base import OpenOptions, Reader, ReaderCaps

if TYPE_CHECKING:
    from ._probe import Probe

MAX_INDEX_BYTES = 100_000_000


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        (key + value if isinstance(value, str) else key).encode("utf-8")  # a lone "\ud800" escape is not UTF-8
        out[key] = value
    return out


def _no_duplicates_plain(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """:func:`_no_duplicates` for a text with no surrogate escapes (so every string is valid UTF-8)."""
    out = dict(pairs)
    return out if len(out) == len(pairs) else _no_duplicates(pairs)


# A "\ud800"-style escape: the only way a decoded JSON string can hold a surrogate.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def no_constants(token: str) -> Any:
    """``parse_constant`` for :func:`json.loads`: NaN and Infinity are not JSON."""
    raise ValueError(f"{token} is not valid JSON")


def json_text(raw: bytes, what: str) -> str:
    """JSON bytes as text: UTF-8 without a byte order mark (ValueError otherwise)."""
    text = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if text.startswith("\ufeff"):
        raise ValueError(f"{what} starts with a byte order mark")
    return text


def strict_json(raw: bytes, what: str) -> Any:
    """Parse JSON as the safetensors reference parser would: UTF-8, no duplicate keys, no NaN/Infinity."""
    text = json_text(raw, what)
    hook = _no_duplicates if SURROGATE_ESCAPE.search(text) else _no_duplicates_plain
    return json.loads(text, object_pairs_hook=hook, parse_constant=no_constants)


def read_json(path: Path, what: str = "the index") -> Any:
    """A JSON file of at most :data:`MAX_INDEX_BYTES`, parsed strictly (InputError naming ``path``)."""
    try:
        size = check_input(path).st_size  # a regular file: a FIFO or a device is refused, never read
        if size > MAX_INDEX_BYTES:
            raise InputError(path, f"a {size} byte JSON file is too large for a checkpoint index")
        raw = read_input(path)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        return strict_json(raw, what)
    except (ValueError, RecursionError) as exc:
        raise InputError(path, f"invalid index JSON ({exc})") from exc


def shard_file_name(index: Path, value: Any) -> str:
    """``value`` checked to be a plain file name beside the index."""
    if not isinstance(value, str):
        raise InputError(index, f"shard file name {value!r} is not a string")
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value or os.path.isabs(value):
        raise UnsafeInputError(index, f"shard file name {value!r} is not a plain file name beside the index "
                               "(it points outside the index's directory)")
    return value


@dataclass(frozen=True)
class ShardIndex:
    """A parsed index: each key's shard files, the shards in first-named order, the metadata as text."""

    path: Path
    weight_map: dict[str, tuple[str, ...]]
    shards: tuple[str, ...]
    metadata: dict[str, str]

    @classmethod
    def from_doc(cls, path: Path, doc: Any) -> ShardIndex | None:
        """The index in ``doc``, or None when ``doc`` is no index (not an object with a ``weight_map``)."""
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict):
            return None
        meta = doc.get("metadata") or {}
        if not isinstance(meta, dict):
            raise InputError(path, 'the index "metadata" is not an object')
        entries: dict[str, tuple[str, ...]] = {}
        shards: dict[str, None] = {}
        for key, value in weight_map.items():
            if not key:
                raise InputError(path, "the index's weight_map has an empty key")
            files = [value] if isinstance(value, str) else value
            if not isinstance(files, list) or not files:
                raise InputError(path, f"weight_map entry {key!r} is neither a shard file name nor a list of them")
            entries[key] = tuple(shard_file_name(path, f) for f in files)
            shards.update(dict.fromkeys(entries[key]))
        if not shards:
            raise InputError(path, "the index's weight_map names no shards")
        metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
        return cls(path, entries, tuple(shards), metadata)

    @classmethod
    def read(cls, path: Path) -> ShardIndex:
        index = cls.from_doc(path, read_json(path))
        if index is None:
            raise InputError(path, 'the index has no "weight_map" object')
        return index

    def shard_path(self, name: str, *, missing: str | None = None) -> Path:
        """The shard file ``name``, checked: a regular file, links resolved and kept inside the index's directory.

        An InputError naming the index and the shard otherwise (``missing`` when there is no such file).
        """
        return checked_shard_path(self.path, name, missing=missing)

    def one_shard(self, key: str) -> str:
        """The shard holding ``key``, for indexes where each key lives in exactly one shard."""
        files = self.weight_map[key]
        if len(files) != 1:
            raise InputError(self.path, f"the index puts {key!r} in {len(files)} shards ({', '.join(files)}); "
                             "a tensor lives in one")
        return files[0]

    def first_shard(self) -> tuple[str, str]:
        """``(key, shard)``: the first entry's first shard (the one probed for the shards' format)."""
        key, files = next(iter(self.weight_map.items()))
        return key, files[0]


class ShardedReader(Reader):
    """An index and the shards it names, read as one checkpoint (subclassed per shard format).

    The index is checked against every shard in both directions: each name the index lists is in
    the shard it names, and each tensor of a shard is listed there. A subclass says which shards are
    its own (:meth:`is_shard`, from a :class:`~._probe.Probe`), how to open one (:meth:`open_shard`)
    and what to call its format (``shard_kind``, for the message about a shard of another format).
    """

    shard_kind: ClassVar[str] = "a checkpoint of this format"
    caps = ReaderCaps(byte_ranges=True, release=True)

    def __init__(self, path: Path, options: OpenOptions | None = None) -> None:
        super().__init__(Path(path), options)
        index = ShardIndex.read(self.path)
        self.metadata = dict(index.metadata)
        self.shards: dict[str, Reader] = {}
        try:
            self._where = {name: index.one_shard(name) for name in index.weight_map}
            for name, shard in self._where.items():
                if shard not in self.shards:
                    self.shards[shard] = self._open_shard(index, shard, name)
            for name, shard in self._where.items():
                if name not in self.shards[shard]:
                    raise InputError(self.path, f"the index puts {name!r} in {shard}, which does not hold it")
            for shard, reader in self.shards.items():
                for t in reader.tensors:
                    if self._where.get(t.name) != shard:
                        raise InputError(self.path, f"shard {shard} holds {t.name!r}, which the index does not list there")
        except BaseException:
            self.close()
            raise
        self.tensors = [self.shards[shard][n] for n, shard in self._where.items()]

    def is_shard(self, probe: Probe) -> bool:
        raise NotImplementedError

    def open_shard(self, path: Path) -> Reader:
        raise NotImplementedError

    def _open_shard(self, index: ShardIndex, shard: str, name: str) -> Reader:
        shard_path = index.shard_path(shard, missing=f"shard {shard!r} (holding {name!r}) does not exist")
        from . import what_is
        from ._probe import Probe  # _probe reads indexes through this module

        if not self.is_shard(Probe(shard_path)):
            raise InputError(self.path, f"shard {shard!r} is not {self.shard_kind} but {what_is(shard_path)}")
        return self.open_shard(shard_path)

    @property
    def files(self) -> list[Path]:
        return [self.path, *(r.path for r in self.shards.values())]

    @property
    def shard_of(self) -> dict[str, str]:
        """Each tensor's shard file name, as the index assigns it."""
        return dict(self._where)

    def _shard(self, name: str) -> Reader:
        return self.shards[self._where[name]]

    def read(self, name: str) -> Any:
        return self._shard(name).read(name)

    def byte_range(self, name: str) -> tuple[Path, int, int] | None:
        return self._shard(name).byte_range(name)

    def iter_bytes(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        return self._shard(name).iter_bytes(name, chunk_bytes)

    def release(self, name: str) -> None:
        self._shard(name).release(name)

    def shared_storages(self) -> list[list[str]]:
        return [group for reader in self.shards.values() for group in reader.shared_storages()]

    @contextlib.contextmanager
    def checks_beside(self) -> Iterator[None]:
        with contextlib.ExitStack() as checks:
            for reader in self.shards.values():
                checks.enter_context(reader.checks_beside())
            yield

    def close(self) -> None:
        for reader in getattr(self, "shards", {}).values():
            reader.close()
