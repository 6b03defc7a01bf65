"""The two protocols every format module implements: a lazy Reader and a streaming Writer.

A format module exposes the same few names: ``detect(head, path)``, ``Reader`` and ``Writer``
(see ``formats/__init__.py``). Readers parse and validate metadata when opened and read tensor
bytes only when asked; writers are told every tensor first (``begin``), then take the data one
tensor at a time, in that order.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

from ..errors import CkptError, InputError
from ..tensors import DTYPES, TensorInfo, TensorSpec

if TYPE_CHECKING:  # numpy is imported where data is touched, so reading a header never loads it
    import numpy as np

CHUNK_BYTES = 16 * 1024 * 1024


def byte_view(chunk: bytes | bytearray | memoryview) -> memoryview:
    """A flat byte view of a C-contiguous buffer (numpy arrays of numpy's own dtypes included)."""
    view = memoryview(chunk)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def c_order(arr: np.ndarray) -> np.ndarray:
    """``arr`` in C order, copied only if needed; unlike ``np.ascontiguousarray`` it keeps 0-d arrays 0-d."""
    if arr.flags.c_contiguous:
        return arr
    import numpy as np

    return np.array(arr, order="C")


class Reader(ABC):
    """A checkpoint opened for reading: metadata now, tensor bytes on demand.

    ``tensors`` is in the file's own order. ``read`` returns a C-contiguous little-endian array of
    the tensor's dtype (read-only where it is a view of a memory map); ``byte_range`` says where
    the raw bytes lie in a file when they can be copied verbatim.
    """

    format: str = ""  # a class default; a reader may refine it per file (keras-h5, keras3-h5, ...)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata: dict[str, str] = {}
        self.tensors: list[TensorInfo] = []
        self._index: dict[str, TensorInfo] | None = None

    # --- metadata -------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __getitem__(self, name: str) -> TensorInfo:
        return self.by_name[name]

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def by_name(self) -> Mapping[str, TensorInfo]:
        if self._index is None:
            self._index = {t.name: t for t in self.tensors}
        return self._index

    @property
    def files(self) -> list[Path]:
        """Every file this checkpoint reads (more than one for sharded checkpoints)."""
        return [self.path]

    # --- data -----------------------------------------------------------------------------
    @abstractmethod
    def read(self, name: str) -> np.ndarray:
        """The whole tensor as an array of its dtype, little-endian, C order."""

    def byte_range(self, name: str) -> tuple[Path, int, int] | None:
        """``(file, offset, length)`` of the tensor's raw bytes, if they lie contiguous in a file."""
        return None

    def iter_bytes(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """The tensor's raw bytes in chunks (one array in memory at most)."""
        import numpy as np

        flat = memoryview(np.ascontiguousarray(self.read(name)).reshape(-1).view(np.uint8))
        for start in range(0, len(flat), chunk_bytes):
            yield flat[start : start + chunk_bytes]

    def header_digest(self) -> str:
        """sha256 of what the header says (format, metadata, names, shapes, dtypes): changes when any of it does."""
        doc = {
            "format": self.format,
            "metadata": self.metadata,
            "tensors": [[t.name, list(t.shape), t.dtype] for t in self.tensors],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def content_sha256(self) -> str:
        """sha256 of the checkpoint's file(s): of the one file, or of ``name sha256`` lines for several."""

        def file_sha(path: Path) -> str:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    h.update(chunk)
            return h.hexdigest()

        if len(self.files) == 1:
            return file_sha(self.files[0])
        lines = "".join(f"{p.name} {file_sha(p)}\n" for p in self.files)
        return hashlib.sha256(lines.encode()).hexdigest()

    def sha256(self, name: str) -> str:
        h = hashlib.sha256()
        for chunk in self.iter_bytes(name):
            h.update(chunk)
        return h.hexdigest()

    # --- life cycle -----------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - optional for formats holding nothing open
        pass

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _check_array(self, info: TensorInfo, arr: np.ndarray) -> np.ndarray:
        """Guard a reader's result: right shape and dtype, little-endian, C order."""
        want = DTYPES[info.dtype].numpy
        if arr.dtype != want:
            if arr.dtype.itemsize == want.itemsize and arr.dtype.kind in "uiVfb" and want.kind == "V":
                arr = arr.view(want)
            else:
                arr = arr.astype(want)
        if tuple(arr.shape) != info.shape:
            raise InputError(self.path, f"tensor {info.name!r}: data has shape {arr.shape}, header says {info.shape}")
        return c_order(arr)


class WriterStateError(CkptError):
    """A writer was driven out of order: a bug in the caller, reported at the call."""


class Writer(ABC):
    """A streaming writer: ``begin(specs)``, then ``write`` each tensor in order, then ``finish``.

    States: NEW -> begin -> WEIGHTS -> finish -> DONE. Every call checks the state, so misuse
    fails at the call, not as a corrupt file. ``path`` is the file to create (a temporary path
    from :func:`ckptsurgeon.atomic.atomic_path`); it must not exist.
    """

    format: ClassVar[str]

    def __init__(self, path: Path, *, metadata: Mapping[str, str] | None = None, like: Reader | None = None) -> None:
        self.path = path
        self.metadata = dict(metadata or {})
        self.like = like
        self.specs: list[TensorSpec] = []
        self.origins: dict[str, str] = {}
        self._state = "NEW"
        self._next = 0

    def _expect(self, state: str) -> None:
        if self._state != state:
            raise WriterStateError(self.path, f"{type(self).__name__}: expected state {state}, got {self._state}")

    def begin(self, specs: Sequence[TensorSpec], origins: Mapping[str, str] | None = None) -> None:
        """Declare every tensor, in the order they will be written.

        ``origins`` maps an output name to the name of the ``like`` checkpoint's tensor it stands
        for, when the two differ (a renamed tensor): a writer that reproduces the ``like`` file's
        layout puts it where that tensor was.
        """
        self._expect("NEW")
        self.origins = dict(origins or {})
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise WriterStateError(self.path, f"tensor names declared twice: {dup[:5]}")
        self.specs = list(specs)
        self._begin()
        self._state = "WEIGHTS"

    def _peek(self, name: str) -> TensorSpec:
        """The spec of the tensor due next, checked to be ``name``."""
        self._expect("WEIGHTS")
        if self._next >= len(self.specs):
            raise WriterStateError(self.path, f"tensor {name!r} written after all declared tensors")
        spec = self.specs[self._next]
        if spec.name != name:
            raise WriterStateError(self.path, f"expected tensor {spec.name!r} next, got {name!r}")
        return spec

    def _take(self, name: str) -> TensorSpec:
        spec = self._peek(name)
        self._next += 1
        return spec

    def write(self, name: str, data: np.ndarray) -> None:
        """Write the next tensor's values (shape and dtype as declared)."""
        import numpy as np

        spec = self._take(name)
        data = np.asarray(data)
        want = DTYPES[spec.dtype].numpy
        if tuple(data.shape) != spec.shape or data.dtype != want:
            raise WriterStateError(
                self.path, f"tensor {name!r}: got {data.dtype}{list(data.shape)}, declared {spec.dtype}{list(spec.shape)}"
            )
        self._write(spec, c_order(data))

    def write_range(self, name: str, src: Path, offset: int, length: int) -> bool:
        """Copy the next tensor's raw bytes from a file range; False if this writer cannot (then call ``write``)."""
        return False

    def write_stored(self, name: str, reader: Reader, source_name: str) -> bool:
        """Copy the next tensor from ``reader``'s tensor ``source_name`` (same dtype and shape) as that
        file stores it, without decoding it (HDF5: compressed chunks verbatim); False if this writer
        cannot for this tensor (then use the other ways). Values are the same either way."""
        return False

    #: True when :meth:`write_chunks` streams each piece to the file as it comes; False when it
    #: assembles the whole tensor first (this class's fallback).
    streams_chunks: ClassVar[bool] = False

    def _exact_pieces(self, spec: TensorSpec, chunks: Iterable[bytes | bytearray | memoryview]) -> Iterator[memoryview]:
        """``chunks`` as flat byte views, checked to add up to ``spec``'s size exactly (WriterStateError)."""
        done = 0
        for chunk in chunks:
            view = byte_view(chunk)
            if done + len(view) > spec.nbytes:
                raise WriterStateError(self.path, f"tensor {spec.name!r}: more than the declared {spec.nbytes} bytes")
            yield view
            done += len(view)
        if done != spec.nbytes:
            raise WriterStateError(self.path, f"tensor {spec.name!r}: {done} bytes given, {spec.nbytes} declared")

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write the next tensor from its raw little-endian C-order bytes, given as pieces of any size.

        The pieces must add up to the declared size exactly. Each piece is used before the next is
        asked for, so a producer may reuse its buffer. This fallback assembles the tensor in memory
        and calls :meth:`write`; writers that stream the pieces override it and set ``streams_chunks``.
        """
        import numpy as np

        spec = self._peek(name)
        buf = np.empty(spec.nbytes, dtype=np.uint8)
        done = 0
        for view in self._exact_pieces(spec, chunks):
            buf[done : done + len(view)] = np.frombuffer(view, dtype=np.uint8)
            done += len(view)
        self.write(name, buf.view(DTYPES[spec.dtype].numpy).reshape(spec.shape))

    def finish(self) -> None:
        self._expect("WEIGHTS")
        if self._next != len(self.specs):
            missing = [s.name for s in self.specs[self._next :]]
            raise WriterStateError(self.path, f"{len(missing)} declared tensors not written: {missing[:5]}")
        self._finish()
        self._state = "DONE"

    def abort(self) -> None:
        """Release whatever is open after an error; the temporary file is removed by the caller."""
        self._state = "DONE"

    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _write(self, spec: TensorSpec, data: np.ndarray) -> None: ...

    @abstractmethod
    def _finish(self) -> None: ...


def describe(head: bytes) -> str:
    """Name the kind of file behind bytes no reader accepts, for the error message."""
    text = head.lstrip()
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return "a Git LFS pointer, not the checkpoint itself (run `git lfs pull` to fetch the real file)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (e.g. a legacy torch.save file); pickles are never loaded"
    if head.startswith(b"GGUF"):
        return "a GGUF file, not supported yet"
    if head.startswith(b"\x93NUMPY"):
        return "a single .npy array, not a checkpoint (save it with numpy.savez)"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed; decompress it first"
    if text.startswith((b"<!DOCTYPE", b"<html", b"<HTML")):
        return "an HTML page (a failed download?)"
    if not head:
        return "empty"
    return "not a checkpoint format ckptsurgeon reads (safetensors, HDF5/Keras, npz)"

