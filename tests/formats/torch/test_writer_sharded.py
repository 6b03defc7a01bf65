"""Sharded PyTorch output in the Hugging Face layout: ``pytorch_model-0000K-of-0000N.bin`` and its index."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ckptsurgeon.errors import UsageError
from ckptsurgeon.formats._zip import ZipArchive
from ckptsurgeon.formats.torch.writer import ShardedWriter

from ...support.factory import specs_of
from .test_writer import every_dtype
from .test_writer_torch import expected, run_check, torch_python


def write_sharded(out: Path, tensors: dict[str, np.ndarray], shard_size: int, **kwargs: object) -> ShardedWriter:
    writer = ShardedWriter(ShardedWriter.destination(out), shard_size=shard_size, **kwargs)  # type: ignore[arg-type]
    try:
        writer.begin(specs_of(tensors))
        for name, arr in tensors.items():
            writer.write(name, arr)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return writer


def tensors() -> dict[str, np.ndarray]:
    return {f"layers.{i}.weight": np.full((4, 4), i, dtype="<f4") for i in range(5)}  # 64 bytes each


def test_shards_and_index_are_named_and_filled_as_hugging_face_does(tmp_path: Path) -> None:
    data = tensors()
    write_sharded(tmp_path, data, shard_size=130, metadata={"note": "x"})
    index = tmp_path / "pytorch_model.bin.index.json"
    doc = json.loads(index.read_text())
    shards = [f"pytorch_model-0000{k}-of-00003.bin" for k in (1, 2, 3)]
    assert doc == {"metadata": {"total_size": 320, "note": "x"},
                   "weight_map": {n: shards[i // 2] for i, n in enumerate(data)}}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([index.name, *shards])
    for shard in shards:
        names = zipfile.ZipFile(tmp_path / shard).namelist()
        stem = shard.removesuffix(".bin")
        assert names[0] == f"{stem}/data.pkl" and f"{stem}/extra/ckptsurgeon.json" not in names
        with ZipArchive(tmp_path / shard) as archive:
            held = [n for n, s in doc["weight_map"].items() if s == shard]
            assert [bytes(archive.view(archive[f"{stem}/data/{i}"])) for i in range(len(held))] == \
                [data[n].tobytes() for n in held]


def test_a_rewrite_takes_fresh_names_and_removes_the_old_shards(tmp_path: Path) -> None:
    write_sharded(tmp_path, tensors(), shard_size=130)
    write_sharded(tmp_path, tensors(), shard_size=130)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["pytorch_model.1-00001-of-00003.bin", "pytorch_model.1-00002-of-00003.bin",
                     "pytorch_model.1-00003-of-00003.bin", "pytorch_model.bin.index.json"]
    assert zipfile.ZipFile(tmp_path / names[0]).namelist()[0] == "pytorch_model.1-00001-of-00003/data.pkl"


def test_an_index_name_of_another_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"PREFIX\.bin\.index\.json"):
        ShardedWriter.destination(tmp_path / "model.safetensors.index.json")
    assert ShardedWriter.destination(tmp_path / "x.bin.index.json") == tmp_path / "x.bin.index.json"


def test_torch_loads_every_shard(tmp_path: Path) -> None:
    torch_python()
    data = every_dtype()
    (tmp_path / "out").mkdir()
    write_sharded(tmp_path / "out", data, shard_size=40)
    doc = json.loads((tmp_path / "out" / "pytorch_model.bin.index.json").read_text())
    shards = sorted(set(doc["weight_map"].values()))
    assert len(shards) > 3
    for shard in shards:
        held = {n: a for n, a in data.items() if doc["weight_map"][n] == shard}
        assert run_check("load", tmp_path / "out" / shard, expected(held, tmp_path / "e.json"))["ok"] is True
