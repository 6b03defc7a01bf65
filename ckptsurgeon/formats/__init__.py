"""Format registry: detect a checkpoint's format by its content and open it with the right reader.

Format modules are imported lazily, so ``ckpt --help`` never pays for h5py. Every module exposes
the same names (``Reader``, ``Writer``); a format is chosen by magic bytes and structure, never by
the file name alone. Output formats are chosen by the output's extension (or an explicit name).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..errors import InputError, UnsafeInputError, UsageError
from .base import Reader, Writer, describe

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
MAX_INDEX_BYTES = 100_000_000

# output format name -> (module, writer class)
OUTPUT_FORMATS = {
    "safetensors": ("safetensors", "Writer"),
    "hdf5": ("hdf5", "Writer"),
    "keras": ("hdf5", "KerasZipWriter"),
    "npz": ("npz", "Writer"),
}
EXTENSIONS = {".safetensors": "safetensors", ".h5": "hdf5", ".hdf5": "hdf5", ".keras": "keras", ".npz": "npz"}


def _module(name: str):  # type: ignore[no-untyped-def]
    import importlib

    return importlib.import_module(f"{__name__}.{name}")


def _hdf5_offset(path: Path, size: int) -> bool:
    """HDF5's signature sits at 0 or, after a user block, at 512, 1024, 2048, ..."""
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            if f.read(8) == HDF5_MAGIC:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(path, f"a damaged zip archive ({exc})") from exc
    if "model.weights.h5" in names:
        return "keras"
    if any(n.endswith(".pkl") or n.endswith("/data.pkl") for n in names):
        raise UnsafeInputError(
            path, "a PyTorch pickle checkpoint (torch.save zip); pickles are never loaded",
            hint="save it with safetensors.torch.save_file first",
        )
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    if not names:
        raise InputError(path, "an empty zip archive")
    raise InputError(path, "a zip archive that is neither an npz (only .npy members) nor a .keras archive")


def _json_kind(path: Path, size: int) -> str:
    if size > MAX_INDEX_BYTES:
        raise InputError(path, f"a {size} byte JSON file is too large for a checkpoint index")
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from exc
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if isinstance(wm, dict) and wm:
        first = next(iter(wm.values()))
        if isinstance(first, str):
            return "safetensors_index"
        if isinstance(first, list):
            return "keras_sharded"
    raise InputError(path, "a JSON file that is not a sharded checkpoint index (no \"weight_map\")")


def _resolve_dir(path: Path) -> Path:
    indexes = sorted(path.glob("*.safetensors.index.json")) or sorted(path.glob("*.weights.json"))
    if len(indexes) == 1:
        return indexes[0]
    singles = sorted(path.glob("*.safetensors"))
    if not indexes and len(singles) == 1:
        return singles[0]
    raise InputError(path, "is a directory; name the checkpoint file (or the index of a sharded checkpoint)")


def detect(path: str | Path) -> str:
    """The format of a checkpoint by content: safetensors, safetensors_index, hdf5, keras, keras_sharded, npz."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except FileNotFoundError as exc:
        raise InputError(path, "no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(path, "is a directory") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(ZIP_MAGICS):
        return _zip_kind(path)
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    if head.lstrip()[:1] == b"{":
        return _json_kind(path, size)
    if size >= 520 and _hdf5_offset(path, size):  # HDF5 after a user block: probed last, it seeks far
        return "hdf5"
    raise InputError(path, describe(head))


def open_checkpoint(path: str | Path) -> Reader:
    """Open any supported checkpoint lazily (headers only)."""
    path = Path(path)
    if path.is_dir():
        path = _resolve_dir(path)
    kind = detect(path)
    if kind == "safetensors":
        return _module("safetensors").Reader(path)  # type: ignore[no-any-return]
    if kind == "safetensors_index":
        return _module("safetensors").ShardedReader(path)  # type: ignore[no-any-return]
    if kind == "npz":
        return _module("npz").Reader(path)  # type: ignore[no-any-return]
    if kind == "hdf5":
        return _module("hdf5").Reader(path)  # type: ignore[no-any-return]
    if kind == "keras":
        return _module("hdf5").KerasZipReader(path)  # type: ignore[no-any-return]
    if kind == "keras_sharded":
        return _module("hdf5").KerasShardedReader(path)  # type: ignore[no-any-return]
    raise AssertionError(kind)


def output_format(dest: str | Path, explicit: str | None = None) -> str:
    """The output format named explicitly or by the destination's extension."""
    if explicit:
        if explicit not in OUTPUT_FORMATS:
            raise UsageError(None, f"unknown output format {explicit!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
        return explicit
    suffix = Path(dest).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    raise UsageError(
        dest, f"cannot tell the output format from the extension {suffix or '(none)'!r}",
        hint=f"use one of {', '.join(EXTENSIONS)}",
    )


def writer_class(fmt: str) -> type[Writer]:
    module, cls = OUTPUT_FORMATS[fmt]
    return getattr(_module(module), cls)  # type: ignore[no-any-return]


def format_family(reader: Reader) -> str:
    """The output format that writes files like this reader's (for writing "like" a target)."""
    return {
        "safetensors": "safetensors",
        "safetensors-sharded": "safetensors",
        "npz": "npz",
        "keras-zip": "keras",
    }.get(reader.format, "hdf5")


__all__ = ["Reader", "Writer", "detect", "format_family", "open_checkpoint", "output_format", "writer_class"]
