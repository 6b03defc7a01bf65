"""What a file looks like before any reader opens it: one :class:`Probe` per path.

A probe reads the file's size and first 64 bytes once (unbuffered: nothing of the tensor data)
and works out the rest lazily, each fact at most once, for the format specs' ``sniff`` functions:
where HDF5 would find its signature, the member names of a zip archive, a JSON index. Refusals
that concern the file as a whole, not one format, are made here:

- **polyglots**: a file that two kinds of reader would both accept, read differently by
  different tools (an HDF5 file closed by a zip end record; a zip archive holding an HDF5
  signature, at one of the offsets where HDF5 looks for it, outside its members' data; bytes after
  a zip archive's end record);
- **files that are not checkpoints**, or whose format ckptsurgeon does not read, are named by
  :func:`refuse` in one line (a pickle that is not a PyTorch checkpoint, a Git LFS pointer, an HTML
  page ...). PyTorch checkpoints (a zip with ``<folder>/data.pkl``, a legacy file
  starting with torch's magic number) are claimed by the ``torch`` format, whose restricted
  unpickler reads them; no other pickle is ever read.
"""

from __future__ import annotations

import struct
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import InputError, UnsafeInputError
from ..files import open_input, read_input
from ._index import MAX_INDEX_BYTES, ShardIndex, strict_json

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # how a zip archive starts (an empty one is only its end record)
HEAD_BYTES = 64
NOT_TORCH_PICKLE = ("a Python pickle that is not a PyTorch checkpoint (neither a torch.save zip nor a legacy "
                    "torch.save file); such pickles are never loaded")


class Probe:
    """The facts about one file that format detection needs, each read at most once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: the format of a sharded index's first shard, once the registry has probed it
        self.shard_format: str | None = None
        try:
            # a regular file only, opened without blocking on a FIFO; unbuffered: these 64 bytes, not a page of data
            with open_input(path, buffering=0) as f:
                self.size = f.seek(0, 2)
                f.seek(0)
                self.head = f.read(HEAD_BYTES)
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc

    @cached_property
    def tail(self) -> bytes:
        """The file's last bytes (up to 64): where a TensorFlow table keeps its magic number."""
        if self.size <= HEAD_BYTES:
            return self.head
        with open_input(self.path, buffering=0) as f:
            f.seek(self.size - HEAD_BYTES)
            return f.read(HEAD_BYTES)

    @property
    def is_zip(self) -> bool:
        return self.head.startswith(ZIP_MAGICS)

    @cached_property
    def hdf5_offsets(self) -> tuple[int, ...]:
        """Where HDF5 would find its signature (0, or after a user block: 512, 1024, 2048 ...).

        Empty for zip archives, whose signatures must lie inside members (:attr:`zip_names`
        refuses the others). An HDF5 file closed by a zip end record is refused as a polyglot.
        """
        if self.is_zip:
            self.zip_names  # noqa: B018 - refuses signatures outside the members
            return ()
        if not self.head.startswith(HDF5_MAGIC) and self.size < 520:
            return ()
        from . import _zip  # zipfile is imported only for files that need it

        found = tuple(_zip.hdf5_offsets(self.path, self.size))
        if found and _zip.end_record(self.path, self.size) is not None:
            raise UnsafeInputError(
                self.path, "a polyglot: an HDF5 file that is also a zip archive (a zip end record closes it); "
                "refusing an ambiguous file",
            )
        return found

    @cached_property
    def zip_names(self) -> tuple[str, ...] | None:
        """The member names of a zip archive (checked, polyglots refused); None for other files."""
        if not self.is_zip:
            return None
        from . import _zip

        return tuple(_zip.member_names(self.path, self.size))

    @cached_property
    def json(self) -> Any:
        """The document of a JSON file (strictly parsed, at most 100 MB); None for other files."""
        if self.head.lstrip()[:1] != b"{":
            return None
        if self.size > MAX_INDEX_BYTES:
            raise InputError(self.path, f"a {self.size} byte JSON file is too large for a checkpoint index")
        try:
            return strict_json(read_input(self.path), "the JSON file")
        except OSError as exc:
            raise InputError(self.path, f"cannot read: {exc.strerror or exc}") from exc
        except (ValueError, RecursionError) as exc:
            raise InputError(self.path, f"not valid JSON ({exc})") from exc

    @cached_property
    def index(self) -> ShardIndex | None:
        """The sharded index in a JSON file with a ``weight_map``; None for anything else."""
        return None if self.json is None else ShardIndex.from_doc(self.path, self.json)

    def safetensors_like(self, max_header: int, *, damaged: bool = False) -> bool:
        """An 8-byte little-endian length that fits the file, then what looks like the start of JSON.

        With ``damaged``, also a file that looks like a damaged one (the JSON starts at byte 8 but
        the length is wrong): its parser then says what is wrong (a BOM, a length past the end ...).
        """
        head, size = self.head, self.size
        if len(head) <= 8 or head.startswith((HDF5_MAGIC, *ZIP_MAGICS)):
            return False
        (n,) = struct.unpack("<Q", head[:8])
        if not 2 <= n <= min(size - 8, max_header):
            return damaged and head[8:9] == b"{"
        text = head[8:]
        text = text[3:] if text.startswith(b"\xef\xbb\xbf") else text
        return text.lstrip(b" \t\r\n")[:1] in (b"{", b"[", b'"')


