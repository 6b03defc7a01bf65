"""Writing safetensors: the whole header first, then the data streamed from arrays, pieces or byte ranges.

Same-dtype copies from another safetensors file move byte ranges with ``os.copy_file_range`` and
never pass through Python memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from ...tensors import TensorSpec
from .. import base
from .._io import CHUNK_BYTES, SourceFds, Writeback
from .header import ALIGN, build_header, pad_header

if TYPE_CHECKING:
    import numpy as np


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
    caps = base.WriterCaps(byte_ranges=True, streams_chunks=True, align=True, like=("safetensors",), records_framework=True)
    align_window = 64 * 1024  # source and output offsets that agree modulo this copy fast

    def __init__(self, path: Path, *, metadata: dict[str, str] | None = None, like: Any = None) -> None:
        super().__init__(path, metadata=metadata, like=like)
        self._fd: int | None = None
        self._sources = SourceFds()
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
        if self._header is not None and residue % ALIGN == 0:
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
                self._write_all(flat[start : start + CHUNK_BYTES].data)

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write the next tensor's bytes piece by piece, straight to the file (no piece is kept)."""
        spec = self._take(name)
        for view in self._exact_pieces(spec, chunks):
            self._write_all(view)

    def write_range(self, name: str, src: Path, offset: int, length: int) -> bool:
        """Copy the next tensor from a file range (joined to the previous range when it continues it)."""
        return self.write_ranges(name, [(src, offset, length)])

    def write_ranges(self, name: str, pieces: Sequence[tuple[Path, int, int]]) -> bool:
        """Copy the next tensor from file ranges in order (each joined to the one before when it continues it)."""
        spec = self._take(name)
        total = sum(length for _, _, length in pieces)
        if total != spec.nbytes:
            raise InputError(pieces[0][0] if pieces else None, f"tensor {name!r}: {total} bytes in the file, "
                             f"{spec.nbytes} declared")
        self._write_header()
        for src, offset, length in pieces:
            fd = self._sources.fd(src)
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
            assert self._writeback is not None
            self._position = self._writeback.copy(fd, offset, length, self._position)

    def _close(self) -> None:
        self._pending = None
        self._sources.close()
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
