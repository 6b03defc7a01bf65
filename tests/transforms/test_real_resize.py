"""--resize on files transformers wrote (``tests/data/xframe``, ``make_torch.py``).

``bert_v100.safetensors`` is a tiny ``BertForMaskedLM`` (vocab 100) trained a few steps; ``bert_v104``
is the same architecture, untrained, after ``resize_token_embeddings(104)``: what a tokenizer grown
by 4 tokens asks for. Its ``bert.embeddings.word_embeddings.weight`` is [104, 32] and its
``cls.predictions.bias`` [104] (transformers leaves the decoder weight tied to the embeddings out of
the file). ``bert_cls5`` / ``bert_cls3``: ``BertForSequenceClassification`` with 5 labels (trained a
few steps) and 3 (untrained), whose ``classifier.weight`` / ``classifier.bias`` differ in rows.

A resized tensor takes the source's rows where both have them; the target's other rows are then the
target's own (``keep``), zero (``zero``) or the mean of the source's rows (``mean``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..support.fixtures import CliRunner
from .xframe import DATA, tensors

V100 = DATA / "bert_v100.safetensors"
V104 = DATA / "bert_v104.safetensors"
CLS5 = DATA / "bert_cls5.safetensors"
CLS3 = DATA / "bert_cls3.safetensors"
WORDS = "bert.embeddings.word_embeddings.weight"
BIAS = "cls.predictions.bias"
GROWN = (WORDS, BIAS)
CLASSIFIER = ("classifier.weight", "classifier.bias")


def transfer(cli: CliRunner, out: Path, src: Path, tgt: Path, *resize: str) -> dict[str, np.ndarray]:
    args: list[str] = []
    for rule in resize:
        args += ["--resize", rule]
    r = cli("transfer", src, tgt, "-o", out, *args)
    assert r.code == 0, r.out + r.err
    return tensors(out)


def assert_rest_is_the_source(got: dict[str, np.ndarray], source: dict[str, np.ndarray], target: dict[str, np.ndarray],
                              resized: tuple[str, ...]) -> None:
    """Every tensor but the resized ones is the source's (same shapes), in the target's names and order."""
    assert list(got) == list(target)
    for name, value in got.items():
        assert value.shape == target[name].shape and value.dtype == target[name].dtype, name
        if name not in resized:
            np.testing.assert_array_equal(value, source[name], err_msg=name)


def test_the_files_hold_what_the_tests_rely_on() -> None:
    """The target's rows all differ from the source's, and its new rows are far from the source's mean, so
    that keep, zero and mean give different results that a test can tell apart."""
    source, target = tensors(V100), tensors(V104)
    assert source[WORDS].shape == (100, 32) and target[WORDS].shape == (104, 32)
    assert source[BIAS].shape == (100,) and target[BIAS].shape == (104,)
    assert [n for n in source if np.array_equal(source[n], target.get(n))] == []
    assert np.abs(target[WORDS][100:] - source[WORDS].mean(axis=0)).min() > 1e-4
    assert np.abs(target[WORDS][100:]).min() > 0 and np.abs(source[BIAS]).min() > 0
    five, three = tensors(CLS5), tensors(CLS3)
    assert five["classifier.weight"].shape == (5, 32) and three["classifier.weight"].shape == (3, 32)
    assert np.abs(five["classifier.bias"][:3] - three["classifier.bias"]).min() > 0


def test_grown_vocabulary_mean_and_zero(cli: CliRunner, tmp_path: Path) -> None:
    source, target = tensors(V100), tensors(V104)
    got = transfer(cli, tmp_path / "out.safetensors", V100, V104, f"{WORDS}=mean", f"{BIAS}=zero")
    assert_rest_is_the_source(got, source, target, GROWN)
    np.testing.assert_array_equal(got[WORDS][:100], source[WORDS])
    mean = source[WORDS].astype(np.float64).mean(axis=0)
    for row in got[WORDS][100:]:
        np.testing.assert_allclose(row, mean, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got[BIAS][:100], source[BIAS])
    np.testing.assert_array_equal(got[BIAS][100:], np.zeros(4, np.float32))


def test_grown_vocabulary_zero_rows(cli: CliRunner, tmp_path: Path) -> None:
    source = tensors(V100)
    got = transfer(cli, tmp_path / "out.safetensors", V100, V104, f"{WORDS}=zero", f"{BIAS}=zero")
    np.testing.assert_array_equal(got[WORDS][:100], source[WORDS])
    np.testing.assert_array_equal(got[WORDS][100:], np.zeros((4, 32), np.float32))


def test_grown_vocabulary_keep_rows(cli: CliRunner, tmp_path: Path) -> None:
    """``keep``: the target's 4 new rows as transformers initialised them (a glob this time)."""
    source, target = tensors(V100), tensors(V104)
    got = transfer(cli, tmp_path / "out.safetensors", V100, V104, "*.word_embeddings.weight=keep", "cls.predictions.b*=keep")
    assert_rest_is_the_source(got, source, target, GROWN)
    for name in GROWN:
        np.testing.assert_array_equal(got[name][:100], source[name], err_msg=name)
        np.testing.assert_array_equal(got[name][100:], target[name][100:], err_msg=name)


def test_fewer_classes_keep_the_first_rows(cli: CliRunner, tmp_path: Path) -> None:
    source, target = tensors(CLS5), tensors(CLS3)
    got = transfer(cli, tmp_path / "out.safetensors", CLS5, CLS3, "classifier.*=keep")
    assert_rest_is_the_source(got, source, target, CLASSIFIER)
    for name in CLASSIFIER:
        np.testing.assert_array_equal(got[name], source[name][:3], err_msg=name)


def test_dry_run_reports_the_partial_tensors_and_writes_nothing(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    r = cli("transfer", V100, V104, "-o", out, "--resize", f"{WORDS}=mean", "--resize", f"{BIAS}=zero",
            "--dry-run", "--json")
    assert r.code == 0, r.out + r.err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    entries = {t["name"]: t for t in json.loads(r.out)["tensors"]}
    for name in GROWN:
        partial = entries[name]["partial"]
        assert isinstance(partial, str) and "100" in partial and "104" in partial, entries[name]
        assert entries[name]["action"] != "keep", entries[name]
    assert all(not t.get("partial") for n, t in entries.items() if n not in GROWN)

    r = cli("transfer", CLS5, CLS3, "-o", out, "--resize", "classifier.*=keep", "--dry-run", "--json")
    assert r.code == 0, r.out + r.err
    assert not out.exists()
    entries = {t["name"]: t for t in json.loads(r.out)["tensors"]}
    for name in CLASSIFIER:
        partial = entries[name]["partial"]
        assert isinstance(partial, str) and "3" in partial and "5" in partial, entries[name]
        assert entries[name]["action"] != "keep", entries[name]


def test_without_resize_the_mismatched_tensors_are_kept(cli: CliRunner, tmp_path: Path) -> None:
    for src, tgt, names in ((V100, V104, GROWN), (CLS5, CLS3, CLASSIFIER)):
        out = tmp_path / f"{tgt.stem}.safetensors"
        r = cli("transfer", src, tgt, "-o", out, "--json")
        assert r.code == 0, r.out + r.err
        entries = {t["name"]: t for t in json.loads(r.out)["tensors"]}
        for name in names:
            assert entries[name]["action"] == "keep" and entries[name]["kind"] == "shape_mismatch", entries[name]
            assert "shape mismatch" in entries[name]["reason"]
        got, target = tensors(out), tensors(tgt)
        for name in names:
            np.testing.assert_array_equal(got[name], target[name], err_msg=name)
