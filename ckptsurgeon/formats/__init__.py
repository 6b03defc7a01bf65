"""Format registry: detect a checkpoint's format by its content and open it with the right reader.

Format modules are imported lazily, so ``ckpt --help`` never pays for h5py. Every module exposes
the same names (``Reader``, ``Writer``); a format is chosen by magic bytes and structure, never by
the file name alone. Output formats are chosen by the output's extension (or an explicit name).

Two checks here apply to every format, before and after a reader opens a file:

- **polyglots are refused**: a file that two readers would both accept, read differently by
  different tools (an HDF5 file closed by a zip end record; a zip archive holding an HDF5
  signature, at one of the offsets where HDF5 looks for it, outside its members' data; bytes after
  a zip archive's end record);
- **names are text**: tensor names, layer names and metadata keys that are not valid Unicode (lone
  surrogates) or hold control or bidirectional-override characters, and metadata values holding
  control characters other than tab and newline, are refused: they cannot be written as UTF-8, or
  would rewrite the terminal that shows them.
"""

from __future__ import annotations

import contextlib
import json
import pickletools
import re
import struct
import zipfile
from pathlib import Path

from ..errors import InputError, UnsafeInputError, UsageError
from . import _zip
from .base import Reader, Writer, describe

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = _zip.MAGICS
MAX_INDEX_BYTES = 100_000_000
ZIP_ERRORS = _zip.ZIP_ERRORS
MAX_SAFETENSORS_HEADER = 100_000_000
# Bytes that may begin a safetensors header's JSON (after a BOM or whitespace, which its parser refuses
# or accepts itself): what makes a length-prefixed file worth handing to the safetensors parser.
_JSON_STARTS = (b"{", b"[", b'"')
# Characters no tensor or layer name, and no metadata key, may hold: C0/C1 controls, lone surrogates,
# bidirectional embeddings, overrides and isolates. Metadata values may also hold tab and newline.
_BAD_NAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_BAD_VALUE = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]|\r(?!\n)")
# Opcodes a pickle's first instruction can be (protocol 0/1 pickles have no PROTO header).
_PICKLE_FIRST = frozenset({"PROTO", "MARK", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "GLOBAL", "STACK_GLOBAL"})

# output format name -> (module, writer class)
OUTPUT_FORMATS = {
    "safetensors": ("safetensors", "Writer"),
    "hdf5": ("hdf5", "Writer"),
    "keras": ("hdf5", "KerasZipWriter"),
    "npz": ("npz.writer", "Writer"),
}
EXTENSIONS = {".safetensors": "safetensors", ".h5": "hdf5", ".hdf5": "hdf5", ".keras": "keras", ".npz": "npz"}


def _module(name: str):  # type: ignore[no-untyped-def]
    import importlib

    return importlib.import_module(f"{__name__}.{name}")


def _hdf5_offsets(path: Path, size: int) -> list[int]:
    """Where HDF5 finds its signature: at 0 or, after a user block, at 512, 1024, 2048, ..."""
    return _zip.hdf5_offsets(path, size)


