"""``pytorch_model.bin`` (single or sharded) <-> ``model.safetensors`` as Hugging Face converts them:
``format: pt`` in the safetensors metadata; tied weights keep every name, each with its own bytes."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from ckptsurgeon.formats import open_checkpoint

from ...support.fixtures import CliRunner
from .conftest import EXPECTED, TORCH_DATA

SHARDED = TORCH_DATA / "hf_sharded_bin" / "tinylm" / "pytorch_model.bin.index.json"


def hashes(path: Path) -> dict[str, str]:
    with open_checkpoint(path) as reader:
        return {t.name: reader.sha256(t.name) for t in reader.tensors}


def test_sharded_bin_to_safetensors_and_back(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    result = cli("convert", SHARDED, "-o", out, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["tied"] == [["embed.weight", "lm_head.weight"]]
    with safe_open(str(out), "np") as f:  # the reference reader: metadata and every name
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == sorted(t["name"] for t in EXPECTED[SHARDED.relative_to(TORCH_DATA).as_posix()]["tensors"])
    want = {t["name"]: t["sha256"] for t in EXPECTED[SHARDED.relative_to(TORCH_DATA).as_posix()]["tensors"]}
    assert hashes(out) == want
    back = tmp_path / "bin"
    result = cli("convert", out, "-o", back / "pytorch_model.bin.index.json", "--shard-size", "3KB")
    assert result.code == 0, result.err
    assert len(list(back.glob("pytorch_model-*.bin"))) > 1
    assert hashes(back / "pytorch_model.bin.index.json") == want


def test_views_of_one_storage_are_each_written_whole(cli: CliRunner, tmp_path: Path) -> None:
    source = TORCH_DATA / "tinylm_shared_storage.pt"
    out = tmp_path / "model.safetensors"
    result = cli("convert", source, "-o", out)
    assert result.code == 0, result.err
    assert "shared storage: embed.weight, lm_head.weight are views of one storage" in result.out
    assert hashes(out) == hashes(source)  # transposed and offset views included, as torch returns them
    with safe_open(str(out), "np") as f:
        assert f.metadata() == {"format": "pt"}


def test_a_safetensors_input_keeps_its_own_metadata(cli: CliRunner, tmp_path: Path) -> None:
    source = TORCH_DATA / "convclf_target.safetensors"
    out = tmp_path / "model.safetensors"
    assert cli("convert", source, "-o", out, "--dtype", "f16").code == 0
    with safe_open(str(source), "np") as a, safe_open(str(out), "np") as b:
        assert b.metadata() == a.metadata()