# The arguments of the protocol 0/1 opcodes a pickle starts with: "" none, "n" a newline-terminated
# line, "nn" two lines, an int a fixed size, "<1"/"<4" a length prefix of that size then that many bytes.
_OPCODE_ARGS: dict[bytes, str | int] = {
    b"(": "", b"}": "", b"]": "", b")": "", b"N": "", b"t": "", b"d": "", b"l": "", b"a": "", b"e": "",
    b"s": "", b"u": "", b"R": "", b"b": "", b"0": "", b"1": "", b"2": "", b"o": "", b".": "",
    b"c": "nn", b"i": "nn", b"p": "n", b"g": "n", b"S": "n", b"V": "n", b"I": "n", b"L": "n", b"F": "n",
    b"q": 1, b"h": 1, b"K": 1, b"M": 2, b"J": 4, b"r": 4, b"j": 4, b"G": 8, b"U": "<1", b"T": "<4", b"X": "<4",
}
_PICKLE_FIRST = frozenset(b"(}])c")  # MARK, EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, GLOBAL


def _opcodes(data: bytes, count: int) -> int:
    """How many of the first ``count`` protocol 0/1 opcodes of ``data`` decode (their arguments are only skipped)."""
    pos = done = 0
    while done < count and pos < len(data):
        arg = _OPCODE_ARGS.get(data[pos : pos + 1])
        if arg is None:
            break
        pos += 1
        if isinstance(arg, int):
            pos += arg
        elif arg in ("n", "nn"):
            for _ in arg:
                end = data.find(b"\n", pos)
                if end < 0:
                    return done
                pos = end + 1
        elif arg:
            size = 1 if arg == "<1" else 4
            pos += size + int.from_bytes(data[pos : pos + size], "little")
        if pos > len(data):
            break
        done += 1
    return done


def _pickle_like(probe: Probe) -> bool:
    """True for the start of a pickle without the protocol 2+ header (which :func:`describe` names).

    The opcodes are only stepped over, never run: the first must be one a pickle starts with, at
    least three must decode, and the file must end with STOP.
    """
    if probe.size < 4 or probe.head[0] not in _PICKLE_FIRST:
        return False
    try:
        with open_input(probe.path) as f:
            f.seek(probe.size - 1)
            if f.read(1) != b".":
                return False
            f.seek(0)
            start = f.read(4096)
    except OSError:
        return False
    return _opcodes(start, 3) >= 3


def describe(head: bytes) -> str:
    """Name the kind of file behind bytes no reader accepts, for the error message."""
    text = head.lstrip()
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return "a Git LFS pointer, not the checkpoint itself (run `git lfs pull` to fetch the real file)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return NOT_TORCH_PICKLE
    if head.startswith(b"\x93NUMPY"):
        return "a single .npy array, not a checkpoint (save it with numpy.savez)"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed; decompress it first"
    if text.startswith((b"<!DOCTYPE", b"<html", b"<HTML")):
        return "an HTML page (a failed download?)"
    if not head:
        return "empty"
    return "not a checkpoint format ckptsurgeon reads (safetensors, HDF5/Keras, npz, PyTorch, MindSpore, TensorFlow, GGUF)"


def refuse(probe: Probe) -> InputError:
    """The one-line error for a file no format claimed."""
    names = probe.zip_names
    if names is not None:
        if any(n.endswith(".pkl") for n in names):
            return UnsafeInputError(
                probe.path, "a zip archive of pickles that is not a PyTorch checkpoint (no <folder>/data.pkl); "
                "such pickles are never loaded",
            )
        if not names:
            return InputError(probe.path, "an empty zip archive")
        return InputError(probe.path, "a zip archive that is neither an npz (only .npy members) nor a .keras archive")
    if probe.json is not None:
        return InputError(probe.path, "a JSON file that is not a sharded checkpoint index (no \"weight_map\")")
    if _pickle_like(probe):
        return UnsafeInputError(probe.path, f"{NOT_TORCH_PICKLE} (protocol 0 or 1)")
    return InputError(probe.path, describe(probe.head))
