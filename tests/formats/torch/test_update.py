"""A transfer into a PyTorch target writes the target updated: its pickle and every other storage as they
were, the written tensors' values in place (tied weights and views included), or says why it cannot."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptsurgeon.formats import OpenOptions, open_checkpoint
from ckptsurgeon.formats.torch import METADATA_MEMBER

from ...support.fixtures import CliRunner
from .conftest import HOSTILE, TORCH_DATA

LIGHTNING = TORCH_DATA / "lightning_convclf.ckpt"
TRAIN = TORCH_DATA / "convclf_train_ckpt.pt"
SOURCE = TORCH_DATA / "convclf.pt"
VARIANT = HOSTILE / "torch" / "proto2_state_dict.pt"  # w [2,3]; wt = w.T and row = w[1], views of w's storage; b
W = np.arange(6, dtype=np.float32).reshape(2, 3)


def members(path: Path) -> dict[str, bytes]:
    """Every member's bytes by its name under the archive's folder."""
    with zipfile.ZipFile(path) as zf:
        return {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}


def transfer(cli: CliRunner, source: Path, target: Path, out: Path, *args: str) -> dict[str, Any]:
    result = cli("transfer", source, target, "-o", out, "--json", *args)
    assert result.code == 0, result.err
    doc: dict[str, Any] = json.loads(result.out)
    return doc


def values(path: Path, **options: Any) -> dict[str, np.ndarray]:
    with open_checkpoint(path, OpenOptions(**options)) as reader:
        return {t.name: reader.read(t.name) for t in reader.tensors}


@pytest.mark.parametrize("target", [LIGHTNING, TRAIN])
def test_a_training_checkpoint_is_updated_in_place(cli: CliRunner, tmp_path: Path, target: Path) -> None:
    out = tmp_path / f"out{target.suffix}"  # .ckpt: the target's own extension names its format
    doc = transfer(cli, SOURCE, target, out, "--verify")
    assert doc["output"]["format"] == "torch"
    assert doc["output"]["layout"] == {"updated": True, "fallback": None, "follows": {}, "notes": []}
    before, after = members(target), members(out)
    assert after["data.pkl"] == before["data.pkl"]  # epoch, optimizer, loops, hyper-parameters: all the target's
    with open_checkpoint(target) as reader:
        listed = {t.loc.record.storage.key for t in reader.tensors}
        prefix = reader.dict_path
    kept = [k for k in before if k.startswith("data/") and k[5:] not in listed]
    assert kept and all(after[k] == before[k] for k in kept)  # optimizer state and the rest, byte for byte
    assert [k for k in after if not k.startswith("data/") and k != METADATA_MEMBER] == \
        [k for k in before if not k.startswith("data/")]
    if METADATA_MEMBER in after:  # what ckptsurgeon adds (provenance); the target's own entries stay in the pickle
        assert "epoch" not in json.loads(after[METADATA_MEMBER])["metadata"]
    got, want = values(out), values(SOURCE)
    offset = "model." if prefix == "state_dict" else ""
    assert {n: a.tobytes() for n, a in got.items()} == {offset + n: a.tobytes() for n, a in want.items()}
    everything = values(out, all_dicts=True)
    assert everything.keys() == values(target, all_dicts=True).keys()


def test_tied_views_follow_the_tensor_written_into_their_storage(cli: CliRunner, tmp_path: Path) -> None:
    new_w = W * 10 + 1
    save_file({"w": new_w}, str(tmp_path / "src.safetensors"))
    out = tmp_path / "out.pt"
    doc = transfer(cli, tmp_path / "src.safetensors", VARIANT, out, "--verify")
    layout = doc["output"]["layout"]
    assert layout["updated"] and layout["follows"] == {"wt": "w", "row": "w"}
    got = values(out)
    assert np.array_equal(got["w"], new_w) and np.array_equal(got["wt"], new_w.T) and np.array_equal(got["row"], new_w[1])
    assert members(out)["data.pkl"] == members(VARIANT)["data.pkl"]  # still one storage, three views
    result = cli("transfer", tmp_path / "src.safetensors", VARIANT, "-o", tmp_path / "again.pt")
    assert "tied: wt shares its storage with w in the target and holds its new values" in result.out


def test_views_given_values_that_agree_are_written_through_their_strides(cli: CliRunner, tmp_path: Path) -> None:
    new_w = -W - 0.5
    save_file({"w": new_w, "wt": np.ascontiguousarray(new_w.T), "row": new_w[1].copy(),
               "b": np.array([7, 8], np.float32)}, str(tmp_path / "src.safetensors"))
    out = tmp_path / "out.pt"
    doc = transfer(cli, tmp_path / "src.safetensors", VARIANT, out, "--verify")
    assert doc["output"]["layout"]["follows"] == {}
    got = values(out)
    assert np.array_equal(got["wt"], new_w.T) and np.array_equal(got["b"], [7, 8])


def test_tied_tensors_given_different_values_fail_and_write_nothing(cli: CliRunner, tmp_path: Path) -> None:
    save_file({"w": W + 1, "row": np.array([9, 9, 9], np.float32)}, str(tmp_path / "src.safetensors"))
    out = tmp_path / "out.pt"
    result = cli("transfer", tmp_path / "src.safetensors", VARIANT, "-o", out)
    assert result.code == 4
    assert "share one storage in the target (tied)" in result.line and "'w'" in result.line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors"]


def test_a_big_endian_target_stays_big_endian(gen: Any, cli: CliRunner, tmp_path: Path) -> None:
    big = {k: np.frombuffer(v, "<f4").astype(">f4").tobytes() for k, v in gen.TORCH_STORAGES.items()}
    pkl = gen.Pk().state_dict(gen.torch_entries()).done()
    target = tmp_path / "big.pt"
    target.write_bytes(gen.zip_bytes([("archive/data.pkl", pkl), ("archive/byteorder", b"big"),
                                      *((f"archive/data/{k}", v) for k, v in big.items())]))
    new_b = np.array([3.25, -7.0], np.float32)
    save_file({"w": W + 100, "b": new_b}, str(tmp_path / "src.safetensors"))
    out = tmp_path / "out.pt"
    transfer(cli, tmp_path / "src.safetensors", target, out, "--verify")
    assert members(out)["byteorder"] == b"big"
    assert members(out)["data/1"] == new_b.astype(">f4").tobytes()
    got = values(out)
    assert np.array_equal(got["w"], W + 100) and np.array_equal(got["row"], (W + 100)[1])


def test_a_dtype_the_target_does_not_hold_falls_back_to_a_flat_state_dict(cli: CliRunner, tmp_path: Path) -> None:
    with open_checkpoint(SOURCE) as reader:
        source = {t.name: reader.read(t.name) for t in reader.tensors}
    save_file({n: a.astype(np.float64) if a.dtype == np.float32 else a for n, a in source.items()},
              str(tmp_path / "f64.safetensors"))
    out = tmp_path / "out.ckpt"
    doc = transfer(cli, tmp_path / "f64.safetensors", LIGHTNING, out, "--keep-dtype")
    layout = doc["output"]["layout"]
    assert not layout["updated"] and "is written as F64" in layout["fallback"] and "the target holds F32" in layout["fallback"]
    with open_checkpoint(out) as reader:
        assert reader.layout == "zip; state dict" and len(reader.tensors) == 15  # the listed tensors alone
    result = cli("transfer", tmp_path / "f64.safetensors", LIGHTNING, "-o", tmp_path / "again.ckpt", "--keep-dtype")
    assert "layout: written as a plain state dict, not like the target" in result.out


def test_a_chosen_dict_is_updated_and_read_back_with_the_same_choice(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    doc = transfer(cli, SOURCE, TORCH_DATA / "convclf_ema.pt", out, "--tgt-dict", "model_ema", "--verify")
    assert doc["output"]["layout"]["updated"]
    ema = values(out, dict_path="model_ema")
    assert {n: a.tobytes() for n, a in ema.items()} == {n: a.tobytes() for n, a in values(SOURCE).items()}
    assert {n: a.tobytes() for n, a in values(out, dict_path="model").items()} == \
        {n: a.tobytes() for n, a in values(TORCH_DATA / "convclf_ema.pt", dict_path="model").items()}


def test_a_legacy_target_is_written_in_the_zip_format(cli: CliRunner, tmp_path: Path) -> None:
    save_file({"b": np.array([1, 2], np.float32)}, str(tmp_path / "src.safetensors"))
    out = tmp_path / "out.pt"
    doc = transfer(cli, tmp_path / "src.safetensors", HOSTILE / "torch" / "legacy_state_dict.pt", out)
    assert doc["output"]["layout"] == {"updated": False, "fallback": None, "follows": {}, "notes": []}
    assert zipfile.is_zipfile(out) and np.array_equal(values(out)["b"], [1, 2])
