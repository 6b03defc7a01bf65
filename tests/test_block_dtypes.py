"""Block dtypes (ggml's quantized types): byte sizes follow the block, and no writer but GGUF takes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckptsurgeon.errors import OutputError
from ckptsurgeon.formats import writer_for
from ckptsurgeon.plan import castable
from ckptsurgeon.tensors import (
    BLOCK_SIZES,
    DTYPES,
    FLOAT_CODES,
    TensorInfo,
    TensorSpec,
    block_problem,
    byte_size,
    code_of,
)


def test_byte_size_follows_the_block() -> None:
    assert byte_size("Q8_0", (96, 32)) == 96 * 34
    assert byte_size("Q4_0", (64, 32)) == 64 * 18
    assert byte_size("Q4_K", (2, 512)) == 4 * 144
    assert TensorInfo("w", (64, 32), "Q4_0").nbytes == 1152
    assert TensorSpec("w", (96, 32), "Q8_0").nbytes == 3264
    assert byte_size("F32", (3, 5)) == 60


def test_whole_blocks_along_the_last_axis() -> None:
    assert block_problem("Q8_0", (4, 64)) is None
    assert block_problem("F32", (3, 5)) is None
    assert "multiple of 32" in (block_problem("Q4_0", (64, 33)) or "")
    assert "multiple of 256" in (block_problem("Q6_K", (256, 32)) or "")  # numel 8192 is whole blocks, rows are not
    assert block_problem("Q8_0", ()) is not None


def test_block_dtypes_are_raw_bytes_never_values() -> None:
    for code in BLOCK_SIZES:
        d = DTYPES[code]
        assert d.is_block and d.kind == "block" and d.numpy.itemsize == 1
        assert code not in FLOAT_CODES
        assert not castable(code, "F32") and not castable("F16", code) and castable(code, code)
    import numpy as np

    assert code_of(np.dtype(np.uint8)) == "U8"


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "torch", "hdf5"])
def test_writers_without_block_dtypes_refuse_them_by_name(fmt: str, tmp_path: Path) -> None:
    writer = writer_for(fmt)(tmp_path / "out")
    with pytest.raises(OutputError, match=r"'blk\.0\.w' \(Q4_0\).*cannot hold ggml's quantized blocks"):
        writer.begin([TensorSpec("a", (2,), "F32"), TensorSpec("blk.0.w", (2, 32), "Q4_0")])
    writer.abort()
