"""Writing GGUF (version 3) as llama.cpp's loader and gguf-py's reader expect it.

The header, metadata and tensor infos are written first (they are known once every tensor is
declared); the data section starts at the next multiple of the alignment and each tensor follows
the one before it at the next multiple, zero-padded to it: llama.cpp requires every offset to be
exactly the previous tensor's end, padded. Dimensions are written in ggml order (numpy's shape
reversed); at most four, names of at most 63 bytes, as ggml's limits say.

Metadata: with a GGUF ``like`` (the input of a rename or convert), each key whose text is the
input's keeps the input's type and value (arrays, integers, floats, bools, byte for byte); a new
key, or one from another format, is written as a string, except ``general.alignment``, which must be a
UINT32 power of two (it decides the layout). A value given typed (``metadata_types``: ``--set-metadata
KEY:u32=7``) is written with that type; a changed value of a key the like-file holds as a scalar
keeps that type (its text must be one). See :mod:`ckptsurgeon.metadata_edit`. Quantized
tensors (block dtypes) are copied as bytes: byte ranges with ``copy_file_range``, or their raw
blocks as pieces; they are never cast.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError, OutputError, UsageError
from ...tensors import DTYPES, TensorSpec, block_problem
from .. import base
from .._io import CHUNK_BYTES, SourceFds, Writeback
from . import ggml
from .ggml import ARRAY, STRING, Value

if TYPE_CHECKING:
    import numpy as np

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ZEROS = bytes(4096)


def encode_string(text: str, out: bytearray, what: str, path: Path) -> None:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise OutputError(path, f"{what} {text[:100]!r} cannot be written as UTF-8") from None
    out += _U64.pack(len(raw))
    out += raw


def encode_value(value: Value, out: bytearray, what: str, path: Path) -> None:
    """Append a value's bytes (without its type) to ``out``."""
    if value.vtype == STRING:
        encode_string(str(value.value), out, what, path)
    elif value.vtype == ARRAY:
        assert value.elem is not None
        items: Any = value.value
        out += _U32.pack(value.elem)
        out += _U64.pack(len(items))
        if value.elem == STRING:
            for s in items:
                encode_string(s, out, what, path)
        elif value.elem == ARRAY:
            for inner in items:
                out += _U32.pack(ARRAY)
                encode_value(inner, out, what, path)
        else:
            import array

            packed = array.array(ggml.ARRAY_CODES[value.elem], items)
            if packed.itemsize != ggml.SCALARS[value.elem].size:  # pragma: no cover - exotic platforms
                raise AssertionError("array item size")
            out += packed.tobytes()
    else:
        out += ggml.SCALARS[value.vtype].pack(value.value)


