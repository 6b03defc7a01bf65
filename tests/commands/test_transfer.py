"""ckpt transfer end to end: real corpus pairs, every option, guards, the JSON report and the table."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import jsonschema
import ml_dtypes
import numpy as np
import pytest
from rich.console import Console
from safetensors.numpy import load_file, save_file

from ckptsurgeon import api
from ckptsurgeon.atomic import TEMP_MARK
from ckptsurgeon.cli.render import render_transfer
from ckptsurgeon.errors import CheckFailed, UsageError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.plan import TransferOptions
from ckptsurgeon.rules import Rules

from ..conftest import TESTS
from ..support.cli import run

SCHEMA = json.loads(
    (Path(api.__file__).parent / "schemas" / "transfer-report.schema.json").read_text()
)
GOLDEN = TESTS / "golden"


def resolve(corpus: Path, rel: str) -> Path:
    path = corpus / rel
    if path.suffix == ".pt":  # pickles are never read; the corpus has torch's own safetensors copies
        return path.parent / "derived" / (path.stem + ".safetensors")
    return path


def check_outcome(pair: dict, out: Path, target: Path, manifest: dict) -> None:
    files = {f["path"]: f for f in manifest["files"]}
    h5 = {t["name"]: t.get("h5_path") for t in files.get(pair["target"], {}).get("tensors", [])}
    with open_checkpoint(out) as reader, open_checkpoint(target) as tgt:
        assert reader.format == tgt.format
        for o in pair["target_outcome"]:
            name = h5.get(o["target_tensor"]) or o["target_tensor"]
            assert list(reader[name].shape) == o["shape"]
            assert reader.sha256(name) == o["result_sha256"], (pair["name"], name)


@pytest.mark.parametrize("auto", [False, True], ids=["strip-prefix", "auto-prefix"])
def test_corpus_pairs_are_byte_exact(auto: bool, corpus: Path, manifest: dict, tmp_path: Path) -> None:
    pairs = [p for p in manifest["transfer_pairs"] if not p["target"].endswith(".h5")]
    assert len(pairs) >= 3
    for pair in pairs:
        src, tgt = resolve(corpus, pair["source"]), resolve(corpus, pair["target"])
        out = tmp_path / f"{pair['name']}{tgt.suffix}"
        strip = pair.get("source_prefix_to_strip")
        rules = Rules.from_options(strip_prefix=[strip] if strip and not auto else [])
        report = api.transfer(src, tgt, out, TransferOptions(rules=rules))
        check_outcome(pair, out, tgt, manifest)
        summary = report.summary
        assert summary["replaced_tensors"] == pair["summary"]["replaced"]
        assert summary["kept_tensors"] == pair["summary"]["kept"]
        assert summary["source_tensors_unused"] == pair["summary"]["source_tensors_unused"]
        if auto and strip:
            assert report.plan.prefix_fix is not None and report.plan.prefix_fix.prefix == strip


def make(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    save_file(tensors, path, metadata=metadata)
    return path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    src = make(tmp_path / "src.safetensors", {
        "embed.weight": rng.standard_normal((8, 4)).astype(np.float32),
        "blocks.0.ffn.weight": rng.standard_normal((4, 4)).astype(np.float32),
        "blocks.1.ffn.weight": rng.standard_normal((4, 4)).astype(np.float32),
        "head.weight": rng.standard_normal((10, 4)).astype(np.float32),
    })
    tgt = make(tmp_path / "tgt.safetensors", {
        "embed.weight": np.zeros((8, 4), np.float32),
        "blocks.0.mlp.weight": np.zeros((4, 4), np.float32),
        "blocks.1.mlp.weight": np.zeros((4, 4), np.float32),
        "head.weight": np.zeros((3, 4), np.float32),
    }, metadata={"format": "pt"})
    return src, tgt


def test_rename_rule_table_and_kept_values(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    out = tmp_path / "out.safetensors"
    code, stdout, err = run(["transfer", str(src), str(tgt), "-o", str(out), "--rename", r"\.ffn\.=>.mlp."], capsys)
    assert code == 0, err
    got, s, t = load_file(out), load_file(src), load_file(tgt)
    assert list(got) == list(t)
    np.testing.assert_array_equal(got["blocks.1.mlp.weight"], s["blocks.1.ffn.weight"])
    np.testing.assert_array_equal(got["head.weight"], t["head.weight"])
    assert "blocks.{0,1}" in stdout and "shape mismatch: source [10, 4] vs target [3, 4]" in stdout
    assert "replaced 3 of 4 tensors" in stdout
    with open_checkpoint(out) as r:
        assert r.metadata == {"format": "pt"}


def test_unused_rule_exits_1_and_writes_nothing(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    out = tmp_path / "out.safetensors"
    code, _stdout, err = run(["transfer", str(src), str(tgt), "-o", str(out), "--rename", "fnn=>mlp"], capsys)
    assert code == 1 and "matched no tensor name" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not any(TEMP_MARK in p.name for p in tmp_path.iterdir())
    code, _, _ = run(["transfer", str(src), str(tgt), "-o", str(out), "--rename", "fnn=>mlp", "--allow-unused-rules"], capsys)
    assert code == 0 and out.exists()


def test_strict_and_coverage_failures_leave_no_output(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    out = tmp_path / "out.safetensors"
    for extra in (["--strict"], ["--min-coverage", "0.99"]):
        code, stdout, err = run(["transfer", str(src), str(tgt), "-o", str(out), *extra], capsys)
        assert code == 1, err
        assert not out.exists()
        assert "failed:" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors", "tgt.safetensors"]


def test_nothing_matched_exit_1(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    a = make(tmp_path / "a.safetensors", {"x": np.zeros(2, np.float32)})
    b = make(tmp_path / "b.safetensors", {"y": np.zeros(2, np.float32)})
    code, _, err = run(["transfer", str(a), str(b), "-o", str(tmp_path / "o.safetensors")], capsys)
    assert code == 1 and "nothing was loaded" in err
    code, _, _ = run(["transfer", str(a), str(b), "-o", str(tmp_path / "o.safetensors"), "--allow-empty"], capsys)
    assert code == 0


def test_same_file_and_output_is_input_guards(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    with pytest.raises(UsageError, match="same file"):
        api.transfer(src, src, tmp_path / "o.safetensors")
    link = tmp_path / "link.safetensors"
    link.symlink_to(src)
    with pytest.raises(UsageError, match="same file"):
        api.transfer(link, src, tmp_path / "o.safetensors")
    before = tgt.read_bytes()
    hard = tmp_path / "hard.safetensors"
    os.link(tgt, hard)
    for out in (tgt, link, hard):
        with pytest.raises(UsageError, match="output is the input"):
            api.transfer(src, tgt, out)
    assert tgt.read_bytes() == before


def test_casts_equal_numpy_and_ml_dtypes_and_count_overflow(tmp_path: Path) -> None:
    values = np.array([1.5, -2.25, 1e5, 3.0e38, 1e-8], np.float32)
    src = make(tmp_path / "s.safetensors", {"a": values, "b": values, "c": values})
    tgt = make(tmp_path / "t.safetensors", {
        "a": np.zeros(5, np.float16), "b": np.zeros(5, ml_dtypes.bfloat16), "c": np.zeros(5, np.float32)})
    out = tmp_path / "o.safetensors"
    report = api.transfer(src, tgt, out, TransferOptions(allow_overflow=True))
    got = load_file(out)
    with np.errstate(over="ignore"):
        assert got["a"].tobytes() == values.astype(np.float16).tobytes()
    assert got["b"].tobytes() == values.astype(ml_dtypes.bfloat16).tobytes()
    assert got["c"].tobytes() == values.tobytes()
    assert report.outcomes["a"].overflow == 2 and report.outcomes["b"].overflow == 0
    assert report.summary["casts"] == 2 and report.summary["overflowed_values"] == 2
    kept = api.transfer(src, tgt, tmp_path / "k.safetensors", TransferOptions(keep_dtype=True))
    assert load_file(tmp_path / "k.safetensors")["a"].dtype == np.float32 and kept.summary["casts"] == 0


def test_count_changes_equals_numpy_comparison(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    t_vals = rng.standard_normal((6, 5)).astype(np.float32)
    s_vals = t_vals.copy()
    s_vals[0, :3] += 1
    s_vals[4, 4] = np.nan
    src = make(tmp_path / "s.safetensors", {"l.w": s_vals, "l.b": np.ones(3, np.float32)})
    tgt = make(tmp_path / "t.safetensors", {"l.w": t_vals, "l.b": np.ones(3, np.float32)})
    report = api.transfer(src, tgt, tmp_path / "o.safetensors", count_changes=True)
    expected = int(np.count_nonzero(s_vals != t_vals))
    assert report.outcomes["l.w"].changed == expected == 4
    assert report.outcomes["l.b"].changed == 0
    assert report.layer_rows()[0].changed == expected


def test_dry_run_reads_no_tensor_data(pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptsurgeon.formats.safetensors import reader as st_reader

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("tensor data read during a dry run")

    for attr in ("read", "iter_bytes", "byte_range", "_map"):
        monkeypatch.setattr(st_reader.Reader, attr, forbidden)
    src, tgt = pair
    report = api.transfer(src, tgt, tmp_path / "o.safetensors", dry_run=True,
                          options=TransferOptions(rules=Rules.from_options(rename=[r"\.ffn\.=>.mlp."])))
    assert report.summary["replaced_tensors"] == 3 and report.dry_run
    assert not (tmp_path / "o.safetensors").exists()


def test_add_unmatched_and_target_filters(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    out = tmp_path / "o.safetensors"
    report = api.transfer(src, tgt, out, TransferOptions(add_unmatched=True, skip_target=("head.*",)))
    with open_checkpoint(out) as r:
        assert [t.name for t in r.tensors][-2:] == ["blocks.0.ffn.weight", "blocks.1.ffn.weight"]
    got = load_file(out)
    np.testing.assert_array_equal(got["blocks.1.ffn.weight"], load_file(src)["blocks.1.ffn.weight"])
    np.testing.assert_array_equal(got["head.weight"], load_file(tgt)["head.weight"])
    assert report.summary["added_tensors"] == 2 and report.plan.unused_sources == ("head.weight",)


def test_json_report_validates_and_report_file(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    report_file = tmp_path / "r.json"
    code, stdout, _ = run(["transfer", str(src), str(tgt), "-o", str(tmp_path / "o.safetensors"), "--json",
                           "--count-changes", "--report", str(report_file), "--rename", r"\.ffn\.=>.mlp."], capsys)
    assert code == 0
    doc = json.loads(stdout)
    jsonschema.validate(doc, SCHEMA)
    assert json.loads(report_file.read_text()) == doc
    assert doc["summary"]["replaced_tensors"] == 3 and doc["rules"][0]["matches"] == 2
    code, stdout, _ = run(["transfer", str(src), str(tgt), "--dry-run", "--json", "--strict"], capsys)
    assert code == 1
    failed = json.loads(stdout)
    jsonschema.validate(failed, SCHEMA)
    assert failed["failures"] and failed["dry_run"]


def test_quiet_prints_only_the_verdict(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    code, stdout, _ = run(["transfer", str(src), str(tgt), "--dry-run", "-q"], capsys)
    assert code == 0 and stdout.count("\n") == 1 and stdout.startswith("replaced 1 of 4 tensors")


def test_change_table_golden(pair: tuple[Path, Path]) -> None:
    src, tgt = pair
    report = api.transfer(src, tgt, dry_run=True, options=TransferOptions(
        rules=Rules.from_options(rename=[r"\.ffn\.=>.mlp."])))
    buffer = io.StringIO()
    render_transfer(report, Console(file=buffer, width=110, color_system=None, no_color=True))
    text = buffer.getvalue().replace(str(src.parent), "DIR")
    golden = GOLDEN / "transfer_table.txt"
    if os.environ.get("CKPT_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_library_raises_transfer_failed_with_report(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, tgt = pair
    with pytest.raises(CheckFailed) as info:
        api.transfer(src, tgt, tmp_path / "o.safetensors", TransferOptions(strict=True), check=True)
    assert not info.value.report.ok and not (tmp_path / "o.safetensors").exists()
    assert info.value.report.summary["replaced_tensors"] == 1
