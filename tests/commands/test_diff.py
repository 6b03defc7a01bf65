"""ckpt diff: names, shapes, dtypes and values of two checkpoints, exit codes, rules, JSON and Markdown."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rich.console import Console
from safetensors.numpy import load_file, save_file

import ckptsurgeon
from ckptsurgeon.cli.diff_render import diff_markdown, diff_rows, render_diff
from ckptsurgeon.commands import diff as diff_module
from ckptsurgeon.commands.diff import DiffOptions, compare_tensors, compare_values, diff, diff_readers
from ckptsurgeon.errors import CheckFailed, UsageError
from ckptsurgeon.formats.base import Reader
from ckptsurgeon.rules import Rules
from ckptsurgeon.tensors import TensorInfo, code_of, default_layer

from ..support.cli import run

SCHEMA = json.loads((Path(ckptsurgeon.__file__).parent / "schemas" / "diff.schema.json").read_text())


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code, out, err = run([*argv, "--json"], capsys)
    assert err == ""
    doc = json.loads(out)  # stdout holds one JSON document and nothing else
    jsonschema.validate(doc, SCHEMA)
    return code, doc


def make(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


class ArrayReader(Reader):
    """Arrays in memory, handed out in byte pieces of an awkward size that split elements."""

    format = "memory"

    def __init__(self, arrays: dict[str, np.ndarray], piece: int = 5) -> None:
        super().__init__(Path("memory"))
        self.arrays = arrays
        self.piece = piece
        self.tensors = [TensorInfo(n, a.shape, code_of(a.dtype) or "", default_layer(n)) for n, a in arrays.items()]

    def read(self, name: str) -> np.ndarray:
        raise AssertionError("whole tensors are never read: values are compared chunk by chunk")

    def iter_bytes(self, name: str, chunk_bytes: int = 0) -> Iterator[memoryview]:
        raw = np.ascontiguousarray(self.arrays[name]).tobytes()
        for start in range(0, len(raw), self.piece):
            yield memoryview(raw[start : start + self.piece])


def expected(a: np.ndarray, b: np.ndarray, atol: float = 0.0, rtol: float = 0.0) -> tuple[int, float]:
    """numpy's own answer: elements not isclose (NaN equal), and the largest finite |a-b| where a != b."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):  # |a - b| of two huge values overflows to inf
        differing = int(np.count_nonzero(~np.isclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True)))
        dist = np.abs(a64 - b64)
    moved = ~((a64 == b64) | (np.isnan(a64) & np.isnan(b64))) & np.isfinite(dist)
    return differing, float(dist[moved].max()) if moved.any() else 0.0


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    a = {
        "enc.weight": rng.standard_normal((64, 33)).astype(np.float32),
        "enc.bias": rng.standard_normal(33).astype(np.float32),
        "emb": rng.standard_normal((10, 4)).astype(np.float16),
        "step": np.array(7, dtype=np.int64),
    }
    b = {k: v.copy() for k, v in a.items()}
    flat = b["enc.weight"].reshape(-1)
    flat[rng.choice(flat.size, 100, replace=False)] += rng.uniform(-1e-3, 1e-3, 100).astype(np.float32)
    flat[:3] += np.float32(0.5)
    b["emb"][0, 0] = np.float16(np.nan)
    return make(tmp_path / "a.safetensors", a), make(tmp_path / "b.safetensors", b), a, b


# --- equal ------------------------------------------------------------------------------------------


