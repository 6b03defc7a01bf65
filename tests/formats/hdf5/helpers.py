"""Shared by the HDF5 / Keras reader and writer tests: the corpus's Keras files, arrays of any dtype, a plain writer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ckptsurgeon.formats.hdf5.writer import Writer
from ckptsurgeon.tensors import DTYPES, TensorSpec

from ...conftest import CORPUS

MANIFEST = json.loads((CORPUS / "MANIFEST.json").read_text())
KERAS_FORMATS = {  # the manifest's format -> (our format, the Keras layout inside)
    "tf_keras_legacy_weights_h5": ("hdf5", "keras-h5"),
    "tf_keras_legacy_full_model_h5": ("hdf5", "keras-h5"),
    "keras3_weights_h5": ("hdf5", "keras3-h5"),
    "keras3_sharded_weights": ("keras-sharded", "keras3-h5"),
    "keras3_keras_zip": ("keras", "keras3-h5"),
}
KERAS_FILES = [f for f in MANIFEST["files"] if f["format"] in KERAS_FORMATS]
DTYPE_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64",
               "int64": "I64", "int32": "I32", "uint8": "U8", "bool": "BOOL"}


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry_id(entry: dict[str, Any]) -> str:
    return str(entry["path"])


def random_array(code: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Arbitrary bit patterns of a dtype (NaNs included): round trips must keep bytes, not values."""
    rng = np.random.default_rng(seed)
    dt = DTYPES[code].numpy
    if code == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
    return raw.view(dt).reshape(shape)


def write_plain(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None,
                like: Any = None, cls: type = Writer) -> None:
    codes = {name: next(c for c, d in DTYPES.items() if d.numpy == a.dtype) for name, a in arrays.items()}
    writer = cls(path, metadata=metadata, like=like)
    writer.begin([TensorSpec(name, a.shape, codes[name]) for name, a in arrays.items()])
    for name, a in arrays.items():
        writer.write(name, a)
    writer.finish()


def modified(a: np.ndarray) -> np.ndarray:
    """Different values of the same dtype and shape."""
    if a.dtype == np.bool_:
        return np.asarray(~a)
    if a.dtype.kind in "iu":
        return np.asarray(a + 3, dtype=a.dtype)
    return np.asarray(a.astype(np.float64) * 2 + 1).astype(a.dtype)


def open_fds() -> set[str]:
    fd_dir = Path("/proc/self/fd")
    out = set()
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            out.add(os.readlink(fd))
    return out
