"""Safe h5py access: the one module that imports h5py.

Filter plugins
    An HDF5 filter plugin is a shared library that HDF5 loads when a file names a filter it does
    not know: code chosen by the file. Right where h5py is imported, this module empties HDF5's
    plugin search path through HDF5's own API (``H5PLremove``, as ``h5py.h5pl.remove``), so HDF5
    has nowhere to look for a plugin and no filter but the compiled-in ones can be used. This is a
    setting of the HDF5 library in this process: it holds whether or not h5py was imported before
    this module, and it changes no environment variable, so child processes are not affected.
    HDF5's switch for exactly this, ``H5PLset_loading_state``, is not wrapped by h5py (``h5py.h5pl``
    has ``append``, ``prepend``, ``insert``, ``replace``, ``remove``, ``get`` and ``size`` only), and
    the ``HDF5_PLUGIN_PRELOAD`` environment variable would reach every child process. Datasets
    naming a filter outside ``BUILTIN_FILTERS`` are refused before any read anyway; the empty
    search path makes sure no plugin is loaded even where something reads past that check.

Safety
    Files are checked when they are opened, before any tensor byte is read. The tree is walked link
    by link and nothing is followed: soft, external and user-defined links, datasets whose data lives
    in external files, virtual datasets, and filters other than HDF5's and h5py's built-in ones
    (gzip, shuffle, fletcher32, szip, nbit, scaleoffset, lzf) are refused with
    :class:`UnsafeInputError`. An object reachable under two names (or through a cycle of hard
    links) is visited once. Datasets that are not numeric (strings, variable-length, compound,
    references, enums other than h5py's bool) are refused with :class:`InputError`, and so is a
    dataset that declares more bytes than the file can hold (contiguous: its extent must lie inside
    the file; chunked: at most the stored bytes, times ``MAX_EXPANSION`` when compressed;
    unallocated data only up to ``FILL_SLACK`` bytes). Any h5py or OS error met while reading an
    input becomes a one-line :class:`InputError` (:func:`input_errors`), and while writing a
    one-line :class:`OutputError` (:func:`output_errors`).

Dtypes
    Numeric types map to ckptsurgeon's codes; big-endian data is converted to little-endian when
    read. Keras 3 stores a bfloat16 variable as an HDF5 opaque type of the same size with a
    ``dtype="bfloat16"`` attribute on the dataset; ckptsurgeon reads that convention and writes
    BF16 and the float8 codes the same way (``dtype`` = the ml_dtypes name, e.g.
    ``"float8_e4m3fn"``), so the bytes round-trip exactly. Keras 3 loads such bfloat16 datasets; it
    cannot load float8 variables from ``.weights.h5`` files at all (not even the ones it writes,
    which carry no ``dtype`` attribute). Floats in an HDF5 2.0 bfloat16 / float8 bit layout are
    read as BF16 / F8 too.

The other modules of the package take h5py and its low-level modules from here
(``from ckptsurgeon.formats.hdf5._h5 import h5py, h5t``), never by importing h5py themselves.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import h5py
import numpy as np
from h5py import h5d, h5g, h5l, h5o, h5p, h5pl, h5s, h5t

from ckptsurgeon.errors import CkptError, InputError, OutputError, UnsafeInputError
from ckptsurgeon.files import check_input
from ckptsurgeon.formats.hdf5._superblock import check_end
from ckptsurgeon.tensors import DTYPES, ML_DTYPE_NAMES, code_of, gc_paused, numel


def _disable_plugins() -> None:
    """Empty HDF5's plugin search path: no filter plugin can be found, so none is loaded."""
    while h5pl.size():
        h5pl.remove(0)


_disable_plugins()

