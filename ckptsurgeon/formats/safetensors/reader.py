"""Reading safetensors: one file (:class:`Reader`) or a Hugging Face sharded checkpoint (:class:`ShardedReader`).

Tensor bytes are read through ``mmap`` without copying. Pages of the map that a chunked read has
gone past, and those of a tensor the caller is done with (:meth:`Reader.release`), are dropped from
the process with ``MADV_DONTNEED``: the data stays in the page cache and a later access maps it
again, so memory does not grow with the number of tensors read.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import InputError
from ...files import open_input
from ...tensors import DTYPES
from .. import _index, base
from .._io import MappedTensors
from .._probe import Probe
from .header import MAX_HEADER_BYTES, parse_header

if TYPE_CHECKING:
    import numpy as np



class Reader(MappedTensors, base.Reader):
    """One ``.safetensors`` file, validated on open, tensors memory-mapped on first read."""

    format = "safetensors"
    caps = base.ReaderCaps(byte_ranges=True, release=True)

    def __init__(self, path: Path, options: base.OpenOptions | None = None) -> None:
        super().__init__(path, options)
        self._mmap: mmap.mmap | None = None
        try:
            with open_input(path, buffering=0) as f:  # exact reads: the header and nothing of the data
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

    def read(self, name: str) -> np.ndarray:
        import numpy as np

        info = self.by_name[name]
        dt = DTYPES[info.dtype].numpy
        if info.nbytes == 0:
            return np.zeros(info.shape, dtype=dt)
        begin, _ = info.loc
        arr = np.frombuffer(self._map(), dtype=dt, count=info.numel, offset=self.data_start + begin)
        return arr.reshape(info.shape)



class ShardedReader(_index.ShardedReader):
    """A Hugging Face sharded checkpoint: ``*.safetensors.index.json`` and the shards it names.

    The index is checked against every shard's header in both directions; a shard that is not a
    safetensors file is named as what it is.
    """

    format = "safetensors-sharded"
    shard_kind = "a safetensors file"

    def is_shard(self, probe: Probe) -> bool:
        return probe.safetensors_like(MAX_HEADER_BYTES)

    def open_shard(self, path: Path) -> Reader:
        return Reader(path)


