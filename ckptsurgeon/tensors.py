"""Tensor metadata and the dtype table shared by every format.

Dtype codes are safetensors' (``F32``, ``BF16``, ``F8_E4M3`` ...). ``ml_dtypes`` supplies the
numpy dtypes numpy itself lacks (bfloat16, float8). All byte layouts here are little-endian and
C-ordered: that is what every reader hands out and every writer takes.

Block dtypes (kind ``"block"``) are GGUF's quantized types, named as ggml names them (``Q4_0``,
``Q8_0``, ``Q4_K``, ``IQ2_XS`` ...). Their values are stored in blocks of ``block`` elements of
``itemsize`` bytes each (a scale and packed integers), so a tensor's byte size is
``numel / block * itemsize`` (:func:`byte_size`) and its element count must be a whole number of
blocks along its last axis (:func:`block_problem`). They are never cast and never decoded: they
move as bytes, and their numpy form is those raw bytes (``uint8``, one dimension).

The table itself (codes, kinds, item sizes) needs neither numpy nor ml_dtypes: they are imported
the first time a numpy dtype is asked for, so listing options or reading headers stays cheap.
"""

from __future__ import annotations

import functools
import gc
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    import numpy as np

_P = ParamSpec("_P")
_R = TypeVar("_R")


def gc_paused(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with the cyclic garbage collector paused.

    For functions that build one or a few objects per tensor, none of them in a reference cycle:
    with 200,000 tensors the collector, triggered again and again by the allocations, would walk
    the growing heap each time and take about as long as the work itself. Reference counting still
    frees everything; the collector resumes (if it was running) when ``fn`` returns or raises.
    """

    @functools.wraps(fn)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return paused


@dataclass(frozen=True)
class DType:
    code: str
    kind: str  # "float", "int", "uint", "bool" or "block" (quantized: raw bytes only)
    itemsize: int  # bytes per element; for a block dtype, bytes per block
    type_name: str  # the numpy scalar type: an attribute of ml_dtypes for ML_DTYPE_NAMES, else of numpy
    block: int = 1  # elements per block (block dtypes); 1 for every other dtype

    @property
    def is_block(self) -> bool:
        return self.kind == "block"

    @property
    def numpy(self) -> np.dtype[Any]:
        """The little-endian numpy dtype (numpy and ml_dtypes are imported on first use)."""
        return _numpy_dtype(self.code)


DTYPES: dict[str, DType] = {
    d.code: d
    for d in (
        DType("F64", "float", 8, "float64"),
        DType("F32", "float", 4, "float32"),
        DType("F16", "float", 2, "float16"),
        DType("BF16", "float", 2, "bfloat16"),
        DType("F8_E4M3", "float", 1, "float8_e4m3fn"),
        DType("F8_E5M2", "float", 1, "float8_e5m2"),
        DType("F8_E8M0", "float", 1, "float8_e8m0fnu"),
        DType("I64", "int", 8, "int64"),
        DType("I32", "int", 4, "int32"),
        DType("I16", "int", 2, "int16"),
        DType("I8", "int", 1, "int8"),
        DType("U64", "uint", 8, "uint64"),
        DType("U32", "uint", 4, "uint32"),
        DType("U16", "uint", 2, "uint16"),
        DType("U8", "uint", 1, "uint8"),
        DType("BOOL", "bool", 1, "bool_"),
    )
}

#: ggml's quantized types: code -> (elements per block, bytes per block), as gguf-py 0.19's
#: ``GGML_QUANT_SIZES`` gives them.
BLOCK_SIZES: dict[str, tuple[int, int]] = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q8_1": (32, 40),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
    "Q8_K": (256, 292), "IQ2_XXS": (256, 66), "IQ2_XS": (256, 74), "IQ3_XXS": (256, 98), "IQ1_S": (256, 50),
    "IQ4_NL": (32, 18), "IQ3_S": (256, 110), "IQ2_S": (256, 82), "IQ4_XS": (256, 136), "IQ1_M": (256, 56),
    "TQ1_0": (256, 54), "TQ2_0": (256, 66), "MXFP4": (32, 17), "NVFP4": (64, 36), "Q1_0": (128, 18),
}
DTYPES.update({code: DType(code, "block", size, "uint8", block) for code, (block, size) in BLOCK_SIZES.items()})

FLOAT_CODES: tuple[str, ...] = tuple(code for code, d in DTYPES.items() if d.kind == "float")



@cache
def _numpy_dtype(code: str) -> np.dtype[Any]:
    import numpy as np

    entry = DTYPES[code]
    if entry.is_block:
        return np.dtype(np.uint8)
    if entry.type_name in ML_DTYPE_NAMES:
        import ml_dtypes

        dt = np.dtype(getattr(ml_dtypes, entry.type_name))
    else:
        dt = np.dtype(getattr(np, entry.type_name))
    if dt.itemsize != entry.itemsize:  # pragma: no cover - the table above is wrong
        raise AssertionError(f"{code}: numpy says {dt.itemsize} bytes, the table {entry.itemsize}")
    return dt.newbyteorder("<") if dt.itemsize > 1 else dt


# ml_dtypes' own names, used by HDF5 files (Keras stores them in a ``dtype`` attribute) and npz.
ML_DTYPE_NAMES: dict[str, str] = {
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
}


@cache
def _by_numpy() -> dict[np.dtype[Any], str]:
    table: dict[np.dtype[Any], str] = {}
    for d in DTYPES.values():
        if d.is_block:
            continue
        table.setdefault(d.numpy, d.code)
        table.setdefault(d.numpy.newbyteorder("="), d.code)
    return table


def dtype(code: str) -> DType:
    """The table entry for a safetensors dtype code; KeyError for an unknown one."""
    return DTYPES[code]


def code_of(np_dtype: np.dtype[Any]) -> str | None:
    """The code of a numpy dtype in native or little-endian order, or None if it has none.

    Big-endian dtypes map to the code of their little-endian twin: readers convert them.
    """
    import numpy as np

    d = np.dtype(np_dtype)
    if d.byteorder == ">":
        d = d.newbyteorder("<")
    if d.names is not None or d.subdtype is not None:
        return None
    by_numpy = _by_numpy()
    return by_numpy.get(d) or by_numpy.get(d.newbyteorder("="))


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def byte_size(code: str, shape: tuple[int, ...]) -> int:
    """The bytes a tensor of dtype ``code`` and ``shape`` holds: elements times item size, or for a
    block dtype whole blocks times block size (the shape is assumed checked by :func:`block_problem`)."""
    d = DTYPES[code]
    return math.prod(shape) // d.block * d.itemsize


def block_problem(code: str, shape: tuple[int, ...]) -> str | None:
    """Why ``shape`` cannot hold dtype ``code`` (a block dtype needs whole blocks along the last axis), or None."""
    d = DTYPES[code]
    if d.block == 1:
        return None
    if not shape or shape[-1] % d.block:
        last = shape[-1] if shape else "no axis"
        return (f"{code} stores blocks of {d.block} elements, but the last axis of shape {list(shape)} "
                f"has {last}, not a multiple of {d.block}")
    return None


def default_layer(name: str) -> str:
    """A tensor's layer: its name without the last ``.``- or ``/``-separated part.

    A name without a separator (``pos_embed``) is a layer of its own.
    """
    cut = max(name.rfind("."), name.rfind("/"))
    return name[:cut] if cut > 0 else name


@dataclass(frozen=True, slots=True)
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
        return byte_size(self.dtype, self.shape)


_SET_INFO = tuple(TensorInfo.__dict__[f].__set__ for f in ("name", "shape", "dtype", "layer", "loc"))  # slot setters


def make_info(name: str, shape: tuple[int, ...], dtype: str, layer: str, loc: Any) -> TensorInfo:
    """``TensorInfo(name, shape, dtype, layer, loc)``, made in half the time, for readers of many tensors.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; this sets the
    slots directly. The record is the same (equal, hashable, frozen).
    """
    info = object.__new__(TensorInfo)
    set_name, set_shape, set_dtype, set_layer, set_loc = _SET_INFO
    set_name(info, name)
    set_shape(info, shape)
    set_dtype(info, dtype)
    set_layer(info, layer)
    set_loc(info, loc)
    return info


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """What a writer is told about one tensor before any data arrives."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return byte_size(self.dtype, self.shape)