# HDF5's own filters plus h5py's compiled-in lzf: everything else would need a plugin.
BUILTIN_FILTERS: dict[int, str] = {
    1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf",
}
# A compressed dataset may declare at most this many times its stored bytes (gzip's ceiling is ~1032:1).
MAX_EXPANSION = 1100
# Datasets up to this size may be unallocated (read as their fill value) or partly so.
FILL_SLACK = 1 << 20
MAX_DEPTH = 256  # group nesting; real checkpoints stay far below
DIGITS = re.compile(r"\d+")
TRACK_ORDER = h5p.CRT_ORDER_TRACKED | h5p.CRT_ORDER_INDEXED  # creation order kept, for new groups
# IEEE layouts h5py maps to numpy types, as (sign pos, exp pos, exp size, mantissa pos, mantissa size).
_IEEE_FIELDS = {2: (15, 10, 5, 0, 10), 4: (31, 23, 8, 0, 23), 8: (63, 52, 11, 0, 52)}
# Float layouts numpy lacks, read and written bit for bit: (size, fields, exponent bias) -> code.
_RAW_FLOATS = {
    (2, (15, 7, 8, 0, 7), 127): "BF16",
    (1, (7, 3, 4, 0, 3), 7): "F8_E4M3",
    (1, (7, 2, 5, 0, 2), 15): "F8_E5M2",
}
# Object header message types, as bits of an object's header info (``h5o.get_info(...).hdr.mesg.present``).
_LINK_INFO_MESSAGE = 1 << 0x02
_EXTERNAL_FILES_MESSAGE = 1 << 0x07
_FILTER_PIPELINE_MESSAGE = 1 << 0x0B
_CONVENTION_NAME = {code: name for name, code in ML_DTYPE_NAMES.items()}


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------


# What h5py, HDF5 and the OS raise on bad input (CkptError is none of these: it passes through).
_READ_ERRORS = (OSError, ValueError, KeyError, RuntimeError, TypeError, IndexError, EOFError, OverflowError,
                NotImplementedError, struct.error, zlib.error, zipfile.BadZipFile)


@contextlib.contextmanager
def input_errors(path: Path, what: str = "cannot read HDF5 data") -> Iterator[None]:
    """Turn any h5py / OS error raised inside into a one-line InputError naming ``path``."""
    try:
        yield
    except _READ_ERRORS as exc:
        raise InputError(path, f"{what} ({_exc_text(exc)})") from exc


@contextlib.contextmanager
def output_errors(path: Path, what: str) -> Iterator[None]:
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
class DatasetInfo:
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
class Tree:
    """What a walk of one file found, in walk order."""

    groups: list[str] = field(default_factory=list)  # "" is the root
    datasets: dict[str, DatasetInfo] = field(default_factory=dict)
    vars_names: dict[str, str] = field(default_factory=dict)  # Keras 3: ".../vars" group -> its name attr


