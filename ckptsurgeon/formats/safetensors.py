"""safetensors, single-file and sharded: a strict header parser, mmap reads and a streaming writer.

The header is validated completely before any tensor byte is touched, at least as strictly as the
reference parser: an 8-byte little-endian length no larger than the file and than 100 MB, a UTF-8
JSON object (no duplicate keys, no NaN/Infinity tokens), ``__metadata__`` mapping str to str,
known dtypes, shapes of non-negative integers, and data offsets that tile the data section exactly:
contiguous, no overlap, no hole, no trailing bytes, each range as long as shape x dtype says.

Tensor bytes are read through ``mmap`` without copying. Pages of the map that a chunked read has
gone past, and those of a tensor the caller is done with (:meth:`Reader.release`), are dropped from
the process with ``MADV_DONTNEED``: the data stays in the page cache and a later access maps it
again, so memory does not grow with the number of tensors read. The writer computes the whole header
first and then streams the data, from arrays or from chunks (:meth:`Writer.write_chunks`); same-dtype
copies from another safetensors file move byte ranges with ``os.copy_file_range`` and never pass
through Python memory.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..tensors import DTYPES, TensorInfo, TensorSpec, default_layer, numel
from . import base
from ._io import Writeback, copy_range, drop_pages
from .base import CHUNK_BYTES

if TYPE_CHECKING:
    import numpy as np

_MAP_LOCK = threading.Lock()  # a reader may be read from two threads (counting beside a copy)
MAX_HEADER_BYTES = 100_000_000
MAX_INDEX_BYTES = 100_000_000
_ALIGN = 8


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        (key + value if isinstance(value, str) else key).encode("utf-8")  # a lone "\ud800" escape is not UTF-8
        out[key] = value
    return out


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def strict_json(raw: bytes, what: str) -> Any:
    """Parse JSON as the reference parser would: UTF-8, no duplicate keys, no NaN/Infinity."""
    text = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if text.startswith("\ufeff"):
        raise ValueError(f"{what} starts with a byte order mark")
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse_header(path: Path, header: bytes, data_len: int) -> tuple[dict[str, str], list[TensorInfo]]:
    """Validate a safetensors header; return its metadata and tensors in data-offset order.

    Each TensorInfo's ``loc`` is its ``(begin, end)`` within the data section.
    """

    def bad(problem: str) -> InputError:
        return InputError(path, f"invalid safetensors header: {problem}")

    if not header.lstrip(b" ").startswith(b"{"):
        raise bad("the header does not start with '{'")
    try:
        doc = strict_json(header, "the header")
    except RecursionError as exc:
        raise bad("JSON nested too deeply") from exc
    except ValueError as exc:
        raise bad(f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise bad("not a JSON object")

    metadata: dict[str, str] = {}
    raw_meta = doc.pop("__metadata__", None)
    if raw_meta is not None:
        if not isinstance(raw_meta, dict) or not all(isinstance(v, str) for v in raw_meta.values()):
            raise bad("__metadata__ must map strings to strings")
        metadata = raw_meta

    tensors: list[TensorInfo] = []
    for name, entry in doc.items():
        if not isinstance(entry, dict):
            raise bad(f"tensor {name!r} is not an object")
        if set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name!r} must have exactly dtype, shape and data_offsets, has {sorted(entry)}")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str) or code not in DTYPES:
            raise bad(f"tensor {name!r} has unknown dtype {code!r}")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise bad(f"tensor {name!r} shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)):
            raise bad(f"tensor {name!r} data_offsets {offsets!r} are not two non-negative integers")
        begin, end = offsets
        if end < begin:
            raise bad(f"tensor {name!r} data_offsets {offsets} end before they begin")
        if end > data_len:
            raise InputError(
                path, f"truncated or corrupt: tensor {name!r} ends at data offset {end} "
                f"but the data section holds only {data_len} bytes",
            )
        nbytes = numel(tuple(shape)) * DTYPES[code].itemsize
        if end - begin != nbytes:
            raise bad(f"tensor {name!r} is {shape} {code} = {nbytes} bytes but its offsets span {end - begin}")
        tensors.append(TensorInfo(name, tuple(shape), code, default_layer(name), loc=(begin, end)))

    tensors.sort(key=lambda t: t.loc)
    position = 0
    for t in tensors:
        begin, end = t.loc
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a hole of {begin - position} bytes"
            raise bad(f"tensor {t.name!r} at offset {begin} {what}")
        position = end
    if position != data_len:
        raise bad(f"tensors cover {position} bytes but the data section holds {data_len}")
    return metadata, tensors


class Reader(base.Reader):
    """One ``.safetensors`` file, validated on open, tensors memory-mapped on first read."""

    format = "safetensors"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._mmap: mmap.mmap | None = None
        try:
            with open(path, "rb", buffering=0) as f:  # exact reads: the header and nothing of the data
                size = os.fstat(f.fileno()).st_size
                if size < 8:
                    raise InputError(path, f"truncated: {size} bytes, a safetensors file has at least 8")
                (n,) = struct.unpack("<Q", f.read(8))
                if n > MAX_HEADER_BYTES:
                    raise InputError(path, f"invalid safetensors header: length {n} exceeds the 100 MB limit")
                if 8 + n > size:
                    raise InputError(path, f"truncated: header length {n} runs past the end of the {size}-byte file")
                header = f.read(n)
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
        if len(header) != n:
            raise InputError(path, "truncated while reading the header")
        self.data_start = 8 + n
        self.metadata, ordered = parse_header(path, header, size - self.data_start)
        self.tensors = ordered

    def _map(self) -> mmap.mmap:
        if self._mmap is None:
            with _MAP_LOCK:
                if self._mmap is None:
                    try:
                        with open(self.path, "rb") as f:
                            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    except (OSError, ValueError) as exc:
                        raise InputError(self.path, f"cannot map the file: {exc}") from exc
                    if len(mapped) < self.data_start + sum(t.nbytes for t in self.tensors):
                        mapped.close()
                        raise InputError(self.path, "the file shrank after it was opened")
                    self._mmap = mapped
        return self._mmap

    def read(self, name: str) -> np.ndarray:
        import numpy as np

        info = self.by_name[name]
        dt = DTYPES[info.dtype].numpy
        if info.nbytes == 0:
            return np.zeros(info.shape, dtype=dt)
        begin, _ = info.loc
        arr = np.frombuffer(self._map(), dtype=dt, count=info.numel, offset=self.data_start + begin)
        return arr.reshape(info.shape)

    def byte_range(self, name: str) -> tuple[Path, int, int]:
        info = self.by_name[name]
        begin, end = info.loc
        return self.path, self.data_start + begin, end - begin

    def iter_bytes(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """Views of the map, ``chunk_bytes`` at a time; the pages of each are released once the next is asked for."""
        info = self.by_name[name]
        if info.nbytes == 0:
            return
        begin, end = info.loc
        mapped = self._map()
        first = self.data_start + begin
        view = memoryview(mapped)[first : self.data_start + end]
        try:
            for start in range(0, len(view), chunk_bytes):
                yield view[start : start + chunk_bytes]
                drop_pages(mapped, first + start, first + min(start + chunk_bytes, len(view)))
        finally:
            view.release()

    def release(self, name: str) -> None:
        """Drop the process's pages of this tensor's bytes (arrays read from it stay valid)."""
        info = self.by_name[name]
        if self._mmap is not None and info.nbytes:
            begin, end = info.loc
            drop_pages(self._mmap, self.data_start + begin, self.data_start + end)

    def close(self) -> None:
        if self._mmap is not None:
            # Arrays handed out may still view the map; then it closes when they are gone.
            with contextlib.suppress(BufferError):
                self._mmap.close()
            self._mmap = None


def _shard_name(index: Path, value: Any) -> str:
    if not isinstance(value, str) or not value or value in (".", ".."):
        raise InputError(index, f"shard file name {value!r} is not a file name")
    if "/" in value or "\\" in value or "\0" in value or os.path.isabs(value):
        raise InputError(index, f"shard file name {value!r} points outside the index's directory")
    return value


class ShardedReader(base.Reader):
    """A Hugging Face sharded checkpoint: ``*.safetensors.index.json`` and the shards it names.

    The index is checked against every shard's header in both directions.
    """

    format = "safetensors-sharded"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            raw = path.read_bytes() if path.stat().st_size <= MAX_INDEX_BYTES else None
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
        if raw is None:
            raise InputError(path, "the index is larger than 100 MB")
        try:
            doc = strict_json(raw, "the index")
        except (ValueError, RecursionError) as exc:
            raise InputError(path, f"invalid index JSON ({exc})") from exc
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict):
            raise InputError(path, 'the index has no "weight_map" object')
        meta = doc.get("metadata") or {}
        if not isinstance(meta, dict):
            raise InputError(path, 'the index "metadata" is not an object')
        self.metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}

        self.shards: dict[str, Reader] = {}
        try:
            for name, shard in weight_map.items():
                shard = _shard_name(path, shard)
                if shard not in self.shards:
                    shard_path = path.parent / shard
                    if not shard_path.is_file():
                        raise InputError(path, f"shard {shard!r} (holding {name!r}) does not exist")
                    self.shards[shard] = Reader(shard_path)
            self._where: dict[str, str] = {}
            for name, shard in weight_map.items():
                if name not in self.shards[shard]:
                    raise InputError(path, f"the index puts {name!r} in {shard}, which does not hold it")
                self._where[name] = shard
            for shard, reader in self.shards.items():
                for t in reader.tensors:
                    if self._where.get(t.name) != shard:
                        raise InputError(path, f"shard {shard} holds {t.name!r}, which the index does not list there")
        except BaseException:
            self.close()
            raise
        self.tensors = [self.shards[self._where[n]][n] for n in weight_map]

    @property
    def files(self) -> list[Path]:
        return [self.path, *(r.path for r in self.shards.values())]

    def _shard(self, name: str) -> Reader:
        return self.shards[self._where[name]]

    def read(self, name: str) -> np.ndarray:
        return self._shard(name).read(name)

    def byte_range(self, name: str) -> tuple[Path, int, int]:
        return self._shard(name).byte_range(name)

    def iter_bytes(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        return self._shard(name).iter_bytes(name, chunk_bytes)

    def release(self, name: str) -> None:
        self._shard(name).release(name)

    def close(self) -> None:
        for reader in getattr(self, "shards", {}).values():
            reader.close()


def build_header(specs: list[TensorSpec], metadata: dict[str, str]) -> bytes:
    """The header for tensors laid out in the given order, padded with spaces to 8-byte alignment."""
    doc: dict[str, Any] = {}
    if metadata:
        doc["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for s in specs:
        doc[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % _ALIGN)
    return struct.pack("<Q", len(raw)) + raw


def pad_header(header: bytes, residue: int, window: int) -> bytes:
    """``header`` (as :func:`build_header` makes it) padded with spaces so the data starts at ≡ ``residue`` (mod ``window``)."""
    raw = header[8:] + b" " * ((residue - len(header)) % window)
    return struct.pack("<Q", len(raw)) + raw


class Writer(base.Writer):
    """Streams a safetensors file: header first, then each tensor's bytes in the declared order.

    Copies of byte ranges are made to suit the page cache, whose large folios make the final fsync
    markedly faster than the same bytes in small pages:

    * ranges that continue each other in one source file (consecutive tensors of one layout) are
      copied with one ``copy_file_range``;
    * :meth:`align_data`, called before the first tensor, pads the header with spaces so that the
      data section starts where the copied ranges line up with their sources modulo
      :attr:`align_window` (otherwise every copied page straddles two source pages). The header is
      written when the first tensor is.
    """

    format = "safetensors"
    streams_chunks = True
    align_window = 64 * 1024  # source and output offsets that agree modulo this copy fast

    def __init__(self, path: Path, *, metadata: dict[str, str] | None = None, like: Any = None) -> None:
        super().__init__(path, metadata=metadata, like=like)
        self._fd: int | None = None
        self._sources: dict[Path, int] = {}
        self._pending: tuple[int, int, int] | None = None  # (source fd, offset, length) still to be copied
        self._header: bytes | None = None  # not written yet
        self._position = 0  # bytes written or copied so far
        self._writeback: Writeback | None = None

    def _begin(self) -> None:
        self._header = build_header(self.specs, self.metadata)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._writeback = Writeback(self._fd)

    def align_data(self, residue: int) -> None:
        """Start the data section at an offset ≡ ``residue`` (mod :attr:`align_window`), if still possible.

        Only before the first tensor is written, and only for residues that keep the data 8-byte aligned.
        """
        self._expect("WEIGHTS")
        if self._header is not None and residue % _ALIGN == 0:
            self._header = pad_header(self._header, residue, self.align_window)

    def _write_header(self) -> None:
        if self._header is not None:
            header, self._header = self._header, None
            self._write_all(memoryview(header))

    def _write_all(self, data: memoryview) -> None:
        self._write_header()
        self._copy_pending()
        assert self._fd is not None and self._writeback is not None
        while len(data):
            n = os.write(self._fd, data)
            data = data[n:]
            self._position += n
        self._writeback.written_up_to(self._position)

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        import numpy as np

        if spec.nbytes:
            flat = data.reshape(-1).view(np.uint8)
            for start in range(0, flat.nbytes, CHUNK_BYTES):
                self._write_all(memoryview(flat[start : start + CHUNK_BYTES]))

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write the next tensor's bytes piece by piece, straight to the file (no piece is kept)."""
        spec = self._take(name)
        for view in self._exact_pieces(spec, chunks):
            self._write_all(view)

    def write_range(self, name: str, src: Path, offset: int, length: int) -> bool:
        """Copy the next tensor from a file range (joined to the previous range when it continues it)."""
        spec = self._take(name)
        if length != spec.nbytes:
            raise InputError(src, f"tensor {name!r}: {length} bytes in the file, {spec.nbytes} declared")
        fd = self._sources.get(src)
        if fd is None:
            fd = self._sources[src] = os.open(src, os.O_RDONLY)
        self._write_header()
        if self._pending is not None and self._pending[0] == fd and sum(self._pending[1:]) == offset:
            self._pending = (fd, self._pending[1], self._pending[2] + length)
        else:
            self._copy_pending()
            self._pending = (fd, offset, length)
        return True

    def _copy_pending(self) -> None:
        if self._pending is not None:
            fd, offset, length = self._pending
            self._pending = None
            assert self._fd is not None and self._writeback is not None
            for start in range(0, length, Writeback.STEP):  # in steps, so the disk starts during a long copy
                n = min(Writeback.STEP, length - start)
                copy_range(self._fd, fd, offset + start, n)
                self._position += n
                self._writeback.written_up_to(self._position)

    def _close(self) -> None:
        self._pending = None
        for fd in self._sources.values():
            os.close(fd)
        self._sources.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _finish(self) -> None:
        self._write_header()
        self._copy_pending()
        self._close()

    def abort(self) -> None:
        self._close()
        super().abort()