def _hdf5_offset(path: Path, size: int) -> bool:
    return bool(_hdf5_offsets(path, size))


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
        _zip.refuse_polyglot(path, path.stat().st_size, infos)
    except ZIP_ERRORS as exc:
        raise InputError(path, f"a damaged zip archive ({exc or type(exc).__name__})") from exc
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
        with open(path, "rb", buffering=0) as f:  # unbuffered: read these 64 bytes, not a page of tensor data
            head = f.read(64)
    except FileNotFoundError as exc:
        raise InputError(path, "no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(path, "is a directory") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    if head.startswith(HDF5_MAGIC):
        _hdf5_polyglot(path, size)
        return "hdf5"
    if head.startswith(ZIP_MAGICS):
        return _zip_kind(path)
    if _safetensors_like(head, size):
        return "safetensors"
    if head.lstrip()[:1] == b"{":
        return _json_kind(path, size)
    if size >= 520 and _hdf5_offset(path, size):  # HDF5 after a user block: probed last, it seeks far
        _hdf5_polyglot(path, size)
        return "hdf5"
    if _pickle_like(path, head, size):
        raise UnsafeInputError(path, "a Python pickle (protocol 0 or 1, e.g. an old torch.save file); pickles are never loaded")
    raise InputError(path, describe(head))


def _hdf5_polyglot(path: Path, size: int) -> None:
    try:
        end = _zip.end_record(path, size)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    if end is not None:
        raise UnsafeInputError(
            path, "a polyglot: an HDF5 file that is also a zip archive (a zip end record closes it); refusing an ambiguous file"
        )


def _safetensors_like(head: bytes, size: int) -> bool:
    """A little-endian length that fits the file, then what looks like the start of JSON.

    The safetensors parser then says what is wrong (a BOM, an array instead of an object ...).
    """
    if len(head) <= 8:
        return False
    if head[8:9] == b"{":
        return True
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= min(size - 8, MAX_SAFETENSORS_HEADER):
        return False
    text = head[8:]
    text = text[3:] if text.startswith(b"\xef\xbb\xbf") else text
    return text.lstrip(b" \t\r\n")[:1] in _JSON_STARTS


def _pickle_like(path: Path, head: bytes, size: int) -> bool:
    """True for the start of a pickle without the protocol 2+ header (which :func:`describe` names).

    The opcodes are only decoded (:mod:`pickletools` disassembles; it constructs nothing): the first
    must be one a pickle starts with, at least three must decode, and the file must end with STOP.
    """
    if size < 4 or head[:1] not in (b"(", b"}", b"]", b"c", b")"):
        return False
    try:
        with open(path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) != b".":
                return False
            f.seek(0)
            start = f.read(4096)
    except OSError:
        return False
    ops: list[str] = []
    with contextlib.suppress(Exception):  # whatever the disassembler chokes on is simply not a pickle
        for op, _arg, _pos in pickletools.genops(start):
            ops.append(op.name)
            if len(ops) >= 3:
                break
    return len(ops) >= 3 and ops[0] in _PICKLE_FIRST


def open_checkpoint(path: str | Path) -> Reader:
    """Open any supported checkpoint lazily (headers only)."""
    path = Path(path)
    if path.is_dir():
        path = _resolve_dir(path)
    kind = detect(path)
    reader = _open(kind, path)
    try:
        check_text(reader)
    except BaseException:
        reader.close()
        raise
    return reader


def _open(kind: str, path: Path) -> Reader:
    if kind == "safetensors":
        return _module("safetensors").Reader(path)  # type: ignore[no-any-return]
    if kind == "safetensors_index":
        return _module("safetensors").ShardedReader(path)  # type: ignore[no-any-return]
    if kind == "npz":
        return _module("npz.reader").Reader(path)  # type: ignore[no-any-return]
    if kind == "hdf5":
        return _module("hdf5").Reader(path)  # type: ignore[no-any-return]
    if kind == "keras":
        return _module("hdf5").KerasZipReader(path)  # type: ignore[no-any-return]
    if kind == "keras_sharded":
        return _module("hdf5").KerasShardedReader(path)  # type: ignore[no-any-return]
    raise AssertionError(kind)


def _bad_char(text: str, pattern: re.Pattern[str]) -> str | None:
    found = pattern.search(text)
    return None if found is None else f"U+{ord(found.group()[0]):04X}"


def check_text(reader: Reader) -> None:
    """Refuse names and metadata that are not printable Unicode text (see the module docstring)."""
    for t in reader.tensors:
        for what, text in (("tensor name", t.name), ("layer name", t.layer)):
            bad = _bad_char(text, _BAD_NAME)
            if bad is not None:
                raise UnsafeInputError(
                    reader.path, f"{what} {text[:200]!r} holds the character {bad} (a control, bidirectional "
                    "or unpaired surrogate character); refusing a name that cannot be shown or written safely",
                )
    for key, value in reader.metadata.items():
        bad = _bad_char(key, _BAD_NAME)
        if bad is None and isinstance(value, str):
            bad = _bad_char(value, _BAD_VALUE)
        if bad is not None:
            raise UnsafeInputError(
                reader.path, f"metadata {key[:200]!r} holds the character {bad} (a control, bidirectional or "
                "unpaired surrogate character); refusing text that cannot be shown or written safely",
            )


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


__all__ = ["Reader", "Writer", "check_text", "detect", "format_family", "open_checkpoint", "output_format", "writer_class"]
