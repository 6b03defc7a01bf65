"""Write a sharded safetensors checkpoint through ckptsurgeon's writer (aborted on any error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ckptsurgeon.formats.safetensors import sharded
from ckptsurgeon.tensors import TensorSpec, code_of


def write_sharded(index: Path, data: dict[str, np.ndarray], shard_size: int, **kwargs: Any) -> sharded.Writer:
    """Write ``data`` as a sharded checkpoint named by ``index``; ``kwargs`` go to the writer."""
    w = sharded.Writer(index, shard_size=shard_size, **kwargs)
    try:
        w.begin([TensorSpec(n, a.shape, code_of(a.dtype)) for n, a in data.items()])  # type: ignore[arg-type]
        for n, a in data.items():
            w.write(n, a)
        w.finish()
    except BaseException:
        w.abort()
        raise
    return w
