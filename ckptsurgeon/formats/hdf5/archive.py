"""``.keras`` zip archives: the ``model.weights.h5`` member read in place, and archives written.

:class:`KerasZipReader` reads the ``model.weights.h5`` member of a ``.keras`` archive
(``format="keras-zip"``) like any other HDF5 file, after checking the archive's members (names
inside the archive, no encryption, sizes within the archive and within ``MAX_EXPANSION``). A stored
member, as Keras writes it, is read in place through a window on the archive and checked against
its CRC before its first tensor is used.

:class:`KerasZipWriter` writes a ``.keras`` archive: with ``like=`` a :class:`KerasZipReader` it
copies every other member (``config.json``, ``metadata.json``, assets) verbatim, in the same order
and with the same dates, and writes ``model.weights.h5`` like the like-archive's (through
:class:`~ckptsurgeon.formats.hdf5.writer.Writer`). Without it the archive holds only
``model.weights.h5``: ``model.load_weights()`` accepts such an archive,
``keras.models.load_model()`` does not (it needs ``config.json``).
"""

from __future__ import annotations

import contextlib
import io
import re
import secrets
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from ckptsurgeon.errors import InputError, UnsafeInputError
from ckptsurgeon.formats.base import OpenOptions, WriterCaps
from ckptsurgeon.formats.base import Reader as BaseReader
from ckptsurgeon.formats.base import Writer as BaseWriter
from ckptsurgeon.formats.hdf5 import KERAS_MEMBER
from ckptsurgeon.formats.hdf5._h5 import (
    FILL_SLACK,
    MAX_EXPANSION,
    DatasetInfo,
    Source,
    input_errors,
    output_errors,
)
from ckptsurgeon.formats.hdf5.reader import HDF5Reader
from ckptsurgeon.formats.hdf5.writer import Writer
from ckptsurgeon.tensors import TensorSpec


class _Window(io.RawIOBase):
    """A read-only file object over bytes [start, start+size) of a file (a stored zip member)."""

    def __init__(self, path: Path, start: int, size: int) -> None:
        super().__init__()
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(view[:n])
        self._pos += got
        return got

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()
        super().close()


