"""Reading MindSpore ``.ckpt`` files, plain or encrypted, with the bounded protobuf reader.

The file is parsed once when opened, without copying tensor contents: every ``Checkpoint.value``
is a ``Value`` (``tag``, then a ``TensorProto``: ``dims``, ``tensor_type``, ``tensor_content``),
and each length is checked against its message before it is used (:mod:`.._protobuf`).

- Consecutive values with the same tag are one tensor split in slices (``save_checkpoint`` cuts
  parameters over 512 MiB into blocks of rows): their ``dims`` and ``tensor_type`` must agree, and
  their contents are joined in order.
- The content must hold exactly the bytes the dims and dtype imply (MindSpore itself accepts a
  shorter one; ckptsurgeon refuses it), and the dims' product must fit.
- ``tensor_type`` strings map to dtype codes (:data:`DTYPES`); ``Int4`` (qint4x2) and other types
  are refused by name. ``str`` values (``append_dict`` strings, stored as UTF-32LE code points) are
  metadata, never tensors; numeric ``append_dict`` entries are stored as tensors and read as such.
- A ``MapTensorProto`` (a MapParameter) is refused with its tag: ckptsurgeon does not read them.
- A ``crc_num`` trailer (``save_checkpoint(crc_check=True)``: ``b"crc_num"`` and the 10-byte
  big-endian CRC-32 of everything before it) is checked when the file is opened.

An encrypted file (:mod:`.crypto`) is read through its plaintext one block at a time
(:class:`~.crypto.Plaintext`: each block decrypted into one buffer and checked before use; never
the whole file in memory, nothing written to disk); the key comes from ``OpenOptions.dec_key``. A plain file's single-slice tensors are byte ranges of the file.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ...errors import InputError
from ...files import check_input, open_input
from ...tensors import DTYPES, default_layer, make_info
from .. import base
from .._io import drop_pages
from .._protobuf import LEN, MAX_VARINT_BYTES, VARINT, WireError, as_int64, fields, packed_varints
from . import encrypted_mode

if TYPE_CHECKING:
    from types import TracebackType

    from .crypto import Plaintext

#: MindSpore's ``tensor_type`` strings -> dtype codes
DTYPES_BY_NAME = {
    "Float16": "F16", "Float32": "F32", "Float64": "F64", "BFloat16": "BF16",
    "Int8": "I8", "Int16": "I16", "Int32": "I32", "Int64": "I64",
    "UInt8": "U8", "UInt16": "U16", "UInt32": "U32", "UInt64": "U64", "Bool": "BOOL",
}
STRING = "str"
CRC_TRAILER = b"crc_num"
CRC_BYTES = 10
MAX_DIMS = 64
MAX_TAG_BYTES = 1 << 16


class _Entry:
    """One tensor as parsed: its dims, dtype and content ranges (offset, length) in the plaintext."""

    __slots__ = ("dims", "dtype", "ranges", "tag")

    def __init__(self, tag: str, dims: tuple[int, ...], dtype: str, ranges: list[tuple[int, int]]) -> None:
        self.tag, self.dims, self.dtype, self.ranges = tag, dims, dtype, ranges


class Reader(base.Reader):
    """A MindSpore checkpoint: values parsed when opened, contents read on demand (module docstring).

    ``encryption`` is the mode of an encrypted file (None for a plain one); ``layout`` says it.
    """

    format = "mindspore"
    caps = base.ReaderCaps(byte_ranges=True, release=True)

    def __init__(self, path: Path, options: base.OpenOptions | None = None) -> None:
        super().__init__(Path(path), options)
        self._file: IO[bytes] | None = None
        self._map: mmap.mmap | None = None
        self._plain: Plaintext | None = None
        self._check_owed = False
        self.encryption: str | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- opening ----------------------------------------------------------------------------------
    def _open(self) -> None:
        check_input(self.path)
        with open_input(self.path, buffering=0) as f:
            head = f.read(4)
        mode = encrypted_mode(head)
        self._file = open_input(self.path)
        size = self._file.seek(0, 2)
        if mode is None:
            if size == 0:
                raise InputError(self.path, "empty")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            end = self._trailer(size)
        else:
            self._plain = self._decrypting(mode, size)
            end = len(self._plain)
            if end == 0:
                raise InputError(self.path, "empty after decryption")
            self._start_checks()
        self.encryption = mode
        try:
            try:
                entries, strings = self._parse(end)
            except (WireError, InputError):
                if self._check_owed:  # headers read before their blocks were checked: a failed
                    self._settle()  # check (a wrong key, a tampered block) is the error to report
                raise
        except WireError as exc:
            hint = " (a wrong key?)" if mode else ""
            raise InputError(self.path, f"not a well-formed MindSpore checkpoint{hint}: {exc}") from None
        self.layout = f"encrypted {mode}" if mode else None
        self.metadata = strings
        for e in entries:
            self.tensors.append(make_info(e.tag, e.dims, e.dtype, default_layer(e.tag), e.ranges))

    def _decrypting(self, mode: str, size: int) -> Plaintext:
        from .crypto import Plaintext

        options = self.options
        if options.dec_mode is not None and options.dec_mode != mode:
            raise InputError(self.path, f"encrypted with {mode}, not the {options.dec_mode} that --dec-mode asks for")
        if options.dec_key is None:
            raise InputError(self.path, f"encrypted with {mode}; give its key with --dec-key-file FILE or the "
                             "environment variable CKPT_DEC_KEY (hex)")
        assert self._file is not None
        return Plaintext(self.path, self._file, size, options.dec_key, mode)

    @property
    def _buffer(self) -> Any:
        """What the protobuf is read from: the memory map of a plain file; for an encrypted one, its
        plaintext read before the tags are checked (:meth:`~.crypto.Plaintext.peek`); the check is owed
        until it is settled (:meth:`_start_checks`)."""
        return self._map if self._plain is None else _Peek(self._plain)

    # --- the blocks of an encrypted file, checked beside ---------------------------------------------
    def _start_checks(self) -> None:
        """Owe the check of every block's tag or padding, from when the file is opened.

        The headers are read before that check; they are trusted once it has passed: on leaving
        :meth:`checks_beside` (a copy: before anything is committed) or when the reader is closed
        (``inspect``: before anything is reported), each of which raises the InputError of a block
        that failed. Tensor bytes are read only from blocks decrypted and checked on the spot, and a
        block checked so is not decrypted again by this check: a copy of every tensor decrypts each
        block once.
        """
        self._check_owed = True

    def _settle(self) -> None:
        if not self._check_owed or self._plain is None or self._file is None:
            return
        self._check_owed = False
        fd = os.dup(self._file.fileno())
        try:
            self._plain.check_all(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def checks_beside(self) -> Iterator[None]:
        """Leaving the context settles the check of every block (see :meth:`_start_checks`)."""
        try:
            yield
        except BaseException:
            self._check_owed = False
            raise
        self._settle()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if ev is None and self._check_owed:
            try:
                self._settle()
            finally:
                self.close()
            return
        self.close()

    def _trailer(self, size: int) -> int:
        """Where the protobuf ends: before a ``crc_num`` trailer, once its CRC is checked."""
        assert self._map is not None
        at = size - len(CRC_TRAILER) - CRC_BYTES
        if at < 0 or self._map[at : at + len(CRC_TRAILER)] != CRC_TRAILER:
            return size
        want = int.from_bytes(self._map[size - CRC_BYTES :], "big")
        crc = 0
        view = memoryview(self._map)
        for pos in range(0, at, 1 << 20):
            crc = zlib.crc32(view[pos : min(pos + (1 << 20), at)], crc)
        del view
        if crc != want:
            raise InputError(self.path, f"the crc_num trailer says CRC-32 {want:#010x}, the contents have {crc:#010x} "
                             "(the file is damaged)")
        return at

    def _parse(self, end: int) -> tuple[list[_Entry], dict[str, str]]:
        buf = self._buffer
        assert buf is not None
        entries: list[_Entry] = []
        strings: dict[str, str] = {}
        seen: set[str] = set()
        last: _Entry | None = None
        for number, wire, value in fields(buf, 0, end):
            if number != 1 or wire != LEN:
                raise WireError(f"top-level field {number} (wire type {wire}); a checkpoint holds only values (field 1)")
            assert isinstance(value, tuple)
            tag, dims, dtype, content = self._value(_Window(buf, *value), *value)
            if dtype == STRING:
                if tag in seen or tag in strings:
                    raise InputError(self.path, f"entry {tag!r} appears twice")
                strings[tag] = _utf32(self.path, tag, bytes(buf[content[0] : content[1]]))
                last = None
                continue
            piece = (content[0], content[1] - content[0])
            if last is not None and last.tag == tag:  # the next slice of a split tensor
                if (last.dims, last.dtype) != (dims, dtype):
                    raise InputError(self.path, f"tensor {tag!r}: its slices disagree on dims or type")
                last.ranges.append(piece)
                continue
            if tag in seen or tag in strings:
                raise InputError(self.path, f"tensor {tag!r} appears twice, apart")
            seen.add(tag)
            last = _Entry(tag, dims, dtype, [piece])
            entries.append(last)
        for e in entries:
            self._check_size(e)
        return entries, strings

    def _value(self, buf: Any, start: int, end: int) -> tuple[str, tuple[int, ...], str, tuple[int, int]]:
        tag: str | None = None
        tensor: tuple[int, int] | None = None
        for number, wire, value in fields(buf, start, end):
            if number == 1 and wire == LEN:
                assert isinstance(value, tuple)
                if value[1] - value[0] > MAX_TAG_BYTES:
                    raise WireError(f"a tag of {value[1] - value[0]} bytes at offset {value[0]}")
                try:
                    tag = bytes(buf[value[0] : value[1]]).decode("utf-8")
                except UnicodeDecodeError:
                    raise WireError(f"the tag at offset {value[0]} is not UTF-8") from None
            elif number == 2 and wire == LEN:
                assert isinstance(value, tuple)
                tensor = value
            elif number == 3 and wire == LEN:
                raise InputError(self.path, f"{tag or 'a value'!r} is a MapParameter (MapTensorProto), which "
                                 "ckptsurgeon does not read")
        if tag is None or tensor is None:
            raise WireError(f"the value at offset {start} has no {'tag' if tag is None else 'tensor'}")
        dims: list[int] = []
        dtype: str | None = None
        content: tuple[int, int] | None = None
        for number, wire, value in fields(buf, *tensor):
            if number == 1 and wire == VARINT:
                assert isinstance(value, int)
                dims.append(as_int64(value))
            elif number == 1 and wire == LEN:
                assert isinstance(value, tuple)
                if value[1] - value[0] > MAX_DIMS * MAX_VARINT_BYTES:  # more varints than MAX_DIMS: never listed
                    raise InputError(self.path, f"tensor {tag!r} has more than {MAX_DIMS} dims")
                dims.extend(as_int64(v) for v in packed_varints(buf, *value))
            elif number == 2 and wire == LEN:
                assert isinstance(value, tuple)
                dtype = bytes(buf[value[0] : min(value[1], value[0] + 64)]).decode("utf-8", "replace")
            elif number == 3 and wire == LEN:
                assert isinstance(value, tuple)
                content = value
            if len(dims) > MAX_DIMS:
                raise InputError(self.path, f"tensor {tag!r} has more than {MAX_DIMS} dims")
        if dtype is None or content is None:
            raise WireError(f"tensor {tag!r} has no {'tensor_type' if dtype is None else 'tensor_content'}")
        if dtype == STRING:
            return tag, (), STRING, content
        code = DTYPES_BY_NAME.get(dtype)
        if code is None:
            what = "4-bit integers (qint4x2)" if dtype.startswith("Int4") else f"tensor_type {dtype!r}"
            raise InputError(self.path, f"tensor {tag!r} holds {what}, which ckptsurgeon does not read")
        if any(d < 0 for d in dims):
            raise InputError(self.path, f"tensor {tag!r} has a negative dim {dims}")
        return tag, tuple(dims), code, content

    def _check_size(self, e: _Entry) -> None:
        itemsize = DTYPES[e.dtype].itemsize
        if any(d >= 1 << 62 for d in e.dims) or math.prod(e.dims) * itemsize >= 1 << 62:
            raise InputError(self.path, f"tensor {e.tag!r}: dims {list(e.dims)} overflow")
        want = math.prod(e.dims) * itemsize
        have = sum(n for _, n in e.ranges)
        if have != want:
            raise InputError(self.path, f"tensor {e.tag!r}: {have} bytes of content; dims {list(e.dims)} of "
                             f"{e.dtype} need {want}")

    # --- data -------------------------------------------------------------------------------------
    def _ranges(self, name: str) -> list[tuple[int, int]]:
        ranges = self[name].loc
        assert isinstance(ranges, list)
        if self._map is None and self._plain is None:
            raise InputError(self.path, "the checkpoint is closed")
        return ranges

    def _pieces(self, offset: int, length: int, chunk_bytes: int) -> Iterator[memoryview]:
        """Bytes of the plain contents, in chunks (an encrypted file's: views valid until the next)."""
        if self._plain is not None:
            for piece in self._plain.chunks(offset, length):
                for pos in range(0, len(piece), chunk_bytes):
                    yield piece[pos : pos + chunk_bytes]
            return
        assert self._map is not None
        view = memoryview(self._map)
        for pos in range(offset, offset + length, chunk_bytes):
            end = min(pos + chunk_bytes, offset + length)
            yield view[pos:end]
            drop_pages(self._map, pos, end)

    def read(self, name: str) -> np.ndarray:
        info = self[name]
        ranges = self._ranges(name)
        dtype = DTYPES[info.dtype].numpy
        if len(ranges) == 1 and self._map is not None:
            offset, length = ranges[0]
            flat = np.frombuffer(self._map, dtype=np.uint8, count=length, offset=offset)
            return self._check_array(info, flat.view(dtype).reshape(info.shape))
        out = np.empty(info.nbytes, dtype=np.uint8)
        done = 0
        for offset, length in ranges:
            for piece in self._pieces(offset, length, base.CHUNK_BYTES):
                out[done : done + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                done += len(piece)
        return self._check_array(info, out.view(dtype).reshape(info.shape))

    def byte_range(self, name: str) -> tuple[Path, int, int] | None:
        ranges = self._ranges(name)
        if self.encryption is not None or len(ranges) != 1:
            return None
        offset, length = ranges[0]
        return self.path, offset, length

    def byte_ranges(self, name: str) -> list[tuple[Path, int, int]] | None:
        ranges = self._ranges(name)
        if self.encryption is not None:
            return None
        return [(self.path, offset, length) for offset, length in ranges]

    def iter_bytes(self, name: str, chunk_bytes: int = base.CHUNK_BYTES) -> Iterator[memoryview]:
        for offset, length in self._ranges(name):
            yield from self._pieces(offset, length, chunk_bytes)

    def release(self, name: str) -> None:
        if self._map is not None:
            for offset, length in self._ranges(name):
                drop_pages(self._map, offset, offset + length)

    def close(self) -> None:
        self._check_owed = False
        self._plain = None
        mapped, self._map = self._map, None
        if mapped is not None:
            with contextlib.suppress(BufferError):  # arrays read from it keep it alive until they go
                mapped.close()
        file, self._file = self._file, None
        if file is not None:
            file.close()


class _Peek:
    """An encrypted file's plaintext as the protobuf reader indexes it, read ahead in windows of 64 KiB."""

    WINDOW = 64 * 1024

    def __init__(self, plain: Plaintext) -> None:
        self._plain = plain
        self._start, self._data = 0, b""

    def _fetch(self, start: int, stop: int) -> bytes:
        if not (self._start <= start and stop <= self._start + len(self._data)):
            self._start, self._data = start, self._plain.peek(start, max(stop - start, self.WINDOW))
        return self._data[start - self._start : stop - self._start]

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self._plain))
            return self._fetch(start, max(start, stop))
        if not 0 <= index < len(self._plain):
            raise IndexError(index)
        return self._fetch(index, index + 1)[0]

    def __len__(self) -> int:
        return len(self._plain)


