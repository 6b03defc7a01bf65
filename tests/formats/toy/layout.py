"""The toy format's byte layout, shared by its reader and writer (see the package docstring)."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from ckptsurgeon.tensors import TensorSpec

MAGIC = b"CKPTTOY1"
LENGTH = struct.Struct("<I")
PREFIX = len(MAGIC) + LENGTH.size  # where the header starts
MAX_HEADER_BYTES = 16 << 20
ALIGN = 8


def build_header(specs: Sequence[TensorSpec], metadata: dict[str, str]) -> bytes:
    """Magic, length and JSON header for tensors laid out in ``specs`` order, padded so the data is aligned."""
    entries: list[dict[str, Any]] = []
    offset = 0
    for s in specs:
        entries.append({"name": s.name, "dtype": s.dtype, "shape": list(s.shape), "offset": offset, "length": s.nbytes})
        offset += s.nbytes
    doc = {"metadata": dict(metadata), "tensors": entries}
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(PREFIX + len(raw)) % ALIGN)
    return MAGIC + LENGTH.pack(len(raw)) + raw
