"""safetensors files and sharded indexes in S3, read by ranged GETs.

:class:`RemoteReader` reads a file's header with two ranged GETs (the 8-byte length, whose
response also says the object's size, then the header) and checks it with the same strict parser
as a local file (:func:`ckptsurgeon.formats.safetensors.header.parse_header`). A tensor is one
ranged GET (``read``) or GETs of at most ``chunk_bytes`` (``iter_bytes``); :meth:`remote_range`
says where its bytes lie, for a server-side copy. :class:`RemoteShardedReader` reads an index
(one GET, at most :data:`~ckptsurgeon.formats._index.MAX_INDEX_BYTES`) and the header of each shard
it names, checked against each other both ways as a local sharded checkpoint is.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ...errors import InputError, UsageError
from ...tensors import DTYPES
from .. import base
from .._index import MAX_INDEX_BYTES, ShardIndex, strict_json
from .._io import CHUNK_BYTES
from .._s3 import S3Url, Store, store, url_of
from .header import MAX_HEADER_BYTES, parse_header

if TYPE_CHECKING:
    import numpy as np


class RemotePath(PurePosixPath):
    """An S3 object's path: prints (and ``os.fspath``\\ s) as ``s3://bucket/key``; ``url`` is the object."""

    url: S3Url

    def __new__(cls, url: S3Url) -> RemotePath:
        self = super().__new__(cls, f"/{url.bucket}/{url.key}") if sys.version_info < (3, 12) else super().__new__(cls)
        self.url = url
        return self

    def __init__(self, url: S3Url) -> None:
        if sys.version_info >= (3, 12):  # pragma: no cover - the interpreter CI runs is 3.11
            super().__init__(f"/{url.bucket}/{url.key}")

    def __str__(self) -> str:
        return str(self.url)

    def __fspath__(self) -> str:
        return str(self.url)

    def __repr__(self) -> str:
        return f"RemotePath({str(self.url)!r})"


