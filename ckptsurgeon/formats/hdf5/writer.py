"""The HDF5 writer: plain HDF5, or a file like a given one.

:class:`Writer` writes one dataset per ``write``, contiguous and uncompressed, at the tensor's name
as an HDF5 path (intermediate groups are created), with the metadata as string root attributes.
Its groups track creation order, so the file reads back in the order written (a group's tensors
together, where its first tensor was). With ``like=`` one of the HDF5 readers it writes a file
like that one instead: the like-file's groups and attributes (``layer_names``, ``weight_names``,
``keras_version``, ``model_config`` ...), and for each tensor the like-dataset's path, attributes,
datatype (when the dtype is unchanged), layout, chunking and filters, so that Keras still loads
the result. Tensors not in the like file are written as plain datasets at their path; like-file
datasets that are not written are left out (and dropped from ``weight_names`` lists, which must
name only datasets that exist). Renames move that layout along as
:mod:`ckptsurgeon.formats.hdf5.layout` describes. Output is reproducible: no timestamps, a fixed
file-format version and a deterministic order give byte-identical files for identical inputs.

Where the like-dataset is chunked the same way as the source, :meth:`Writer.write_stored` copies
the stored chunks verbatim, without decompressing and recompressing them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ckptsurgeon.errors import OutputError, UsageError
from ckptsurgeon.formats.base import Reader as BaseReader
from ckptsurgeon.formats.base import Writer as BaseWriter
from ckptsurgeon.formats.base import WriterCaps
from ckptsurgeon.formats.hdf5._h5 import (
    TRACK_ORDER,
    convention_name,
    file_type,
    h5d,
    h5g,
    h5p,
    h5py,
    h5s,
    h5t,
    input_errors,
    join_path,
    output_errors,
    parent_path,
    scalar_text,
    string_list,
)
from ckptsurgeon.formats.hdf5.keras import WEIGHT_NAMES
from ckptsurgeon.formats.hdf5.layout import (
    Attr,
    LikeDataset,
    LikeGroup,
    NoLayout,
    Template,
    plain_like,
    relayout,
)
from ckptsurgeon.formats.hdf5.reader import HDF5Reader
from ckptsurgeon.tensors import DTYPES, TensorSpec, numel

# Filters whose parameters depend on the datatype: not carried over when a tensor's dtype changes.
TYPE_BOUND_FILTERS = frozenset({5, 6})
LIBVER = ("earliest", "v110")
COMPACT_MAX_BYTES = 60_000
# HDF5 numbers an object's attributes in creation order with 16 bits, so the root of a file that
# keeps them in order holds at most this many; untracked, each new one costs a scan of the others.
MAX_ROOT_ATTRS = 0xFFFF


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or "\x00" in name or any(p in ("", ".", "..") for p in parts):
        raise UsageError(None, f"tensor name {name!r} cannot be an HDF5 dataset path (empty, '.' or '..' parts, or a stray '/')")


def _check_tree(names: list[str], like_groups: Iterable[str]) -> None:
    """Refuse names that are not HDF5 paths, or that would be a dataset and a group at once."""
    groups: dict[str, None] = dict.fromkeys(like_groups)
    for name in names:
        _check_name(name)
        parts = name.split("/")
        for i in range(1, len(parts)):
            groups.setdefault("/".join(parts[:i]))
    datasets = set(names)
    for name in names:
        if name in groups:
            raise UsageError(None, f"tensor {name!r} cannot be written to HDF5: another tensor's path runs through it")
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in datasets:
                raise UsageError(None, f"tensor {name!r} cannot be written to HDF5: {'/'.join(parts[:i])!r} is a tensor too")


def _guess_chunks(shape: tuple[int, ...], itemsize: int, target: int = 1 << 20) -> tuple[int, ...]:
    chunks = [max(1, n) for n in shape]
    while math.prod(chunks) * itemsize > target and max(chunks) > 1:
        i = chunks.index(max(chunks))
        chunks[i] = (chunks[i] + 1) // 2
    return tuple(chunks)


class Writer(BaseWriter):
    """A streaming HDF5 writer: plain datasets at the tensors' paths, or a file like ``like``'s.

    With ``like`` and ``origins`` (renamed tensors) the like-file's layout and Keras bookkeeping
    follow the renames (see :mod:`ckptsurgeon.formats.hdf5.layout`). ``layout_fallback`` is None,
    or the reason the renames could not be expressed in the like-file's Keras bookkeeping and the
    file was written with plain placement instead.
    """

    format = "hdf5"
    caps = WriterCaps(stored=True, like=("hdf5", "keras"), renames=True)

    def __init__(self, path: str | Path, *, metadata: Mapping[str, str] | None = None,
                 like: BaseReader | None = None) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        self._file: h5py.File | None = None
        self._template: Template | None = None
        self._groups: set[str] = {""}  # groups made so far
        self._lcpl = h5p.create(h5p.LINK_CREATE)
        self._lcpl.set_char_encoding(h5t.CSET_UTF8)

    # --- state machine hooks ----------------------------------------------------------------
    def _begin(self) -> None:
        names = [s.name for s in self.specs]
        if isinstance(self.like, HDF5Reader):
            like_tpl = self.like._template()
            if self.origins:
                try:
                    like_tpl = relayout(like_tpl, names, self.origins)
                except NoLayout as exc:
                    self.layout_fallback = str(exc)
                    like_tpl = plain_like(like_tpl, names, self.origins)
            self._template = like_tpl
        tpl = self._template
        _check_tree(names, tpl.groups if tpl else ())
        # Plain files keep their tensors' order: links are tracked in creation order.
        track = bool(tpl.groups[""].order_flags) if tpl else True
        root_attrs = len({*self.metadata, *(a.name for a in tpl.groups[""].attrs)} if tpl else self.metadata)
        if root_attrs > MAX_ROOT_ATTRS:
            raise OutputError(
                self.path, f"an HDF5 file can hold at most {MAX_ROOT_ATTRS} metadata keys (root attributes), "
                f"this one would need {root_attrs}; write safetensors, or drop metadata",
            )
        with output_errors(self.path, "cannot create the HDF5 file"):
            self._file = h5py.File(self.path, "w-", libver=LIBVER, track_order=track)
        try:
            with output_errors(self.path, "cannot write the HDF5 structure"):
                self._write_structure(set(names))
        except BaseException:
            self._close()
            raise

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        like = self._template.datasets.get(spec.name) if self._template else None
        self._put(spec, like, np.asarray(data).reshape(spec.shape))  # numpy scalars too

    def write_stored(self, name: str, reader: BaseReader, source_name: str) -> bool:
        """Copy the tensor's chunks from an HDF5 reader verbatim (no decompression, no recompression)
        when the dataset this writer would create stores them the same way: chunked, with the same
        chunk shape, filters and file type, every chunk written. Contiguous data is not worth it: the
        plain path moves it at memory speed."""
        spec = self._peek(name)
        like = self._template.datasets.get(spec.name) if self._template else None
        if like is None or like.code != spec.dtype or like.shape != spec.shape or not isinstance(reader, HDF5Reader):
            return False
        src, ds = reader._locate(source_name)
        if ds.code != spec.dtype or ds.shape != spec.shape or not ds.nbytes:
            return False
        dcpl = self._dcpl(spec, like, same_type=True)
        with input_errors(src.label, f"cannot read dataset {ds.path!r}"):
            sid = src.h5[ds.path].id
            offsets = _stored_chunks(sid, dcpl, like.tid, ds.shape)
        if offsets is None:
            return False
        self._take(name)
        self._put(spec, like, None, stored=(src.label, sid, offsets))
        return True

    def _put(self, spec: TensorSpec, like: LikeDataset | None, data: np.ndarray | None,
             stored: tuple[Path, Any, list[tuple[int, ...]]] | None = None) -> None:
        try:
            with output_errors(self.path, f"cannot write tensor {spec.name!r}"):
                self._make_groups(spec.name)
                self._write_dataset(spec, data, like, stored)
        except BaseException:
            self._close()
            self._state = "DONE"
            raise

    def _finish(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            with output_errors(self.path, "cannot finish the HDF5 file"):
                f.close()

    def abort(self) -> None:
        self._close()
        super().abort()

    # --- helpers ----------------------------------------------------------------------------
    def _close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(Exception):
                f.close()

    @property
    def _h5(self) -> h5py.File:
        assert self._file is not None
        return self._file

    def _make_group(self, path: str, order_flags: int) -> None:
        gcpl = h5p.create(h5p.GROUP_CREATE)
        gcpl.set_obj_track_times(False)
        gcpl.set_link_creation_order(order_flags)
        gcpl.set_attr_creation_order(order_flags)
        h5g.create(self._h5.id, path.encode("utf-8"), lcpl=self._lcpl, gcpl=gcpl)
        self._groups.add(path)

    def _ensure_group(self, path: str, like_groups: Mapping[str, LikeGroup]) -> None:
        """Make a like-group (after its parents), with its own creation-order flags."""
        if path in self._groups:
            return
        self._ensure_group(parent_path(path), like_groups)
        group = like_groups.get(path)
        self._make_group(path, group.order_flags if group is not None else TRACK_ORDER)

    def _make_groups(self, name: str) -> None:
        """Create the groups a tensor's path runs through, when it first needs them (creation order)."""
        parts = name.split("/")
        for i in range(1, len(parts)):
            path = "/".join(parts[:i])
            if path not in self._groups:
                self._make_group(path, TRACK_ORDER)

    def _write_structure(self, written: set[str]) -> None:
        """The like-file's groups and attributes, and the metadata as root attributes."""
        tpl = self._template
        like_groups = tpl.groups if tpl else {}
        for gpath in like_groups:
            self._ensure_group(gpath, like_groups)
        for gpath, group in like_groups.items():
            obj = self._h5[gpath] if gpath else self._h5
            for attr in group.attrs:
                _write_attr(obj, self._pruned(gpath, attr, written))
        root_like = {a.name: a for a in like_groups[""].attrs} if tpl else {}
        for key, value in self.metadata.items():
            if not key:
                continue
            same = key in root_like and scalar_text(root_like[key].value) == str(value)
            if not same:
                self._h5.attrs[key] = str(value)

    def _pruned(self, gpath: str, attr: Attr, written: set[str]) -> Attr:
        """A ``weight_names`` list without the entries whose datasets are not written."""
        tpl = self._template
        if tpl is None or not WEIGHT_NAMES.fullmatch(attr.name):
            return attr
        entries = string_list(attr.value)
        if not entries:
            return attr
        keep = [(join_path(gpath, e) in written or join_path(gpath, e) not in tpl.datasets) for e in entries]
        if all(keep):
            return attr
        arr = np.asarray(attr.value)[np.array(keep, dtype=bool)]
        if arr.size == 0:
            return Attr(attr.name, np.array([], dtype=np.float64), np.dtype(np.float64))
        return Attr(attr.name, arr, attr.dtype)

    def _write_dataset(self, spec: TensorSpec, data: np.ndarray | None, like: LikeDataset | None,
                       stored: tuple[Path, Any, list[tuple[int, ...]]] | None = None) -> None:
        shape = spec.shape
        same_type = like is not None and like.code == spec.dtype
        if like is not None and same_type:
            tid, raw = like.tid, like.raw
        else:
            tid, raw = file_type(spec.dtype), convention_name(spec.dtype) is not None
        if shape == ():
            space = h5s.create(h5s.SCALAR)
        else:
            maxshape = like.maxshape if like is not None and like.shape == shape else None
            space = h5s.create_simple(shape, tuple(h5s.UNLIMITED if m == -1 else m for m in maxshape) if maxshape else None)
        dcpl = self._dcpl(spec, like, same_type)
        dsid = h5d.create(self._h5.id, spec.name.encode("utf-8"), tid, space, dcpl=dcpl, lcpl=self._lcpl)
        try:
            if stored is not None:
                label, sid, offsets = stored
                for offset in offsets:
                    with input_errors(label, f"cannot read a chunk of dataset {spec.name!r}"):
                        mask, chunk = sid.read_direct_chunk(offset)
                    dsid.write_direct_chunk(offset, chunk, mask)
            elif data is not None and data.size:
                if raw:
                    buf = data
                    if tid.get_class() == h5t.FLOAT and tid.get_order() == h5t.ORDER_BE:
                        buf = data.view(f"u{data.dtype.itemsize}").byteswap()
                    dsid.write(h5s.ALL, h5s.ALL, np.ascontiguousarray(buf), mtype=tid)
                else:
                    dsid.write(h5s.ALL, h5s.ALL, data, mtype=h5t.py_create(data.dtype))
            dset = h5py.Dataset(dsid)
            for attr in like.attrs if like is not None else ():
                if not (attr.name == "dtype" and raw):
                    _write_attr(dset, attr)
            name = convention_name(spec.dtype)
            if raw and name is not None and tid.get_class() == h5t.OPAQUE:
                dset.attrs["dtype"] = name
        finally:
            dsid.close()

    def _dcpl(self, spec: TensorSpec, like: LikeDataset | None, same_type: bool) -> Any:
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)
        if like is None or numel(spec.shape) == 0 or spec.shape == ():
            return dcpl  # scalars and empty tensors cannot be chunked
        src = like.dcpl
        layout = src.get_layout()
        nbytes = spec.nbytes
        if layout == h5d.COMPACT and nbytes <= COMPACT_MAX_BYTES:
            dcpl.set_layout(h5d.COMPACT)
        elif layout == h5d.CHUNKED:
            itemsize = DTYPES[spec.dtype].itemsize
            chunks = src.get_chunk() if like.shape == spec.shape else _guess_chunks(spec.shape, itemsize)
            dcpl.set_chunk(tuple(max(1, c) for c in chunks))
            dcpl.set_alloc_time(src.get_alloc_time())
            dcpl.set_fill_time(src.get_fill_time())
            for i in range(src.get_nfilters()):
                fid, flags, values, _name = src.get_filter(i)
                if fid in TYPE_BOUND_FILTERS and not same_type:
                    continue
                dcpl.set_filter(fid, flags, values)
        return dcpl