class _Window:
    """A value's first bytes fetched at once (its tag, dims and type lie there), the rest read through
    ``buf`` on demand: an encrypted file's headers are then read from the block that holds them, without
    going back to the block before."""

    WINDOW = 64 * 1024

    def __init__(self, buf: Any, start: int, end: int) -> None:
        self._buf, self._start = buf, start
        self._head = bytes(buf[start : min(end, start + self.WINDOW)])

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            a, b = index.start - self._start, index.stop - self._start
            return self._head[a:b] if b <= len(self._head) else self._buf[index]
        at = index - self._start
        return self._head[at] if 0 <= at < len(self._head) else self._buf[index]

    def __len__(self) -> int:
        return len(self._buf)


def _utf32(path: Path, tag: str, raw: bytes) -> str:
    """An ``append_dict`` string: numpy's ``<U`` bytes (UTF-32LE code points), without trailing NULs."""
    if len(raw) % 4:
        raise InputError(path, f"string {tag!r}: {len(raw)} bytes is not whole UTF-32 code points")
    try:
        return raw.decode("utf-32-le").rstrip("\x00")
    except UnicodeDecodeError:
        raise InputError(path, f"string {tag!r} is not UTF-32") from None


__all__ = ["DTYPES_BY_NAME", "Reader"]