class Writer(base.Writer):
    """Streams a GGUF file: header, metadata and infos first, then each tensor, aligned, in the declared order."""

    format = "gguf"
    caps = base.WriterCaps(byte_ranges=True, streams_chunks=True, like=("gguf",), dtypes=frozenset(ggml.GGML_OF),
                           typed_metadata=True)

    def __init__(self, path: Path, *, metadata: dict[str, str] | None = None, like: Any = None,
                 metadata_types: Mapping[str, str] | None = None) -> None:
        super().__init__(path, metadata=metadata, like=like)
        #: key -> GGUF value type name (``UINT32`` ...) for values given typed (``--set-metadata KEY:u32=7``)
        self.metadata_types = dict(metadata_types or {})
        self._fd: int | None = None
        self._sources = SourceFds()
        self._position = 0
        self._writeback: Writeback | None = None
        self.alignment = ggml.DEFAULT_ALIGNMENT

    # --- the header -----------------------------------------------------------------------
    def values(self) -> dict[str, Value]:
        """The metadata to write, typed: as the caller types it; else the like-file's value where its text is
        unchanged, or its type where the text changed (a scalar); else a string."""
        typed: dict[str, Value] = getattr(self.like, "values", {}) if self.like is not None and \
            self.like.format == "gguf" else {}
        out: dict[str, Value] = {}
        for key, text in self.metadata.items():
            old = typed.get(key)
            kind = self.metadata_types.get(key)
            if kind is None and old is not None and old.text() != text and old.vtype != ARRAY:
                kind = old.type_name
            if kind is not None:
                try:
                    out[key] = ggml.parse_scalar(kind, text)
                except ValueError as exc:
                    raise UsageError(None, f"metadata {key!r} is {kind}: {exc}",
                                     hint=f"give another type with --set-metadata {key}:TYPE=VALUE") from None
            elif old is not None and old.text() == text:
                out[key] = old
            elif key == ggml.ALIGNMENT_KEY:
                n = int(text) if text.isdecimal() else 0
                if n == 0 or n & (n - 1) or n >= 1 << 32:
                    raise OutputError(self.path, f"metadata {key!r} is {text!r}; GGUF needs a power of two (UINT32)")
                out[key] = Value(ggml.VALUE_CODES["UINT32"], n)
            else:
                out[key] = Value(STRING, text)
        return out

    def _header(self) -> bytes:
        values = self.values()
        alignment = values.get(ggml.ALIGNMENT_KEY)
        if alignment is not None:
            n = alignment.value
            if alignment.vtype != ggml.VALUE_CODES["UINT32"] or not isinstance(n, int) or n <= 0 or n & (n - 1):
                raise OutputError(self.path, f"metadata {ggml.ALIGNMENT_KEY!r} is {alignment.text()!r} "
                                  f"({alignment.type_name}); GGUF needs a power of two (UINT32)")
            self.alignment = n
        header = bytearray(b"GGUF" + _U32.pack(3) + _U64.pack(len(self.specs)) + _U64.pack(len(values)))
        for key, value in values.items():
            encode_string(key, header, "metadata key", self.path)
            header += _U32.pack(value.vtype)
            encode_value(value, header, f"metadata {key!r}", self.path)
        offset = 0
        for spec in self.specs:
            encode_string(spec.name, header, "tensor name", self.path)
            header += struct.pack(f"<I{len(spec.shape)}QIQ", len(spec.shape), *reversed(spec.shape),
                                  ggml.GGML_OF[spec.dtype], offset)
            offset = ggml.align(offset + spec.nbytes, self.alignment)
        header += bytes(ggml.align(len(header), self.alignment) - len(header))
        return bytes(header)

    def _check(self, spec: TensorSpec) -> None:
        if spec.dtype not in ggml.GGML_OF:
            raise OutputError(self.path, f"tensor {spec.name!r}: dtype {spec.dtype} has no GGUF type")
        if len(spec.shape) > ggml.MAX_DIMS:
            raise OutputError(self.path, f"tensor {spec.name!r} has {len(spec.shape)} dimensions; GGUF (ggml) "
                              f"holds at most {ggml.MAX_DIMS}")
        if len(spec.name.encode("utf-8", "surrogatepass")) > ggml.MAX_NAME_BYTES:
            raise OutputError(self.path, f"tensor name {spec.name[:80]!r} is longer than the {ggml.MAX_NAME_BYTES} "
                              "bytes llama.cpp reads")
        problem = block_problem(spec.dtype, spec.shape)
        if problem is not None:
            raise OutputError(self.path, f"tensor {spec.name!r}: {problem}")

    def _begin(self) -> None:
        for spec in self.specs:
            self._check(spec)
        header = self._header()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._writeback = Writeback(self._fd)
        self._write_all(memoryview(header))

    # --- the data -------------------------------------------------------------------------
    def _write_all(self, data: memoryview) -> None:
        assert self._fd is not None and self._writeback is not None
        while len(data):
            n = os.write(self._fd, data)
            data = data[n:]
            self._position += n
        self._writeback.written_up_to(self._position)

    def _pad(self) -> None:
        left = -self._position % self.alignment
        while left:
            n = min(left, len(_ZEROS))
            self._write_all(memoryview(_ZEROS)[:n])
            left -= n

    def write(self, name: str, data: np.ndarray) -> None:
        """The next tensor's values; a quantized tensor's as its raw blocks (flat ``uint8``, as the reader gives them)."""
        spec = self._peek(name)
        if DTYPES[spec.dtype].is_block:
            import numpy as np

            raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            self.write_chunks(name, [raw.data])
            return
        super().write(name, data)

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        import numpy as np

        flat = data.reshape(-1).view(np.uint8)
        for start in range(0, flat.nbytes, CHUNK_BYTES):
            self._write_all(flat[start : start + CHUNK_BYTES].data)
        self._pad()

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        spec = self._take(name)
        for view in self._exact_pieces(spec, chunks):
            self._write_all(view)
        self._pad()

    def write_range(self, name: str, src: Path, offset: int, length: int) -> bool:
        return self.write_ranges(name, [(src, offset, length)])

    def write_ranges(self, name: str, pieces: Sequence[tuple[Path, int, int]]) -> bool:
        spec = self._take(name)
        total = sum(length for _, _, length in pieces)
        if total != spec.nbytes:
            raise InputError(pieces[0][0] if pieces else None, f"tensor {name!r}: {total} bytes in the file, "
                             f"{spec.nbytes} declared")
        assert self._writeback is not None
        for src, offset, length in pieces:
            self._position = self._writeback.copy(self._sources.fd(src), offset, length, self._position)
        self._pad()
        return True

    def _close(self) -> None:
        self._sources.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _finish(self) -> None:
        self._close()

    def abort(self) -> None:
        self._close()
        super().abort()
