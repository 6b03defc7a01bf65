"""Tensor metadata and the dtype table shared by every format.

Dtype codes are safetensors' (``F32``, ``BF16``, ``F8_E4M3`` ...). ``ml_dtypes`` supplies the
numpy dtypes numpy itself lacks (bfloat16, float8). All byte layouts here are little-endian and
C-ordered: that is what every reader hands out and every writer takes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    code: str
    numpy: np.dtype[Any]
    kind: str  # "float", "int", "uint" or "bool"

    @property
    def itemsize(self) -> int:
        return int(self.numpy.itemsize)


def _dt(code: str, np_type: Any, kind: str) -> DType:
    return DType(code, np.dtype(np_type).newbyteorder("<") if np.dtype(np_type).itemsize > 1 else np.dtype(np_type), kind)


DTYPES: dict[str, DType] = {
    d.code: d
    for d in (
        _dt("F64", np.float64, "float"),
        _dt("F32", np.float32, "float"),
        _dt("F16", np.float16, "float"),
        _dt("BF16", ml_dtypes.bfloat16, "float"),
        _dt("F8_E4M3", ml_dtypes.float8_e4m3fn, "float"),
        _dt("F8_E5M2", ml_dtypes.float8_e5m2, "float"),
        _dt("F8_E8M0", ml_dtypes.float8_e8m0fnu, "float"),
        _dt("I64", np.int64, "int"),
        _dt("I32", np.int32, "int"),
        _dt("I16", np.int16, "int"),
        _dt("I8", np.int8, "int"),
        _dt("U64", np.uint64, "uint"),
        _dt("U32", np.uint32, "uint"),
        _dt("U16", np.uint16, "uint"),
        _dt("U8", np.uint8, "uint"),
        _dt("BOOL", np.bool_, "bool"),
    )
}

# ml_dtypes' own names, used by HDF5 files (Keras stores them in a ``dtype`` attribute) and npz.
ML_DTYPE_NAMES: dict[str, str] = {
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
}

_BY_NUMPY: dict[np.dtype[Any], str] = {}
for _d in DTYPES.values():
    _BY_NUMPY.setdefault(_d.numpy, _d.code)
    _BY_NUMPY.setdefault(_d.numpy.newbyteorder("="), _d.code)


def dtype(code: str) -> DType:
    """The table entry for a safetensors dtype code; KeyError for an unknown one."""
    return DTYPES[code]


def code_of(np_dtype: np.dtype[Any]) -> str | None:
    """The code of a numpy dtype in native or little-endian order, or None if it has none.

    Big-endian dtypes map to the code of their little-endian twin: readers convert them.
    """
    d = np.dtype(np_dtype)
    if d.byteorder == ">":
        d = d.newbyteorder("<")
    if d.names is not None or d.subdtype is not None:
        return None
    return _BY_NUMPY.get(d) or _BY_NUMPY.get(d.newbyteorder("="))


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


_LAYER_SPLIT = re.compile(r"[./](?=[^./]*$)")


def default_layer(name: str) -> str:
    """A tensor's layer: its name without the last ``.``- or ``/``-separated part.

    A name without a separator (``pos_embed``) is a layer of its own.
    """
    parts = _LAYER_SPLIT.split(name, maxsplit=1)
    return parts[0] if len(parts) == 2 and parts[0] else name


@dataclass(frozen=True)
class TensorInfo:
    """What a reader knows about one tensor without reading its data."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layer: str = ""
    # Where the bytes live; meaningful only to the reader that made this record.
    loc: Any = field(default=None, compare=False, repr=False)

    @property
    def numel(self) -> int:
        return numel(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class TensorSpec:
    """What a writer is told about one tensor before any data arrives."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return numel(self.shape) * DTYPES[self.dtype].itemsize
