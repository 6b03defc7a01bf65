"""A toy checkpoint format defined entirely outside ckptsurgeon, registered at run time.

It exists to prove that a format can be added through the registry alone (``register`` /
``unregister``) and to run the contract suite against a format that ckptsurgeon never heard of.

Layout (all integers little-endian)::

    b"CKPTTOY1"                    8 bytes of magic
    u32 n                          the header's length in bytes
    n bytes of UTF-8 JSON          {"metadata": {str: str}, "tensors": [{"name", "dtype", "shape", "offset", "length"}]}
    data                           each tensor's raw C-order bytes, at ``offset`` from the start of the data

``dtype`` is a safetensors dtype code. The tensors tile the data section exactly, in the header's
order: contiguous, no overlap, no hole, no trailing bytes, each ``length`` = shape x item size.
The writer pads the header with spaces so that the data starts on an 8-byte boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ckptsurgeon.formats import register, unregister
from ckptsurgeon.formats.base import FormatSpec

from .layout import MAGIC

SPEC = FormatSpec(
    name="toy",
    family="toy",
    description="toy",
    sniff=lambda probe: probe.head.startswith(MAGIC),
    reader="tests.formats.toy.reader:Reader",
    writer="tests.formats.toy.writer:Writer",
    extensions=(".toy",),
    folder_globs=("*.toy",),
)


@contextmanager
def registered() -> Iterator[str]:
    """The toy format registered for the duration of the block (its name is yielded)."""
    register(SPEC)
    try:
        yield SPEC.name
    finally:
        unregister(SPEC.name)
