"""Checkpoints of any registered writable format, made through the format registry alone.

:func:`make_checkpoint` asks the registry for the format's writer (:func:`~ckptsurgeon.formats.writer_for`),
declares the arrays (``begin``), writes each (``write``) and finishes. A writer that writes
several files (``caps.sharded``: sharded safetensors) gets a small ``shard_size`` and ``path`` is
its index. On any error the writer is aborted and a half-written single file is removed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ckptsurgeon.formats import Writer, spec, writer_for
from ckptsurgeon.tensors import TensorSpec, code_of

#: shard size given to sharded writers: small enough that a handful of small tensors spans several shards
SHARD_SIZE = 64


def specs_of(tensors: Mapping[str, np.ndarray]) -> list[TensorSpec]:
    """The writer's declarations for ``tensors`` (their dtype codes, in the mapping's order)."""
    specs = []
    for name, arr in tensors.items():
        code = code_of(arr.dtype)
        if code is None:
            raise ValueError(f"tensor {name!r}: numpy dtype {arr.dtype} has no ckptsurgeon dtype code")
        specs.append(TensorSpec(name, tuple(arr.shape), code))
    return specs


def checkpoint_name(fmt: str, stem: str = "model") -> str:
    """A file name the registry would give format ``fmt``: its first extension, else its first folder glob."""
    found = spec(fmt)
    if found.extensions:
        return stem + found.extensions[0]
    if found.folder_globs:
        return found.folder_globs[0].replace("*", stem)
    raise ValueError(f"format {fmt!r} names neither an extension nor a folder glob")


def open_writer(path: str | os.PathLike[str], fmt: str, metadata: Mapping[str, str] | None = None, *,
                shard_size: int = SHARD_SIZE) -> Writer:
    """A new writer of format ``fmt`` for ``path`` (its directory created); sharded writers get ``shard_size``."""
    path = Path(path)
    cls = writer_for(fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if cls.caps.sharded:
        return cls(path, metadata=dict(metadata or {}), shard_size=shard_size)  # type: ignore[call-arg]
    return cls(path, metadata=dict(metadata or {}))


def make_checkpoint(path: str | os.PathLike[str], fmt: str, tensors: Mapping[str, np.ndarray],
                    metadata: Mapping[str, str] | None = None, *, shard_size: int = SHARD_SIZE) -> Path:
    """Write ``tensors`` (and ``metadata``) as a checkpoint of format ``fmt`` at ``path``; return ``path``.

    ``path`` must not exist; its directory is created. For sharded formats ``path`` is the index.
    """
    path = Path(path)
    writer = open_writer(path, fmt, metadata, shard_size=shard_size)
    sharded = writer.caps.sharded or writer.caps.commits
    try:
        writer.begin(specs_of(tensors))
        for name, arr in tensors.items():
            writer.write(name, arr)
        writer.finish()
    except BaseException:
        writer.abort()
        if not sharded:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    return path


__all__ = ["SHARD_SIZE", "checkpoint_name", "make_checkpoint", "open_writer", "specs_of"]
