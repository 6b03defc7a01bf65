"""safetensors, one file or sharded in the Hugging Face layout.

``header.py`` parses and builds the header, ``reader.py`` reads one file (memory-mapped) or a
sharded checkpoint through its index, ``writer.py`` streams one file (byte ranges with
``copy_file_range``), ``sharded.py`` writes numbered shards and their index atomically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import FormatSpec

if TYPE_CHECKING:
    from .._probe import Probe

MAX_HEADER_BYTES = 100_000_000  # the reference parser's limit (header.py checks it again)


def sniff(probe: Probe) -> bool:
    """An 8-byte length that fits the file, then the start of a JSON header."""
    return probe.safetensors_like(MAX_HEADER_BYTES)


def sniff_damaged(probe: Probe) -> bool:
    """A JSON header at byte 8 behind a length that does not fit: a truncated or damaged file."""
    return probe.safetensors_like(MAX_HEADER_BYTES, damaged=True)


SAFETENSORS = FormatSpec(
    name="safetensors",
    family="safetensors",
    description="safetensors",
    sniff=sniff,
    sniff_damaged=sniff_damaged,
    reader="ckptsurgeon.formats.safetensors.reader:Reader",
    writer="ckptsurgeon.formats.safetensors.writer:Writer",
    remote_writer="ckptsurgeon.formats.safetensors.remote:RemoteWriter",
    extensions=(".safetensors",),
    folder_globs=("*.safetensors",),
)

SAFETENSORS_SHARDED = FormatSpec(
    name="safetensors-sharded",
    family="safetensors",
    description="sharded safetensors (Hugging Face index)",
    reader="ckptsurgeon.formats.safetensors.reader:ShardedReader",
    writer="ckptsurgeon.formats.safetensors.sharded:Writer",
    shards_of="safetensors",
    folder_globs=("*.safetensors.index.json",),
)

SPECS = (SAFETENSORS, SAFETENSORS_SHARDED)
