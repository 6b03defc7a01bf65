"""``.npy`` members of an npz archive: their headers, the descr each dtype is written with, and the
archive comment that names the dtypes a descr cannot (see :mod:`ckptsurgeon.formats.npz`)."""

from __future__ import annotations

import io
import json
import re
import struct
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ckptsurgeon.errors import InputError
from ckptsurgeon.formats._zip import short
from ckptsurgeon.tensors import DTYPES, TensorSpec

MEMBER_SUFFIX = ".npy"
# numpy's own default bound on a .npy header (``numpy.lib.format._MAX_HEADER_SIZE``).
MAX_HEADER_BYTES = 10_000
MAX_COMMENT_BYTES = 65535
COMMENT_KEY = "ckptsurgeon"
COMMENT_VERSION = 1
_F1_DESCR = re.compile(r"""(['"]descr['"]\s*:\s*)['"][<>|=]?f1['"]""")
# Void members of these sizes read as this dtype unless the archive comment names another.
VOID_DEFAULT = {2: "BF16"}


# --- .npy headers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NpyHeader:
    """A parsed ``.npy`` header: the array's shape, layout and stored dtype, and the header's length."""

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype[Any]
    length: int  # bytes before the array data
    f1: bool = False  # descr was ``f1`` (ml_dtypes' float8_e5m2, which numpy cannot name)


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _read_exactly(stream: Readable, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError(f"{what} is truncated")
    return data


class PickledMember(ValueError):
    """A member holds a Python pickle where a ``.npy`` array belongs."""


def read_npy_header(stream: Readable) -> NpyHeader:
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
        raise ValueError(f"bad .npy header ({short(exc, 100)})") from exc
    length = len(prefix) + len(length_bytes) + text_length
    return NpyHeader(tuple(int(d) for d in shape), bool(fortran_order), np.dtype(dtype), length, bool(f1))


def is_big_endian(dt: np.dtype[Any]) -> bool:
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


DESCRS: dict[str, str] = {code: _descr(code) for code, d in DTYPES.items() if not d.is_block}


def needs_naming(code: str) -> bool:
    """True when a tensor's dtype must be named in the archive comment to be read back."""
    return DESCRS[code].startswith(("<V", "|V")) and VOID_DEFAULT.get(DTYPES[code].itemsize) != code


def npy_header(spec: TensorSpec) -> bytes:
    """The ``.npy`` header (magic, length, padded dict) for a C-ordered little-endian tensor."""
    fields = {"descr": DESCRS[spec.dtype], "fortran_order": False, "shape": tuple(int(d) for d in spec.shape)}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, fields)
    except ValueError:  # a header over 64 KiB: v2.0 has a 4-byte length
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, fields)
    return buf.getvalue()


# --- member names and the archive comment ---------------------------------------------------------
def suffix_problem(name: str) -> str | None:
    """Why an archive member name does not name a tensor, or None if it does."""
    if not name.endswith(MEMBER_SUFFIX):
        return f"does not end in {MEMBER_SUFFIX} (not an array)"
    if name == MEMBER_SUFFIX:
        return "names no tensor (empty name)"
    return None


def is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def parse_comment(path: Path, raw: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """``(dtypes, metadata)`` from an archive comment written by the npz ``Writer``; empty for any other comment."""
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
    if not is_str_map(dtypes) or not is_str_map(metadata):
        raise InputError(path, "archive comment: 'dtypes' and 'metadata' must map strings to strings")
    unknown = sorted({c for c in dtypes.values() if c not in DESCRS})
    if unknown:
        raise InputError(path, f"archive comment names unknown dtypes {unknown[:5]}")
    return dtypes, metadata


def archive_comment(specs: Sequence[TensorSpec], metadata: Mapping[str, str]) -> bytes:
    """The JSON comment an archive of ``specs`` needs, or ``b""`` when it needs none."""
    dtypes = {s.name: s.dtype for s in specs if needs_naming(s.dtype)}
    if not dtypes and not metadata:
        return b""
    doc: dict[str, object] = {COMMENT_KEY: COMMENT_VERSION}
    if dtypes:
        doc["dtypes"] = dtypes
    if metadata:
        doc["metadata"] = dict(metadata)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


__all__ = [
    "MAX_HEADER_BYTES",
    "MEMBER_SUFFIX",
    "NpyHeader",
    "PickledMember",
    "archive_comment",
    "npy_header",
    "parse_comment",
    "read_npy_header",
    "suffix_problem",
]
