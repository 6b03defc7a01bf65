"""Writing MindSpore ``.ckpt`` files as ``save_checkpoint`` does, plain or encrypted, streamed.

Each tensor is one or more ``Checkpoint`` messages, one ``Value`` each, in the order given: the
tag, then a ``TensorProto`` with every dim (one varint each; none for a scalar), MindSpore's
``tensor_type`` name and the raw little-endian C-order bytes. A tensor of more than 512 MiB is
cut as ``save_checkpoint`` (MindSpore 2.10) cuts it: into ``ceil(KiB / 524288)`` consecutive values
sharing its tag and dims, holding ``np.array_split``'s blocks of rows (``load_checkpoint`` joins
them). Metadata entries
follow the tensors as ``str`` values (``dims [0]``, UTF-32LE code points), as ``append_dict``
strings are stored, so ``load_checkpoint`` returns them as strings.

Since every length is known from the shape and dtype before the first byte, a value's header is
written first and its bytes streamed after it; nothing is held. With ``encrypt`` (or when the
``like`` file is encrypted and no other key is given: written like it, with its key and mode) the
stream goes through :class:`~.crypto.Encrypter`, in blocks of at most 64 MiB, each with a fresh IV.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import OutputError
from ...tensors import TensorSpec
from .. import base
from .._io import Writeback
from .._protobuf import LEN, VARINT, key, varint
from .reader import DTYPES_BY_NAME, STRING

if TYPE_CHECKING:
    from .crypto import Encrypter, Encryption

SLICE_KIB = 512 * 1024  # MindSpore's SLICE_SIZE, in KiB: tensors over 512 MiB are cut
TYPE_NAMES = {code: name for name, code in DTYPES_BY_NAME.items()}


def value_header(tag: bytes, dims: Iterable[int], type_name: str, content_bytes: int) -> bytes:
    """Everything of one ``Checkpoint`` message before its ``tensor_content`` bytes (which end it)."""
    tensor = b"".join(key(1, VARINT) + varint(d) for d in dims)
    tensor += key(2, LEN) + varint(len(type_name)) + type_name.encode("ascii")
    tensor += key(3, LEN) + varint(content_bytes)
    tensor_len = len(tensor) + content_bytes
    value = key(1, LEN) + varint(len(tag)) + tag + key(2, LEN) + varint(tensor_len)
    value_len = len(value) + tensor_len
    return key(1, LEN) + varint(value_len) + value + tensor


class Writer(base.PieceWriter):
    """Streams a MindSpore checkpoint (module docstring)."""

    format = "mindspore"
    caps = base.WriterCaps(streams_chunks=True, like=("mindspore",), encrypts=True, dtypes=frozenset(TYPE_NAMES))
    #: the size in KiB over which a tensor is cut in several values (lowered in tests)
    slice_kib: float = SLICE_KIB

    def __init__(self, path: str | Path, *, metadata: Mapping[str, str] | None = None, like: Any = None,
                 encrypt: Encryption | None = None) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        if encrypt is None and getattr(like, "encryption", None) and like.options.dec_key is not None:
            from .crypto import Encryption

            encrypt = Encryption(like.options.dec_key, like.encryption)
        self.encrypt = encrypt
        self._fd: int | None = None
        self._encrypter: Encrypter | None = None
        self._writeback: Writeback | None = None
        self._position = 0

    def _begin(self) -> None:
        for spec in self.specs:
            if spec.dtype not in TYPE_NAMES:
                raise OutputError(self.path, f"tensor {spec.name!r}: dtype {spec.dtype} has no MindSpore equivalent")
            _utf8(self.path, spec.name, "tensor name")
        for name, value in self.metadata.items():
            _utf8(self.path, name, "metadata key")
            if name in {s.name for s in self.specs}:
                raise OutputError(self.path, f"metadata {name!r} has the name of a tensor; a MindSpore checkpoint "
                                  "keeps one entry per name")
            try:
                value.encode("utf-32-le")
            except UnicodeEncodeError:
                raise OutputError(self.path, f"metadata {name!r} cannot be written as UTF-32") from None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        if self.encrypt is not None:
            from .crypto import Encrypter

            self._encrypter = Encrypter(self._fd, self.encrypt.key, self.encrypt.mode)
        else:
            self._writeback = Writeback(self._fd)

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None
        if self._encrypter is not None:
            self._encrypter.write(data)
            return
        view = memoryview(data).cast("B")
        while len(view):
            n = os.write(self._fd, view)
            view = view[n:]
            self._position += n
        assert self._writeback is not None
        self._writeback.written_up_to(self._position)

    # --- tensors -------------------------------------------------------------------------------
    def slices(self, spec: TensorSpec) -> list[int]:
        """The bytes of each value a tensor is written as: ``np.array_split`` of its rows into
        ``ceil(KiB / slice_kib)`` blocks when it is over ``slice_kib`` KiB, else the whole tensor."""
        count = math.ceil(spec.nbytes / 1024 / self.slice_kib)
        if count <= 1 or not spec.shape:
            return [spec.nbytes]
        rows = spec.shape[0]
        row_bytes = spec.nbytes // rows if rows else 0
        return [(rows // count + (i < rows % count)) * row_bytes for i in range(count)]

    def _stream(self, spec: TensorSpec, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        """The tensor's values, each slice's header written before its bytes."""
        tag, type_name = spec.name.encode("utf-8"), TYPE_NAMES[spec.dtype]
        sizes = self.slices(spec)
        at = 0
        self._emit(value_header(tag, spec.shape, type_name, sizes[0]))
        left_slice = sizes[0]
        for piece in pieces:
            view = base.byte_view(piece)
            while len(view):
                while left_slice == 0:
                    at += 1
                    left_slice = sizes[at]
                    self._emit(value_header(tag, spec.shape, type_name, left_slice))
                part = view[:left_slice]
                self._emit(part)
                view = view[len(part):]
                left_slice -= len(part)
        for size in sizes[at + 1 :]:  # empty blocks at the end (more blocks than rows)
            assert size == 0
            self._emit(value_header(tag, spec.shape, type_name, 0))

    # --- the end -------------------------------------------------------------------------------
    def _finish(self) -> None:
        for name, value in self.metadata.items():
            content = value.encode("utf-32-le")
            self._emit(value_header(name.encode("utf-8"), (0,), STRING, len(content)) + content)
        if self._encrypter is not None:
            self._encrypter.finish()
        self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def abort(self) -> None:
        self._close()
        super().abort()


def _utf8(path: Path, text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise OutputError(path, f"{what} {text!r} cannot be written as UTF-8") from None


__all__ = ["SLICE_KIB", "Writer", "value_header"]
