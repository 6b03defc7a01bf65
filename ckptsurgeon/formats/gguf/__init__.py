"""GGUF (llama.cpp's format, version 2 and 3): read and write, quantized tensors moved as blocks.

A GGUF file is, all little-endian: the magic ``GGUF``, a u32 version, a u64 tensor count and a u64
metadata count; the metadata (key-value pairs, each a string key, a u32 value type and the value:
one of 13 types, arrays of them included, nested too); the tensor infos (name, u32 dimension count,
u64 dimensions in ggml order, fastest first, so numpy's shape reversed, u32 ggml type, u64 offset
into the data section); then the data section, starting at the end of the infos rounded up to
``general.alignment`` (a u32 power of two, 32 when absent), every tensor at an offset that is a
multiple of it and zero-padded to it.

``ggml.py`` holds the type tables (metadata value types; ggml tensor types and their dtype codes:
F32, F16, BF16, F64 and the integers map to ckptsurgeon's codes, the quantized types are block
dtypes, see :mod:`ckptsurgeon.tensors`). ``reader.py`` checks every count, length and offset
against the file before anything is allocated, and reads tensors from a memory map (byte ranges
for ``copy_file_range``). ``writer.py`` writes what llama.cpp's loader and gguf-py's reader accept:
tensors in the declared order, each at the next aligned offset, metadata typed.

Metadata: each value is kept typed (``Reader.typed_metadata``: ``{"type": "UINT32", "value": 16}``,
arrays as ``ARRAY[STRING]``) and shown as text in ``Reader.metadata`` (strings as they are, numbers
in decimal, booleans ``true``/``false``, arrays as JSON). A GGUF output given a GGUF input keeps
each value's type when its text is unchanged; any other value is written as a string.

This package's ``__init__`` holds only the format spec (stdlib only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import FormatSpec

if TYPE_CHECKING:
    from .._probe import Probe

MAGIC = b"GGUF"


def sniff(probe: Probe) -> bool:
    """The four bytes ``GGUF``: every such file is the reader's to judge (a damaged one is named as such)."""
    return probe.head.startswith(MAGIC)


GGUF = FormatSpec(
    name="gguf", family="gguf", description="GGUF", sniff=sniff,
    reader="ckptsurgeon.formats.gguf.reader:Reader", writer="ckptsurgeon.formats.gguf.writer:Writer",
    extensions=(".gguf",), folder_globs=("*.gguf",),
)

SPECS = (GGUF,)
