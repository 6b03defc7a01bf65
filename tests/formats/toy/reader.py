"""Reading toy checkpoints: the header validated completely on open, tensor bytes read on demand."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ckptsurgeon.errors import InputError
from ckptsurgeon.formats import base
from ckptsurgeon.tensors import DTYPES, TensorInfo, default_layer

from .layout import LENGTH, MAGIC, MAX_HEADER_BYTES, PREFIX

ENTRY_KEYS = {"name", "dtype", "shape", "offset", "length"}
MAX_DIMS = 64


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _bounded_numel(shape: list[int], limit: int) -> int | None:
    """The element count of ``shape``, or None once it exceeds ``limit`` (never builds a huge integer)."""
    if 0 in shape:
        return 0
    count = 1
    for dim in shape:
        count *= dim
        if count > limit:
            return None
    return count


class Reader(base.Reader):
    """One ``.toy`` file."""

    format = "toy"
    caps = base.ReaderCaps(byte_ranges=True)

    def __init__(self, path: Path, options: base.OpenOptions | None = None) -> None:
        super().__init__(path, options)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                prefix = f.read(PREFIX)
                if len(prefix) < PREFIX:
                    raise InputError(path, f"truncated: {size} bytes, a toy file has at least {PREFIX}")
                if not prefix.startswith(MAGIC):
                    raise InputError(path, "not a toy file (no CKPTTOY1 magic)")
                (n,) = LENGTH.unpack_from(prefix, len(MAGIC))
                if n > MAX_HEADER_BYTES:
                    raise InputError(path, f"invalid toy header: length {n} exceeds the {MAX_HEADER_BYTES} byte limit")
                if PREFIX + n > size:
                    raise InputError(path, f"truncated: header length {n} runs past the end of the {size}-byte file")
                header = f.read(n)
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
        if len(header) != n:
            raise InputError(path, "truncated while reading the header")
        self.data_start = PREFIX + n
        self.metadata, self.tensors = self._parse(header, size - self.data_start)

    def _bad(self, problem: str) -> InputError:
        return InputError(self.path, f"invalid toy header: {problem}")

    def _parse(self, header: bytes, data_len: int) -> tuple[dict[str, str], list[TensorInfo]]:
        try:
            doc = json.loads(header.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except UnicodeDecodeError as exc:
            raise self._bad(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        except RecursionError as exc:
            raise self._bad("JSON nested too deeply") from exc
        except ValueError as exc:
            raise self._bad(f"not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or set(doc) != {"metadata", "tensors"}:
            raise self._bad("must be a JSON object with exactly 'metadata' and 'tensors'")
        metadata, entries = doc["metadata"], doc["tensors"]
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self._bad("'metadata' must map strings to strings")
        if not isinstance(entries, list):
            raise self._bad("'tensors' must be a list")
        tensors: list[TensorInfo] = []
        seen: set[str] = set()
        position = 0
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or set(entry) != ENTRY_KEYS:
                raise self._bad(f"tensor entry {i} must be an object with exactly {sorted(ENTRY_KEYS)}")
            name, code, shape = entry["name"], entry["dtype"], entry["shape"]
            offset, length = entry["offset"], entry["length"]
            if not isinstance(name, str) or not name:
                raise self._bad(f"tensor entry {i} has no name")
            if name in seen:
                raise self._bad(f"tensor {name!r} is listed twice")
            seen.add(name)
            if not isinstance(code, str) or code not in DTYPES:
                raise self._bad(f"tensor {name!r} has unknown dtype {code!r}")
            if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_uint(d) for d in shape):
                raise self._bad(f"tensor {name!r} shape is not a list of at most {MAX_DIMS} non-negative integers")
            if not _is_uint(offset) or not _is_uint(length):
                raise self._bad(f"tensor {name!r} offset and length must be non-negative integers")
            itemsize = DTYPES[code].itemsize
            numel = _bounded_numel(shape, data_len // itemsize)
            if numel is None or offset + length > data_len:
                raise InputError(self.path, f"truncated or corrupt: tensor {name!r} does not fit the "
                                 f"{data_len}-byte data section")
            if length != numel * itemsize:
                raise self._bad(f"tensor {name!r} is {shape} {code} = {numel * itemsize} bytes, its length says {length}")
            if offset != position:
                what = "overlaps the previous tensor" if offset < position else f"leaves a hole of {offset - position} bytes"
                raise self._bad(f"tensor {name!r} at offset {offset} {what}")
            position = offset + length
            tensors.append(TensorInfo(name, tuple(shape), code, default_layer(name), loc=self.data_start + offset))
        if position != data_len:
            raise self._bad(f"tensors cover {position} bytes but the data section holds {data_len}")
        return dict(metadata), tensors

    def _pread(self, f: Any, offset: int, length: int) -> bytes:
        f.seek(offset)
        data = f.read(length)
        if len(data) != length:
            raise InputError(self.path, "the file shrank after it was opened")
        return bytes(data)

    def read(self, name: str) -> np.ndarray:
        info = self.by_name[name]
        dt = DTYPES[info.dtype].numpy
        if info.nbytes == 0:
            return np.zeros(info.shape, dtype=dt)
        try:
            with open(self.path, "rb") as f:
                raw = self._pread(f, info.loc, info.nbytes)
        except OSError as exc:
            raise InputError(self.path, f"cannot read: {exc.strerror or exc}") from exc
        return np.frombuffer(raw, dtype=dt).reshape(info.shape)

    def iter_bytes(self, name: str, chunk_bytes: int = base.CHUNK_BYTES) -> Iterator[memoryview]:
        info = self.by_name[name]
        try:
            with open(self.path, "rb") as f:
                for start in range(0, info.nbytes, chunk_bytes):
                    yield memoryview(self._pread(f, info.loc + start, min(chunk_bytes, info.nbytes - start)))
        except OSError as exc:
            raise InputError(self.path, f"cannot read: {exc.strerror or exc}") from exc

    def byte_range(self, name: str) -> tuple[Path, int, int]:
        info = self.by_name[name]
        return self.path, info.loc, info.nbytes
