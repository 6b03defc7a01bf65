"""What every format implements, and how a format tells the registry about itself.

A format package (``formats/<name>/``) exports :class:`FormatSpec` records from a light
``__init__.py``: its identity string, family, extensions, a cheap ``sniff`` over a
:class:`~ckptsurgeon.formats._probe.Probe`, and its reader and writer classes by import path, so
that listing and detecting formats imports no format's heavy code. Readers implement
:class:`Reader` (metadata when opened, tensor bytes on demand); writers subclass :class:`Writer`,
a state machine that is told every tensor first (``begin``) and then takes the data one tensor at
a time, in that order. What a reader or writer can do beyond the basics is declared data
(:class:`ReaderCaps`, :class:`WriterCaps`), never found by probing for attributes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import EXIT_INTERNAL, CkptError, InputError, OutputError
from ..files import open_input
from ..tensors import DTYPES, TensorInfo, TensorSpec
from ._io import CHUNK_BYTES

if TYPE_CHECKING:  # numpy is imported where data is touched, so reading a header never loads it
    import numpy as np

    from ._probe import Probe


@dataclass(frozen=True)
class OpenOptions:
    """How to read an input, beyond its path (each format reads the fields that concern it).

    ``float8``: which float8 code a 1-byte void npz member holds (``F8_E4M3``, ``F8_E5M2``,
    ``F8_E8M0``), for archives without ckptsurgeon's naming comment.
    ``dict_path``: the dotted path of the state dict to read in a container checkpoint (PyTorch:
    ``state_dict``, ``model_ema``, ``checkpoint.model``); its tensors are named relative to it.
    ``all_dicts``: list every tensor of a container under its full dotted path instead.
    ``dec_key`` / ``dec_mode``: the key (a :class:`~ckptsurgeon.formats.mindspore.crypto.Secret`,
    never shown) and, when given, the expected mode of an encrypted MindSpore checkpoint.
    ``tf_names``: ``short`` matches a TensorFlow object-based checkpoint's variables without the
    ``/.ATTRIBUTES/VARIABLE_VALUE`` ending of their keys (``keys``: as stored, the default).
    """

    float8: str | None = None
    dict_path: str | None = None
    all_dicts: bool = False
    dec_key: Any = None
    dec_mode: str | None = None
    tf_names: str = "keys"


@dataclass(frozen=True)
class ReaderCaps:
    """What a reader offers beyond ``read`` and ``iter_bytes``.

    ``byte_ranges``: ``byte_range(name)`` can say where a tensor's raw bytes lie in a file.
    ``release``: ``release(name)`` drops the process's mapped pages of a tensor it is done with.
    """

    byte_ranges: bool = False
    release: bool = False


@dataclass(frozen=True)
class WriterCaps:
    """What a writer offers beyond ``write``.

    ``byte_ranges``: ``write_range`` copies a file range. ``streams_chunks``: ``write_chunks``
    streams each piece to the file (else it assembles the tensor first). ``stored``:
    ``write_stored`` may copy a reader's storage as it is (HDF5 chunks). ``align``:
    ``align_data(residue)`` places the data section to suit byte-range copies, within
    ``align_window`` bytes. ``like``: the families whose readers it can take as a layout template
    (``like=``). ``renames``: the layout template follows renames (``begin(origins=...)``) and the
    writer reports a ``layout_fallback`` when it cannot. ``sharded``: it writes several files and
    takes ``shard_size``. ``updates``: given ``like`` and ``update=True``, it writes that file
    updated: everything of it that the written tensors do not replace is carried through (a
    PyTorch training checkpoint's optimizer state and epoch), or it writes plainly and says why in
    ``layout_fallback``. ``records_framework``: the output's metadata says which framework its
    tensors are laid out for, as Hugging Face's safetensors files do (``format: pt``), taken from
    the input's :attr:`FormatSpec.framework`. ``encrypts``: it takes ``encrypt=`` (an Encryption).
    ``commits``: it writes several files and commits them itself in ``finish`` (as a sharded writer
    does, without taking ``shard_size``: a TensorFlow bundle's index and data shard).
    ``dtypes``: the dtype codes it can write (None: every one but the block dtypes).
    ``typed_metadata``: it takes ``metadata_types=`` (key -> GGUF value type name) and writes those values typed.
    """

    byte_ranges: bool = False
    streams_chunks: bool = False
    stored: bool = False
    align: bool = False
    like: tuple[str, ...] = ()
    renames: bool = False
    sharded: bool = False
    updates: bool = False
    commits: bool = False
    records_framework: bool = False
    encrypts: bool = False
    dtypes: frozenset[str] | None = None
    typed_metadata: bool = False


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class FormatSpec:
    """One checkpoint format, as the registry knows it before importing any of its code.

    ``name`` is the format's one identity string: the reader's ``format``, the JSON reports'
    ``format`` and the ``--format`` value. ``family`` says what "write like the input" means
    (formats of one family lay out files alike). ``extensions`` choose this format for an output
    path. ``sniff`` answers from a probe of the file's first bytes, cheaply and without importing
    the reader. ``reader`` / ``writer`` are ``"module:Class"`` paths (``writer`` None: read-only).
    ``shards_of``: this is a sharded index whose shard files are all of that format; such a spec
    is detected from the index (a JSON file with a ``weight_map``) by its first shard's format, not
    by ``sniff``. ``folder_globs``: the file names that make a directory this checkpoint (an
    index before single files). ``sniff_damaged``: asked only when no format's ``sniff`` claimed
    the file, for a file that looks like a damaged one of this format, so that its reader names
    what is wrong instead of "not a checkpoint". ``framework``: the framework whose layout its
    tensors have, as Hugging Face names it in a safetensors file's ``format`` metadata (``pt``).
    ``folder_pointer``: a file that names the checkpoint of its directory (TensorFlow's
    ``checkpoint``); when a directory holds one, it is opened before any glob is tried.
    ``sorted_names``: a file keeps its tensors sorted by name (a TensorFlow index), so readers
    list them so, whatever order they were written in.
    ``remote_writer``: the class that writes the format as an object in S3 (``s3://`` outputs).
    """

    name: str
    family: str
    reader: str
    description: str
    sniff: Callable[[Probe], bool] | None = None
    writer: str | None = None
    extensions: tuple[str, ...] = ()
    shards_of: str | None = None
    folder_globs: tuple[str, ...] = ()
    sniff_damaged: Callable[[Probe], bool] | None = None
    framework: str | None = None
    folder_pointer: str | None = None
    remote_writer: str | None = None  # "module:Class" that writes this format as an object in S3
    sorted_names: bool = False

    def reader_class(self) -> type[Reader]:
        cls: type[Reader] = _load(self.reader)
        return cls

    def writer_class(self) -> type[Writer]:
        if self.writer is None:
            raise AssertionError(f"{self.name} is read-only")
        cls: type[Writer] = _load(self.writer)
        return cls


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


_OUT_OF_MEMORY = ("cannot read: out of memory (MemoryError); the file declares more than this machine "
                  "can hold, or more than the memory limit of this process allows")


class reading:
    """Make a MemoryError or RecursionError raised while ``path`` is read that file's problem (InputError).

    A file that declares more data than the machine can hold, or nests deeper than Python
    recurses, is a malformed input (exit 3), not a bug; the same errors anywhere else are.

    A class rather than a generator: the frames of a MemoryError's traceback hold what filled
    memory, and ``contextlib.contextmanager`` keeps that traceback alive in its own frame while the
    handler runs. Here it is let go of before anything is allocated, and the error is built from a
    message made at import.
    """

    __slots__ = ("path",)

    def __init__(self, path: Path | str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None or error is None:
            return
        if issubclass(kind, MemoryError):
            error.__traceback__ = None
            del tb, error
            raise InputError(self.path, _OUT_OF_MEMORY) from None
        if issubclass(kind, RecursionError):
            raise InputError(self.path, "cannot read: nested too deeply (RecursionError)") from error


_CO_GENERATOR = 0x20  # inspect.CO_GENERATOR, without importing inspect at start-up


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` with :func:`reading` around it (a generator's body included), naming the reader's file."""
    if method.__code__.co_flags & _CO_GENERATOR:

        @functools.wraps(method)
        def generator(self: Reader, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with reading(self.path):
                yield from method(self, *args, **kwargs)

        wrapped: Callable[..., Any] = generator
    else:

        @functools.wraps(method)
        def call(self: Reader, *args: Any, **kwargs: Any) -> Any:
            path = getattr(self, "path", None) or (args[0] if args else "(input)")
            with reading(path):
                return method(self, *args, **kwargs)

        wrapped = call
    wrapped._reading_guard = True  # type: ignore[attr-defined]
    return wrapped


#: The Reader methods that read a file: each is wrapped by :func:`reading` in every subclass.
READING_METHODS = ("__init__", "read", "iter_bytes", "byte_range", "sha256", "content_sha256")


class Reader(ABC):
    """A checkpoint opened for reading: metadata now, tensor bytes on demand.

    ``tensors`` is in the file's own order. ``read`` returns a C-contiguous little-endian array of
    the tensor's dtype (read-only where it is a view of a memory map); ``byte_range`` says where
    the raw bytes lie in a file when they can be copied verbatim.
    """

    format: ClassVar[str] = ""  # the FormatSpec name
    caps: ClassVar[ReaderCaps] = ReaderCaps()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in READING_METHODS:
            method = cls.__dict__.get(name)
            if method is None:  # a reading method a mixin brings (formats._io.MappedTensors) is guarded too
                owner = next((k for k in cls.__mro__[1:] if name in k.__dict__), None)
                if owner is not None and not issubclass(owner, Reader):
                    method = owner.__dict__[name]
            if method is not None and not getattr(method, "_reading_guard", False):
                setattr(cls, name, _guarded(method))

    def __init__(self, path: Path, options: OpenOptions | None = None) -> None:
        self.path = path
        self.options = options or OpenOptions()
        #: a refinement of the format for this file, shown beside it (HDF5: "keras-h5", "keras3-h5")
        self.layout: str | None = None
        self.metadata: dict[str, str] = {}
        self.tensors: list[TensorInfo] = []
        #: stored name -> the name a tensor is matched by, where the two differ (Keras 3:
        #: ``layers/dense_2/vars/0`` is ``proj/kernel``); unique, and no other tensor's stored name
        self.match_names: dict[str, str] = {}
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

    def byte_ranges(self, name: str) -> list[tuple[Path, int, int]] | None:
        """The tensor's raw bytes as file ranges in order, when they lie in pieces (MindSpore slices);
        by default the one :meth:`byte_range`."""
        where = self.byte_range(name)
        return None if where is None else [where]

    def stored_ranges(self, name: str) -> list[tuple[Path, int, int]] | None:
        """Where a tensor's bytes lie in files, in any order (a TensorFlow tensor's slices), where the
        reader can say; by default :meth:`byte_ranges`."""
        return self.byte_ranges(name)

    def iter_bytes(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """The tensor's raw bytes in chunks (one array in memory at most)."""
        import numpy as np

        flat = np.ascontiguousarray(self.read(name)).reshape(-1).view(np.uint8).data
        for start in range(0, len(flat), chunk_bytes):
            yield flat[start : start + chunk_bytes]

    def header_digest(self) -> str:
        """sha256 of what the header says (format, metadata, names, shapes, dtypes): changes when any of it does."""
        doc = {
            "format": self.format,
            "metadata": self.metadata,
            "tensors": [[t.name, list(t.shape), t.dtype] for t in self.tensors],
        }
        import hashlib

        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def content_sha256(self) -> str:
        """sha256 of the checkpoint's file(s): of the one file, or of ``name sha256`` lines for several."""

        import hashlib

        def file_sha(path: Path) -> str:
            h = hashlib.sha256()
            with open_input(path) as f:
                while chunk := f.read(CHUNK_BYTES):
                    h.update(chunk)
            return h.hexdigest()

        if len(self.files) == 1:
            return file_sha(self.files[0])
        lines = "".join(f"{p.name} {file_sha(p)}\n" for p in self.files)
        return hashlib.sha256(lines.encode()).hexdigest()

    def sha256(self, name: str) -> str:
        import hashlib

        h = hashlib.sha256()
        for chunk in self.iter_bytes(name):
            h.update(chunk)
        return h.hexdigest()

    def typed_metadata(self) -> dict[str, dict[str, Any]]:
        """Metadata values with their types, where the format types them (GGUF): key -> ``{"type", "value"}``,
        in the file's order; empty for formats whose metadata is text."""
        return {}

    def shared_storages(self) -> list[list[str]]:
        """Groups of tensors whose bytes share one storage in the file (PyTorch tied weights); none by default."""
        return []

    def checks_beside(self) -> contextlib.AbstractContextManager[None]:
        """A context within which :meth:`byte_range` may return a range before its checksum is checked.

        A reader whose ranges carry a checksum (zip members) checks it on a worker thread while the
        caller copies the bytes, and raises the reader's InputError when the context is left. So a
        caller commits nothing it copied until the context has been left without error. Outside
        the context, ``byte_range`` checks first. Readers without checksums return a no-op context.
        """
        return contextlib.nullcontext()

    def release(self, name: str) -> None:  # noqa: B027 - optional: readers that map files declare caps.release
        """Let go of memory this reader holds for a tensor the caller is done with (``caps.release``)."""

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


for _name in ("iter_bytes", "byte_range", "sha256", "content_sha256"):  # the base's own readers of files
    setattr(Reader, _name, _guarded(Reader.__dict__[_name]))


class WriterStateError(CkptError):
    """A writer was driven out of order: a bug in the caller (exit 70), reported at the call."""

    exit_code = EXIT_INTERNAL


class Writer(ABC):
    """A streaming writer: ``begin(specs)``, then ``write`` each tensor in order, then ``finish``.

    States: NEW -> begin -> WEIGHTS -> finish -> DONE. Every call checks the state, so misuse
    fails at the call, not as a corrupt file. ``path`` is the file to create (a temporary path
    from :func:`ckptsurgeon.atomic.atomic_path`); it must not exist.
    """

    format: ClassVar[str]
    caps: ClassVar[WriterCaps] = WriterCaps()
    #: bytes within which ``align_data`` can move the data section (``caps.align``)
    align_window: ClassVar[int] = 0

    def __init__(self, path: Path, *, metadata: Mapping[str, str] | None = None, like: Reader | None = None) -> None:
        self.path = path
        self.metadata = dict(metadata or {})
        self.like = like
        self.specs: list[TensorSpec] = []
        #: why the like-layout could not follow the renames, so tensors were placed plainly (``caps.renames``)
        self.layout_fallback: str | None = None
        #: a written tensor whose values are another's because the layout ties them (an updated file's
        #: tied weights): its name -> that tensor's; and what else the layout changed, as sentences
        self.follows: dict[str, str] = {}
        self.notes: list[str] = []
        #: how to open the written file so that it lists the tensors written (None: as any input)
        self.read_back: OpenOptions | None = None
        #: the file written is ``like`` updated, everything else of it carried through (``caps.updates``)
        self.updated = False
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
        _check_blocks(self, specs)
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

    def write_ranges(self, name: str, pieces: Sequence[tuple[Path, int, int]]) -> bool:
        """Copy the next tensor's raw bytes from file ranges, in order; False if this writer cannot.
        By default one range is :meth:`write_range`, and several are not taken."""
        return len(pieces) == 1 and self.write_range(name, *pieces[0])

    def write_stored(self, name: str, reader: Reader, source_name: str) -> bool:
        """Copy the next tensor from ``reader``'s tensor ``source_name`` (same dtype and shape) as that
        file stores it, without decoding it (HDF5: compressed chunks verbatim); False if this writer
        cannot for this tensor (then use the other ways). Values are the same either way."""
        return False

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
        and calls :meth:`write`; writers that stream the pieces override it and declare ``caps.streams_chunks``.
        """
        import numpy as np

        spec = self._peek(name)
        buf = np.empty(spec.nbytes, dtype=np.uint8)
        done = 0
        for view in self._exact_pieces(spec, chunks):
            buf[done : done + len(view)] = np.frombuffer(view, dtype=np.uint8)
            done += len(view)
        self.write(name, buf.view(DTYPES[spec.dtype].numpy).reshape(spec.shape))

    def align_data(self, residue: int) -> None:  # noqa: B027 - only writers declaring caps.align act on it
        """Start the data section at an offset ≡ ``residue`` (mod ``align_window``), if still possible."""


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


def _check_blocks(writer: Writer, specs: Sequence[TensorSpec]) -> None:
    """Refuse quantized (block dtype) tensors a writer cannot hold (``caps.dtypes`` None: no block dtype)."""
    allowed = writer.caps.dtypes or frozenset()
    blocked = [s for s in specs if DTYPES[s.dtype].is_block and s.dtype not in allowed]
    if blocked:
        names = ", ".join(f"{s.name!r} ({s.dtype})" for s in blocked[:3]) + (" ..." if len(blocked) > 3 else "")
        raise OutputError(writer.path, f"{len(blocked)} quantized tensor{'s' if len(blocked) > 1 else ''} "
                          f"{names}: a {writer.format} file cannot hold ggml's quantized blocks, and they are "
                          "never decoded; write GGUF, or leave them out (--exclude)")


class PieceWriter(Writer):
    """A writer that takes every tensor as a stream of byte pieces (``caps.streams_chunks``): whole
    arrays and streamed chunks both reach :meth:`_stream`, which writes them as they come."""

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        import numpy as np

        flat = data.reshape(-1).view(np.uint8)
        self._stream(spec, (flat[i : i + CHUNK_BYTES].data for i in range(0, spec.nbytes, CHUNK_BYTES)))

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        spec = self._take(name)
        self._stream(spec, self._exact_pieces(spec, chunks))

    @abstractmethod
    def _stream(self, spec: TensorSpec, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write the next tensor from its raw bytes, given as pieces adding up to ``spec.nbytes``."""


class ShardedWriter(Writer):
    """A writer of several files (``caps.sharded``): numbered shards and an index, committed together.

    It is made with ``shard_size`` (bytes per shard), ``force`` (remove shards of an earlier
    checkpoint with the same prefix that this one does not overwrite) and ``inputs`` (files never
    to remove), and says before anything is written where its files go. It never writes over a
    file the index being replaced names: new shards get names no live index uses, the index
    rename is the one commit point, and the old shards are removed after it
    (:class:`ckptsurgeon.atomic.AtomicFiles`). It holds the folder's
    :class:`ckptsurgeon.lock.FolderLock` from ``begin`` to ``finish`` or ``abort``; plan its
    layout under that lock too, so the names planned are the names written.
    """

    @classmethod
    @abstractmethod
    def destination(cls, out: str | Path) -> Path:
        """The index file an output named ``out`` (an index path or a directory) is written to."""

    @classmethod
    @abstractmethod
    def plan_layout(cls, dest: Path, specs: Sequence[TensorSpec], shard_size: int) -> ShardPlan:
        """The shard files and the tensors of each, before anything is written."""

    @classmethod
    @abstractmethod
    def check_stale(cls, layout: ShardPlan, *, force: bool, inputs: Iterable[Path] = ()) -> list[Path]:
        """The files the commit of ``layout`` supersedes; shards of another checkpoint that it would not
        replace are refused unless ``force``, and any that is an input always."""


class ShardPlan(ABC):
    """Where a sharded writer puts each tensor: its shard files (``paths``, ``names``) and their tensors (``groups``)."""

    names: tuple[str, ...]
    groups: tuple[tuple[TensorSpec, ...], ...]

    @property
    @abstractmethod
    def paths(self) -> list[Path]: ...

    @abstractmethod
    def weight_map(self) -> dict[str, str]: ...