def _filters(dcpl: Any) -> list[tuple[Any, ...]]:
    return [tuple(dcpl.get_filter(i)[:3]) for i in range(dcpl.get_nfilters())]


def _stored_chunks(sid: Any, dcpl: Any, tid: Any, shape: tuple[int, ...]) -> list[tuple[int, ...]] | None:
    """The chunk offsets of a source dataset whose chunks a dataset created with ``dcpl`` and file
    type ``tid`` can take verbatim, or None. Every chunk must be written: an unwritten one reads as
    the source's fill value, which the new dataset would not share."""
    if dcpl.get_layout() != h5d.CHUNKED:
        return None
    src = sid.get_create_plist()
    if src.get_layout() != h5d.CHUNKED or tuple(src.get_chunk()) != tuple(dcpl.get_chunk()):
        return None
    if _filters(src) != _filters(dcpl) or not sid.get_type().equal(tid):
        return None
    if not hasattr(sid, "get_num_chunks"):  # h5py built on an HDF5 before 1.10.5: no chunk queries
        return None
    chunk = dcpl.get_chunk()
    count = sid.get_num_chunks()
    if count != math.prod(-(-n // c) for n, c in zip(shape, chunk, strict=True)):
        return None
    if not hasattr(sid, "chunk_iter"):  # HDF5 before 1.12.3: one query per chunk
        return [tuple(sid.get_chunk_info(i).chunk_offset) for i in range(count)]
    offsets: list[tuple[int, ...]] = []
    sid.chunk_iter(lambda info: offsets.append(tuple(info.chunk_offset)))
    return offsets


def _write_attr(obj: Any, attr: Attr) -> None:
    obj.attrs.create(attr.name, attr.value, dtype=attr.dtype)


__all__ = ["Writer"]
