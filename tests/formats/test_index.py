"""Sharded indexes: both value forms Keras writes, told apart from Hugging Face indexes by their shards."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from ckptsurgeon.errors import InputError, UnsafeInputError
from ckptsurgeon.formats import detect, open_checkpoint
from ckptsurgeon.formats._index import ShardIndex

from ..conftest import CORPUS, DATA
from ..support.cli import one_line, run

KERAS_STR = DATA / "keras3_sharded_str"  # written by Keras 3.15.1: a weight_map with string and list values
EXPECTED = json.loads((KERAS_STR / "expected.json").read_text())


def test_the_keras_index_really_holds_both_value_forms() -> None:
    doc = json.loads((KERAS_STR / "model.weights.json").read_text())
    kinds = {type(v).__name__ for v in doc["weight_map"].values()}
    assert kinds == {"str", "list"}


def test_keras_index_with_string_values_is_read_exactly() -> None:
    assert detect(KERAS_STR / "model.weights.json") == "keras-sharded"
    want = {d["path"].lstrip("/"): d for d in EXPECTED["datasets"]}
    with open_checkpoint(KERAS_STR / "model.weights.json") as r:
        assert r.format == "keras-sharded" and r.layout == "keras3-h5"
        assert {t.name for t in r.tensors} == set(want)
        for t in r.tensors:
            d = want[t.name]
            assert list(t.shape) == d["shape"] and t.dtype == "F32"
            assert hashlib.sha256(b"".join(r.iter_bytes(t.name))).hexdigest() == d["sha256"], t.name
        assert sorted(p.name for p in r.files[1:]) == sorted(EXPECTED["shards"])
        layers = {t.name: t.layer for t in r.tensors}
    # the layer names are the user's (from the vars groups' name attributes), not Keras's class counters
    assert layers["layers/dense_1/vars/0"] == "head" and layers["layers/conv2d/vars/0"] == "conv"


def test_keras_string_index_converts_and_transfers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "one.weights.h5"
    code, _, err = run(["convert", str(KERAS_STR / "model.weights.json"), "-o", str(out)], capsys)
    assert code == 0, err
    code, _, err = run(["diff", str(KERAS_STR / "model.weights.json"), str(out)], capsys)
    assert code == 0, err


def test_index_parser_accepts_both_value_forms(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"metadata": {"total_size": 3}, "weight_map": {"a": "s1", "b": ["s1", "s2"]}}))
    index = ShardIndex.read(path)
    assert index.weight_map == {"a": ("s1",), "b": ("s1", "s2")}
    assert index.shards == ("s1", "s2") and index.metadata == {"total_size": "3"}
    assert index.one_shard("a") == "s1"
    with pytest.raises(InputError, match="in 2 shards"):
        index.one_shard("b")


@pytest.mark.parametrize("value", [["../x.safetensors"], "/etc/passwd", "", "a\\b", ".."])
def test_index_refuses_shard_names_outside_its_folder(tmp_path: Path, value: object) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"weight_map": {"a": value}}))
    with pytest.raises(UnsafeInputError, match="not a plain file name beside the index"):
        ShardIndex.read(path)


@pytest.mark.parametrize("value", [3, [], [3], {"a": 1}])
def test_index_refuses_values_that_are_not_shard_names(tmp_path: Path, value: object) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"weight_map": {"a": value}}))
    with pytest.raises(InputError):
        ShardIndex.read(path)


def test_index_of_shards_of_another_format_says_so_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An HF-style index naming HDF5 shards is a Keras-style sharded checkpoint; one naming npz shards is refused."""
    shutil.copy(CORPUS / "npz" / "weights.npz", tmp_path / "shard-1.npz")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {"w": "shard-1.npz"}}))
    code, _, err = run(["inspect", str(index)], capsys)
    assert code == 3
    line = one_line(err)
    assert line.startswith(f"ckpt: error: {index}: ") and "npz shards" in line


def test_hf_index_whose_later_shard_is_another_format_names_it(tmp_path: Path) -> None:
    src = CORPUS / "hf_sharded" / "tiny_gpt2"
    for p in src.iterdir():
        shutil.copy(p, tmp_path / p.name)
    shard = tmp_path / "model-00002-of-00004.safetensors"
    shard.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 600)
    with pytest.raises(InputError, match=re.escape("'model-00002-of-00004.safetensors' is not a safetensors file")):
        open_checkpoint(tmp_path / "model.safetensors.index.json")


def test_keras_index_whose_shard_is_not_hdf5_names_it(tmp_path: Path) -> None:
    for p in KERAS_STR.glob("model*"):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "model_00001.weights.h5").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=re.escape("'model_00001.weights.h5' is not an HDF5 file")):
        open_checkpoint(tmp_path / "model.weights.json")
