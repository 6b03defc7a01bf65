"""``.keras`` zip archives: the ``model.weights.h5`` member read in place, and archives written.

:class:`KerasZipReader` reads the ``model.weights.h5`` member of a ``.keras`` archive
(``format="keras"``) like any other HDF5 file, after the archive is checked as every zip archive is
(:class:`~ckptsurgeon.formats._zip.ZipArchive`: member names inside the archive, no encryption,
sizes and data ranges within the archive, no zip bomb). A stored member, as Keras writes it, is
checked against its CRC, then read in place through a window on the archive: HDF5 never sees a
byte of a damaged member (it can crash or hang on one).

:class:`KerasZipWriter` writes a ``.keras`` archive: with ``like=`` a :class:`KerasZipReader` it
copies every other member (``config.json``, ``metadata.json``, assets) verbatim, in the same order
and with the same dates, and writes ``model.weights.h5`` like the like-archive's (through
:class:`~ckptsurgeon.formats.hdf5.writer.Writer`). Without it the archive holds only
``model.weights.h5``: ``model.load_weights()`` accepts such an archive,
``keras.models.load_model()`` does not (it needs ``config.json``). So an archive laid out like a
Keras weights file (``.weights.h5``, legacy ``.h5``), whose model configuration is not there to
copy, is refused before anything is written: that output would look like a model Keras cannot open.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from ckptsurgeon.errors import CkptError, InputError, OutputError
from ckptsurgeon.files import check_input
from ckptsurgeon.formats._zip import ZipArchive
from ckptsurgeon.formats.base import OpenOptions, WriterCaps
from ckptsurgeon.formats.base import Reader as BaseReader
from ckptsurgeon.formats.base import Writer as BaseWriter
from ckptsurgeon.formats.hdf5 import KERAS_MEMBER
from ckptsurgeon.formats.hdf5._h5 import (
    Source,
    output_errors,
)
from ckptsurgeon.formats.hdf5.keras import LayerConfig, layer_configs
from ckptsurgeon.formats.hdf5.reader import HDF5Reader
from ckptsurgeon.formats.hdf5.writer import Writer
from ckptsurgeon.tensors import TensorSpec

CONFIG_MEMBER = "config.json"
MAX_CONFIG_BYTES = 64 << 20  # read to name variables; a larger config.json is passed over
KERAS_LAYOUTS = ("keras-h5", "keras3-h5")


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
        check_input(path)  # a regular file: a FIFO or a device is refused before the archive is opened
        self._archive = archive = ZipArchive(path, what="zip archive")
        if KERAS_MEMBER not in archive:
            raise InputError(path, f"a zip archive without {KERAS_MEMBER}; not a .keras model")
        self.members = archive.names()
        member = archive[KERAS_MEMBER]
        source: tuple[IO[bytes] | io.IOBase, int, Path | None, int | None, list[Any]]
        if member.stored:
            window = archive.window(member)  # checked against its CRC first: HDF5 never reads a damaged member
            source = (window, member.size, path, member.data_offset, [window])
        else:  # inflated to its end, so its CRC is checked before HDF5 reads it
            spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the source
            try:
                with archive.open(member) as stream:
                    shutil.copyfileobj(stream, spool, 1 << 20)
                spool.seek(0)
            except BaseException:
                spool.close()
                raise
            source = (spool, member.size, None, None, [spool])
        target, msize, origin, base, closers = source
        label = Path(f"{path}:{KERAS_MEMBER}")
        self._open_single(Source(label, target, msize, origin=origin, base_offset=base, closers=closers),
                          self._layer_configs(archive))

    @staticmethod
    def _layer_configs(archive: ZipArchive) -> dict[str, LayerConfig] | None:
        """The layers ``config.json`` describes, to name their variables; None when it is missing or unreadable.

        It only names tensors, so a config.json that cannot be read is passed over, not refused.
        """
        if CONFIG_MEMBER not in archive:
            return None
        member = archive[CONFIG_MEMBER]
        if member.size > MAX_CONFIG_BYTES:
            return None
        try:
            with archive.open(member) as stream:
                return layer_configs(json.loads(stream.read(MAX_CONFIG_BYTES + 1)))
        except (CkptError, OSError, ValueError, zipfile.BadZipFile, RecursionError):
            return None

    _archive: ZipArchive | None = None

    def close(self) -> None:
        super().close()
        if self._archive is not None:
            self._archive.close()


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
        if inner_like is not None and not isinstance(inner_like, KerasZipReader) and inner_like.layout in KERAS_LAYOUTS:
            raise OutputError(
                self.path, "a .keras archive needs the model's config.json, which a Keras weights file does not "
                "hold (keras.models.load_model could not open the archive); write .weights.h5 instead "
                "(model.load_weights reads it), or write .keras from a .keras input",
            )
        self._inner = Writer(self._weights_path, metadata=self.metadata, like=inner_like)
        try:
            self._inner.begin(self.specs, origins=self.origins)
        except BaseException:
            self._cleanup()
            raise
        self.layout_fallback = self._inner.layout_fallback  # decided as the layout is planned, in begin

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
                with ZipArchive(self.like.path) as src:
                    for m in src:
                        if m.name == KERAS_MEMBER:
                            self._add_weights(out, _copy_info(m.info, weights_size))
                        else:
                            with src.open(m) as member, out.open(_copy_info(m.info, m.size), "w") as dst:
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
