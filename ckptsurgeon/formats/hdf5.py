"""HDF5 checkpoints: plain HDF5, Keras weight files, ``.keras`` archives and sharded Keras 3 weights.

Readers
    :class:`Reader` opens one HDF5 file. Every numeric dataset is a tensor named by its HDF5 path
    without the leading ``/``. ``format`` tells what kind of file it is:

    - ``"keras-h5"``: a legacy Keras (tf-keras / Keras 2) file: root attribute ``layer_names`` and a
      ``weight_names`` attribute per layer group, or a full-model file with the same under
      ``model_weights`` (its ``optimizer_weights`` group is listed too). Tensors come in
      ``layer_names`` / ``weight_names`` order, then optimizer weights, then anything else.
    - ``"keras3-h5"``: a Keras 3 ``.weights.h5`` file (``layers/<auto name>/vars/<i>``); the
      ``vars`` datasets are listed in numeric order.
    - ``"hdf5"``: anything else, in tree order: each group's members in creation order where the
      file tracks it (as ckptsurgeon's own output does), else by name.

    :class:`KerasZipReader` reads the ``model.weights.h5`` member of a ``.keras`` archive
    (``format="keras-zip"``) and :class:`KerasShardedReader` a ``*.weights.json`` index with its
    ``*.weights.h5`` shards (``format="keras3-sharded"``).

    A tensor's layer is the Keras layer name in Keras files: the ``layer_names`` entry in legacy
    files; the ``name`` attribute of the ``vars`` group in Keras 3 files, joined with ``/`` to the
    names of the enclosing layers for nested layers (``encoder/dense``); the model's own name for
    the model's top-level ``vars``. Optimizer state (``optimizer_weights/...``, ``optimizer/...``)
    always has the layer ``"optimizer"``. In plain files the layer is the dataset's parent group path.

Safety
    Files are checked when they are opened, before any tensor byte is read. The tree is walked link
    by link and nothing is followed: soft, external and user-defined links, datasets whose data lives
    in external files, virtual datasets, and filters other than HDF5's and h5py's built-in ones
    (gzip, shuffle, fletcher32, szip, nbit, scaleoffset, lzf) are refused with
    :class:`UnsafeInputError`. HDF5 filter plugins are disabled before h5py is imported. An object
    reachable under two names (or through a cycle of hard links) is visited once. Datasets that are
    not numeric (strings, variable-length, compound, references, enums other than h5py's bool) are
    refused with :class:`InputError`, and so is a dataset that declares more bytes than the file can
    hold (contiguous: its extent must lie inside the file; chunked: at most the stored bytes, times
    ``MAX_EXPANSION`` when compressed; unallocated data only up to ``FILL_SLACK`` bytes). Any h5py
    or OS error met while reading an input becomes a one-line :class:`InputError`.

Dtypes
    Numeric types map to ckptsurgeon's codes; big-endian data is converted to little-endian when
    read. Keras 3 stores a bfloat16 variable as an HDF5 opaque type of the same size with a
    ``dtype="bfloat16"`` attribute on the dataset; ckptsurgeon reads that convention and writes
    BF16 and the float8 codes the same way (``dtype`` = the ml_dtypes name, e.g.
    ``"float8_e4m3fn"``), so the bytes round-trip exactly. Keras 3 loads such bfloat16 datasets; it
    cannot load float8 variables from ``.weights.h5`` files at all (not even the ones it writes,
    which carry no ``dtype`` attribute). Floats in an HDF5 2.0 bfloat16 / float8 bit layout are
    read as BF16 / F8 too.

Writers
    :class:`Writer` writes one dataset per ``write``, contiguous and uncompressed, at the tensor's
    name as an HDF5 path (intermediate groups are created), with the metadata as string root
    attributes. Its groups track creation order, so the file reads back in the order written (a
    group's tensors together, where its first tensor was). With ``like=`` one of this module's readers it writes a file like that one instead:
    the like-file's groups and attributes (``layer_names``, ``weight_names``, ``keras_version``,
    ``model_config`` ...), and for each tensor the like-dataset's path, attributes, datatype (when
    the dtype is unchanged), layout, chunking and filters, so that Keras still loads the result.
    Tensors not in the like file are written as plain datasets at their path; like-file datasets
    that are not written are left out (and dropped from ``weight_names`` lists, which must name only
    datasets that exist). Output is reproducible: no timestamps, a fixed file-format version and a
    deterministic order give byte-identical files for identical inputs.

    Renames (``begin(specs, origins={new: old})``, as ``ckpt rename`` passes them) are written
    where the like-file had the old dataset: its storage as above, its slot in the group's order,
    under the new path. A group moves (with its attributes and creation-order flags, to the place
    of the old one in the creation order) when all its written datasets are renamed into one other
    group at the same level; empty groups inside it move along; groups left empty that hold no
    attributes are dropped. The Keras bookkeeping follows:

    - legacy files: a dataset is ``<layer group>/<weight name>`` (the layer group being as many
      parts below the root or ``model_weights`` as the layer name has). A rename that changes the
      layer part of all of a layer's weights renames the layer: new group, its ``layer_names``
      entry replaced in place, its ``weight_names`` entries rewritten; a rename inside a layer
      (or inside ``optimizer_weights``) rewrites its ``weight_names`` entry. String lists keep
      their storage (variable or fixed length, widened when a name grows).
    - Keras 3 files: a variable stays ``<layer>/vars/<i>``; a renamed layer path moves its groups,
      the ``vars`` group keeping its ``name`` attribute. Keras 3 looks a layer's variables up by
      the path its model derives (``layers/conv2d``), so such a file loads into a model whose
      paths match it; renamed back, it loads as before.

    Model configurations (``model_config``, a ``.keras`` archive's ``config.json``) are copied
    as they are, so a full-model file still loads by layer order, not by the new names.

    Renames the bookkeeping cannot express are not written half-way: a legacy weight moved out of
    its layer group or list (into a group that is not a layer, onto another layer, out of
    ``model_weights`` or ``optimizer_weights``), a layer split between groups, two layers onto one
    name, a Keras 3 variable outside ``<layer>/vars/<i>``, numbering that is no longer ``0..n-1``
    or a ``vars`` group no renamed layer group becomes. Then the whole file falls back to plain
    placement: every tensor at its own name (the like-datasets' storage kept), no like-file
    groups or group attributes (so no ``layer_names`` / ``weight_names``, which Keras then
    refuses to load rather than loading wrong weights), the metadata as root attributes; the
    writer's ``layout_fallback`` says why. Without ``origins`` nothing of this applies.

    :class:`KerasZipWriter` writes a ``.keras`` archive: with ``like=`` a :class:`KerasZipReader`
    it copies every other member (``config.json``, ``metadata.json``, assets) verbatim, in the same
    order and with the same dates, and writes ``model.weights.h5`` like the like-archive's.
    Without it the archive holds only ``model.weights.h5``: ``model.load_weights()`` accepts such
    an archive, ``keras.models.load_model()`` does not (it needs ``config.json``).
"""