class RemoteReader(base.Reader):
    """One safetensors object in S3 (headers on open; tensor bytes by ranged GETs)."""

    format = "safetensors"
    caps = base.ReaderCaps()

    def __init__(self, url: S3Url, options: base.OpenOptions | None = None, client: Store | None = None) -> None:
        super().__init__(RemotePath(url), options)  # type: ignore[arg-type]
        self.url = url
        self.store = client or store()
        first, size = self.store.get_sized(url, 0, 8)
        if size < 8 or len(first) < 8:
            raise InputError(str(url), f"truncated: {size} bytes, a safetensors file has at least 8")
        (n,) = struct.unpack("<Q", first)
        if n > MAX_HEADER_BYTES:
            raise InputError(str(url), f"invalid safetensors header: length {n} exceeds the 100 MB limit")
        if 8 + n > size:
            raise InputError(str(url), f"truncated: header length {n} runs past the end of the {size}-byte object")
        header = self.store.get(url, 8, n)
        self.data_start = 8 + n
        self.size = size
        self.metadata, self.tensors = parse_header(self.path, header, size - self.data_start)

    @property
    def files(self) -> list[Any]:
        return []

    def remote_range(self, name: str) -> tuple[S3Url, int, int]:
        """Where the tensor's bytes lie in the object: (object, offset, length)."""
        begin, end = self.by_name[name].loc
        return self.url, self.data_start + begin, end - begin

    def read(self, name: str) -> np.ndarray:
        import numpy as np

        info = self.by_name[name]
        dt = DTYPES[info.dtype].numpy
        url, start, length = self.remote_range(name)
        return np.frombuffer(self.store.get(url, start, length), dtype=dt, count=info.numel).reshape(info.shape)

    def iter_bytes(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        url, start, length = self.remote_range(name)
        for at in range(0, length, max(1, chunk_bytes)):
            yield memoryview(self.store.get(url, start + at, min(chunk_bytes, length - at)))

    def content_sha256(self) -> str:
        """sha256 of the object's bytes (streamed: for a plan's digest or provenance only)."""
        h = hashlib.sha256()
        for at in range(0, self.size, CHUNK_BYTES):
            h.update(self.store.get(self.url, at, min(CHUNK_BYTES, self.size - at)))
        return h.hexdigest()


class RemoteShardedReader(base.Reader):
    """A Hugging Face safetensors index in S3 and the shards beside it, read as one checkpoint."""

    format = "safetensors-sharded"
    caps = base.ReaderCaps()

    def __init__(self, url: S3Url, options: base.OpenOptions | None = None, client: Store | None = None) -> None:
        super().__init__(RemotePath(url), options)  # type: ignore[arg-type]
        self.url = url
        self.store = client or store()
        raw = self.store.get_all(url, MAX_INDEX_BYTES)
        try:
            index = ShardIndex.from_doc(self.path, strict_json(raw, "the index"))
        except (ValueError, RecursionError) as exc:
            raise InputError(str(url), f"invalid index JSON ({exc})") from exc
        if index is None:
            raise InputError(str(url), 'the index has no "weight_map" object')
        self.metadata = dict(index.metadata)
        self.shards: dict[str, RemoteReader] = {}
        where = {name: index.one_shard(name) for name in index.weight_map}
        for shard in dict.fromkeys(where.values()):
            self.shards[shard] = RemoteReader(url.sibling(shard), options, self.store)
        for name, shard in where.items():
            if name not in self.shards[shard]:
                raise InputError(str(url), f"the index puts {name!r} in {shard}, which does not hold it")
        for shard, reader in self.shards.items():
            for t in reader.tensors:
                if where.get(t.name) != shard:
                    raise InputError(str(url), f"shard {shard} holds {t.name!r}, which the index does not list there")
        self._where = where
        self.tensors = [self.shards[shard][n] for n, shard in where.items()]

    @property
    def files(self) -> list[Any]:
        return []

    def _shard(self, name: str) -> RemoteReader:
        return self.shards[self._where[name]]

    def remote_range(self, name: str) -> tuple[S3Url, int, int]:
        return self._shard(name).remote_range(name)

    def read(self, name: str) -> np.ndarray:
        return self._shard(name).read(name)

    def iter_bytes(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        return self._shard(name).iter_bytes(name, chunk_bytes)

    def content_sha256(self) -> str:
        lines = "".join(f"{shard} {r.content_sha256()}\n" for shard, r in self.shards.items())
        return hashlib.sha256(lines.encode()).hexdigest()


def open_remote(path: Any, options: base.OpenOptions | None = None) -> base.Reader:
    """The reader of an ``s3://`` path: a safetensors file or a sharded index (by its name: ``.json``)."""
    url = url_of(path)
    assert url is not None
    if url.key.endswith(".safetensors.index.json"):
        return RemoteShardedReader(url, options)
    if url.key.endswith(".safetensors"):
        return RemoteReader(url, options)
    raise UsageError(str(url), "s3:// inputs are read for safetensors files (.safetensors) and their indexes "
                     "(.safetensors.index.json); other formats: copy the file here first")


class RemoteWriter:
    """A safetensors object written to S3 as one multipart upload (:class:`~.._multipart.Upload`).

    Told every tensor's spec first (the header is built from them, as the local writer builds it,
    so a rename written here and one written to a local file are the same bytes), then each
    tensor in order: :meth:`copy_range` for bytes that lie unchanged in an object of the same
    store (a server-side copy), :meth:`write_chunks` for bytes this machine has. Nothing is
    visible until :meth:`finish`; :meth:`abort` (or an error) leaves nothing.
    """

    align_window = 64 * 1024  # the local writer's: the same header padding, so the same bytes

    def __init__(self, dest: S3Url, specs: list[Any], metadata: dict[str, str], *, jobs: int = 4,
                 client: Store | None = None) -> None:
        from .._multipart import Upload
        from .header import build_header

        self.dest = dest
        self.store = client or store()
        self.specs = {s.name: s for s in specs}
        self._header: bytes | None = build_header(list(specs), metadata)
        self._upload = Upload(self.store, dest, jobs=jobs)
        self._upload.__enter__()

    def align_data(self, residue: int) -> None:
        from .header import ALIGN, pad_header

        if self._header is not None and residue % ALIGN == 0:
            self._header = pad_header(self._header, residue, self.align_window)

    def _start(self) -> None:
        if self._header is not None:
            self._upload.send(self._header)
            self._header = None

    def copy_range(self, name: str, src: S3Url, start: int, length: int) -> bool:
        """Copy the next tensor from ``src`` in the store; False when ``src`` is in another store."""
        if length != self.specs[name].nbytes:
            raise InputError(str(src), f"tensor {name!r}: {length} bytes in the object, {self.specs[name].nbytes} declared")
        self._start()
        self._upload.copy(src, start, length)
        return True

    def write_chunks(self, name: str, chunks: Any) -> None:
        self._start()
        done = 0
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            done += len(view)
            self._upload.send(view)
        if done != self.specs[name].nbytes:
            raise InputError(str(self.dest), f"tensor {name!r}: {done} bytes given, {self.specs[name].nbytes} declared")

    def finish(self) -> None:
        self._start()
        self._upload.complete()

    def abort(self) -> None:
        self._upload.abort()

    @property
    def parts(self) -> dict[str, int]:
        return {"copied": self._upload.copied_parts, "sent": self._upload.sent_parts}
