"""npz archives: a zip of ``.npy`` members, one tensor each (``numpy.savez``, Flax/JAX exports).

Reading never unpickles and never hands the archive to ``numpy.load``: the central directory is
read with :mod:`zipfile`, each member's ``.npy`` header with numpy's bounded header parser, and
every size is checked against the archive before anything is allocated. STORED members are read
zero-copy from a memory map of the archive (and expose :meth:`Reader.byte_range`), each checked
against its CRC before its bytes are first used, as :mod:`zipfile` checks the others; pages a chunked
read has gone past, and those of a tensor released with :meth:`Reader.release`, are dropped from the
process (the page cache keeps them). DEFLATED members are inflated as a stream of exactly the
declared number of bytes, CRC-checked by :mod:`zipfile`.

Tensor name = member name without ``.npy``. A member is refused when its name is not a plain
relative name ending in ``.npy`` (absolute, ``..``, backslash, NUL), appears twice, is encrypted,
uses a compression other than STORED/DEFLATED, overlaps another member, claims to inflate more than
deflate can (:data:`MAX_DEFLATE_RATIO`), or holds object (pickled), structured or subarray values.
Fortran-ordered and big-endian members are read as C-ordered little-endian arrays.

Dtypes numpy itself cannot name
-------------------------------
``numpy.save`` writes ml_dtypes' types as raw bytes: ``bfloat16`` as ``<V2`` (this is how JAX/Flax
parameters end up in npz files), the 1-byte float8 types as ``<V1`` or ``|V1``, except
``float8_e5m2``, which is written as ``<f1`` (a descr ``numpy.load`` itself rejects). Hence:

* a 2-byte void member (``<V2``/``|V2``) is read as BF16;
* an ``f1`` member is read as F8_E5M2 (no other type is written that way);
* a 1-byte void member is ambiguous (F8_E4M3, F8_E5M2, F8_E8M0 ...): its dtype is taken from the
  archive comment written by :class:`Writer`, or from ``Reader(..., float8=CODE)``; otherwise the
  archive is refused with a message saying so.

The archive comment
-------------------
:class:`Writer` writes BF16 as ``<V2`` and every float8 type as ``|V1``, so ``numpy.load`` reads
the output (as void arrays for those dtypes). When a dtype needs naming or metadata is given, the zip
comment holds ``{"ckptsurgeon": 1, "dtypes": {tensor: code}, "metadata": {key: value}}`` (compact
JSON, UTF-8). A zip comment is limited to 65535 bytes: a writer whose comment would exceed that
raises :class:`~ckptsurgeon.errors.OutputError` in ``begin``, before any file is created; metadata
is never dropped silently.

Output layout
-------------
Members are written in the declared order with fixed timestamps (1980-01-01 00:00:00, as numpy
does) and attributes, so the same input gives a byte-identical file. Each member is a ``.npy`` v1.0
header (v2.0 if the header outgrows v1.0; v3.0 is never needed since our headers are ASCII) and the
raw C-order little-endian bytes. STORED is the default (``compress=True`` gives DEFLATED; left
unset it follows ``like`` when that is an npz reader). STORED members carry a zip extra field
padding their data to a 64-byte boundary of the archive (the Android ``zipalign`` field, 0xD935),
so memory-mapped reads are aligned. ZIP64 records are written only where a member needs them.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import mmap
import re
import struct
import sys
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from ckptsurgeon.errors import CkptError, InputError, OutputError, UnsafeInputError
from ckptsurgeon.formats import base
from ckptsurgeon.formats._io import Writeback, drop_pages
from ckptsurgeon.tensors import DTYPES, TensorInfo, TensorSpec, code_of, default_layer

MEMBER_SUFFIX = ".npy"
# numpy's own default bound on a .npy header (``numpy.lib.format._MAX_HEADER_SIZE``).
MAX_HEADER_BYTES = 10_000
# Deflate cannot expand data more than 1032:1 (a 258-byte match coded in 2 bits). A member whose
# sizes claim more is corrupt or hostile. Zero-filled tensors legitimately reach about 1030:1, so
# the bound cannot be set lower without refusing real files.
MAX_DEFLATE_RATIO = 1032
MAX_DIMS = 64  # numpy's limit
MAX_COMMENT_BYTES = 65535
COMMENT_KEY = "ckptsurgeon"
COMMENT_VERSION = 1
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
ALIGNMENT = 64
ALIGNMENT_EXTRA_ID = 0xD935

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, versions, flags, method, time, date, crc, sizes, lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP64_LOCAL_EXTRA = 20  # id, length, two 8-byte sizes
_FLAG_ENCRYPTED = 0x0001
_FLAG_UNSUPPORTED = 0x0020 | 0x0040 | 0x2000  # patched data, strong encryption, masked directory
_FLAG_UTF8 = 0x0800
_F1_DESCR = re.compile(r"""(['"]descr['"]\s*:\s*)['"][<>|=]?f1['"]""")
# Void members of these sizes read as this dtype unless the archive comment names another.
_VOID_DEFAULT = {2: "BF16"}

# Exceptions the standard library raises on a damaged archive; each becomes an InputError.
_ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    OSError,
    EOFError,
    ValueError,
    OverflowError,
    NotImplementedError,
    RuntimeError,
)


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- .npy headers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NpyHeader:
    """A parsed ``.npy`` header: the array's shape, layout and stored dtype, and the header's length."""

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype[Any]
    length: int  # bytes before the array data
    f1: bool = False  # descr was ``f1`` (ml_dtypes' float8_e5m2, which numpy cannot name)


def _read_exactly(stream: BinaryIO, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError(f"{what} is truncated")
    return data


class PickledMember(ValueError):
    """A member holds a Python pickle where a ``.npy`` array belongs."""


def read_npy_header(stream: BinaryIO) -> NpyHeader:
    """Parse the ``.npy`` header at the start of ``stream``, reading only the header's bytes.

    Raises ValueError (:class:`PickledMember` for a pickle) for anything that is not a well-formed
    header of at most :data:`MAX_HEADER_BYTES`. The dtype is returned as parsed; judging it is the
    caller's job.
    """
    prefix = stream.read(8)
    if prefix[:1] == b"\x80":
        raise PickledMember("a Python pickle, not a .npy array; pickles are never loaded")
    if len(prefix) != 8 or not prefix.startswith(b"\x93NUMPY"):
        raise ValueError("not a .npy array (bad magic)")
    major, minor = np.lib.format.read_magic(io.BytesIO(prefix))
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"unsupported .npy format version {major}.{minor}")
    length_format = "<H" if major == 1 else "<I"
    length_bytes = _read_exactly(stream, struct.calcsize(length_format), "the .npy header length")
    (text_length,) = struct.unpack(length_format, length_bytes)
    if text_length > MAX_HEADER_BYTES:
        raise ValueError(f"a {text_length} byte .npy header is larger than the {MAX_HEADER_BYTES} byte limit")
    raw = _read_exactly(stream, text_length, "the .npy header")
    # v3.0 differs from v2.0 only by UTF-8 text; an array we accept has an ASCII header.
    if major == 3 and not raw.isascii():
        raise ValueError("a .npy v3.0 header with non-ASCII text (structured field names)")
    text = raw.decode("latin1")
    text, f1 = _F1_DESCR.subn(r"\1'|u1'", text)
    reparsed = text.encode("latin1")
    fields = struct.pack(length_format, len(reparsed)) + reparsed
    parse = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about Python 2 headers it had to repair
            shape, fortran_order, dtype = parse(io.BytesIO(fields), max_header_size=MAX_HEADER_BYTES)
    except Exception as exc:  # hostile header text makes numpy's parser raise many types
        raise ValueError(f"bad .npy header ({_short(exc, 100)})") from exc
    length = len(prefix) + len(length_bytes) + text_length
    return NpyHeader(tuple(int(d) for d in shape), bool(fortran_order), np.dtype(dtype), length, bool(f1))


def _is_big_endian(dt: np.dtype[Any]) -> bool:
    return dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big")


def _descr(code: str) -> str:
    """The ``.npy`` descr a tensor of ``code`` is written with: numpy's own, or void of its size."""
    dt = DTYPES[code].numpy
    descr = np.lib.format.dtype_to_descr(dt)
    try:
        if np.dtype(descr) == dt:
            return str(descr)
    except TypeError:
        pass
    return f"<V{dt.itemsize}" if dt.itemsize > 1 else f"|V{dt.itemsize}"


_DESCRS: dict[str, str] = {code: _descr(code) for code in DTYPES}


def _needs_naming(code: str) -> bool:
    """True when a tensor's dtype must be named in the archive comment to be read back."""
    return _DESCRS[code].startswith(("<V", "|V")) and _VOID_DEFAULT.get(DTYPES[code].itemsize) != code


def npy_header(spec: TensorSpec) -> bytes:
    """The ``.npy`` header (magic, length, padded dict) for a C-ordered little-endian tensor."""
    fields = {"descr": _DESCRS[spec.dtype], "fortran_order": False, "shape": tuple(int(d) for d in spec.shape)}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, fields)
    except ValueError:  # a header over 64 KiB: v2.0 has a 4-byte length
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, fields)
    return buf.getvalue()