def join_path(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def parent_path(path: str) -> str:
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


def string_list(value: Any) -> list[str]:
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


class Source:
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
            with input_errors(label, "not a readable HDF5 file"):
                _check_superblock(label, target, size)
                if isinstance(target, (str, Path)):
                    self.file = h5py.File(target, "r", locking="best-effort")
                else:
                    self.file = h5py.File(target, "r")
                _limit_metadata_cache(self.file)
            with input_errors(label):
                self.tree = _walk(self.file, label, size)
        except BaseException:
            self.close()
            raise

    @property
    def h5(self) -> h5py.File:
        if self.file is None:
            raise InputError(self.label, "the file was closed")
        return self.file

    def read(self, ds: DatasetInfo, rows: slice | None = None) -> np.ndarray:
        """The dataset (or rows ``rows`` of its first axis) as a little-endian C-order array."""
        shape = ds.shape if rows is None else (rows.stop - rows.start, *ds.shape[1:])
        out = np.empty(shape, dtype=DTYPES[ds.code].numpy)
        if out.size == 0:
            return out
        with input_errors(self.label, f"cannot read dataset {ds.path!r}"):
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


# HDF5's metadata cache may grow to 32 MB of file metadata by default, and its memory is several
# times that: the walk of a file with 100,000 datasets peaked at 331 MB with the default and at
# 142 MB with this limit, in the same time. A file is walked once and then read tensor by tensor.
METADATA_CACHE_BYTES = 4 << 20


def _limit_metadata_cache(f: h5py.File) -> None:
    config = f.id.get_mdc_config()
    config.max_size = METADATA_CACHE_BYTES
    config.min_size = min(config.min_size, METADATA_CACHE_BYTES)
    config.initial_size = min(config.initial_size, METADATA_CACHE_BYTES)
    config.set_initial_size = True
    f.id.set_mdc_config(config)


def _check_superblock(label: Path, target: str | Path | IO[bytes] | io.IOBase, size: int) -> None:
    """Refuse bytes after the HDF5 end of file (or a file cut short) before HDF5 reads anything."""
    if isinstance(target, (str, Path)):
        with open(target, "rb") as f:
            check_end(label, lambda offset, n: _read_at(f, offset, n), size)
    else:
        check_end(label, lambda offset, n: _read_at(target, offset, n), size)
        target.seek(0)


def _read_at(f: Any, offset: int, n: int) -> bytes:
    f.seek(offset)
    return bytes(f.read(n))


def link_order_flags(group: h5py.Group) -> int:
    """The group's link creation-order flags (0: links are kept by name only)."""
    return int(h5g.open(group.id, b".").get_create_plist().get_link_creation_order())


def _links(gid: Any, present: int, label: Path, where: str) -> list[tuple[str, int]]:
    """(name, link type) of each link in a group, in h5py's order (``present``: its header's message bits).

    That is creation order where the group tracks it, else by name, with names that are all digits
    put in numeric order (Keras 3's ``vars/0``, ``vars/1``, ..., ``vars/10``).
    """
    # Only a group with a Link Info message can track creation order; reading the flags needs a copy
    # of the group's creation properties, which costs more than the rest of the visit.
    flags = int(gid.get_create_plist().get_link_creation_order()) if present & _LINK_INFO_MESSAGE else 0
    # A group ID iterates its names in h5py's order (the order the flags above select).
    get_info = gid.links.get_info
    links = []
    for name in gid:
        try:
            links.append((name.decode("utf-8"), get_info(name).type))
        except UnicodeDecodeError:
            raise InputError(label, f"a link name in group {where or '/'!r} ({name[:100]!r}) is not valid UTF-8") from None
    if not flags and links and all(DIGITS.fullmatch(name) for name, _ in links):
        links.sort(key=lambda link: int(link[0]))
    return links


@gc_paused
def _walk(f: h5py.File, label: Path, size: int) -> Tree:
    """Visit every object once, pre-order, never following anything but hard links inside the file.

    The walk works on HDF5 identifiers through h5py's low-level API: it opens each object once, asks
    it for its creation properties, type and dataspace once, and makes an h5py object only for the
    objects that carry attributes (h5py's high-level objects cost several times more per object).
    """
    tree = Tree()
    root = h5g.open(f.id, b"/")
    info = h5o.get_info(root)
    seen = {info.addr}
    tree.groups.append("")
    if info.num_attrs:
        _check_group_attrs(tree, h5py.Group(root), "", label)
    stack: list[tuple[str, Any, Iterator[tuple[str, int]]]] = [("", root, iter(_links(root, info.hdr.mesg.present, label, "")))]
    doing, path = "open", ""  # for the message of an error HDF5 raises (one handler: cheaper than one per object)
    try:
        while stack:
            gpath, gid, links = stack[-1]
            link = next(links, None)
            if link is None:
                stack.pop()
                continue
            name, kind = link
            path = join_path(gpath, name)
            if kind != h5l.TYPE_HARD:
                _refuse_link(h5py.Group(gid), name, path, label)
            doing = "open"
            oid = h5o.open(gid, name.encode("utf-8"))
            info = h5o.get_info(oid)
            if info.addr in seen:  # a second name for an object already visited, or a cycle
                continue
            seen.add(info.addr)
            if isinstance(oid, h5g.GroupID):
                if len(stack) >= MAX_DEPTH:
                    raise InputError(label, f"groups nest deeper than {MAX_DEPTH} levels at {path[:200]!r}")
                tree.groups.append(path)
                if info.num_attrs:
                    doing = "read the attributes of"
                    _check_group_attrs(tree, h5py.Group(oid), path, label)
                doing = "list group"
                stack.append((path, oid, iter(_links(oid, info.hdr.mesg.present, label, path))))
            elif isinstance(oid, h5d.DatasetID):
                doing = "read the header of dataset"
                dset = h5py.Dataset(oid) if info.num_attrs else None
                tree.datasets[path] = _check_dataset(oid, info.hdr.mesg.present, dset, path, label, size)
                if dset is not None:
                    _check_attrs(dset, path, label)
            # a committed datatype holds no data
    except _READ_ERRORS as exc:
        raise InputError(label, f"cannot {doing} {path!r} ({_exc_text(exc)})") from exc
    return tree


def _refuse_link(group: h5py.Group, name: str, path: str, label: Path) -> None:
    """Raise UnsafeInputError naming a link that is not a hard link (and where it points)."""
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
    raise UnsafeInputError(label, f"{path!r} is a link of an unknown kind; links are never followed")


def is_utf8(text: str) -> bool:
    """False for text h5py decoded from bytes that are not UTF-8 (it keeps them as surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_attrs(obj: h5py.HLObject, path: str, label: Path) -> None:
    """Refuse attribute names, and text the file declares UTF-8, whose bytes are not UTF-8.

    ckptsurgeon's metadata and Keras's lists are text: such an attribute could be neither read as
    text nor written to any output, so the input is refused when opened.
    """
    where = path or "/"
    for name in obj.attrs:
        if not is_utf8(name):
            raise InputError(label, f"an attribute name of {where!r} ({name!r}) is not valid UTF-8")
        info = h5py.check_string_dtype(obj.attrs.get_id(name).dtype)
        if info is None or info.encoding != "utf-8":
            continue
        for item in np.asarray(obj.attrs[name], dtype=object).reshape(-1).tolist():
            text = item if isinstance(item, str) else bytes(item).decode("utf-8", "surrogateescape")
            if not is_utf8(text):
                raise InputError(label, f"attribute {name!r} of {where!r} is declared UTF-8 text but its bytes are not UTF-8")


def _check_group_attrs(tree: Tree, group: h5py.Group, path: str, label: Path) -> None:
    """Check a group's attributes; note a Keras 3 ``.../vars`` group's ``name``."""
    _check_attrs(group, path, label)
    if path.rpartition("/")[2] == "vars" and "name" in group.attrs:
        name = _text(group.attrs["name"])
        if name is not None:
            tree.vars_names[path] = name


def _check_dataset(dsid: Any, present: int, dset: h5py.Dataset | None, path: str, label: Path, size: int) -> DatasetInfo:
    """Check one dataset's header.

    ``present`` has a bit set for each message type in the dataset's object header; ``dset`` is its
    h5py object when it has attributes, else None.
    """
    if dsid.get_offset() is not None and not present & (_EXTERNAL_FILES_MESSAGE | _FILTER_PIPELINE_MESSAGE):
        # Stored in one contiguous block of this file with no filters (HDF5 gives an offset for
        # contiguous storage only), so its creation properties hold nothing to check: copying them
        # would cost more than the rest of the check.
        layout, nfilters = h5d.CONTIGUOUS, 0
    else:
        layout, nfilters = _check_storage(dsid, path, label)
    tid = dsid.get_type()
    code, raw, swap = _dtype_of(tid, dset, path, label)
    space = dsid.get_space()
    if space.get_simple_extent_type() == h5s.NULL:
        raise InputError(label, f"dataset {path!r} has no shape (an empty dataspace), so it is not a tensor")
    shape = tuple(int(n) for n in space.get_simple_extent_dims())
    if layout == h5d.CONTIGUOUS:
        maxdims = tuple(int(n) for n in space.get_simple_extent_dims(True))
        if maxdims != shape:
            raise InputError(
                label, f"dataset {path!r} is contiguous but declares the extendible shape {_dims(maxdims)} "
                f"beside its shape {list(shape)}; HDF5 allows that only for chunked storage (malformed)",
            )
    nbytes = numel(shape) * DTYPES[code].itemsize
    offset = check_extent(dsid, path, label, size, nbytes, layout, nfilters)
    verbatim = (raw and not swap) or (not raw and tid.equal(_native_type(code)))
    return DatasetInfo(path, shape, code, raw, swap, offset if verbatim and nfilters == 0 and nbytes else None)


def _check_storage(dsid: Any, path: str, label: Path) -> tuple[int, int]:
    """(layout, filter count) of a dataset, refusing storage outside the file and filter plugins."""
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
    return layout, nfilters


@functools.cache
def _native_type(code: str) -> Any:
    """The HDF5 type h5py writes for a code's numpy dtype (made once per code)."""
    return h5t.py_create(DTYPES[code].numpy)


def _dims(maxdims: tuple[int, ...]) -> str:
    return "[" + ", ".join("unlimited" if n == h5s.UNLIMITED else str(n) for n in maxdims) + "]"


def _dtype_of(tid: Any, dset: h5py.Dataset | None, path: str, label: Path) -> tuple[str, bool, bool]:
    """(code, raw, swap) for a dataset's type, or InputError for one that is not numeric."""
    cls = tid.get_class()
    size = tid.get_size()
    if cls == h5t.OPAQUE:
        name = _text(dset.attrs["dtype"]) if dset is not None and "dtype" in dset.attrs else None
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
        if tid.dtype.kind != "b":  # h5py stores numpy bools as a FALSE/TRUE enum
            raise InputError(label, f"dataset {path!r} holds enum values, not numbers")
    elif cls != h5t.INTEGER:
        kinds = {
            h5t.STRING: "strings", h5t.VLEN: "variable-length data", h5t.COMPOUND: "compound records",
            h5t.REFERENCE: "object references", h5t.ARRAY: "array-typed elements", h5t.BITFIELD: "bit fields",
        }
        what = kinds.get(cls, "non-numeric data")
        if cls == h5t.COMPOUND and tid.dtype.kind == "c":
            what = f"{tid.dtype} complex numbers"
        raise InputError(label, f"dataset {path!r} holds {what}; only numeric tensors are read")
    dtype = tid.dtype
    code = code_of(dtype)
    if code is None:
        raise InputError(label, f"dataset {path!r} has dtype {dtype}, which ckptsurgeon does not handle")
    return code, False, False


def check_extent(dsid: Any, path: str, label: Path, size: int, nbytes: int, layout: int, nfilters: int) -> int | None:
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


def open_file(path: Path) -> Source:
    size = check_input(path).st_size  # h5py opens by path: a FIFO or a device is refused before it could block
    return Source(path, path, size, origin=path, base_offset=0)


# ------------------------------------------------------------------------------------------------
# attribute text and written dtypes
# ------------------------------------------------------------------------------------------------


def scalar_text(value: Any) -> str | None:
    """A scalar string or number attribute as str, or None for anything else."""
    text = _text(value)
    if text is None:
        arr = np.asarray(value)
        if arr.shape == () and arr.dtype.kind in "biuf":
            text = str(arr.item())
    return text


def convention_name(code: str) -> str | None:
    """The ``dtype`` attribute written with a dtype numpy lacks (stored opaque, as Keras does)."""
    return _CONVENTION_NAME.get(code)


def file_type(code: str) -> Any:
    """The HDF5 type a dtype is written as: h5py's own mapping, opaque for the ml_dtypes floats."""
    if convention_name(code) is not None:
        return h5t.create(h5t.OPAQUE, DTYPES[code].itemsize)  # what h5py makes of bfloat16: no tag
    return h5t.py_create(DTYPES[code].numpy, logical=True)