def _check_member_name(path: Path, name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if (name.startswith(("/", "\\")) or "\\" in name or ".." in parts or "\x00" in name
            or re.match(r"[A-Za-z]:", name)):
        raise UnsafeInputError(path, f"archive member {name!r} points outside the archive")


def _check_members(path: Path, zf: zipfile.ZipFile, archive_size: int) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(path, f"archive members appear twice: {dup[:5]}")
    for info in infos:
        _check_member_name(path, info.filename)
        if info.flag_bits & 0x1:
            raise InputError(path, f"archive member {info.filename!r} is encrypted")
        if info.header_offset + info.compress_size > archive_size:
            raise InputError(path, f"archive member {info.filename!r} extends past the end of the archive")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > info.compress_size * MAX_EXPANSION + FILL_SLACK:
            raise InputError(
                path, f"archive member {info.filename!r} inflates {info.compress_size} bytes to {info.file_size}; refusing a zip bomb"
            )
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise InputError(path, f"archive member {info.filename!r} is stored but its sizes disagree")
    return infos


def _member_start(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a member's data begins: after its local header, whose lengths may differ from the directory's."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise InputError(path, f"archive member {info.filename!r} has a damaged local header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


class KerasZipReader(HDF5Reader):
    """A ``.keras`` archive: the tensors of its ``model.weights.h5`` member, named as inside it.

    A stored member (how Keras writes it) is read in place through a window on the archive; a
    compressed one is inflated into an anonymous temporary file first.
    """

    format = "keras"

    def __init__(self, path: str | Path, options: OpenOptions | None = None) -> None:
        super().__init__(path, options)
        try:
            self._open_member()
        except BaseException:
            self.close()
            raise

    def _open_member(self) -> None:
        path = self.path
        with input_errors(path, "not a readable zip archive"):
            size = path.stat().st_size
            with zipfile.ZipFile(path) as zf:
                infos = _check_members(path, zf, size)
                info = next((i for i in infos if i.filename == KERAS_MEMBER), None)
                if info is None:
                    raise InputError(path, f"a zip archive without {KERAS_MEMBER}; not a .keras model")
                self.members = [i.filename for i in infos]
                source: tuple[IO[bytes] | io.IOBase, int, Path | None, int | None, list[Any]]
                if info.compress_type == zipfile.ZIP_STORED:
                    start = _member_start(path, info)
                    if start + info.file_size > size:
                        raise InputError(path, f"archive member {KERAS_MEMBER} extends past the end of the archive")
                    window = _Window(path, start, info.file_size)
                    source = (window, info.file_size, path, start, [window])
                    self._unchecked = (start, info.file_size, info.CRC)
                else:
                    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the source
                    try:
                        with zf.open(info) as member:
                            shutil.copyfileobj(member, spool, 1 << 20)
                        spool.seek(0)
                    except BaseException:
                        spool.close()
                        raise
                    source = (spool, info.file_size, None, None, [spool])
        target, msize, origin, base, closers = source
        label = Path(f"{path}:{KERAS_MEMBER}")
        self._open_single(Source(label, target, msize, origin=origin, base_offset=base, closers=closers))

    _unchecked: tuple[int, int, int] | None = None  # (offset, size, CRC) of a STORED weights member not yet checked against its CRC

    def _locate(self, name: str) -> tuple[Source, DatasetInfo]:
        """Before the first tensor's data is used, a STORED weights member is checked against its CRC
        (zipfile checks a compressed one as it inflates it): one pass, in 1 MiB reads."""
        if self._unchecked is not None:
            start, size, expected = self._unchecked
            crc = 0
            with input_errors(self.path, f"cannot read archive member {KERAS_MEMBER}"), open(self.path, "rb") as f:
                f.seek(start)
                left = size
                while left:
                    block = f.read(min(left, 1 << 20))
                    if not block:
                        raise InputError(self.path, f"archive member {KERAS_MEMBER} ends early")
                    crc = zlib.crc32(block, crc)
                    left -= len(block)
            if crc != expected:
                raise InputError(self.path, f"archive member {KERAS_MEMBER}: CRC mismatch (the archive is damaged)")
            self._unchecked = None
        return super()._locate(name)


class KerasZipWriter(BaseWriter):
    """A streaming ``.keras`` archive writer; ``model.weights.h5`` goes through :class:`Writer`.

    The weights are written to a temporary file beside ``path`` (its name starts with
    ``path.name``), then the archive is assembled at ``finish``; the temporary file is removed on
    finish, abort and error. With ``like=`` a :class:`KerasZipReader` the other members are copied
    from the like-archive (reopened by path at ``finish``).
    """

    format = "keras"
    caps = WriterCaps(stored=True, like=("hdf5", "keras"), renames=True)

    def __init__(self, path: str | Path, *, metadata: Mapping[str, str] | None = None,
                 like: BaseReader | None = None) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        self._weights_path = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}.{KERAS_MEMBER}")
        self._inner: Writer | None = None

    def _begin(self) -> None:
        inner_like = self.like if isinstance(self.like, HDF5Reader) else None
        self._inner = Writer(self._weights_path, metadata=self.metadata, like=inner_like)
        try:
            self._inner.begin(self.specs, origins=self.origins)
        except BaseException:
            self._cleanup()
            raise

    @property
    def layout_fallback(self) -> str | None:
        """Why renames were placed plainly in ``model.weights.h5`` (see :class:`Writer`), if they were."""
        return self._inner.layout_fallback if self._inner is not None else None

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        assert self._inner is not None
        try:
            self._inner.write(spec.name, np.asarray(data).reshape(spec.shape))  # numpy scalars too
        except BaseException:
            self._cleanup()
            self._state = "DONE"
            raise

    def write_stored(self, name: str, reader: BaseReader, source_name: str) -> bool:
        spec = self._peek(name)
        assert self._inner is not None
        try:
            done = self._inner.write_stored(spec.name, reader, source_name)
        except BaseException:
            self._cleanup()
            self._state = "DONE"
            raise
        if done:
            self._take(name)
        return done

    def _finish(self) -> None:
        assert self._inner is not None
        try:
            self._inner.finish()
            with output_errors(self.path, "cannot write the .keras archive"):
                self._assemble()
        finally:
            self._cleanup()

    def abort(self) -> None:
        self._cleanup()
        super().abort()

    def _cleanup(self) -> None:
        if self._inner is not None:
            self._inner.abort()
        with contextlib.suppress(FileNotFoundError):
            self._weights_path.unlink()

    def _assemble(self) -> None:
        weights_size = self._weights_path.stat().st_size
        with zipfile.ZipFile(self.path, "x", compression=zipfile.ZIP_STORED, allowZip64=True) as out:
            if isinstance(self.like, KerasZipReader):
                like_path = self.like.path
                with input_errors(like_path, "cannot read the like-archive"), zipfile.ZipFile(like_path) as src:
                    infos = _check_members(like_path, src, like_path.stat().st_size)
                    for info in infos:
                        if info.filename == KERAS_MEMBER:
                            self._add_weights(out, _copy_info(info, weights_size))
                        else:
                            with src.open(info) as member, out.open(_copy_info(info, info.file_size), "w") as dst:
                                shutil.copyfileobj(member, dst, 1 << 20)
                    out.comment = src.comment
            else:
                info = zipfile.ZipInfo(KERAS_MEMBER, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                info.file_size = weights_size
                self._add_weights(out, info)

    def _add_weights(self, out: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        with open(self._weights_path, "rb") as src, out.open(info, "w") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _copy_info(info: zipfile.ZipInfo, size: int) -> zipfile.ZipInfo:
    """A fresh ZipInfo with the like-member's name, date, compression and permissions."""
    new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    new.compress_type = info.compress_type
    new.external_attr = info.external_attr
    new.create_system = info.create_system
    new.comment = info.comment
    new.file_size = size
    return new


__all__ = ["KerasZipReader", "KerasZipWriter"]