# --- member names and the archive comment ---------------------------------------------------------
def path_problem(name: str) -> str | None:
    """Why an archive member name is path-like (could point outside a directory), or None."""
    if "\x00" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash (a Windows path)"
    if name.startswith("/"):
        return "is an absolute path"
    if ".." in name.split("/"):
        return "contains a '..' path component"
    return None


def suffix_problem(name: str) -> str | None:
    """Why an archive member name does not name a tensor, or None if it does."""
    if not name.endswith(MEMBER_SUFFIX):
        return f"does not end in {MEMBER_SUFFIX} (not an array)"
    if name == MEMBER_SUFFIX:
        return "names no tensor (empty name)"
    return None


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def parse_comment(path: Path, raw: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """``(dtypes, metadata)`` from an archive comment written by :class:`Writer`; empty for any other comment."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}, {}
    if not isinstance(doc, dict) or COMMENT_KEY not in doc:
        return {}, {}
    if doc[COMMENT_KEY] != COMMENT_VERSION:
        raise InputError(path, f"archive comment has ckptsurgeon format {doc[COMMENT_KEY]!r}; this version reads {COMMENT_VERSION}",
                         hint="upgrade ckptsurgeon")
    dtypes, metadata = doc.get("dtypes", {}), doc.get("metadata", {})
    if not _is_str_map(dtypes) or not _is_str_map(metadata):
        raise InputError(path, "archive comment: 'dtypes' and 'metadata' must map strings to strings")
    unknown = sorted({c for c in dtypes.values() if c not in DTYPES})
    if unknown:
        raise InputError(path, f"archive comment names unknown dtypes {unknown[:5]}")
    return dtypes, metadata


def archive_comment(specs: Sequence[TensorSpec], metadata: Mapping[str, str]) -> bytes:
    """The JSON comment an archive of ``specs`` needs, or ``b""`` when it needs none."""
    dtypes = {s.name: s.dtype for s in specs if _needs_naming(s.dtype)}
    if not dtypes and not metadata:
        return b""
    doc: dict[str, object] = {COMMENT_KEY: COMMENT_VERSION}
    if dtypes:
        doc["dtypes"] = dtypes
    if metadata:
        doc["metadata"] = dict(metadata)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- reading --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """Where one tensor lives in the archive and how its stored bytes map to the tensor."""

    info: zipfile.ZipInfo
    stored: bool
    start: int  # archive offset of the member's data (the .npy magic); meaningful when stored
    header_length: int  # bytes of .npy header before the array data
    file_dtype: np.dtype[Any]  # the tensor's dtype in the byte order of the file
    fortran_order: bool
    c_layout: bool  # the stored bytes are already in C order

    @property
    def data_offset(self) -> int:
        return self.start + self.header_length

    @property
    def swapped(self) -> bool:
        return _is_big_endian(self.file_dtype)


class Reader(base.Reader):
    """An npz archive opened lazily: central directory and ``.npy`` headers now, bytes on demand.

    ``float8`` names the dtype of 1-byte void members the archive does not name itself
    (e.g. ``"F8_E4M3"`` for a float8 file saved by ``numpy.savez``).
    """

    format = "npz"

    def __init__(self, path: str | Path, *, float8: str | None = None) -> None:
        super().__init__(Path(path))
        if float8 is not None and (float8 not in DTYPES or DTYPES[float8].itemsize != 1):
            raise ValueError(f"float8 must be a 1-byte dtype code, not {float8!r}")
        self._float8 = float8
        self._zip: zipfile.ZipFile | None = None
        self._map: mmap.mmap | None = None
        self._crc_checked: set[str] = set()  # STORED members whose CRC matched
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- opening ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _problem(self, what: str) -> Iterator[None]:
        """Turn a standard-library error on this archive into a one-line InputError."""
        try:
            yield
        except CkptError:
            raise
        except _ARCHIVE_ERRORS as exc:
            raise InputError(self.path, f"{what}: {_short(exc)}") from exc

    def _open(self) -> None:
        with self._problem("not a readable npz archive"):
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
            comment = self._zip.comment
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if not infos:
            raise InputError(self.path, "an empty zip archive (no arrays)")
        dtypes, self.metadata = parse_comment(self.path, comment)
        self._check_names(infos)
        members = [self._locate(info) for info in infos]
        self._check_overlaps(members)
        for info, start in members:
            name = info.orig_filename[: -len(MEMBER_SUFFIX)]
            member, shape, code = self._member(info, start, name, dtypes)
            self.tensors.append(TensorInfo(name, shape, code, default_layer(name), loc=member))

    def _check_names(self, infos: Sequence[zipfile.ZipInfo]) -> None:
        seen: set[str] = set()
        for info in infos:
            name = info.orig_filename
            problem = path_problem(name)
            if problem is not None:
                raise UnsafeInputError(self.path, f"member {name!r} {problem}")
            problem = suffix_problem(name)
            if problem is not None:
                raise InputError(self.path, f"member {name!r} {problem}")
            if name in seen:
                raise InputError(self.path, f"member {name!r} appears twice")
            seen.add(name)

    def _locate(self, info: zipfile.ZipInfo) -> tuple[zipfile.ZipInfo, int]:
        """Check a member's flags, method, sizes and local header; return it with its data offset."""
        name = info.orig_filename
        assert self._map is not None
        if info.flag_bits & _FLAG_ENCRYPTED:
            raise InputError(self.path, f"member {name!r} is encrypted; encrypted archives are not read")
        if info.flag_bits & _FLAG_UNSUPPORTED:
            raise InputError(self.path, f"member {name!r} uses zip features ckptsurgeon does not read (flags {info.flag_bits:#06x})")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise InputError(self.path, f"stored member {name!r} has compressed size {info.compress_size} != size {info.file_size}")
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > MAX_DEFLATE_RATIO * info.compress_size:
                raise InputError(
                    self.path,
                    f"member {name!r} claims to inflate {info.compress_size} bytes to {info.file_size}, "
                    f"more than deflate can (ratio {MAX_DEFLATE_RATIO}); a corrupt archive or a zip bomb",
                )
        else:
            raise InputError(self.path, f"member {name!r} uses compression method {info.compress_type}; only STORED and DEFLATED are read")

        offset, size = info.header_offset, len(self._map)
        if offset < 0 or offset + _LOCAL_HEADER.size > size:
            raise InputError(self.path, f"member {name!r}: local header at {offset} lies outside the archive")
        fields = _LOCAL_HEADER.unpack_from(self._map, offset)
        signature, flags, method, name_length, extra_length = fields[0], fields[2], fields[3], fields[9], fields[10]
        if signature != _LOCAL_SIGNATURE:
            raise InputError(self.path, f"member {name!r}: bad local header signature at offset {offset}")
        name_start = offset + _LOCAL_HEADER.size
        raw_name = self._map[name_start : name_start + name_length]
        try:
            local_name = raw_name.decode("utf-8") if flags & _FLAG_UTF8 else raw_name.decode("cp437")
        except UnicodeDecodeError:
            local_name = None
        if local_name != name:
            raise InputError(self.path, f"member {name!r}: its local header names {raw_name[:80]!r}")
        if method != info.compress_type:
            raise InputError(self.path, f"member {name!r}: local and central compression methods differ")
        start = name_start + name_length + extra_length
        if start + info.compress_size > size:
            raise InputError(self.path, f"member {name!r}: its data runs past the end of the archive (truncated?)")
        return info, start

    def _check_overlaps(self, members: Sequence[tuple[zipfile.ZipInfo, int]]) -> None:
        end, previous = 0, ""
        for info, start in sorted(members, key=lambda m: m[0].header_offset):
            if info.header_offset < end:
                raise InputError(self.path, f"members {previous!r} and {info.orig_filename!r} overlap in the archive")
            end, previous = start + info.compress_size, info.orig_filename

    def _header(self, info: zipfile.ZipInfo, start: int) -> NpyHeader:
        if info.compress_type == zipfile.ZIP_STORED:
            assert self._map is not None
            limit = min(info.file_size, 12 + MAX_HEADER_BYTES)
            return read_npy_header(io.BytesIO(self._map[start : start + limit]))
        assert self._zip is not None
        with self._zip.open(info) as stream:
            return read_npy_header(stream)  # type: ignore[arg-type]

    def _member(
        self, info: zipfile.ZipInfo, start: int, name: str, dtypes: Mapping[str, str]
    ) -> tuple[Member, tuple[int, ...], str]:
        member_name = info.orig_filename
        with self._problem(f"member {member_name!r}"):
            try:
                header = self._header(info, start)
            except PickledMember as exc:
                raise UnsafeInputError(self.path, f"member {member_name!r} is {exc}") from exc
        code = self._code(member_name, name, header, dtypes)
        shape = header.shape
        if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
            raise InputError(self.path, f"member {member_name!r}: invalid shape {shape[:MAX_DIMS + 1]}")
        itemsize = DTYPES[code].itemsize
        nbytes = math.prod(shape) * itemsize  # Python ints: no overflow
        if math.prod(d for d in shape if d) * itemsize >= 2**63:
            raise InputError(self.path, f"member {member_name!r}: shape {shape} is too large for any array")
        if header.length + nbytes != info.file_size:
            raise InputError(
                self.path,
                f"member {member_name!r}: header declares {code}{list(shape)} = {nbytes} bytes, "
                f"but the member holds {info.file_size - header.length} bytes of data",
            )
        want = DTYPES[code].numpy
        big = _is_big_endian(header.dtype) and itemsize > 1
        member = Member(
            info=info,
            stored=info.compress_type == zipfile.ZIP_STORED,
            start=start,
            header_length=header.length,
            file_dtype=want.newbyteorder(">") if big else want,
            fortran_order=header.fortran_order,
            c_layout=not header.fortran_order or sum(d > 1 for d in shape) <= 1,
        )
        return member, shape, code

    def _code(self, member_name: str, name: str, header: NpyHeader, dtypes: Mapping[str, str]) -> str:
        """The dtype code of a member, refusing what is not plain tensor data."""
        dt = header.dtype
        where = f"member {member_name!r}"
        if dt.hasobject:
            raise UnsafeInputError(self.path, f"{where} holds Python objects (pickled data); pickles are never loaded")
        if dt.names is not None:
            raise InputError(self.path, f"{where} has a structured dtype {dt.descr!r:.80}, not a tensor dtype")
        if dt.subdtype is not None:
            raise InputError(self.path, f"{where} has a subarray dtype {dt.str}, not a tensor dtype")
        if header.f1:
            return "F8_E5M2"
        if dt.kind == "V":
            code = dtypes.get(name) or (self._float8 if dt.itemsize == 1 else None) or _VOID_DEFAULT.get(dt.itemsize)
            if code is None and dt.itemsize == 1:
                raise InputError(
                    self.path,
                    f"{where} holds 1-byte void values (a float8 type saved by numpy) and the archive does not say which",
                    hint="pass float8='F8_E4M3' (or another 1-byte code) to the npz Reader, or re-save the file with ckptsurgeon",
                )
            if code is None:
                raise InputError(self.path, f"{where} holds raw {dt.itemsize}-byte void values, not a tensor dtype")
            if DTYPES[code].itemsize != dt.itemsize:
                raise InputError(self.path, f"{where} is named {code} but holds {dt.itemsize}-byte values")
            return code
        code = code_of(dt)
        if code is None:
            named = dt.str if str(dt) == dt.str else f"{dt.str} ({dt})"
            raise InputError(self.path, f"{where} has dtype {named}, which is not a tensor dtype ckptsurgeon reads")
        return code

    # --- data -------------------------------------------------------------------------------------
    def _member_of(self, name: str) -> tuple[TensorInfo, Member]:
        info = self[name]
        member = info.loc
        assert isinstance(member, Member)
        if self._map is None:
            raise InputError(self.path, "the archive is closed")
        return info, member

    def read(self, name: str) -> np.ndarray:
        info, member = self._member_of(name)
        if member.stored:
            assert self._map is not None
            self._check_crc(member, info.nbytes)
            flat = np.frombuffer(self._map, dtype=member.file_dtype, count=info.numel, offset=member.data_offset)
        else:
            flat = self._inflate(member, info.nbytes).view(member.file_dtype)
        arr = flat.reshape(info.shape, order="F" if member.fortran_order else "C")
        if member.swapped:
            arr = arr.astype(DTYPES[info.dtype].numpy, order="C")
        return self._check_array(info, arr)

    def _inflate(self, member: Member, nbytes: int) -> np.ndarray:
        """A DEFLATED member's array bytes, read as a stream of exactly ``nbytes``."""
        out = np.empty(nbytes, dtype=np.uint8)
        view = out.data
        pos = 0
        for chunk in self._deflated_chunks(member, nbytes, base.CHUNK_BYTES):
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        return out

    def _deflated_chunks(self, member: Member, nbytes: int, chunk_bytes: int) -> Iterator[bytes]:
        name = member.info.orig_filename
        assert self._zip is not None
        with self._problem(f"member {name!r}"), self._zip.open(member.info) as stream:
            _read_exactly(stream, member.header_length, "the .npy header")  # type: ignore[arg-type]
            left = nbytes
            while left:
                chunk = stream.read(min(chunk_bytes, left))
                if not chunk:
                    raise InputError(self.path, f"member {name!r} inflates to {nbytes - left} of {nbytes} data bytes")
                left -= len(chunk)
                yield chunk
            if stream.read(1):
                raise InputError(self.path, f"member {name!r} inflates to more than its {nbytes} data bytes")

    def _stored_chunks(self, member: Member, nbytes: int, chunk_bytes: int) -> Iterator[memoryview]:
        """A STORED member's array bytes straight from the map; its CRC is checked at the end."""
        assert self._map is not None
        view = memoryview(self._map)
        crc = zlib.crc32(view[member.start : member.data_offset])
        end = member.data_offset + nbytes
        for pos in range(member.data_offset, end, chunk_bytes):
            chunk = view[pos : min(pos + chunk_bytes, end)]
            crc = zlib.crc32(chunk, crc)
            yield chunk
            drop_pages(self._map, pos, min(pos + chunk_bytes, end))
        if crc != member.info.CRC:
            raise InputError(self.path, f"member {member.info.orig_filename!r}: CRC mismatch (the archive is damaged)")
        self._crc_checked.add(member.info.orig_filename)

    def _check_crc(self, member: Member, nbytes: int) -> None:
        """Check a STORED member against its CRC once, before its bytes are used without passing
        through a chunked read (an array viewing the map, a byte-range copy): one pass over the member,
        its pages dropped as it goes, so a damaged archive never yields data."""
        if member.info.orig_filename not in self._crc_checked:
            for _ in self._stored_chunks(member, nbytes, base.CHUNK_BYTES):
                pass

    def iter_bytes(self, name: str, chunk_bytes: int = base.CHUNK_BYTES) -> Iterator[memoryview]:
        """The tensor's little-endian C-order bytes in chunks, without holding the whole tensor.

        STORED members are checked against their CRC (an InputError after the last chunk on a mismatch).
        """
        info, member = self._member_of(name)
        if not member.c_layout:
            yield from super().iter_bytes(name, chunk_bytes)
            return
        itemsize = DTYPES[info.dtype].itemsize
        step = max(itemsize, chunk_bytes - chunk_bytes % itemsize)
        chunks: Iterator[Any] = (
            self._stored_chunks(member, info.nbytes, step) if member.stored else self._deflated_chunks(member, info.nbytes, step)
        )
        want = DTYPES[info.dtype].numpy
        for chunk in chunks:
            if member.swapped:
                yield np.frombuffer(chunk, dtype=member.file_dtype).astype(want).view(np.uint8).data
            else:
                yield memoryview(chunk)

    def byte_range(self, name: str) -> tuple[Path, int, int] | None:
        info, member = self._member_of(name)
        if member.stored and member.c_layout and not member.swapped:
            self._check_crc(member, info.nbytes)
            return self.path, member.data_offset, info.nbytes
        return None

    def release(self, name: str) -> None:
        """Drop the process's pages of a STORED member's bytes (arrays read from it stay valid)."""
        info, member = self._member_of(name)
        if member.stored and self._map is not None:
            drop_pages(self._map, member.data_offset, member.data_offset + info.nbytes)

    def close(self) -> None:
        """Release the archive. Arrays already read from the map keep it alive until they are freed."""
        zf, self._zip = self._zip, None
        mm, self._map = self._map, None
        if zf is not None:
            zf.close()
        if mm is not None:
            with contextlib.suppress(BufferError):  # arrays still view the map: it is unmapped when they go
                mm.close()


# --- writing --------------------------------------------------------------------------------------
def _zip_name_bytes(name: str) -> bytes:
    """A member name as :mod:`zipfile` encodes it (ASCII, else UTF-8)."""
    try:
        return name.encode("ascii")
    except UnicodeEncodeError:
        return name.encode("utf-8")


def alignment_extra(offset: int, name_length: int, zip64: bool) -> bytes:
    """A zip extra field that makes a STORED member's data start on an :data:`ALIGNMENT` boundary.

    ``offset`` is where the member's local header starts; zipfile appends its ZIP64 field after ours.
    """
    data_start = offset + _LOCAL_HEADER.size + name_length + (_ZIP64_LOCAL_EXTRA if zip64 else 0)
    pad = -data_start % ALIGNMENT
    if pad == 0:
        return b""
    if pad < 6:  # the field's own id, length and alignment take 6 bytes
        pad += ALIGNMENT
    return struct.pack("<HHH", ALIGNMENT_EXTRA_ID, pad - 4, ALIGNMENT) + bytes(pad - 6)


def _like_compress(like: base.Reader | None) -> bool:
    """Whether an npz like ``like`` compresses its members (most of them DEFLATED)."""
    if like is None or like.format != Reader.format:
        return False
    members = [t.loc for t in like.tensors if isinstance(t.loc, Member)]
    return sum(not m.stored for m in members) * 2 > len(members)


class Writer(base.Writer):
    """Write an npz archive member by member, streaming each tensor's bytes once.

    ``compress`` selects DEFLATED members (default: STORED, or what ``like`` uses if it is an npz).
    """

    format = "npz"
    streams_chunks = True

    def __init__(
        self,
        path: str | Path,
        *,
        metadata: Mapping[str, str] | None = None,
        like: base.Reader | None = None,
        compress: bool | None = None,
    ) -> None:
        super().__init__(Path(path), metadata=metadata, like=like)
        self.compress = _like_compress(like) if compress is None else compress
        self._file: BinaryIO | None = None
        self._zip: zipfile.ZipFile | None = None
        self._comment = b""
        self._writeback: Writeback | None = None

    def _begin(self) -> None:
        for spec in self.specs:
            member = spec.name + MEMBER_SUFFIX
            problem = path_problem(member) or suffix_problem(member)
            if problem is not None:
                raise OutputError(self.path, f"tensor name {spec.name!r} cannot be an npz member: the name {problem}")
            if len(_zip_name_bytes(member)) > 0xFFFF:
                raise OutputError(self.path, f"tensor name {spec.name[:60]!r}... is longer than a zip member name can be")
        if not _is_str_map(self.metadata):
            raise OutputError(self.path, "npz metadata must map strings to strings")
        self._comment = archive_comment(self.specs, self.metadata)
        if len(self._comment) > MAX_COMMENT_BYTES:
            raise OutputError(
                self.path,
                f"the npz archive comment (dtype names and metadata) would take {len(self._comment)} bytes; "
                f"a zip comment holds at most {MAX_COMMENT_BYTES}",
                hint="drop metadata, or write safetensors",
            )
        # O_CREAT | O_EXCL, never O_TRUNC; kept open across write calls and closed by finish/abort.
        self._file = open(self.path, "xb")  # noqa: SIM115
        self._writeback = Writeback(self._file.fileno())
        try:
            self._zip = zipfile.ZipFile(self._file, "w", allowZip64=True)
        except BaseException:
            self._file.close()
            self._file = None
            raise

    @contextlib.contextmanager
    def _member(self, spec: TensorSpec) -> Iterator[IO[bytes]]:
        """Open the member of ``spec`` and write its ``.npy`` header; the caller writes the data bytes."""
        assert self._zip is not None and self._file is not None
        header = npy_header(spec)
        member = spec.name + MEMBER_SUFFIX
        info = zipfile.ZipInfo(member, date_time=ZIP_EPOCH)
        info.compress_type = zipfile.ZIP_DEFLATED if self.compress else zipfile.ZIP_STORED
        info.create_system = 3  # Unix, whatever the platform: identical bytes everywhere
        info.external_attr = 0o644 << 16
        info.file_size = len(header) + spec.nbytes
        # zipfile's own rule for a member's ZIP64 record, decided here so the header length is known.
        zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT
        if not self.compress:
            info.extra = alignment_extra(self._file.tell(), len(_zip_name_bytes(member)), zip64)
        with self._zip.open(info, "w", force_zip64=zip64) as out:
            out.write(header)
            yield out

    def _written(self) -> None:
        """Let the disk start on what is written so far (see :class:`~ckptsurgeon.formats.safetensors.Writeback`)."""
        if self._writeback is not None and self._file is not None:
            self._writeback.written_up_to(self._file.tell())

    def _write(self, spec: TensorSpec, data: np.ndarray) -> None:
        flat = data.reshape(-1).view(np.uint8).data
        with self._member(spec) as out:
            for pos in range(0, spec.nbytes, base.CHUNK_BYTES):
                out.write(flat[pos : pos + base.CHUNK_BYTES])
                self._written()

    def write_chunks(self, name: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write the next tensor's member from its bytes, piece by piece (CRC and compression as they come)."""
        spec = self._take(name)
        with self._member(spec) as out:
            for view in self._exact_pieces(spec, chunks):
                out.write(view)
                self._written()

    def _finish(self) -> None:
        assert self._zip is not None and self._file is not None
        self._zip.comment = self._comment
        self._zip.close()
        self._zip = None
        self._file.close()
        self._file = None

    def abort(self) -> None:
        """Close the archive after an error; the caller removes the temporary file."""
        zf, self._zip = self._zip, None
        f, self._file = self._file, None
        try:
            if zf is not None:
                with contextlib.suppress(OSError, ValueError, RuntimeError):
                    zf.close()
        finally:
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
            super().abort()


def detect(head: bytes, path: Path) -> bool:
    """True when ``path`` is a zip archive whose members are all ``.npy`` arrays."""
    if not head.startswith(_ZIP_MAGICS):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except _ARCHIVE_ERRORS:
        return False
    return bool(names) and all(n.endswith(MEMBER_SUFFIX) for n in names)


__all__ = [
    "MAX_DEFLATE_RATIO",
    "MAX_HEADER_BYTES",
    "Member",
    "NpyHeader",
    "PickledMember",
    "Reader",
    "Writer",
    "alignment_extra",
    "archive_comment",
    "detect",
    "npy_header",
    "parse_comment",
    "path_problem",
    "read_npy_header",
    "suffix_problem",
]