from __future__ import annotations

import os

# Never load an HDF5 filter plugin: a plugin is code named by the file. Must precede ``import h5py``.
os.environ["HDF5_PLUGIN_PRELOAD"] = "::"

import contextlib
import io
import json
import math
import re
import secrets
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import h5py  # the one module that imports h5py
import numpy as np
from h5py import h5d, h5g, h5o, h5p, h5s, h5t

from ckptsurgeon.errors import CkptError, InputError, OutputError, UnsafeInputError, UsageError
from ckptsurgeon.formats.base import CHUNK_BYTES
from ckptsurgeon.formats.base import Reader as BaseReader
from ckptsurgeon.formats.base import Writer as BaseWriter
from ckptsurgeon.tensors import DTYPES, ML_DTYPE_NAMES, TensorInfo, TensorSpec, code_of, numel

# HDF5's own filters plus h5py's compiled-in lzf: everything else would need a plugin.
BUILTIN_FILTERS: dict[int, str] = {
    1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf",
}
# Filters whose parameters depend on the datatype: not carried over when a tensor's dtype changes.
TYPE_BOUND_FILTERS = frozenset({5, 6})
# A compressed dataset may declare at most this many times its stored bytes (gzip's ceiling is ~1032:1).
MAX_EXPANSION = 1100
# Datasets up to this size may be unallocated (read as their fill value) or partly so.
FILL_SLACK = 1 << 20
# Root attributes that are Keras model / training configurations, not metadata about the weights.
CONFIG_ATTRS = frozenset({"model_config", "training_config"})
MAX_METADATA_CHARS = 65536
MAX_INDEX_BYTES = 100_000_000
KERAS_MEMBER = "model.weights.h5"
OPTIMIZER_LAYER = "optimizer"
LIBVER = ("earliest", "v110")
MAX_DEPTH = 256  # group nesting; real checkpoints stay far below
COMPACT_MAX_BYTES = 60_000
_DIGITS = re.compile(r"\d+")
_TRACK_ORDER = h5p.CRT_ORDER_TRACKED | h5p.CRT_ORDER_INDEXED  # creation order kept, for new groups
_WEIGHT_NAMES = re.compile(r"weight_names\d*")
# IEEE layouts h5py maps to numpy types, as (sign pos, exp pos, exp size, mantissa pos, mantissa size).
_IEEE_FIELDS = {2: (15, 10, 5, 0, 10), 4: (31, 23, 8, 0, 23), 8: (63, 52, 11, 0, 52)}
# Float layouts numpy lacks, read and written bit for bit: (size, fields, exponent bias) -> code.
_RAW_FLOATS = {
    (2, (15, 7, 8, 0, 7), 127): "BF16",
    (1, (7, 3, 4, 0, 3), 7): "F8_E4M3",
    (1, (7, 2, 5, 0, 2), 15): "F8_E5M2",
}
_CONVENTION_NAME = {code: name for name, code in ML_DTYPE_NAMES.items()}


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _input_errors(path: Path, what: str = "cannot read HDF5 data") -> Iterator[None]:
    """Turn any h5py / OS error raised inside into a one-line InputError naming ``path``."""
    try:
        yield
    except CkptError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, IndexError, EOFError, OverflowError,
            NotImplementedError, struct.error, zlib.error, zipfile.BadZipFile) as exc:
        raise InputError(path, f"{what} ({_exc_text(exc)})") from exc


