"""ckpt diff pairs two Keras 3 files by the names Keras gives their variables, not by stored paths.

Real Keras 3.15 files from ``tests/data/keras3_names/make.py``: model a is enc, proj, head (Dense
32, 32, 10); model c is enc, adapter_new, proj, head (Dense 32, 32, 32, 4). Keras stores a's proj
at ``layers/dense_1`` and c's at ``layers/dense_2``; c's ``layers/dense_1`` is adapter_new.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import jsonschema
import numpy as np
import pytest

import ckptsurgeon
from ckptsurgeon import api

from ..support.cli import run

DATA = Path(__file__).resolve().parents[1] / "data" / "keras3_names"
SCHEMA = json.loads((Path(ckptsurgeon.__file__).parent / "schemas" / "diff.schema.json").read_text())


def diff_json(argv: list[str | Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code, out, err = run(["diff", *argv, "--json"], capsys)
    assert err == ""
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    return code, doc


def test_inserted_layer_compares_the_same_layers(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = diff_json([DATA / "a.weights.h5", DATA / "c.weights.h5"], capsys)
    assert code == 1 and doc["paired_by"] == "keras_names"
    pairs = [(t["name"], t["a_name"], t["b_name"], t["status"]) for t in doc["tensors"]]
    assert pairs == [
        ("enc/kernel", "layers/dense/vars/0", "layers/dense/vars/0", "values"),
        ("enc/bias", "layers/dense/vars/1", "layers/dense/vars/1", "equal"),
        ("proj/kernel", "layers/dense_1/vars/0", "layers/dense_2/vars/0", "values"),
        ("proj/bias", "layers/dense_1/vars/1", "layers/dense_2/vars/1", "equal"),
        ("head/kernel", "layers/dense_2/vars/0", "layers/dense_3/vars/0", "shape"),
        ("head/bias", "layers/dense_2/vars/1", "layers/dense_3/vars/1", "shape"),
    ]
    assert doc["only_in_a"] == []
    assert [(t["name"], t["match_name"]) for t in doc["only_in_b"]] == [
        ("layers/dense_1/vars/0", "adapter_new/kernel"), ("layers/dense_1/vars/1", "adapter_new/bias")]
    # the values compared are a's proj and c's proj, read here straight from the files
    with h5py.File(DATA / "a.weights.h5", "r") as a, h5py.File(DATA / "c.weights.h5", "r") as c:
        want = float(np.abs(a["layers/dense_1/vars/0"][()].astype(np.float64) - c["layers/dense_2/vars/0"][()]).max())
    proj = next(t for t in doc["tensors"] if t["name"] == "proj/kernel")
    assert proj["max_abs_diff"] == want and proj["differing"] == 32 * 32


def test_table_shows_keras_names_with_their_paths(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["diff", DATA / "a.weights.h5", DATA / "c.weights.h5"], capsys)
    assert code == 1
    assert "proj/kernel  (layers/dense_1/vars/0 → layers/dense_2/vars/0)" in out
    assert "enc/kernel  (layers/dense/vars/0)" in out  # one path when both sides store it alike
    assert "adapter_new/kernel  (layers/dense_1/vars/0)" in out
    code, out, _ = run(["diff", DATA / "a.weights.h5", DATA / "c.weights.h5", "--markdown"], capsys)
    assert "| `proj/kernel  (layers/dense_1/vars/0 → layers/dense_2/vars/0)` | values |" in out


def test_rules_apply_to_keras_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = diff_json([DATA / "a.weights.h5", DATA / "c.weights.h5", "--exclude", "head/*",
                           "--exclude", "adapter_new/*", "--rename", "^enc/=>enc/"], capsys)
    assert code == 1  # enc/kernel and proj/kernel differ; nothing is unpaired any more
    assert doc["only_in_a"] == [] and doc["only_in_b"] == []
    assert {r["rule"]: r["matches"] for r in doc["rules"]} == {
        "--rename '^enc/=>enc/'": 2, "--exclude 'head/*'": 2, "--exclude 'adapter_new/*'": 2}
    assert doc["excluded"]["b"] == ["adapter_new/kernel", "adapter_new/bias", "head/kernel", "head/bias"]
    code, doc = diff_json([DATA / "a.weights.h5", DATA / "c.weights.h5", "--rename", "^proj/=>adapter_new/"], capsys)
    moved = {t["name"]: (t["a_name"], t["b_name"]) for t in doc["tensors"]}
    assert moved["adapter_new/kernel"] == ("layers/dense_1/vars/0", "layers/dense_1/vars/0")
    assert [t["match_name"] for t in doc["only_in_b"]] == ["proj/kernel", "proj/bias"]


def test_a_weights_file_equals_its_keras_archive(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["diff", DATA / "c.weights.h5", DATA / "c.keras", "-q"], capsys)
    assert (code, out) == (0, "equal: 8 tensors compared, all identical\n")


def test_one_keras3_side_pairs_by_stored_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Keras 3 file converted to safetensors keeps its stored paths as names: those are paired."""
    out = tmp_path / "a.safetensors"
    api.convert(DATA / "a.weights.h5", out)
    code, doc = diff_json([DATA / "a.weights.h5", out], capsys)
    assert code == 0 and doc["paired_by"] == "names" and doc["summary"]["equal"] == 6
    assert all(t["name"] == t["a_name"] == t["b_name"] for t in doc["tensors"])
