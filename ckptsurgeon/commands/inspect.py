"""``ckpt inspect``: a checkpoint's tensors from its headers (and, when asked, each tensor's sha256)."""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..formats import open_checkpoint
from ..formats.base import OpenOptions
from ..tensors import TensorInfo

INSPECT_SCHEMA = "ckptsurgeon/inspect/1"

@dataclass
class Inspection:
    """What ``ckpt inspect`` reports: plain data, ready for a table or for JSON."""

    path: str
    format: str
    files: list[str]
    metadata: dict[str, str]
    tensors: list[TensorInfo]
    sha256: dict[str, str] = field(default_factory=dict)
    layout: str | None = None  # a refinement of the format (HDF5: keras-h5, keras3-h5)
    match_names: dict[str, str] = field(default_factory=dict)  # stored name -> Keras 3 variable name
    #: metadata with its types, where the format types it (GGUF): key -> {"type", "value"}, arrays whole
    metadata_typed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return True

    @property
    def totals(self) -> dict[str, Any]:
        dtypes = Counter(t.dtype for t in self.tensors)
        return {
            "tensors": len(self.tensors),
            "parameters": sum(t.numel for t in self.tensors),
            "bytes": sum(t.nbytes for t in self.tensors),
            "dtypes": dict(sorted(dtypes.items())),
        }

    def to_dict(self) -> dict[str, Any]:
        tensors = []
        for t in self.tensors:
            entry: dict[str, Any] = {
                "name": t.name, "shape": list(t.shape), "dtype": t.dtype, "layer": t.layer, "nbytes": t.nbytes,
            }
            if t.name in self.match_names:
                entry["match_name"] = self.match_names[t.name]
            if t.name in self.sha256:
                entry["sha256"] = self.sha256[t.name]
            tensors.append(entry)
        doc = {
            "schema": INSPECT_SCHEMA,
            "ok": self.ok,
            "path": self.path,
            "format": self.format,
            "layout": self.layout,
            "files": self.files,
            "metadata": self.metadata,
            "tensors": tensors,
            "totals": self.totals,
        }
        if self.metadata_typed:
            doc["metadata_typed"] = self.metadata_typed
        return doc


def select(tensors: Sequence[TensorInfo], globs: Sequence[str]) -> list[TensorInfo]:
    if not globs:
        return list(tensors)
    return [t for t in tensors if any(fnmatch.fnmatchcase(t.name, g) for g in globs)]


def run(path: str | Path, *, hash: bool = False, filter: Sequence[str] = (),
        options: OpenOptions | None = None) -> Inspection:
    """List a checkpoint's tensors from its headers; with ``hash``, also read each tensor once for its sha256."""
    with open_checkpoint(path, options) as reader:
        tensors = select(reader.tensors, filter)
        sums = {t.name: reader.sha256(t.name) for t in tensors} if hash else {}
        return Inspection(
            path=str(path),
            format=reader.format,
            files=[str(p) for p in reader.files],
            metadata=dict(reader.metadata),
            tensors=tensors,
            sha256=sums,
            layout=reader.layout,
            match_names={t.name: reader.match_names[t.name] for t in tensors if t.name in reader.match_names},
            metadata_typed=reader.typed_metadata(),
        )
