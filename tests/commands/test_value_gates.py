"""Casts that overflow and NaN/Inf in the input are gates: exit 1, nothing written, the counts in the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ckptsurgeon import api, execute
from ckptsurgeon.errors import EXIT_CHECK_FAILED

from ..support.cli import one_line, run


@pytest.fixture
def loud(corpus: Path, tmp_path: Path) -> Path:
    """The trained small CNN (torch's safetensors) with fc.weight scaled far beyond float16's range in 3 places."""
    tensors = load_file(corpus / "torch/smallcnn.safetensors")
    fc = tensors["fc.weight"].copy()
    fc.reshape(-1)[[0, 7, 159]] = [1e6, -3e38, 7e4]
    tensors["fc.weight"] = fc
    path = tmp_path / "inputs" / "loud.safetensors"
    path.parent.mkdir()
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def written(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "inputs")


def test_a_transfer_whose_cast_overflows_fails_and_writes_nothing(
        loud: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "PIECE_BYTES", 64)  # many pieces: some were streamed out before the overflow
    tgt = corpus / "torch/smallcnn_fp16.safetensors"  # the same model saved by torch in float16
    out, report = tmp_path / "out.safetensors", tmp_path / "report.json"
    code, _, err = run(["transfer", loud, tgt, "-o", out, "--report", report, "-q"], capsys)
    assert code == EXIT_CHECK_FAILED, err
    line = one_line(err)
    assert "3 values overflowed" in line and "'fc.weight'" in line and "--allow-overflow" in line
    assert written(tmp_path) == ["report.json"]  # no output, no temporary file
    doc = json.loads(report.read_text())
    assert doc["summary"]["overflowed_values"] == 3 and doc["failures"]
    assert {t["name"]: t["overflow"] for t in doc["tensors"]}["fc.weight"] == 3

    code, _, err = run(["transfer", loud, tgt, "-o", out, "--allow-overflow", "--json"], capsys)
    assert code == 0, err
    got = load_file(out)["fc.weight"].reshape(-1)
    assert np.isinf(got[[0, 7, 159]]).all()


def test_a_convert_whose_cast_overflows_fails_single_and_sharded(
        loud: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    code, stdout, err = run(["convert", loud, "-o", out, "--dtype", "F16", "--json"], capsys)
    assert code == EXIT_CHECK_FAILED and "--allow-overflow" in one_line(err)
    doc = json.loads(stdout)
    assert doc["summary"]["overflow_values"] == 3 and doc["files"] == [] and doc["failures"]
    code, _, err = run(["convert", loud, "-o", tmp_path / "shards", "--dtype", "F16", "--shard-size", "2kB"], capsys)
    assert code == EXIT_CHECK_FAILED, err
    assert written(tmp_path) == []  # neither the single file nor the shard folder, nor a temporary file
    with pytest.raises(api.CheckFailed) as failed:
        api.convert(loud, out, dtype="F8_E4M3", check=True)
    assert failed.value.report.summary["overflow_values"] >= 3 and not out.exists()
    report = api.convert(loud, out, dtype="F16", allow_overflow=True)
    assert report.ok and report.summary["overflow_values"] == 3 and out.exists()


@pytest.fixture
def nan_source(corpus: Path, tmp_path: Path) -> Path:
    tensors = load_file(corpus / "torch/smallcnn.safetensors")
    conv = tensors["conv2.weight"].copy()
    conv.reshape(-1)[5] = np.nan
    tensors["conv2.weight"] = conv
    path = tmp_path / "inputs" / "nan.safetensors"
    path.parent.mkdir()
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def test_fail_on_nonfinite_sees_tensors_copied_as_byte_ranges(
        nan_source: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tgt = corpus / "torch/smallcnn_fresh_target.safetensors"  # float32 like the source: byte-range copies
    out = tmp_path / "out.safetensors"
    code, _, err = run(["transfer", nan_source, tgt, "-o", out], capsys)
    assert code == 0, err  # without the flag NaN is not a failure
    out.unlink()
    code, stdout, err = run(["transfer", nan_source, tgt, "-o", out, "--fail-on-nonfinite", "--json"], capsys)
    assert code == EXIT_CHECK_FAILED
    assert "--fail-on-nonfinite" in one_line(err) and "'conv2.weight'" in err
    doc = json.loads(stdout)
    assert {t["name"]: t["nonfinite"] for t in doc["tensors"]}["conv2.weight"] == 1
    assert doc["summary"]["nonfinite_values"] == 1
    assert written(tmp_path) == []
    # A kept target tensor is written too: the target's NaN counts.
    code, _, err = run(["transfer", corpus / "torch/smallcnn.safetensors", nan_source, "-o", out,
                        "--skip-target", "conv2.*", "--fail-on-nonfinite"], capsys)
    assert code == EXIT_CHECK_FAILED and "'conv2.weight'" in err and not out.exists()
    # convert, as a byte range (same dtype) and through a cast.
    for extra in ([], ["--dtype", "BF16"]):
        code, _, err = run(["convert", nan_source, "-o", out, "--fail-on-nonfinite", *extra], capsys)
        assert code == EXIT_CHECK_FAILED and "'conv2.weight'" in err, extra
        assert written(tmp_path) == []
    code, _, err = run(["convert", corpus / "torch/smallcnn.safetensors", "-o", out, "--fail-on-nonfinite"], capsys)
    assert code == 0 and out.exists(), err
