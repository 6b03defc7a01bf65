"""PyTorch zip and legacy files read without torch: every tensor's bytes as torch indexes them."""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckptsurgeon.errors import InputError
from ckptsurgeon.formats import OpenOptions, detect, open_checkpoint

from .conftest import EXPECTED, HOSTILE, TORCH_DATA, sha

FLAT = [name for name, f in EXPECTED.items() if f["dict"] is None]
W = np.arange(6, dtype=np.float32).reshape(2, 3)  # the protocol variants' state dict (make_hostile.py)
VARIANT = {"w": W, "wt": W.T, "row": W[1], "b": np.array([0.5, -1.5], np.float32)}


@pytest.mark.parametrize("name", FLAT)
def test_flat_files_read_exactly(name: str) -> None:
    """Names in order, shapes, dtypes and the sha256 of every tensor as torch 2.13 gives them."""
    want = EXPECTED[name]["tensors"]
    with open_checkpoint(TORCH_DATA / name) as reader:
        got = [(t.name, list(t.shape), t.dtype, reader.sha256(t.name)) for t in reader.tensors]
        assert got == [(t["name"], t["shape"], t["dtype"], t["sha256"]) for t in want]
        for t in reader.tensors:  # read() agrees with iter_bytes()
            assert sha(np.ascontiguousarray(reader.read(t.name)).tobytes()) == reader.sha256(t.name)


@pytest.mark.parametrize("name", ["tinylm_shared_storage.pt", "tinylm_shared_storage_legacy.pt", "convclf.pt"])
def test_c_order_views_are_byte_ranges_and_others_are_gathered(name: str) -> None:
    """Tied weights, offset views and slices of one storage are byte ranges; .t() and expand() views are not."""
    strided = {t["name"] for t in EXPECTED[name]["tensors"] if t["strided"]}
    with open_checkpoint(TORCH_DATA / name) as reader:
        assert reader.caps.byte_ranges
        for t in reader.tensors:
            found = reader.byte_range(t.name)
            if t.name in strided:
                assert found is None, t.name
                continue
            assert found is not None, t.name
            path, offset, length = found
            assert length == t.nbytes
            with open(path, "rb") as f:
                f.seek(offset)
                assert sha(f.read(length)) == reader.sha256(t.name), t.name
    if name.startswith("tinylm"):
        assert {"position_ids", "fc_weight_T"} <= strided


@pytest.mark.parametrize("variant", [f"proto{p}_state_dict.pt" for p in range(1, 6)] + ["legacy_state_dict.pt"])
def test_protocol_1_to_5_and_legacy_variants_read_exactly(variant: str) -> None:
    with open_checkpoint(HOSTILE / "torch" / variant) as reader:
        assert [t.name for t in reader.tensors] == list(VARIANT)
        for name, want in VARIANT.items():
            assert np.array_equal(reader.read(name), want), name
        assert reader.byte_range("wt") is None and reader.byte_range("row") is not None


def _swap(storages: dict[str, bytes]) -> dict[str, bytes]:
    return {k: np.frombuffer(v, "<f4").astype(">f4").tobytes() for k, v in storages.items()}


