"""HDF5 readers: one HDF5 file, and Keras 3 sharded weights.

:class:`Reader` opens one HDF5 file. Every numeric dataset is a tensor named by its HDF5 path
without the leading ``/``. ``format`` tells what kind of file it is (see
:mod:`ckptsurgeon.formats.hdf5.keras` for the Keras conventions, the order and the layer names):

- ``"keras-h5"``: a legacy Keras (tf-keras / Keras 2) file: root attribute ``layer_names`` and a
  ``weight_names`` attribute per layer group, or a full-model file with the same under
  ``model_weights`` (its ``optimizer_weights`` group is listed too). Tensors come in
  ``layer_names`` / ``weight_names`` order, then optimizer weights, then anything else.
- ``"keras3-h5"``: a Keras 3 ``.weights.h5`` file (``layers/<auto name>/vars/<i>``); the ``vars``
  datasets are listed in numeric order. Tensors keep their dataset paths as names (where Keras
  stores them, and what a file written like this one holds); ``match_names`` gives each layer
  variable the name Keras gives it (``proj/kernel``), by which transfer and diff pair tensors.
- ``"hdf5"``: anything else, in tree order: each group's members in creation order where the file
  tracks it (as ckptsurgeon's own output does), else by name. A tensor's layer is the dataset's
  parent group path.

:class:`KerasShardedReader` reads a ``*.weights.json`` index with its ``*.weights.h5`` shards
(``format="keras3-sharded"``); :class:`~ckptsurgeon.formats.hdf5.archive.KerasZipReader`, the
``model.weights.h5`` member of a ``.keras`` archive, shares :class:`HDF5Reader` with both. Every
file is checked as :mod:`ckptsurgeon.formats.hdf5._h5` describes before any tensor byte is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ckptsurgeon.errors import InputError
from ckptsurgeon.formats._index import ShardIndex
from ckptsurgeon.formats._probe import Probe
from ckptsurgeon.formats.base import CHUNK_BYTES, OpenOptions, ReaderCaps
from ckptsurgeon.formats.base import Reader as BaseReader
from ckptsurgeon.formats.hdf5._h5 import DatasetInfo, Source, Tree, input_errors, open_file, parent_path
from ckptsurgeon.formats.hdf5.keras import (
    LayerConfig,
    is_keras3,
    keras3_layer,
    keras3_variable_names,
    legacy_order,
    legacy_root,
    root_metadata,
)
from ckptsurgeon.formats.hdf5.layout import Template, read_template
from ckptsurgeon.tensors import TensorInfo

MAX_INDEX_BYTES = 100_000_000


class HDF5Reader(BaseReader):
    """Common part of the HDF5 readers: tensors located by (source index, dataset path)."""

    format = "hdf5"
    caps = ReaderCaps(byte_ranges=True)

    def __init__(self, path: str | Path, options: OpenOptions | None = None) -> None:
        super().__init__(Path(path), options)
        self._sources: list[Source] = []

    def _catalogue(self, order: list[tuple[int, str]], layers: Mapping[tuple[int, str], str]) -> None:
        self.tensors = []
        for i, path in order:
            ds = self._sources[i].tree.datasets[path]
            self.tensors.append(TensorInfo(path, ds.shape, ds.code, layers[(i, path)], loc=(i, path)))
        self._index = None

    def _name_variables(self, tree: Tree, configs: Mapping[str, LayerConfig] | None = None) -> None:
        """``match_names`` of a Keras 3 file; none at all when two would clash (not a file Keras wrote)."""
        names = keras3_variable_names(tree, configs)
        stored = {t.name for t in self.tensors}
        values = list(names.values())
        if len(set(values)) == len(values) and not (set(values) & (stored - set(names))):
            self.match_names = {k: v for k, v in names.items() if k != v}

    def _locate(self, name: str) -> tuple[Source, DatasetInfo]:
        try:
            index, path = self.by_name[name].loc
        except KeyError:
            raise InputError(self.path, f"no tensor named {name!r}") from None
        src = self._sources[index]
        return src, src.tree.datasets[path]

    def read(self, name: str) -> np.ndarray:
        src, ds = self._locate(name)
        return src.read(ds)

    def iter_bytes(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """The raw bytes, read a block of rows (first axis) at a time to bound memory."""
        src, ds = self._locate(name)
        if len(ds.shape) < 1 or ds.nbytes <= chunk_bytes:
            yield src.read(ds).reshape(-1).view(np.uint8).data
            return
        row_bytes = ds.nbytes // ds.shape[0]
        step = max(1, chunk_bytes // row_bytes)
        for start in range(0, ds.shape[0], step):
            block = src.read(ds, slice(start, min(start + step, ds.shape[0])))
            yield block.reshape(-1).view(np.uint8).data

    def byte_range(self, name: str) -> tuple[Path, int, int] | None:
        src, ds = self._locate(name)
        if ds.offset is None or src.origin is None or src.base_offset is None:
            return None
        return src.origin, src.base_offset + ds.offset, ds.nbytes

    def _template(self) -> Template:
        """The structure a like-writer reproduces (the reader must be open)."""
        return read_template(self._sources, [t.loc for t in self.tensors])

    def close(self) -> None:
        for src in self._sources:
            src.close()

    def _open_single(self, src: Source, configs: Mapping[str, LayerConfig] | None = None) -> None:
        """Catalogue a reader made of one HDF5 file, telling plain HDF5 and Keras files apart."""
        self._sources = [src]
        tree = src.tree
        with input_errors(src.label):
            prefix = legacy_root(src.h5, tree)
            self.metadata = root_metadata(src.h5)
            if prefix is not None:
                self.layout = "keras-h5"
                paths, layer_of = legacy_order(src.h5, tree, prefix)
            else:
                paths = list(tree.datasets)
                if is_keras3(tree):
                    self.layout = "keras3-h5"
                    layer_of = {p: keras3_layer(p, tree.vars_names) for p in paths}
                else:
                    layer_of = {p: parent_path(p) for p in paths}
        self._catalogue([(0, p) for p in paths], {(0, p): layer_of[p] for p in paths})
        if self.layout == "keras3-h5":
            self._name_variables(tree, configs)


class Reader(HDF5Reader):
    """One HDF5 file: plain HDF5, a legacy Keras ``.h5`` or a Keras 3 ``.weights.h5`` (``layout`` says which)."""

    def __init__(self, path: str | Path, options: OpenOptions | None = None) -> None:
        super().__init__(path, options)
        src = open_file(self.path)
        try:
            self._open_single(src)
        except BaseException:
            self.close()
            raise


class KerasShardedReader(HDF5Reader):
    """Keras 3 sharded weights: a ``*.weights.json`` index (``weight_map``) and its HDF5 shards.

    Tensors are the union of the shards' datasets, named by their path inside the shards; a dataset
    path found in two shards is an error.
    """

    format = "keras-sharded"

    def __init__(self, path: str | Path, options: OpenOptions | None = None) -> None:
        super().__init__(path, options)
        self.layout = "keras3-h5"
        try:
            self._open_shards()
        except BaseException:
            self.close()
            raise

    @property
    def files(self) -> list[Path]:
        return [self.path, *self.shards]

    def _open_shards(self) -> None:
        self.shards = self._shard_names()
        for shard in self.shards:
            self._sources.append(open_file(shard))
        where: dict[str, int] = {}
        vars_names: dict[str, str] = {}
        for i, src in enumerate(self._sources):
            for dpath in src.tree.datasets:
                if dpath in where:
                    raise InputError(
                        self.path, f"dataset {dpath!r} is in two shards: {self.shards[where[dpath]].name} and {self.shards[i].name}"
                    )
                where[dpath] = i
            for gpath, name in src.tree.vars_names.items():
                vars_names.setdefault(gpath, name)
            with input_errors(src.label):
                for key, value in root_metadata(src.h5).items():
                    self.metadata.setdefault(key, value)
        order = [(i, p) for i, src in enumerate(self._sources) for p in src.tree.datasets]
        self._catalogue(order, {(i, p): keras3_layer(p, vars_names) for i, p in order})
        datasets = {p: src.tree.datasets[p] for i, src in enumerate(self._sources) for p in src.tree.datasets}
        self._name_variables(Tree(datasets=datasets, vars_names=vars_names))

    def _shard_names(self) -> list[Path]:
        """The shard files, checked, in the order the index first names them (string and list values alike)."""
        index = ShardIndex.read(self.path)
        paths = [index.shard_path(shard, missing=f"shard {shard!r} listed in the index is missing")
                 for shard in index.shards]
        for shard, path in zip(index.shards, paths, strict=True):
            if not Probe(path).hdf5_offsets:
                from .. import what_is

                raise InputError(self.path, f"shard {shard!r} is not an HDF5 file but {what_is(path)}")
        return paths
