"""Writing toy checkpoints: the whole header at ``begin`` (every size is known then), then the data streamed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ckptsurgeon.errors import InputError, OutputError
from ckptsurgeon.formats import base
from ckptsurgeon.tensors import TensorSpec

from .layout import build_header

if TYPE_CHECKING:
    import numpy as np

COPY_STEP = 1 << 20


class Writer(base.Writer):
    """Streams a ``.toy`` file: header, then each tensor's bytes in the declared order."""

    format = "toy"
    caps = base.WriterCaps(byte_ranges=True, streams_chunks=True)

    def __init__(self, path: Path, *, metadata: Mapping[str, str] | None = None, like: base.Reader | None = None) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        self._file: IO[bytes] | None = None

    def _begin(self) -> None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise OutputError(self.path, "toy metadata must map strings to strings")
        if any(not s.name for s in self.specs):
            raise OutputError(self.path, "a toy file cannot hold a tensor with an empty name")
        header = build_header(self.specs, self.metadata)
        try:
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed by finish or abort
            self._file.write(header)
        except OSError as exc:
            self._close()
            raise OutputError(self.path, f"cannot write: {exc.strerror or exc}") from exc

    def _out(self) -> IO[bytes]:
        assert self._file is not None
        return self._file

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        import numpy as np

        if spec.nbytes:  # raw bytes: ml_dtypes' types (bfloat16, float8) have no buffer format of their own
            self._out().write(data.reshape(-1).view(np.uint8).data)

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write the next tensor's bytes piece by piece, straight to the file."""
        spec = self._take(name)
        out = self._out()
        for view in self._exact_pieces(spec, chunks):
            out.write(view)

    def write_range(self, name: str, src: Path, offset: int, length: int) -> bool:
        """Copy the next tensor's raw bytes from a file range."""
        spec = self._take(name)
        if length != spec.nbytes:
            raise InputError(src, f"tensor {name!r}: {length} bytes in the file, {spec.nbytes} declared")
        out = self._out()
        try:
            with open(src, "rb") as f:
                f.seek(offset)
                left = length
                while left:
                    piece = f.read(min(COPY_STEP, left))
                    if not piece:
                        raise InputError(src, f"tensor {name!r}: the file ends inside its byte range")
                    out.write(piece)
                    left -= len(piece)
        except OSError as exc:
            raise InputError(src, f"cannot read: {exc.strerror or exc}") from exc
        return True

    def _close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def _finish(self) -> None:
        out = self._out()
        out.flush()
        self._close()

    def abort(self) -> None:
        self._close()
        super().abort()