def test_a_file_equals_itself_and_a_copy(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    copy = Path(shutil.copy(src, tmp_path / "copy.safetensors"))
    code, doc = run_json(["diff", str(src), str(copy)], capsys)
    assert code == 0 and doc["equal"]
    assert doc["summary"]["compared"] == 16 == doc["summary"]["equal"]
    assert all(t["byte_identical"] and t["differing"] == 0 for t in doc["tensors"])


def test_the_same_tensors_in_another_format_are_equal(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    npz = tmp_path / "smallcnn.npz"
    np.savez(npz, **load_file(str(src)))
    code, out, _ = run(["diff", str(src), str(npz)], capsys)
    assert code == 0, out
    assert "equal: 16 tensors compared, all identical" in out
    # the safetensors file has {"format": "pt"} metadata, the npz none: shown, not counted ...
    assert "1 metadata key differs (not compared without --metadata)" in out
    # ... unless --metadata asks for it
    code, doc = run_json(["diff", str(src), str(npz), "--metadata"], capsys)
    assert code == 1 and not doc["equal"]
    assert doc["metadata"] == {"compared": True, "only_in_a": {"format": "pt"}, "only_in_b": {}, "changed": {}}
    assert doc["summary"]["equal"] == 16


def test_sharded_keras_equals_the_keras_archive(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["diff", str(corpus / "keras3/cnn.keras"), str(corpus / "keras3/cnn_sharded/cnn.weights.json"),
                        "-q"], capsys)
    assert (code, out) == (0, "equal: 28 tensors compared, all identical\n")


def test_identical_bytes_need_no_arithmetic(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_math(*args: object, **kwargs: object) -> None:
        raise AssertionError("byte-identical chunks must not be compared by value")

    monkeypatch.setattr(diff_module, "compare_values", no_math)
    src = corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json"
    result = diff(src, src)
    assert result.equal and result.summary["compared"] == 28


# --- values -----------------------------------------------------------------------------------------


def test_changed_values_are_counted_exactly(pair: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    a_path, b_path, a, b = pair
    code, doc = run_json(["diff", str(a_path), str(b_path)], capsys)
    assert code == 1 and not doc["equal"]
    rows = {t["name"]: t for t in doc["tensors"]}
    for name in a:
        want_count, want_max = expected(a[name], b[name])
        assert rows[name]["differing"] == want_count, name
        assert rows[name]["max_abs_diff"] == pytest.approx(want_max, rel=1e-12), name
        assert rows[name]["elements"] == a[name].size
    assert rows["enc.weight"]["differing"] == 100 + 3 - int(np.count_nonzero(a["enc.weight"].ravel()[:3] == 0))
    assert rows["emb"]["differing"] == 1 and rows["emb"]["nonfinite_differing"] == 1
    assert rows["step"]["status"] == "equal" and rows["step"]["byte_identical"]
    assert doc["summary"]["values_differ"] == 2
    assert doc["summary"]["differing_elements"] == rows["enc.weight"]["differing"] + 1


@pytest.mark.parametrize(("atol", "rtol"), [(1e-4, 0.0), (0.0, 1e-2), (1e-3, 1e-3), (1.0, 0.0)])
def test_atol_and_rtol_follow_numpy_isclose(
    atol: float, rtol: float, pair: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    a_path, b_path, a, b = pair
    code, doc = run_json(["diff", str(a_path), str(b_path), "--atol", str(atol), "--rtol", str(rtol)], capsys)
    rows = {t["name"]: t for t in doc["tensors"]}
    want = {name: expected(a[name], b[name], atol, rtol)[0] for name in a}
    assert {name: rows[name]["differing"] for name in a} == want
    assert code == (1 if any(want.values()) else 0)
    # the largest |a-b| is reported whatever the tolerance
    assert rows["enc.weight"]["max_abs_diff"] == pytest.approx(expected(a["enc.weight"], b["enc.weight"])[1])


def test_within_tolerance_is_equal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.linspace(-1, 1, 50, dtype=np.float32)
    a = make(tmp_path / "a.safetensors", {"x": x})
    b = make(tmp_path / "b.safetensors", {"x": x + np.float32(1e-6)})
    code, out, _ = run(["diff", str(a), str(b), "--atol", "1e-5", "-q"], capsys)
    assert code == 0
    assert out.startswith("equal within atol=1e-05, rtol=0: 1 tensor compared, 0 identical, 1 within tolerance")


def test_special_values(tmp_path: Path) -> None:
    nan, inf = np.nan, np.inf
    a = np.array([nan, inf, -inf, 0.0, -0.0, 1.0, nan, inf, 1.0, inf], dtype=np.float32)
    b = np.array([nan, inf, -inf, -0.0, 0.0, 1.0, 1.0, -inf, inf, 3.0], dtype=np.float32)
    result = diff(make(tmp_path / "a.safetensors", {"t": a}), make(tmp_path / "b.safetensors", {"t": b}))
    (t,) = result.tensors
    assert t.values is not None
    # NaN = NaN, inf = inf, 0.0 = -0.0; NaN vs 1, inf vs -inf, 1 vs inf, inf vs 3 differ without a finite size
    assert (t.values.differing, t.values.nonfinite, t.values.max_abs_diff) == (4, 4, 0.0)
    assert not t.values.byte_identical
    assert result.to_dict()["tensors"][0]["max_abs_diff"] == 0.0


def test_dtype_change_compares_values_across_dtypes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 9)).astype(np.float32)
    ints = np.arange(12, dtype=np.int32)
    flags = np.array([True, False, True])
    a = make(tmp_path / "a.safetensors", {"w": x, "bf": x, "i": ints, "same": x, "flags": flags})
    b = make(tmp_path / "b.safetensors", {"w": x.astype(np.float64), "bf": x.astype(ml_dtypes.bfloat16),
                                          "i": ints.astype(np.int64), "same": x, "flags": flags.astype(np.uint8)})
    code, doc = run_json(["diff", str(a), str(b)], capsys)
    assert code == 1
    rows = {t["name"]: t for t in doc["tensors"]}
    # float32 -> float64 and int32 -> int64 are exact: the values agree, so the tensors are equal
    assert (rows["w"]["status"], rows["w"]["differing"], rows["w"]["compared_as"]) == ("equal", 0, "F64")
    assert (rows["w"]["a_dtype"], rows["w"]["b_dtype"]) == ("F32", "F64") and not rows["w"]["byte_identical"]
    assert (rows["i"]["status"], rows["i"]["differing"], rows["i"]["compared_as"]) == ("equal", 0, "I64")
    # without a tolerance a bf16 copy differs wherever the rounding changed a value
    want_count, want_max = expected(x, x.astype(ml_dtypes.bfloat16))
    assert (rows["bf"]["status"], rows["bf"]["b_dtype"], rows["bf"]["compared_as"]) == ("values", "BF16", "F32")
    assert rows["bf"]["differing"] == want_count > 0
    assert rows["bf"]["max_abs_diff"] == pytest.approx(want_max)
    assert (rows["same"]["status"], rows["same"]["compared_as"]) == ("equal", None)
    # a BOOL paired with another dtype is not compared across dtypes: still a dtype change
    assert (rows["flags"]["status"], rows["flags"]["compared_as"], rows["flags"]["differing"]) == ("dtype", None, 0)
    assert doc["summary"]["dtype_changed"] == 1 and doc["summary"]["cross_dtype"] == 3
    assert "3 compared across dtypes (F32 vs BF16 as F32: 1, F32 vs F64 as F64: 1, I32 vs I64 as I64: 1)" in doc["verdict"]
    # a bf16 rounding error is within a tolerance of 1e-2 relative: equal across dtypes
    code, doc = run_json(["diff", str(a), str(b), "--rtol", "1e-2", "--exclude", "flags"], capsys)
    assert code == 0 and doc["equal"], doc["verdict"]
    assert {t["name"]: t["status"] for t in doc["tensors"]} == dict.fromkeys(["w", "bf", "i", "same"], "equal")
    assert doc["verdict"].startswith("equal within atol=0, rtol=0.01: 4 tensors compared, 1 identical, "
                                     "2 equal after widening, 1 within tolerance")
    # --strict-dtypes counts every dtype change, whatever the values
    code, doc = run_json(["diff", str(a), str(b), "--rtol", "1e-2", "--strict-dtypes"], capsys)
    assert code == 1 and doc["options"]["strict_dtypes"] is True
    rows = {t["name"]: t for t in doc["tensors"]}
    assert {n: rows[n]["status"] for n in rows} == {"w": "dtype", "bf": "dtype", "i": "dtype", "same": "equal",
                                                    "flags": "dtype"}
    assert rows["bf"]["compared_as"] == "F32" and rows["bf"]["differing"] == 0


def test_integers_compare_exactly(tmp_path: Path) -> None:
    big = np.array([2**62, 2**62 + 1, -(2**62)], dtype=np.int64)
    other = np.array([2**62 + 1, 2**62 + 1, -(2**62)], dtype=np.int64)  # equal in float64, not as integers
    flags = np.array([True, False, True])
    result = diff(make(tmp_path / "a.safetensors", {"big": big, "flags": flags}),
                  make(tmp_path / "b.safetensors", {"big": other, "flags": ~flags}))
    rows = {t.name: t.values for t in result.tensors}
    assert rows["big"] is not None and rows["big"].differing == 1
    assert rows["flags"] is not None and rows["flags"].differing == 3 and rows["flags"].max_abs_diff == 1.0


# --- chunking ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("piece", [1, 3, 5, 64, 10_000])
@pytest.mark.parametrize("chunk_elements", [1, 7, 1 << 20])
def test_chunks_split_anywhere_count_the_same(piece: int, chunk_elements: int) -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal(1000).astype(np.float32)
    b = a.copy()
    b[rng.choice(1000, 37, replace=False)] += 1
    ra, rb = ArrayReader({"t": a}, piece=piece), ArrayReader({"t": b}, piece=piece + 2)
    got = compare_tensors(ra, ra["t"], rb, rb["t"], chunk_elements=chunk_elements)
    assert (got.differing, got.max_abs_diff) == expected(a, b)


float_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float16, np.float64]),
    shape=st.integers(0, 40),
    elements={"allow_nan": True, "allow_infinity": True, "allow_subnormal": False},
)