@contextlib.contextmanager
def _output_errors(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except CkptError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise OutputError(path, f"{what} ({_exc_text(exc)})") from exc


def _exc_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ------------------------------------------------------------------------------------------------
# one checked HDF5 file
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dataset:
    """A checked numeric dataset: where it is and how to read it."""

    path: str
    shape: tuple[int, ...]
    code: str
    raw: bool  # read/write with the file's own type (opaque or a float layout numpy lacks)
    swap: bool  # raw big-endian data: swap bytes after reading
    offset: int | None  # file offset of contiguous, unfiltered, verbatim-copyable bytes

    @property
    def nbytes(self) -> int:
        return numel(self.shape) * DTYPES[self.code].itemsize


@dataclass
class _Tree:
    """What a walk of one file found, in walk order."""

    groups: list[str] = field(default_factory=list)  # "" is the root
    datasets: dict[str, _Dataset] = field(default_factory=dict)
    vars_names: dict[str, str] = field(default_factory=dict)  # Keras 3: ".../vars" group -> its name attr


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _text(value: Any) -> str | None:
    """A scalar string attribute value as str, or None."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str):
        return value
    return None


def _strings(value: Any) -> list[str]:
    """A string-list attribute (Keras ``layer_names`` / ``weight_names``) as str; [] if it is not one."""
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.dtype.kind not in "OSU":
        return []
    out = []
    for item in arr.tolist():
        text = _text(item)
        if text is None:
            return []
        out.append(text)
    return out


def _list_attr(obj: Any, name: str) -> list[str]:
    """A Keras list attribute, also when Keras split it into ``name0``, ``name1``, ... chunks."""
    attrs = obj.attrs
    if name in attrs:
        return _strings(attrs[name])
    out: list[str] = []
    i = 0
    while f"{name}{i}" in attrs:
        out.extend(_strings(attrs[f"{name}{i}"]))
        i += 1
    return out


def _has_list_attr(obj: Any, name: str) -> bool:
    return name in obj.attrs or f"{name}0" in obj.attrs


class _Source:
    """One HDF5 file opened read-only and checked; the tree of what it holds."""

    def __init__(self, label: Path, target: str | Path | IO[bytes] | io.IOBase, size: int, *,
                 origin: Path | None, base_offset: int | None, closers: Iterable[Any] = ()) -> None:
        self.label = label  # the file named in errors
        self.origin = origin  # the file a byte range refers to (None: no verbatim ranges)
        self.base_offset = base_offset
        self.size = size
        self._closers = list(closers)
        self.file: h5py.File | None = None
        try:
            with _input_errors(label, "not a readable HDF5 file"):
                if isinstance(target, (str, Path)):
                    self.file = h5py.File(target, "r", locking="best-effort")
                else:
                    self.file = h5py.File(target, "r")
            with _input_errors(label):
                self.tree = _walk(self.file, label, size)
        except BaseException:
            self.close()
            raise

    @property
    def h5(self) -> h5py.File:
        if self.file is None:
            raise InputError(self.label, "the file was closed")
        return self.file

    def read(self, ds: _Dataset, rows: slice | None = None) -> np.ndarray:
        """The dataset (or rows ``rows`` of its first axis) as a little-endian C-order array."""
        shape = ds.shape if rows is None else (rows.stop - rows.start, *ds.shape[1:])
        out = np.empty(shape, dtype=DTYPES[ds.code].numpy)
        if out.size == 0:
            return out
        with _input_errors(self.label, f"cannot read dataset {ds.path!r}"):
            dsid = self.h5[ds.path].id
            if rows is None:
                mspace, fspace = h5s.ALL, h5s.ALL
            else:
                fspace = dsid.get_space()
                fspace.select_hyperslab((rows.start,) + (0,) * (len(ds.shape) - 1), shape)
                mspace = h5s.create_simple(shape)
            mtype = dsid.get_type() if ds.raw else h5t.py_create(out.dtype)
            dsid.read(mspace, fspace, out, mtype=mtype)
        if ds.swap:
            out.view(f"u{out.dtype.itemsize}").byteswap(inplace=True)
        return out

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(Exception):
                self.file.close()
            self.file = None
        while self._closers:
            with contextlib.suppress(Exception):
                self._closers.pop().close()


def _order_flags(group: h5py.Group) -> int:
    """The group's link creation-order flags (0: links are kept by name only)."""
    return int(h5g.open(group.id, b".").get_create_plist().get_link_creation_order())


def _child_names(group: h5py.Group) -> list[str]:
    """Children in creation order where the group tracks it, else by name (digits numerically)."""
    names = list(group)
    if not _order_flags(group) and names and all(_DIGITS.fullmatch(n) for n in names):
        names.sort(key=int)  # Keras 3 vars/0, vars/1, ..., vars/10
    return names


def _walk(f: h5py.File, label: Path, size: int) -> _Tree:
    """Visit every object once, pre-order, never following anything but hard links inside the file."""
    tree = _Tree()
    seen = {h5o.get_info(f.id).addr}
    tree.groups.append("")
    _note_vars(tree, "", f)
    stack: list[tuple[str, h5py.Group, Iterator[str]]] = [("", f, iter(_child_names(f)))]
    while stack:
        gpath, group, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        path = _join(gpath, name)
        try:
            link = group.get(name, getlink=True)
        except TypeError as exc:  # h5py's answer to a user-defined link class
            raise UnsafeInputError(label, f"{path!r} is a user-defined HDF5 link; links are never followed") from exc
        if isinstance(link, h5py.SoftLink):
            raise UnsafeInputError(label, f"{path!r} is a soft link to {link.path!r}; links are never followed")
        if isinstance(link, h5py.ExternalLink):
            raise UnsafeInputError(
                label, f"{path!r} is an external link to {link.filename!r}:{link.path!r}; links out of the file are never followed"
            )
        if not isinstance(link, h5py.HardLink):
            raise UnsafeInputError(label, f"{path!r} is a link of an unknown kind; links are never followed")
        with _input_errors(label, f"cannot open {path!r}"):
            obj = group[name]
            addr = h5o.get_info(obj.id).addr
        if addr in seen:  # a second name for an object already visited, or a cycle
            continue
        seen.add(addr)
        if isinstance(obj, h5py.Group):
            if len(stack) >= MAX_DEPTH:
                raise InputError(label, f"groups nest deeper than {MAX_DEPTH} levels at {path[:200]!r}")
            tree.groups.append(path)
            _note_vars(tree, path, obj)
            stack.append((path, obj, iter(_child_names(obj))))
        elif isinstance(obj, h5py.Dataset):
            with _input_errors(label, f"cannot read the header of dataset {path!r}"):
                tree.datasets[path] = _check_dataset(obj, path, label, size)
        # a committed datatype holds no data
    return tree


def _note_vars(tree: _Tree, path: str, group: h5py.Group) -> None:
    if path.rpartition("/")[2] == "vars" and "name" in group.attrs:
        name = _text(group.attrs["name"])
        if name is not None:
            tree.vars_names[path] = name


def _check_dataset(dset: h5py.Dataset, path: str, label: Path, size: int) -> _Dataset:
    dsid = dset.id
    dcpl = dsid.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        raise UnsafeInputError(label, f"dataset {path!r} is a virtual dataset (its data lives in other files)")
    if dcpl.get_external_count():
        target = dcpl.get_external(0)[0].decode("utf-8", "replace")
        raise UnsafeInputError(label, f"dataset {path!r} keeps its data in the external file {target!r}; never read")
    nfilters = dcpl.get_nfilters()
    for i in range(nfilters):
        fid, _flags, _values, fname = dcpl.get_filter(i)
        if fid not in BUILTIN_FILTERS:
            text = fname.decode("utf-8", "replace") if isinstance(fname, bytes) else str(fname)
            raise UnsafeInputError(
                label, f"dataset {path!r} uses HDF5 filter {fid} ({text or 'unnamed'!r}), a plugin; plugins are never loaded"
            )
    code, raw, swap = _dtype_of(dset, path, label)
    if dset.shape is None:
        raise InputError(label, f"dataset {path!r} has no shape (an empty dataspace), so it is not a tensor")
    shape = tuple(int(n) for n in dset.shape)
    nbytes = numel(shape) * DTYPES[code].itemsize
    offset = _check_extent(dsid, path, label, size, nbytes, layout, nfilters)
    verbatim = (raw and not swap) or (not raw and dsid.get_type().equal(h5t.py_create(DTYPES[code].numpy)))
    return _Dataset(path, shape, code, raw, swap, offset if verbatim and nfilters == 0 and nbytes else None)


def _dtype_of(dset: h5py.Dataset, path: str, label: Path) -> tuple[str, bool, bool]:
    """(code, raw, swap) for a dataset, or InputError for one that is not numeric."""
    tid = dset.id.get_type()
    cls = tid.get_class()
    size = tid.get_size()
    if cls == h5t.OPAQUE:
        name = _text(dset.attrs["dtype"]) if "dtype" in dset.attrs else None
        code = ML_DTYPE_NAMES.get(name or "")
        if code is None or DTYPES[code].itemsize != size:
            raise InputError(
                label, f"dataset {path!r} holds opaque {size}-byte values without a known \"dtype\" attribute (e.g. \"bfloat16\")"
            )
        return code, True, False
    if cls == h5t.FLOAT:
        fields = tid.get_fields()
        swap = tid.get_order() == h5t.ORDER_BE
        raw_code = _RAW_FLOATS.get((size, fields, tid.get_ebias()))
        if raw_code is not None:
            return raw_code, True, swap
        if _IEEE_FIELDS.get(size) != fields:
            raise InputError(label, f"dataset {path!r} uses a {size}-byte float layout {fields} that ckptsurgeon does not read")
    elif cls == h5t.ENUM:
        if dset.dtype.kind != "b":  # h5py stores numpy bools as a FALSE/TRUE enum
            raise InputError(label, f"dataset {path!r} holds enum values, not numbers")
    elif cls != h5t.INTEGER:
        kinds = {
            h5t.STRING: "strings", h5t.VLEN: "variable-length data", h5t.COMPOUND: "compound records",
            h5t.REFERENCE: "object references", h5t.ARRAY: "array-typed elements", h5t.BITFIELD: "bit fields",
        }
        what = kinds.get(cls, "non-numeric data")
        if cls == h5t.COMPOUND and dset.dtype.kind == "c":
            what = f"{dset.dtype} complex numbers"
        raise InputError(label, f"dataset {path!r} holds {what}; only numeric tensors are read")
    code = code_of(dset.dtype)
    if code is None:
        raise InputError(label, f"dataset {path!r} has dtype {dset.dtype}, which ckptsurgeon does not handle")
    return code, False, False


def _check_extent(dsid: Any, path: str, label: Path, size: int, nbytes: int, layout: int, nfilters: int) -> int | None:
    """Refuse a dataset that declares more bytes than the file can give; its offset if contiguous."""
    stored = dsid.get_storage_size()
    if stored > size:
        raise InputError(label, f"dataset {path!r} claims {stored} stored bytes in a {size}-byte file")
    if layout == h5d.CONTIGUOUS:
        offset = dsid.get_offset()
        if offset is None:
            if nbytes > FILL_SLACK:
                raise InputError(label, f"dataset {path!r} declares {nbytes} bytes but stores none")
            return None
        if offset + nbytes > size:
            raise InputError(
                label, f"dataset {path!r} declares {nbytes} bytes at offset {offset}, past the end of the {size}-byte file"
            )
        return int(offset)
    if layout == h5d.CHUNKED:
        limit = stored * (MAX_EXPANSION if nfilters else 1) + FILL_SLACK
        if nbytes > limit:
            raise InputError(
                label, f"dataset {path!r} declares {nbytes} bytes but stores {stored}; refusing a possible decompression bomb"
            )
    elif nbytes > size:  # compact: the data sits in the object header
        raise InputError(label, f"dataset {path!r} declares {nbytes} bytes in a {size}-byte file")
    return None


def _open_file(path: Path) -> _Source:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise InputError(path, "no such file") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    return _Source(path, path, size, origin=path, base_offset=0)


# ------------------------------------------------------------------------------------------------
# naming and order
# ------------------------------------------------------------------------------------------------


def _legacy_root(f: h5py.File, tree: _Tree) -> str | None:
    """The group prefix of a legacy Keras weights tree ("" or "model_weights/"), or None."""
    if _has_list_attr(f, "layer_names"):
        return ""
    if "model_weights" in tree.groups and _has_list_attr(f["model_weights"], "layer_names"):
        return "model_weights/"
    return None


def _is_keras3(tree: _Tree) -> bool:
    return "vars" in tree.vars_names or any(
        g.startswith("layers/") and g.endswith("/vars") for g in tree.groups
    )


def _keras3_layer(path: str, vars_names: Mapping[str, str]) -> str:
    group = _parent(path)
    if path.startswith("optimizer/"):
        return OPTIMIZER_LAYER
    if group == "vars":
        return vars_names.get("vars", "")
    if not group.endswith("/vars"):
        return group
    owner = group[: -len("/vars")]
    parts = owner.split("/")
    names = [vars_names[p + "/vars"] for p in ("/".join(parts[:i]) for i in range(1, len(parts))) if p + "/vars" in vars_names]
    names.append(vars_names.get(group, parts[-1]))
    return "/".join(names)


def _legacy_order(f: h5py.File, tree: _Tree, prefix: str) -> tuple[list[str], dict[str, str]]:
    """Dataset paths in layer_names / weight_names order, and the layer of each."""
    order: list[str] = []
    layers: dict[str, str] = {}
    groups = set(tree.groups)
    root = f[prefix.rstrip("/")] if prefix else f
    for layer in _list_attr(root, "layer_names"):
        gpath = prefix + layer
        if gpath not in groups:
            continue
        for weight in _list_attr(f[gpath], "weight_names"):
            path = _join(gpath, weight)
            if path in tree.datasets and path not in layers:
                order.append(path)
                layers[path] = layer
    if "optimizer_weights" in groups:
        for weight in _list_attr(f["optimizer_weights"], "weight_names"):
            path = _join("optimizer_weights", weight)
            if path in tree.datasets and path not in layers:
                order.append(path)
                layers[path] = OPTIMIZER_LAYER
    layer_groups = {prefix + name for name in _list_attr(root, "layer_names")}
    for path in tree.datasets:
        if path in layers:
            continue
        order.append(path)
        if path.startswith("optimizer_weights/"):
            layers[path] = OPTIMIZER_LAYER
        else:
            top = path[len(prefix):].partition("/")[0] if path.startswith(prefix) else ""
            layers[path] = top if prefix + top in layer_groups and "/" in path[len(prefix):] else _parent(path)
    return order, layers


def _metadata(f: h5py.File) -> dict[str, str]:
    """Root attributes that are scalar strings or numbers, as str; Keras configurations left out.

    Values that are not text (bytes that are not UTF-8, which h5py hands out with surrogate escapes)
    are left out like any other non-scalar attribute.
    """
    out: dict[str, str] = {}
    for key in f.attrs:
        if key in CONFIG_ATTRS:
            continue
        try:
            value = f.attrs[key]
        except (OSError, TypeError, ValueError):
            continue
        text = _scalar_text(value)
        if text is not None and len(text) <= MAX_METADATA_CHARS and _is_utf8(key) and _is_utf8(text):
            out[key] = text
    return out


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scalar_text(value: Any) -> str | None:
    """A scalar string or number attribute as str, or None for anything else."""
    text = _text(value)
    if text is None:
        arr = np.asarray(value)
        if arr.shape == () and arr.dtype.kind in "biuf":
            text = str(arr.item())
    return text


# ------------------------------------------------------------------------------------------------
# the "like" template a writer copies
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attr:
    name: str
    value: Any
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        arr = np.asarray(self.value)
        if arr.dtype.kind == "O":
            return sum(len(str(v)) for v in arr.reshape(-1).tolist())
        return int(arr.nbytes)


@dataclass(frozen=True)
class _LikeDataset:
    path: str
    code: str
    shape: tuple[int, ...]
    maxshape: tuple[int, ...] | None
    tid: Any  # a transient h5t.TypeID, the dataset's file type
    raw: bool
    dcpl: Any  # h5p.PropDCID copied from the dataset
    attrs: tuple[_Attr, ...]


@dataclass
class _LikeGroup:
    path: str
    attrs: list[_Attr]
    order_flags: int  # link / attribute creation-order tracking


@dataclass
class _Template:
    groups: dict[str, _LikeGroup]  # in walk order, "" is the root
    datasets: dict[str, _LikeDataset]


def _read_attrs(obj: Any, label: Path, path: str) -> list[_Attr]:
    out = []
    for name in obj.attrs:
        dtype = obj.attrs.get_id(name).dtype
        if h5py.check_ref_dtype(dtype) is not None:
            raise InputError(label, f"attribute {name!r} of {path or '/'!r} holds object references, which cannot be copied")
        out.append(_Attr(name, obj.attrs[name], dtype))
    return out


def _template(sources: list[_Source], order: list[tuple[int, str]]) -> _Template:
    groups: dict[str, _LikeGroup] = {}
    datasets: dict[str, _LikeDataset] = {}
    for src in sources:
        f = src.h5
        with _input_errors(src.label):
            for gpath in src.tree.groups:
                obj = f[gpath] if gpath else f
                group = groups.setdefault(gpath, _LikeGroup(gpath, [], _order_flags(obj)))
                have = {a.name for a in group.attrs}
                group.attrs.extend(a for a in _read_attrs(obj, src.label, gpath) if a.name not in have)
    for index, path in order:
        src = sources[index]
        ds = src.tree.datasets[path]
        with _input_errors(src.label):
            dset = src.h5[path]
            dsid = dset.id
            attrs = _read_attrs(dset, src.label, path)
            if ds.raw and dsid.get_type().get_class() == h5t.OPAQUE:
                attrs = [a for a in attrs if a.name != "dtype"]  # restated from the dtype when written
            space = dsid.get_space()
            maxdims = space.get_simple_extent_dims(maxdims=True) if space.get_simple_extent_ndims() else ()
            maxshape = tuple(-1 if m == h5s.UNLIMITED else int(m) for m in maxdims) or None
            datasets[path] = _LikeDataset(
                path, ds.code, ds.shape, maxshape, dsid.get_type().copy(), ds.raw,
                dsid.get_create_plist(), tuple(attrs),
            )
    return _Template(groups, datasets)


# ------------------------------------------------------------------------------------------------
# renames in like mode: the like-file's layout with renamed datasets (and their groups) moved
# ------------------------------------------------------------------------------------------------


class _NoLayout(Exception):
    """Renames that the like-file's Keras bookkeeping cannot follow; the message says why."""


def _ancestors(path: str) -> list[str]:
    """The groups a path runs through, nearest first, the root left out."""
    out = []
    parent = _parent(path)
    while parent:
        out.append(parent)
        parent = _parent(parent)
    return out


def _under(path: str, group: str) -> bool:
    return not group or path.startswith(group + "/")


def _align(old: list[str], new: list[str]) -> list[tuple[str, str]]:
    """Pair two chains of groups (nearest first) until they meet: the groups a move renames."""
    pairs = []
    for a, b in zip(old, new, strict=False):
        if a == b:
            break
        pairs.append((a, b))
    return pairs


def _group_list(group: _LikeGroup, name: str) -> list[str]:
    """A Keras list attribute of a like-group (whole, or split into ``name0``, ``name1``, ...)."""
    attrs = {a.name: a for a in group.attrs}
    if name in attrs:
        return _strings(attrs[name].value)
    out: list[str] = []
    i = 0
    while f"{name}{i}" in attrs:
        out.extend(_strings(attrs[f"{name}{i}"].value))
        i += 1
    return out


def _map_list_attrs(attrs: list[_Attr], name: str, fn: Any) -> list[_Attr]:
    """``attrs`` with the entries of the list attribute ``name`` (or its chunks) mapped by ``fn``; None drops one."""
    pattern = re.compile(re.escape(name) + r"\d*")
    out = []
    for attr in attrs:
        entries = _strings(attr.value) if pattern.fullmatch(attr.name) else []
        if entries:
            mapped = [fn(e) for e in entries]
            if mapped != entries:
                attr = _string_list_attr(attr, [m for m in mapped if m is not None])
        out.append(attr)
    return out


def _string_list_attr(attr: _Attr, entries: list[str]) -> _Attr:
    """A string-list attribute with new entries, stored as the original was (fixed or variable length)."""
    if not entries:  # what Keras writes for an empty list
        return _Attr(attr.name, np.array([], dtype=np.float64), np.dtype(np.float64))
    arr = np.asarray(attr.value)
    if arr.dtype.kind == "S":
        encoded = [e.encode("utf-8") for e in entries]
        dtype = np.dtype(f"S{max(1, *(len(e) for e in encoded))}")
        return _Attr(attr.name, np.array(encoded, dtype=dtype), dtype)
    as_bytes = isinstance(arr.reshape(-1)[0], (bytes, np.bytes_))
    values = [e.encode("utf-8") for e in entries] if as_bytes else entries
    return _Attr(attr.name, np.array(values, dtype=object), attr.dtype)


def _keras_index(text: str) -> bool:
    return bool(_DIGITS.fullmatch(text)) and str(int(text)) == text


def _relayout(tpl: _Template, names: list[str], origins: Mapping[str, str]) -> _Template:
    """The like-template as the output's: renamed datasets where their like-datasets were, groups moved along.

    ``names`` are the output tensors; ``origins`` maps an output name to the like-dataset it stands
    for. A like-group is moved (with its attributes and creation-order flags) when every written
    dataset below it is renamed into one other group at the matching level; groups left without
    their datasets and holding no attributes are dropped; empty groups inside a moved group move
    with it. Legacy Keras bookkeeping is rewritten in place (``layer_names`` entries of moved layer
    groups, ``weight_names`` entries of renamed weights); Keras 3 ``vars`` groups must stay
    ``<layer>/vars/0..n-1``. Raises :class:`_NoLayout` when the renames cannot be expressed that way.
    """
    groups, like_ds = tpl.groups, tpl.datasets
    written: dict[str, str] = {}  # like-dataset -> the output name standing for it
    for name in names:
        old = origins.get(name, name)
        if old not in like_ds:
            continue
        if old in written:
            raise _NoLayout(f"{written[old]!r} and {name!r} both stand for {old!r}")
        written[old] = name
    renamed = {old: new for old, new in written.items() if old != new}
    if not renamed:
        return tpl

    # Legacy Keras: the layer groups and which list attribute names each dataset.
    prefix: str | None = None
    if _group_list(groups[""], "layer_names"):
        prefix = ""
    elif "model_weights" in groups and _group_list(groups["model_weights"], "layer_names"):
        prefix = "model_weights/"
    holder = prefix.rstrip("/") if prefix is not None else None
    layer_depth: dict[str, int] = {}
    if holder is not None and prefix is not None:
        for layer in _group_list(groups[holder], "layer_names"):
            if prefix + layer in groups:
                layer_depth[prefix + layer] = layer.count("/") + 1
    listed: dict[str, str] = {}  # dataset -> the group whose weight_names lists it
    for gpath, group in groups.items():
        for entry in _group_list(group, "weight_names"):
            listed.setdefault(_join(gpath, entry), gpath)

    # Which like-group becomes which output group, as each rename says.
    pairs: dict[str, list[tuple[str, str]]] = {}
    for old, new in renamed.items():
        owner = listed.get(old)
        if owner is None or prefix is None:
            pairs[old] = _align(_ancestors(old), _ancestors(new))
            continue
        if owner in layer_depth:  # a layer's weight: the layer group is the first parts below the root
            parts = new[len(prefix):].split("/") if new.startswith(prefix) else []
            k = layer_depth[owner]
            target = prefix + "/".join(parts[:k]) if len(parts) > k else None
        else:  # optimizer_weights and other lists stay where they are
            target = owner if _under(new, owner) else None
        if target is None:
            pairs[old] = []
            continue
        inner = _align([a for a in _ancestors(old) if _under(a, owner)], [a for a in _ancestors(new) if _under(a, target)])
        pairs[old] = inner + ([(owner, target)] if owner != target else [])

    held: dict[str, int] = {}  # like-group -> written datasets below it
    left: dict[str, int] = {}  # like-group -> written datasets that leave it
    for old, new in written.items():
        for a in _ancestors(old):
            held[a] = held.get(a, 0) + 1
            if not _under(new, a):
                left[a] = left.get(a, 0) + 1
    votes: dict[str, dict[str, int]] = {}
    for ps in pairs.values():
        for o, n in ps:
            votes.setdefault(o, {})
            votes[o][n] = votes[o].get(n, 0) + 1
    moved = {
        o: n for o, ns in votes.items() for n in ns
        if len(ns) == 1 and ns[n] == held.get(o, 0) and not _under(n, o) and not _under(o, n)
    }
    vacated = {g for g in groups if g and held.get(g) and held.get(g) == left.get(g)}
    while True:  # a move onto a group that stays, or two moves onto one path, is no move
        count: dict[str, int] = {}
        for n in moved.values():
            count[n] = count.get(n, 0) + 1
        bad = [o for o, n in moved.items() if count[n] > 1 or (
            n in groups and n not in moved and not (n in vacated and not groups[n].attrs))]
        if not bad:
            break
        for o in bad:
            del moved[o]

    place: dict[str, str | None] = {"": ""}
    for g in groups:
        if not g:
            continue
        outer = next((a for a in _ancestors(g) if a in moved), None)
        if g in moved:
            place[g] = moved[g]
        elif not held.get(g) and outer is not None:
            place[g] = moved[outer] + g[len(outer):]
        elif g in vacated and not groups[g].attrs:
            place[g] = None
        else:
            place[g] = g
    taken = {p for p in place.values() if p}
    for path in sorted(taken):  # a dropped group still needed as a parent stays
        for a in _ancestors(path):
            if a in place and place[a] is None and a not in taken:
                place[a] = a
    placed = [p for p in place.values() if p is not None]
    if len(set(placed)) != len(placed):
        dup = sorted({p for p in placed if placed.count(p) > 1})
        raise _NoLayout(f"two groups would move to {dup[0]!r}")

    def entry_of(gpath: str, out_group: str) -> Any:
        def fn(entry: str) -> str | None:
            dpath = _join(gpath, entry)
            if dpath not in like_ds:
                return entry
            out = written.get(dpath)
            if out is None:
                return None  # not written: weight_names must name only datasets that exist
            if not _under(out, out_group):
                raise _NoLayout(f"{out!r} is no longer inside {out_group!r}, whose weight_names lists it as {entry!r}")
            return out[len(out_group) + 1:] if out_group else out
        return fn

    def layer_of(layer: str) -> str:
        assert prefix is not None
        out = place.get(prefix + layer)
        if out is None or out == prefix + layer:
            return layer
        new_layer = out[len(prefix):] if out.startswith(prefix) else ""
        if not new_layer or new_layer.count("/") != layer.count("/"):
            raise _NoLayout(f"layer group {prefix + layer!r} would move to {out!r}, which is not a layer group")
        return new_layer

    out_groups: dict[str, _LikeGroup] = {}
    for gpath, group in groups.items():
        out_path = place[gpath]
        if out_path is None:
            continue
        attrs = _map_list_attrs(group.attrs, "weight_names", entry_of(gpath, out_path))
        if gpath == holder:
            attrs = _map_list_attrs(attrs, "layer_names", layer_of)
            layers = _group_list(_LikeGroup(out_path, attrs, 0), "layer_names")
            if len(set(layers)) != len(layers):
                raise _NoLayout(f"two layers would be named {sorted(x for x in layers if layers.count(x) > 1)[0]!r}")
        out_groups[out_path] = _LikeGroup(out_path, attrs, group.order_flags)

    if prefix is None and any(_is_vars_group(g, groups[g]) for g in groups):
        _check_keras3_vars(renamed, place, names, set(out_groups))
    return _Template(out_groups, {out: like_ds[old] for old, out in written.items()})


def _is_vars_group(path: str, group: _LikeGroup) -> bool:
    """A Keras 3 ``vars`` group, as :func:`_is_keras3` tells Keras 3 files."""
    if path == "vars":
        return any(a.name == "name" for a in group.attrs)
    return path.startswith("layers/") and path.endswith("/vars")


def _check_keras3_vars(renamed: Mapping[str, str], place: Mapping[str, str | None], names: list[str],
                       out_groups: set[str]) -> None:
    """Keras 3 loads a layer's variables from ``vars/0``, ``vars/1``, ...: renames must keep that."""
    members: dict[str, set[str]] = {}
    for name in names:
        members.setdefault(_parent(name), set()).add(name.rpartition("/")[2])
    touched = set()
    for old, new in renamed.items():
        old_group, new_group = _parent(old), _parent(new)
        if old_group.rpartition("/")[2] != "vars":
            continue
        if new_group.rpartition("/")[2] != "vars" or not _keras_index(new.rpartition("/")[2]):
            raise _NoLayout(f"{old!r} is a Keras 3 layer variable; {new!r} is not <layer>/vars/<index>")
        if new_group not in out_groups:
            raise _NoLayout(f"{new!r} would be in a vars group that no renamed layer group becomes")
        touched.add(new_group)
        if place.get(old_group):
            touched.add(str(place[old_group]))
    for group in sorted(touched):
        have = members.get(group, set())
        if have != {str(i) for i in range(len(have))}:
            raise _NoLayout(f"the variables of {group!r} would be numbered {sorted(have)}, not 0..{len(have) - 1}")


def _plain_like(tpl: _Template, names: list[str], origins: Mapping[str, str]) -> _Template:
    """Plain placement (every tensor at its name, no like-groups or group attributes), like-datasets' storage kept."""
    datasets = {}
    for name in names:
        old = origins.get(name, name)
        if old in tpl.datasets:
            datasets[name] = tpl.datasets[old]
    return _Template({"": _LikeGroup("", [], _TRACK_ORDER)}, datasets)


# ------------------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------------------


class _HDF5Reader(BaseReader):
    """Common part of the HDF5 readers: tensors located by (source index, dataset path)."""

    format = "hdf5"

    def __init__(self, path: str | Path) -> None:
        super().__init__(Path(path))
        self._sources: list[_Source] = []

    def _catalogue(self, order: list[tuple[int, str]], layers: Mapping[tuple[int, str], str]) -> None:
        self.tensors = []
        for i, path in order:
            ds = self._sources[i].tree.datasets[path]
            self.tensors.append(TensorInfo(path, ds.shape, ds.code, layers[(i, path)], loc=(i, path)))
        self._index = None

    def _locate(self, name: str) -> tuple[_Source, _Dataset]:
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

    def _template(self) -> _Template:
        """The structure a like-writer reproduces (the reader must be open)."""
        return _template(self._sources, [t.loc for t in self.tensors])

    def close(self) -> None:
        for src in self._sources:
            src.close()

    def _open_single(self, src: _Source) -> None:
        """Catalogue a reader made of one HDF5 file, telling plain HDF5 and Keras files apart."""
        self._sources = [src]
        tree = src.tree
        with _input_errors(src.label):
            prefix = _legacy_root(src.h5, tree)
            self.metadata = _metadata(src.h5)
            if prefix is not None:
                self.format = "keras-h5"
                paths, layer_of = _legacy_order(src.h5, tree, prefix)
            else:
                paths = list(tree.datasets)
                if _is_keras3(tree):
                    self.format = "keras3-h5"
                    layer_of = {p: _keras3_layer(p, tree.vars_names) for p in paths}
                else:
                    self.format = "hdf5"
                    layer_of = {p: _parent(p) for p in paths}
        self._catalogue([(0, p) for p in paths], {(0, p): layer_of[p] for p in paths})


class Reader(_HDF5Reader):
    """One HDF5 file: plain HDF5, a legacy Keras ``.h5`` or a Keras 3 ``.weights.h5``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        src = _open_file(self.path)
        try:
            self._open_single(src)
        except BaseException:
            self.close()
            raise


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


class KerasZipReader(_HDF5Reader):
    """A ``.keras`` archive: the tensors of its ``model.weights.h5`` member, named as inside it.

    A stored member (how Keras writes it) is read in place through a window on the archive; a
    compressed one is inflated into an anonymous temporary file first.
    """

    format = "keras-zip"

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        try:
            self._open_member()
        except BaseException:
            self.close()
            raise

    def _open_member(self) -> None:
        path = self.path
        with _input_errors(path, "not a readable zip archive"):
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
                    self._unchecked: tuple[int, int, int] | None = (start, info.file_size, info.CRC)
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
        self._open_single(_Source(label, target, msize, origin=origin, base_offset=base, closers=closers))
        self.format = "keras-zip"

    _unchecked = None  # (offset, size, CRC) of a STORED weights member not yet checked against its CRC

    def _locate(self, name: str) -> tuple[_Source, _Dataset]:
        """Before the first tensor's data is used, a STORED weights member is checked against its CRC
        (zipfile checks a compressed one as it inflates it): one pass, in 1 MiB reads."""
        if self._unchecked is not None:
            start, size, expected = self._unchecked
            crc = 0
            with _input_errors(self.path, f"cannot read archive member {KERAS_MEMBER}"), open(self.path, "rb") as f:
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


class KerasShardedReader(_HDF5Reader):
    """Keras 3 sharded weights: a ``*.weights.json`` index (``weight_map``) and its HDF5 shards.

    Tensors are the union of the shards' datasets, named by their path inside the shards; a dataset
    path found in two shards is an error.
    """

    format = "keras3-sharded"

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        try:
            self._open_shards()
        except BaseException:
            self.close()
            raise

    @property
    def files(self) -> list[Path]:
        return [self.path, *self.shards]

    def _open_shards(self) -> None:
        self.shards = [self.path.parent / name for name in self._shard_names()]
        for shard in self.shards:
            if not shard.is_file():
                raise InputError(self.path, f"shard {shard.name!r} listed in the index is missing")
            self._sources.append(_open_file(shard))
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
            with _input_errors(src.label):
                for key, value in _metadata(src.h5).items():
                    self.metadata.setdefault(key, value)
        order = [(i, p) for i, src in enumerate(self._sources) for p in src.tree.datasets]
        self._catalogue(order, {(i, p): _keras3_layer(p, vars_names) for i, p in order})

    def _shard_names(self) -> list[str]:
        try:
            size = self.path.stat().st_size
            if size > MAX_INDEX_BYTES:
                raise InputError(self.path, f"a {size} byte index is too large")
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError as exc:
            raise InputError(self.path, "no such file") from exc
        except OSError as exc:
            raise InputError(self.path, f"cannot read: {exc.strerror or exc}") from exc
        except (ValueError, RecursionError) as exc:
            raise InputError(self.path, f"not valid JSON ({exc})") from exc
        wmap = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(wmap, dict):
            raise InputError(self.path, "no \"weight_map\" object; not a Keras sharded weights index")
        names: list[str] = []
        for key, shards in wmap.items():
            if not isinstance(shards, list) or not all(isinstance(s, str) for s in shards):
                raise InputError(self.path, f"weight_map entry {key!r} is not a list of shard file names")
            for shard in shards:
                if not shard or "/" in shard or "\\" in shard or shard in (".", "..") or "\x00" in shard:
                    raise UnsafeInputError(self.path, f"shard name {shard!r} is not a plain file name beside the index")
                if shard not in names:
                    names.append(shard)
        if not names:
            raise InputError(self.path, "the weight_map names no shards")
        return names


# ------------------------------------------------------------------------------------------------
# writers
# ------------------------------------------------------------------------------------------------


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


def _convention(code: str) -> str | None:
    """The ``dtype`` attribute written with a dtype numpy lacks (stored opaque, as Keras does)."""
    return _CONVENTION_NAME.get(code)


def _file_type(code: str) -> Any:
    """The HDF5 type a dtype is written as: h5py's own mapping, opaque for the ml_dtypes floats."""
    if _convention(code) is not None:
        return h5t.create(h5t.OPAQUE, DTYPES[code].itemsize)  # what h5py makes of bfloat16: no tag
    return h5t.py_create(DTYPES[code].numpy, logical=True)


class Writer(BaseWriter):
    """A streaming HDF5 writer: plain datasets at the tensors' paths, or a file like ``like``'s.

    With ``like`` and ``origins`` (renamed tensors) the like-file's layout and Keras bookkeeping
    follow the renames (see the module docstring). ``layout_fallback`` is None, or the reason the
    renames could not be expressed in the like-file's Keras bookkeeping and the file was written
    with plain placement instead.
    """

    format = "hdf5"

    def __init__(self, path: str | Path, *, metadata: Mapping[str, str] | None = None,
                 like: BaseReader | None = None) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        self._file: h5py.File | None = None
        self._template: _Template | None = None
        self._groups: set[str] = {""}  # groups made so far
        self.layout_fallback: str | None = None  # why renames were placed plainly, if they were
        self._lcpl = h5p.create(h5p.LINK_CREATE)
        self._lcpl.set_char_encoding(h5t.CSET_UTF8)

    # --- state machine hooks ----------------------------------------------------------------
    def _begin(self) -> None:
        names = [s.name for s in self.specs]
        if isinstance(self.like, _HDF5Reader):
            like_tpl = self.like._template()
            if self.origins:
                try:
                    like_tpl = _relayout(like_tpl, names, self.origins)
                except _NoLayout as exc:
                    self.layout_fallback = str(exc)
                    like_tpl = _plain_like(like_tpl, names, self.origins)
            self._template = like_tpl
        tpl = self._template
        _check_tree(names, tpl.groups if tpl else ())
        # Plain files keep their tensors' order: links are tracked in creation order.
        track = bool(tpl.groups[""].order_flags) if tpl else True
        with _output_errors(self.path, "cannot create the HDF5 file"):
            self._file = h5py.File(self.path, "w-", libver=LIBVER, track_order=track)
        try:
            with _output_errors(self.path, "cannot write the HDF5 structure"):
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
        if like is None or like.code != spec.dtype or like.shape != spec.shape or not isinstance(reader, _HDF5Reader):
            return False
        src, ds = reader._locate(source_name)
        if ds.code != spec.dtype or ds.shape != spec.shape or not ds.nbytes:
            return False
        dcpl = self._dcpl(spec, like, same_type=True)
        with _input_errors(src.label, f"cannot read dataset {ds.path!r}"):
            sid = src.h5[ds.path].id
            offsets = _stored_chunks(sid, dcpl, like.tid, ds.shape)
        if offsets is None:
            return False
        self._take(name)
        self._put(spec, like, None, stored=(src.label, sid, offsets))
        return True

    def _put(self, spec: TensorSpec, like: _LikeDataset | None, data: np.ndarray | None,
             stored: tuple[Path, Any, list[tuple[int, ...]]] | None = None) -> None:
        try:
            with _output_errors(self.path, f"cannot write tensor {spec.name!r}"):
                self._make_groups(spec.name)
                self._write_dataset(spec, data, like, stored)
        except BaseException:
            self._close()
            self._state = "DONE"
            raise

    def _finish(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            with _output_errors(self.path, "cannot finish the HDF5 file"):
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

    def _ensure_group(self, path: str, like_groups: Mapping[str, _LikeGroup]) -> None:
        """Make a like-group (after its parents), with its own creation-order flags."""
        if path in self._groups:
            return
        self._ensure_group(_parent(path), like_groups)
        group = like_groups.get(path)
        self._make_group(path, group.order_flags if group is not None else _TRACK_ORDER)

    def _make_groups(self, name: str) -> None:
        """Create the groups a tensor's path runs through, when it first needs them (creation order)."""
        parts = name.split("/")
        for i in range(1, len(parts)):
            path = "/".join(parts[:i])
            if path not in self._groups:
                self._make_group(path, _TRACK_ORDER)

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
            same = key in root_like and _scalar_text(root_like[key].value) == str(value)
            if not same:
                self._h5.attrs[key] = str(value)

    def _pruned(self, gpath: str, attr: _Attr, written: set[str]) -> _Attr:
        """A ``weight_names`` list without the entries whose datasets are not written."""
        tpl = self._template
        if tpl is None or not _WEIGHT_NAMES.fullmatch(attr.name):
            return attr
        entries = _strings(attr.value)
        if not entries:
            return attr
        keep = [(_join(gpath, e) in written or _join(gpath, e) not in tpl.datasets) for e in entries]
        if all(keep):
            return attr
        arr = np.asarray(attr.value)[np.array(keep, dtype=bool)]
        if arr.size == 0:
            return _Attr(attr.name, np.array([], dtype=np.float64), np.dtype(np.float64))
        return _Attr(attr.name, arr, attr.dtype)

    def _write_dataset(self, spec: TensorSpec, data: np.ndarray | None, like: _LikeDataset | None,
                       stored: tuple[Path, Any, list[tuple[int, ...]]] | None = None) -> None:
        shape = spec.shape
        same_type = like is not None and like.code == spec.dtype
        if like is not None and same_type:
            tid, raw = like.tid, like.raw
        else:
            tid, raw = _file_type(spec.dtype), _convention(spec.dtype) is not None
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
                    with _input_errors(label, f"cannot read a chunk of dataset {spec.name!r}"):
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
            name = _convention(spec.dtype)
            if raw and name is not None and tid.get_class() == h5t.OPAQUE:
                dset.attrs["dtype"] = name
        finally:
            dsid.close()

    def _dcpl(self, spec: TensorSpec, like: _LikeDataset | None, same_type: bool) -> Any:
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


def _write_attr(obj: Any, attr: _Attr) -> None:
    obj.attrs.create(attr.name, attr.value, dtype=attr.dtype)


class KerasZipWriter(BaseWriter):
    """A streaming ``.keras`` archive writer; ``model.weights.h5`` goes through :class:`Writer`.

    The weights are written to a temporary file beside ``path`` (its name starts with
    ``path.name``), then the archive is assembled at ``finish``; the temporary file is removed on
    finish, abort and error. With ``like=`` a :class:`KerasZipReader` the other members are copied
    from the like-archive (reopened by path at ``finish``).
    """

    format = "keras"

    def __init__(self, path: str | Path, *, metadata: Mapping[str, str] | None = None,
                 like: BaseReader | None = None) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        self._weights_path = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}.{KERAS_MEMBER}")
        self._inner: Writer | None = None

    def _begin(self) -> None:
        inner_like = self.like if isinstance(self.like, _HDF5Reader) else None
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
            with _output_errors(self.path, "cannot write the .keras archive"):
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
                with _input_errors(like_path, "cannot read the like-archive"), zipfile.ZipFile(like_path) as src:
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


__all__ = ["KerasShardedReader", "KerasZipReader", "KerasZipWriter", "Reader", "Writer"]