def test_big_endian_zip_and_legacy_files_read_as_little_endian(gen: Any, tmp_path: Path) -> None:
    big = _swap(gen.TORCH_STORAGES)
    pkl = gen.Pk().state_dict(gen.torch_entries()).done()
    records = [(f"archive/data/{k}", v) for k, v in big.items()]
    zip_path = tmp_path / "big.pt"
    zip_path.write_bytes(gen.zip_bytes([("archive/data.pkl", pkl), ("archive/byteorder", b"big"), *records]))
    legacy = gen.torch_legacy(gen.Pk().state_dict(gen.torch_entries(legacy=True)).done())
    legacy = legacy.replace(b"\x88u.", b"\x89u.", 1)  # the system info's little_endian: True -> False
    keys_end = legacy.index(b"e.") + 2  # the storage list pickle ends the pickles; records follow
    body = b"".join(struct.pack(">q", len(v) // 4) + v for v in big.values())
    legacy_path = tmp_path / "big_legacy.pt"
    legacy_path.write_bytes(legacy[:keys_end] + body)
    for path in (zip_path, legacy_path):
        with open_checkpoint(path) as reader:
            assert "big-endian" in (reader.layout or "")
            for name, want in VARIANT.items():
                got = reader.read(name)
                assert got.dtype.byteorder in ("<", "=") and np.array_equal(got, want), (path.name, name)
                assert reader.byte_range(name) is None


def test_deflated_members_read_the_same(tmp_path: Path) -> None:
    """torch writes STORED members; a re-zipped (DEFLATED) checkpoint reads the same, without byte ranges."""
    src = TORCH_DATA / "tinylm_shared_storage.pt"
    out = tmp_path / "deflated.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    with open_checkpoint(src) as a, open_checkpoint(out) as b:
        assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
        for t in a.tensors:
            assert a.sha256(t.name) == b.sha256(t.name)
            assert b.byte_range(t.name) is None


def test_format_is_detected_by_content_whatever_the_extension(tmp_path: Path) -> None:
    for ext in (".bin", ".ckpt", ".tar", ".safetensors"):
        for name in ("convclf.pt", "convclf_legacy.pt"):
            path = tmp_path / f"{Path(name).stem}{ext}"
            shutil.copy(TORCH_DATA / name, path)
            assert detect(path) == "torch"
    assert detect(TORCH_DATA / "hf_sharded_bin/tinylm/pytorch_model.bin.index.json") == "torch-sharded"


def test_sharded_bin_reads_the_union_of_its_shards() -> None:
    want = EXPECTED["hf_sharded_bin/tinylm/pytorch_model.bin.index.json"]["tensors"]
    with open_checkpoint(TORCH_DATA / "hf_sharded_bin/tinylm") as reader:
        assert reader.format == "torch-sharded" and len(reader.files) == 3
        assert {t.name: reader.sha256(t.name) for t in reader.tensors} == {t["name"]: t["sha256"] for t in want}
        assert reader.metadata == {"total_size": "3824"}


def test_sharded_index_is_checked_against_the_shards_both_ways(tmp_path: Path) -> None:
    folder = tmp_path / "tinylm"
    shutil.copytree(TORCH_DATA / "hf_sharded_bin/tinylm", folder)
    index = folder / "pytorch_model.bin.index.json"
    doc = json.loads(index.read_text())
    shards = sorted(set(doc["weight_map"].values()))
    name = next(n for n, s in doc["weight_map"].items() if s == shards[0])
    moved = {**doc, "weight_map": {**doc["weight_map"], name: shards[1]}}
    index.write_text(json.dumps(moved))
    with pytest.raises(InputError, match="does not hold it"):
        open_checkpoint(index)
    dropped = {**doc, "weight_map": {n: s for n, s in doc["weight_map"].items() if n != name}}
    index.write_text(json.dumps(dropped))
    with pytest.raises(InputError, match="which the index does not list there"):
        open_checkpoint(index)


def test_a_shard_that_is_not_a_torch_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "tinylm"
    shutil.copytree(TORCH_DATA / "hf_sharded_bin/tinylm", folder)
    shard = sorted(folder.glob("*.bin"))[1]
    shard.write_bytes(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.")
    with pytest.raises(InputError, match="not a PyTorch checkpoint"):
        open_checkpoint(folder / "pytorch_model.bin.index.json")


def test_non_tensor_entries_of_a_flat_dict_become_metadata(gen: Any, tmp_path: Path) -> None:
    entries = [*gen.torch_entries(), ("step", lambda p: p.int(7)), ("note", lambda p: p.str("fine-tuned"))]
    path = tmp_path / "m.pt"
    path.write_bytes(gen.torch_zip(gen.Pk().state_dict(entries).done()))
    with open_checkpoint(path, OpenOptions()) as reader:
        assert [t.name for t in reader.tensors] == list(VARIANT)
        assert reader.metadata == {"step": "7", "note": "fine-tuned"}