@settings(max_examples=60, deadline=None)
@given(
    a=float_arrays,
    data=st.data(),
    atol=st.sampled_from([0.0, 1e-3, 0.5]),
    rtol=st.sampled_from([0.0, 1e-2]),
    piece=st.integers(1, 17),
    chunk=st.integers(1, 9),
)
def test_counts_match_numpy_for_any_values(
    a: np.ndarray, data: st.DataObject, atol: float, rtol: float, piece: int, chunk: int
) -> None:
    mask = data.draw(hnp.arrays(np.bool_, a.shape))
    noise = data.draw(hnp.arrays(a.dtype, a.shape, elements={"allow_nan": True, "allow_infinity": True,
                                                             "allow_subnormal": False}))
    b = np.where(mask, noise, a)
    ra, rb = ArrayReader({"t": a}, piece=piece), ArrayReader({"t": b}, piece=piece)
    got = compare_tensors(ra, ra["t"], rb, rb["t"], atol=atol, rtol=rtol, chunk_elements=chunk)
    want_count, want_max = expected(a, b, atol, rtol)
    assert got.differing == want_count
    assert got.max_abs_diff == want_max
    assert got == compare_values(a, b, atol, rtol) or got.byte_identical


# --- names ------------------------------------------------------------------------------------------


def test_only_in_a_only_in_b_and_shape_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.ones((4, 3), dtype=np.float32)
    a = make(tmp_path / "a.safetensors", {"keep": x, "gone": x, "head.weight": x})
    b = make(tmp_path / "b.safetensors", {"keep": x, "new": x[:1], "head.weight": np.ones((5, 3), np.float32)})
    code, doc = run_json(["diff", str(a), str(b)], capsys)
    assert code == 1
    assert doc["only_in_a"] == [{"name": "gone", "renamed": "gone", "shape": [4, 3], "dtype": "F32"}]
    assert doc["only_in_b"] == [{"name": "new", "shape": [1, 3], "dtype": "F32"}]
    head = {t["name"]: t for t in doc["tensors"]}["head.weight"]
    assert head["status"] == "shape" and head["a_shape"] == [4, 3] and head["b_shape"] == [5, 3]
    assert head["differing"] is None and head["max_abs_diff"] is None
    s = doc["summary"]
    assert (s["only_in_a"], s["only_in_b"], s["shape_changed"], s["equal"]) == (1, 1, 1, 1)
    assert doc["verdict"] == "different: 1 only in A, 1 only in B, 1 shape changed; 1 of 2 common tensors equal"


