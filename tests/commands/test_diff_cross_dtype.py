"""ckpt diff across dtypes, on real files: an F32 checkpoint written by torch / safetensors and its
BF16 and F16 copies made by ``ckpt convert --dtype`` and by torch itself (``t.to(torch.bfloat16)``
saved by ``safetensors.torch.save_file``; ``tests/data/cross_dtype/make_cross_dtype.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

import ckptsurgeon
from ckptsurgeon.commands.diff import (
    FLOAT_RANGES,
    DiffOptions,
    compare_tensors,
    compare_values,
    compared_as,
    diff,
)
from ckptsurgeon.tensors import DTYPES

from ..conftest import CORPUS, DATA
from ..support.cli import run
from .test_diff import ArrayReader

SCHEMA = json.loads((Path(ckptsurgeon.__file__).parent / "schemas" / "diff.schema.json").read_text())
F32 = CORPUS / "torch" / "smallcnn.safetensors"  # 14 F32 tensors and two I64 num_batches_tracked
TORCH = {"BF16": DATA / "cross_dtype" / "smallcnn_bf16.safetensors", "F16": DATA / "cross_dtype" / "smallcnn_f16.safetensors"}
ALTERED = DATA / "cross_dtype" / "smallcnn_bf16_altered.safetensors"  # fc.weight[3, 5] + 0.5 before the cast
# Rounding to nearest moves a value by at most half a unit in the last place: 2**-8 of it in BF16
# (8 significant bits), 2**-11 in F16 (11 bits), plus F16's subnormal spacing for tiny values.
TOLERANCE = {"BF16": ["--rtol", "0.004"], "F16": ["--rtol", "0.001", "--atol", "1e-7"]}
FLOATS = 14


def diff_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, dict]:
    code, out, err = run(["diff", *argv, "--json"], capsys)
    assert err == ""
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    return code, doc


@pytest.fixture
def converted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """The F32 checkpoint converted by ``ckpt convert --dtype`` to BF16 and to F16."""
    paths = {}
    for code in ("BF16", "F16"):
        paths[code] = tmp_path / f"smallcnn_{code.lower()}.safetensors"
        status, _, err = run(["convert", F32, "-o", paths[code], "--dtype", code], capsys)
        assert status == 0, err
    return paths


@pytest.mark.parametrize("code", ["BF16", "F16"])
def test_convert_and_torch_round_alike(code: str, converted: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = diff_json(capsys, converted[code], TORCH[code])
    assert status == 0 and doc["verdict"].startswith("equal: 16 tensors compared, all identical"), doc["verdict"]


@pytest.mark.parametrize("maker", ["convert", "torch"])
@pytest.mark.parametrize("code", ["BF16", "F16"])
def test_a_half_precision_copy_is_equal_within_the_tolerance(
    code: str, maker: str, converted: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    copy = converted[code] if maker == "convert" else TORCH[code]
    status, doc = diff_json(capsys, F32, copy, *TOLERANCE[code])
    assert status == 0 and doc["equal"], doc["verdict"]
    rows = {t["name"]: t for t in doc["tensors"]}
    assert len(rows) == 16 and {t["status"] for t in rows.values()} == {"equal"}
    floats = {n: t for n, t in rows.items() if t["a_dtype"] == "F32"}
    assert len(floats) == FLOATS
    assert {(t["b_dtype"], t["compared_as"]) for t in floats.values()} == {(code, "F32")}
    assert all(t["compared_as"] is None and t["byte_identical"] for n, t in rows.items() if n not in floats)
    assert doc["summary"]["cross_dtype"] == FLOATS and doc["summary"]["dtype_changed"] == 0
    assert f"; {FLOATS} compared across dtypes (F32 vs {code} as F32)" in doc["verdict"]
    # the largest |a-b| is the largest rounding error, as numpy and ml_dtypes measure it
    a, wide = load_file(str(F32)), ml_dtypes.bfloat16 if code == "BF16" else np.float16
    want = max(float(np.abs(a[n].astype(np.float64) - a[n].astype(wide).astype(np.float64)).max()) for n in floats)
    assert doc["summary"]["max_abs_diff"] == pytest.approx(want) and want > 0
    # the table names every tensor compared across dtypes, equal ones included
    status, out, _ = run(["diff", F32, copy, *TOLERANCE[code]], capsys)
    assert status == 0
    listed = [line for line in out.splitlines() if "equal as F32" in line]
    assert len(listed) == FLOATS and all(f" {code} " in line for line in listed)
    assert "2 equal tensors not listed" in out


@pytest.mark.parametrize("code", ["BF16", "F16"])
def test_without_a_tolerance_rounding_is_a_difference(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = diff_json(capsys, F32, TORCH[code])
    assert status == 1
    a = load_file(str(F32))
    wide = ml_dtypes.bfloat16 if code == "BF16" else np.float16
    rows = {t["name"]: t for t in doc["tensors"]}
    for name, t in rows.items():
        if t["compared_as"] is None:
            continue
        moved = int(np.count_nonzero(a[name].astype(wide).astype(np.float32) != a[name]))  # what the cast changed
        assert t["differing"] == moved, name
        assert t["status"] == ("values" if moved else "equal")
    assert doc["summary"]["differing_elements"] > 0 and doc["summary"]["cross_dtype"] == FLOATS


def test_an_altered_tensor_is_reported_across_dtypes(capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = diff_json(capsys, F32, ALTERED, *TOLERANCE["BF16"])
    assert status == 1
    changed = [t for t in doc["tensors"] if t["status"] != "equal"]
    assert [(t["name"], t["status"], t["compared_as"], t["differing"]) for t in changed] == [
        ("fc.weight", "values", "F32", 1)
    ]
    assert changed[0]["max_abs_diff"] == pytest.approx(0.5, abs=0.01)
    assert doc["summary"]["equal"] == 15 and doc["summary"]["cross_dtype"] == FLOATS
    code, out, _ = run(["diff", F32, ALTERED, *TOLERANCE["BF16"], "-q"], capsys)
    assert code == 1 and out.startswith("different: 1 with different values, 1 of 1,660 compared elements differ")


def test_strict_dtypes_counts_the_dtype_change(capsys: pytest.CaptureFixture[str]) -> None:
    status, doc = diff_json(capsys, F32, TORCH["BF16"], *TOLERANCE["BF16"], "--strict-dtypes")
    assert status == 1 and doc["summary"]["dtype_changed"] == FLOATS and doc["summary"]["differing_elements"] == 0


# --- the dtype both sides are cast to --------------------------------------------------------------------


FLOAT_CODES = [c for c, d in DTYPES.items() if d.kind == "float"]
SMALL = [c for c in FLOAT_CODES if DTYPES[c].itemsize <= 2]


@pytest.mark.parametrize("code", FLOAT_CODES)
def test_the_float_ranges_are_ml_dtypes_own(code: str) -> None:
    dt = DTYPES[code].numpy
    info = ml_dtypes.finfo(dt)
    with np.errstate(over="ignore", invalid="ignore"):
        has_inf = bool(np.isinf(np.array([np.inf]).astype(dt).astype(np.float64))[0])
    assert FLOAT_RANGES[code] == (info.nmant, info.maxexp, info.minexp - info.nmant, has_inf)
    assert float(info.smallest_subnormal) == 2.0 ** FLOAT_RANGES[code][2]


def every_value(code: str) -> np.ndarray:
    """Every bit pattern of an 8- or 16-bit float dtype, as that dtype."""
    word = np.uint8 if DTYPES[code].itemsize == 1 else np.uint16
    return np.arange(np.iinfo(word).max + 1, dtype=np.uint32).astype(word).view(DTYPES[code].numpy)


def exact_in(values: np.ndarray, code: str) -> bool:
    """Whether every value survives a cast to ``code`` and back (NaN as NaN)."""
    with np.errstate(all="ignore"):
        back = values.astype(DTYPES[code].numpy).astype(values.dtype)
        v, w = values.astype(np.float64), back.astype(np.float64)
    return bool(np.all((v == w) | (np.isnan(v) & np.isnan(w))))


@pytest.mark.parametrize("a", SMALL)
@pytest.mark.parametrize("b", FLOAT_CODES)
def test_two_floats_widen_to_the_narrowest_float_that_holds_both(a: str, b: str) -> None:
    wide = compared_as(a, b)
    if a == b:
        assert wide is None
        return
    assert wide is not None and wide == compared_as(b, a)
    assert exact_in(every_value(a), wide)
    if b in SMALL:
        assert exact_in(every_value(b), wide)
        # no float of fewer bytes holds both: the narrowest was taken
        narrower = [c for c in FLOAT_CODES if DTYPES[c].itemsize < DTYPES[wide].itemsize]
        assert not [c for c in narrower if exact_in(every_value(a), c) and exact_in(every_value(b), c)]
    else:
        assert wide == b  # F32 and F64 hold every narrower float


def test_integer_pairs_widen_to_an_integer_that_holds_both() -> None:
    assert [compared_as(*pair) for pair in [("I8", "U8"), ("U8", "I8"), ("I32", "U32"), ("I16", "I64"), ("U16", "U32"),
                                            ("I64", "U64"), ("I32", "F32"), ("BOOL", "U8"), ("F32", "BOOL")]] == \
        ["I16", "I16", "I64", "I64", "U32", "F64", "F64", None, None]
    # -1 and 255 share a byte but not a value
    ra, rb = ArrayReader({"t": np.array([-1, 0, 127], np.int8)}), ArrayReader({"t": np.array([255, 0, 127], np.uint8)})
    got = compare_tensors(ra, ra["t"], rb, rb["t"])
    assert (got.differing, got.max_abs_diff) == (1, 256.0)


def test_special_values_across_dtypes() -> None:
    nan, inf = np.nan, np.inf
    a = np.array([nan, inf, -inf, 0.0, -0.0, 1.0, 1e-40, 70000.0], dtype=np.float32)
    with np.errstate(over="ignore"):
        b = a.astype(np.float16)  # 1e-40 underflows to 0, 70000 overflows to inf
    ra, rb = ArrayReader({"t": a}), ArrayReader({"t": b})
    got = compare_tensors(ra, ra["t"], rb, rb["t"], atol=1e-30)
    assert (got.differing, got.nonfinite, got.max_abs_diff) == (1, 1, pytest.approx(1e-40))


@pytest.mark.parametrize("chunk_elements", [1, 7, 1000, 1 << 20])
def test_cross_dtype_values_are_compared_chunk_by_chunk(chunk_elements: int) -> None:
    """A piece of each side at a time (ArrayReader refuses whole reads), with the same answer as whole arrays."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(3001).astype(np.float32)
    b = a.astype(ml_dtypes.bfloat16)
    b[rng.choice(3001, 11, replace=False)] += ml_dtypes.bfloat16(1)
    ra, rb = ArrayReader({"t": a}, piece=3), ArrayReader({"t": b}, piece=5)
    for atol in (0.0, 0.01):
        got = compare_tensors(ra, ra["t"], rb, rb["t"], atol=atol, chunk_elements=chunk_elements)
        assert got == compare_values(a, b.astype(np.float32), atol) and got.differing >= 11 * (atol > 0)


def test_the_library_reports_the_cross_dtype_pairs() -> None:
    result = diff(F32, TORCH["F16"], DiffOptions(rtol=1e-3, atol=1e-7))
    assert result.equal and len(result.cross_dtype) == FLOATS
    assert {t.compared_as for t in result.cross_dtype} == {"F32"}
