from __future__ import annotations

from pathlib import Path
from typing import Any

from . import hdf5, npz
from .base import ReaderCaps, WriterCaps


def npz_reader(path: Path, options: Any = None) -> Any:
    r = npz.Reader(path, float8=options.float8 if options else None)
    type(r).caps = ReaderCaps(byte_ranges=True, release=True)
    return r


def _fix(r: Any, fmt: str) -> Any:
    r.layout = r.format if r.format in ("keras-h5", "keras3-h5") else ("keras3-h5" if fmt != "hdf5" else None)
    r.format = fmt
    return r


def keras_reader(path: Path, options: Any = None) -> Any:
    return _fix(hdf5.KerasZipReader(path), "keras")


def keras_sharded(path: Path, options: Any = None) -> Any:
    return _fix(hdf5.KerasShardedReader(path), "keras-sharded")


def hdf5_reader(path: Path, options: Any = None) -> Any:
    return _fix(hdf5.Reader(path), "hdf5")


class NpzWriter(npz.Writer):
    caps = WriterCaps(streams_chunks=True, like=("npz",))


class Hdf5Writer(hdf5.Writer):
    caps = WriterCaps(stored=True, like=("hdf5", "keras"), renames=True)


class KerasZipWriter(hdf5.KerasZipWriter):
    caps = WriterCaps(stored=True, like=("hdf5", "keras"), renames=True)