def test_rules_rename_a_to_compare_naming_conventions(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compiled, plain = corpus / "torch/smallcnn_compiled.safetensors", corpus / "torch/smallcnn.safetensors"
    code, doc = run_json(["diff", str(compiled), str(plain)], capsys)
    assert code == 1 and len(doc["only_in_a"]) == 16 == len(doc["only_in_b"])
    assert doc["hint"] == "--strip-prefix _orig_mod. would pair 16 more tensors"

    code, doc = run_json(["diff", str(compiled), str(plain), "--strip-prefix", "_orig_mod."], capsys)
    assert code == 0 and doc["summary"]["equal"] == 16
    assert doc["rules"] == [{"rule": "--strip-prefix _orig_mod.", "matches": 16}]
    assert {t["a_name"] for t in doc["tensors"]} == {"_orig_mod." + t["name"] for t in doc["tensors"]}

    code, doc = run_json(["diff", str(compiled), str(plain), "--rename", r"^_orig_mod\.=>"], capsys)
    assert code == 0


def test_an_unused_rule_fails_unless_allowed(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    code, out, err = run(["diff", str(src), str(src), "--strip-prefix", "module."], capsys)
    assert code == 1 and out == ""
    assert err == (f"ckpt: error: {src}: 1 rule matched no tensor name: --strip-prefix module. "
                   "(--allow-unused-rules accepts that)\n")
    code, out, _ = run(["diff", str(src), str(src), "--strip-prefix", "module.", "--allow-unused-rules", "-q"], capsys)
    assert code == 0 and out.startswith("equal")


def test_map_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.arange(6, dtype=np.float32)
    a = make(tmp_path / "a.safetensors", {"enc.w": x, "b": x})
    b = make(tmp_path / "b.safetensors", {"encoder.weight": x, "b": x})
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"enc.w": "encoder.weight"}))
    code, doc = run_json(["diff", str(a), str(b), "--map", str(mapping)], capsys)
    assert code == 0 and doc["map"] == {"entries": 1, "used": 1}


