"""What a checkpoint must hold, checked through the registry: listing, values (byte for byte) and metadata."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from ckptsurgeon.formats import Reader, open_checkpoint
from ckptsurgeon.tensors import DTYPES, code_of

Listing = list[tuple[str, tuple[int, ...], str]]


def sample_tensors(*formats: str) -> dict[str, np.ndarray]:
    """A small checkpoint with every kind of value a format must carry (fixed seed).

    Floats of three widths, a signed 64-bit integer beyond 2**53, every uint8 corner, bools, a
    float8, a 0-d scalar and an empty tensor; less the dtypes one of ``formats`` cannot write
    (its writer's ``caps.dtypes``: MindSpore has no float8).
    """
    from ckptsurgeon.formats import spec

    rng = np.random.default_rng(20240611)
    tensors = {
        "block.weight": rng.standard_normal((3, 5)).astype("<f4"),
        "block.half": rng.standard_normal((4, 2)).astype("<f2"),
        "block.bf16": rng.standard_normal((2, 3, 2)).astype(ml_dtypes.bfloat16),
        "block.f8": rng.standard_normal((5,)).astype(ml_dtypes.float8_e4m3fn),
        "steps": np.array([-(2**62), -1, 0, 2**53 + 1], dtype="<i8"),
        "pixels": np.array([0, 1, 127, 128, 255], dtype=np.uint8),
        "mask": np.array([[True, False, True], [False, False, True]]),
        "scale": np.array(1.5, dtype="<f4"),
        "empty": np.zeros((0, 4), dtype="<f4"),
    }
    for fmt in formats:
        found = spec(fmt)
        writable = found.writer_class().caps.dtypes if found.writer else None
        if writable is not None:
            tensors = {n: a for n, a in tensors.items() if code_of(a.dtype) in writable}
    return tensors


METADATA = {"source": "ckptsurgeon contract suite", "note": "ünïcödé ✓, a tab\tand a newline\nhere"}


def listing(reader: Reader) -> Listing:
    """``(name, shape, dtype code)`` of every tensor, in the reader's order."""
    return [(t.name, tuple(t.shape), t.dtype) for t in reader.tensors]


def expected_listing(tensors: Mapping[str, np.ndarray], fmt: str | None = None) -> Listing:
    """``(name, shape, dtype code)`` of ``tensors`` in the order a reader of ``fmt`` lists them: as
    written, or sorted by name for a format that keeps them so (``FormatSpec.sorted_names``)."""
    from ckptsurgeon.formats import spec

    out: Listing = []
    for name, arr in tensors.items():
        code = code_of(arr.dtype)
        assert code is not None, name
        out.append((name, tuple(arr.shape), code))
    return sorted(out) if fmt is not None and spec(fmt).sorted_names else out


def assert_same_array(name: str, got: np.ndarray, want: np.ndarray) -> None:
    """Same dtype, shape and bytes (NaN, -0.0 and bfloat16 compared exactly)."""
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    assert got.tobytes() == want.tobytes(), f"{name}: values differ:\n{got!r}\nexpected\n{want!r}"


def assert_checkpoint(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], *, fmt: str | None = None,
                      metadata: Mapping[str, str] | None = None, added: Collection[str] = ()) -> None:
    """The checkpoint at ``path`` is of format ``fmt`` and holds exactly ``tensors`` (in that order) and ``metadata``.

    ``added``: metadata keys the format writes by itself (left out of the comparison).
    """
    with open_checkpoint(Path(path)) as reader:
        if fmt is not None:
            assert reader.format == fmt
        assert listing(reader) == expected_listing(tensors, reader.format)
        for name, want in tensors.items():
            got = reader.read(name)
            assert got.dtype == DTYPES[reader[name].dtype].numpy
            assert_same_array(name, got, want)
        if metadata is not None:
            got_meta = {k: v for k, v in reader.metadata.items() if k not in added}
            assert got_meta == dict(metadata)


__all__ = ["METADATA", "assert_checkpoint", "assert_same_array", "expected_listing", "listing", "sample_tensors"]