def test_filters_choose_the_tensors_of_both_sides(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compiled = corpus / "torch/smallcnn_compiled.safetensors"
    tensors = load_file(str(corpus / "torch/smallcnn.safetensors"))
    tensors["bn1.num_batches_tracked"] = np.array(99, dtype=np.int64)
    tensors["fc.weight"] = tensors["fc.weight"] + 1
    tensors["extra.scale"] = np.ones(3, dtype=np.float32)
    b = make(tmp_path / "b.safetensors", tensors)
    strip = ["--strip-prefix", "_orig_mod."]

    code, doc = run_json(["diff", str(compiled), str(b), *strip], capsys)
    assert code == 1 and doc["summary"]["values_differ"] == 2 and len(doc["only_in_b"]) == 1

    # excluded tensors of A take B's tensors of the same (renamed) name with them; the glob that
    # only matches a tensor of B counts as used
    code, doc = run_json(["diff", str(compiled), str(b), *strip, "--exclude", "*num_batches_tracked",
                          "--exclude", "*fc.*", "--exclude", "extra.*"], capsys)
    assert code == 0, doc["verdict"]
    assert doc["summary"]["compared"] == 12
    assert sorted(doc["excluded"]["b"]) == ["bn1.num_batches_tracked", "bn2.num_batches_tracked", "extra.scale",
                                            "fc.bias", "fc.weight"]
    assert {r["rule"]: r["matches"] for r in doc["rules"]}["--exclude 'extra.*'"] == 1

    code, doc = run_json(["diff", str(compiled), str(b), *strip, "--include", "_orig_mod.conv*"], capsys)
    assert code == 0 and sorted(t["name"] for t in doc["tensors"]) == ["conv1.bias", "conv1.weight",
                                                                        "conv2.bias", "conv2.weight"]
    assert doc["only_in_b"] == []


def test_filters_across_formats(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights, full = corpus / "tf_keras/cnn_weights.h5", corpus / "tf_keras/cnn_full.h5"
    code, doc = run_json(["diff", str(weights), str(full), "--add-prefix", "model_weights/",
                          "--exclude", "optimizer_weights/*"], capsys)
    assert code == 0, doc["verdict"]
    assert doc["summary"]["compared"] == 10
    assert doc["excluded"]["b"] and all(n.startswith("optimizer_weights/") for n in doc["excluded"]["b"])


def test_renaming_two_tensors_onto_one_name_fails(tmp_path: Path) -> None:
    x = np.zeros(2, dtype=np.float32)
    a = make(tmp_path / "a.safetensors", {"a.w": x, "b.w": x})
    with pytest.raises(CheckFailed, match="both become"):
        diff(a, a, DiffOptions(rules=Rules.from_options(rename=[r"^\w\.=>"])))


# --- options and errors -----------------------------------------------------------------------------


def test_bad_input_is_one_line_and_exit_3(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    code, out, err = run(["diff", str(corpus / "torch/smallcnn.safetensors"), str(bad)], capsys)
    assert code == 3 and out == ""
    assert err.startswith(f"ckpt: error: {bad}: ") and err.count("\n") == 1
    code, _, err = run(["diff", str(tmp_path / "missing.safetensors"), str(bad)], capsys)
    assert code == 3 and "no such file" in err


def test_option_errors_are_usage_errors(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = str(corpus / "torch/smallcnn.safetensors")
    assert run(["diff", src, src, "--json", "--markdown"], capsys)[0] == 2
    assert run(["diff", src, src, "--atol", "-1"], capsys)[0] == 2
    assert run(["diff", src, src, "--rtol", "inf"], capsys)[0] == 2
    with pytest.raises(UsageError):
        DiffOptions(atol=float("nan"))


def test_quiet_prints_only_the_verdict(pair: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    a_path, b_path, _, _ = pair
    code, out, err = run(["diff", str(a_path), str(b_path), "-q"], capsys)
    assert code == 1 and err == ""
    assert out.count("\n") == 1 and out.startswith("different: 2 with different values, ")


# --- rendering --------------------------------------------------------------------------------------


def test_markdown_is_a_markdown_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.ones(4, dtype=np.float32)
    a = make(tmp_path / "a.safetensors", {"w|pipe": x, "gone": x, "same": x}, {"note": "a"})
    b = make(tmp_path / "b.safetensors", {"w|pipe": x * 2, "new": x, "same": x}, {"note": "b"})
    code, out, _ = run(["diff", str(a), str(b), "--markdown"], capsys)
    assert code == 1
    lines = out.splitlines()
    start = lines.index("| tensor | change | A | B | differing | max \\|a-b\\| |")
    assert lines[start + 1] == "|---|---|---|---|---:|---:|"
    table = lines[start + 2 : lines.index("", start)]
    assert table == [
        "| `w\\|pipe` | values | [4] F32 | [4] F32 | 4 of 4 | 1 |",
        "| `gone` | only in A | [4] F32 |  |  |  |",
        "| `new` | only in B |  | [4] F32 |  |  |",
    ]
    assert all(len(re.split(r"(?<!\\)\|", line)) == 6 + 2 for line in table)  # six cells between pipes
    assert "- 1 equal tensor not listed (--all lists them)" in lines
    assert "| `note` | a | b |" in lines
    assert lines[-1].startswith("**different: 1 only in A, 1 only in B, 1 with different values")
    assert "\x1b[" not in out and "┃" not in out


@pytest.mark.parametrize("no_color", [False, True])
def test_plain_output_without_a_terminal(
    no_color: bool, pair: tuple, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    a_path, b_path, _, _ = pair
    code, out, _ = run(["diff", str(a_path), str(b_path)], capsys)
    assert code == 1
    assert "\x1b[" not in out
    assert "enc.weight" in out and "values" in out and "2 equal tensors not listed" in out


def test_table_rendering(tmp_path: Path) -> None:
    x = np.zeros(4, dtype=np.float32)
    blocks = {f"blocks.{i}.w": x for i in range(3)}
    a = make(tmp_path / "a.safetensors", {**blocks, "head": x, "same": x})
    b = make(tmp_path / "b.safetensors", {"head": x + 0.25, "same": x, "extra": x.astype(np.float16)})
    result = diff(a, b)
    buffer = io.StringIO()
    render_diff(result, Console(file=buffer, width=100, color_system=None, no_color=True))
    text = buffer.getvalue().replace(str(tmp_path), "DIR")
    assert text == (
        "A: DIR/a.safetensors (safetensors, 5 tensors)\n"
        "B: DIR/b.safetensors (safetensors, 3 tensors)\n"
        "┏━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━┓\n"
        "┃ tensor              ┃ change    ┃ A       ┃ B       ┃ differing ┃ max |a-b| ┃\n"
        "┡━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━┩\n"
        "│ head                │ values    │ [4] F32 │ [4] F32 │    4 of 4 │      0.25 │\n"
        "│ blocks.{0..2}.w  ×3 │ only in A │ [4] F32 │         │           │           │\n"
        "│ extra               │ only in B │         │ [4] F16 │           │           │\n"
        "└─────────────────────┴───────────┴─────────┴─────────┴───────────┴───────────┘\n"
        "1 equal tensor not listed (--all lists them)\n"
        "different: 3 only in A, 1 only in B, 1 with different values, 4 of 8 compared elements differ "
        "(max |a-b| 0.25); 1 of 2 common tensors equal\n"
    )
    assert "blocks.0.w" in diff_markdown(result, all_=True)


def test_repeated_blocks_collapse_with_summed_counts(tmp_path: Path) -> None:
    x = np.zeros(10, dtype=np.float32)
    a = make(tmp_path / "a.safetensors", {f"h.{i}.w": x for i in range(4)})
    changed = {f"h.{i}.w": np.where(np.arange(10) < i + 1, np.float32(i + 1), x) for i in range(4)}
    b = make(tmp_path / "b.safetensors", changed)
    result = diff(a, b)
    (row,) = diff_rows(result)
    assert row.cells() == ("h.{0..3}.w  ×4", "values", "[10] F32", "[10] F32", "10 of 40", "4")
    assert [r.cells()[4] for r in diff_rows(result, all_=True)] == ["1 of 10", "2 of 10", "3 of 10", "4 of 10"]


def test_the_library_compares_opened_readers() -> None:
    ra = ArrayReader({"x": np.arange(5, dtype=np.int16)})
    rb = ArrayReader({"x": np.arange(5, dtype=np.int16)[::-1].copy()})
    result = diff_readers(ra, rb)
    assert not result.equal
    assert result.tensors[0].values is not None and result.tensors[0].values.differing == 4
