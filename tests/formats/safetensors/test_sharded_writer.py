"""The sharded safetensors writer: sizes, the shard planner (from ints), the HF layout, atomic commit of many files."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open

from ckptsurgeon.atomic import TEMP_MARK
from ckptsurgeon.errors import UsageError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.base import WriterStateError
from ckptsurgeon.formats.safetensors import sharded
from ckptsurgeon.formats.safetensors import writer as st_writer
from ckptsurgeon.tensors import TensorSpec
from ckptsurgeon.text import parse_size

from ...support.sharded import write_sharded


@pytest.mark.parametrize(("text", "size"), [
    ("500MB", 500_000_000), ("2GB", 2_000_000_000), ("2GiB", 2 * 2**30), ("1000", 1000), (" 2 gb ", 2 * 10**9),
    ("1.5GB", 1_500_000_000), ("40kB", 40_000), ("3KiB", 3072), ("7B", 7), (4096, 4096), ("1TB", 10**12),
])
def test_parse_size_decimal_and_binary_units(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "0", "0.1", "-5MB", "2XB", "1e9", "2 G B", "nan"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def groups(sizes: list[int], limit: int) -> list[list[int]]:
    return [[sizes[i] for i in r] for r in sharded.plan_shards(sizes, limit)]


def test_plan_is_greedy_in_tensor_order() -> None:
    # The example in Hugging Face's documentation of its splitter.
    assert groups([6, 6, 2, 6, 2, 2], 10) == [[6], [6, 2], [6, 2, 2]]
    assert groups([5, 5], 10) == [[5, 5]]  # exactly full
    assert groups([5, 5, 1], 10) == [[5, 5], [1]]
    assert groups([], 10) == []
    assert groups([0, 0, 10, 0], 10) == [[0, 0, 10, 0]]


def test_a_tensor_larger_than_the_shard_size_gets_a_shard_of_its_own() -> None:
    assert groups([3, 20, 3, 3], 10) == [[3], [20], [3, 3]]
    assert groups([20, 30], 10) == [[20], [30]]
    assert groups([20], 10) == [[20]]
    assert groups([3, 3, 20], 10) == [[3, 3], [20]]


@given(st.lists(st.integers(0, 50), max_size=40), st.integers(1, 60))
def test_plan_properties(sizes: list[int], limit: int) -> None:
    ranges = sharded.plan_shards(sizes, limit)
    assert [i for r in ranges for i in r] == list(range(len(sizes)))  # every tensor once, in order
    for r in ranges:
        assert len(r) >= 1
        assert len(r) == 1 or sum(sizes[i] for i in r) <= limit  # only a lone tensor may exceed the limit
    for a, b in itertools.pairwise(ranges):
        nxt = sizes[b[0]]
        # greedy: a shard is closed only when the next tensor would not fit into it
        assert sum(sizes[i] for i in a) + nxt > limit or sizes[a[0]] > limit or nxt > limit


def test_index_path_and_prefix(tmp_path: Path) -> None:
    assert sharded.index_path(tmp_path) == tmp_path / "model.safetensors.index.json"
    assert sharded.index_path(f"{tmp_path}/new/") == tmp_path / "new" / "model.safetensors.index.json"
    assert sharded.index_path(tmp_path / "new") == tmp_path / "new" / "model.safetensors.index.json"
    idx = sharded.index_path(tmp_path / "diffusion_pytorch_model.safetensors.index.json")
    assert sharded.shard_prefix(idx) == "diffusion_pytorch_model"
    assert sharded.shard_name("diffusion_pytorch_model", 2, 12) == "diffusion_pytorch_model-00002-of-00012.safetensors"
    for bad in ("model.safetensors", "model.json", ".safetensors.index.json"):
        with pytest.raises(UsageError):
            sharded.index_path(tmp_path / bad)


def tensors(n: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {f"layers.{i}.weight": rng.standard_normal((10, i + 1)).astype(np.float32)
                                  for i in range(n)}
    out["steps"] = np.array(3, dtype=np.int64)
    return out


def write(index: Path, data: dict[str, np.ndarray], shard_size: int, **kwargs: object) -> sharded.Writer:
    return write_sharded(index, data, shard_size, metadata={"origin": "test"}, **kwargs)


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_layout_loads_with_the_official_library(tmp_path: Path) -> None:
    data = tensors()
    index = tmp_path / "model.safetensors.index.json"
    w = write(index, data, shard_size=200)
    assert w.layout is not None
    doc = json.loads(index.read_text())
    assert doc["metadata"] == {"total_size": sum(a.nbytes for a in data.values()), "origin": "test"}
    assert list(doc["weight_map"]) == list(data)  # every tensor exactly once, in tensor order
    shards = sorted(set(doc["weight_map"].values()))
    n = len(shards)
    assert n == len(w.layout.names) > 2
    assert shards == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    seen = []
    for shard in shards:
        with safe_open(tmp_path / shard, "np") as f:
            assert f.metadata() == {"format": "pt", "origin": "test"}
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                assert doc["weight_map"][key] == shard
                np.testing.assert_array_equal(f.get_tensor(key), data[key])
                seen.append(key)
    assert sorted(seen) == sorted(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == [*shards, "model.safetensors.index.json"]
    with open_checkpoint(index) as r:  # and with ckptsurgeon's own sharded reader
        assert [t.name for t in r.tensors] == list(data)


def test_every_shard_but_a_lone_tensor_stays_within_the_size(tmp_path: Path) -> None:
    data = {"small": np.zeros(10, np.float32), "big": np.zeros(100, np.float32), "a": np.zeros(5, np.float32),
            "b": np.zeros(5, np.float32)}
    write(tmp_path / "m.safetensors.index.json", data, shard_size=60)
    doc = json.loads((tmp_path / "m.safetensors.index.json").read_text())
    assert doc["weight_map"] == {"small": "m-00001-of-00003.safetensors", "big": "m-00002-of-00003.safetensors",
                                 "a": "m-00003-of-00003.safetensors", "b": "m-00003-of-00003.safetensors"}


def test_state_machine_and_no_tensors(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    w = sharded.Writer(index, shard_size=100)
    with pytest.raises(UsageError):
        w.begin([])
    w = sharded.Writer(index, shard_size=100)
    w.begin([TensorSpec("a", (2,), "F32"), TensorSpec("b", (2,), "F32")])
    with pytest.raises(WriterStateError):
        w.write("b", np.zeros(2, np.float32))
    w.write("a", np.zeros(2, np.float32))
    with pytest.raises(WriterStateError):
        w.finish()
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_write_range_copies_bytes(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    data = tensors(4)
    save_file(data, tmp_path / "src.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    index = out / "model.safetensors.index.json"
    with open_checkpoint(tmp_path / "src.safetensors") as r:
        w = sharded.Writer(index, shard_size=100)
        w.begin([TensorSpec(t.name, t.shape, t.dtype) for t in r.tensors])
        for t in r.tensors:
            assert w.write_range(t.name, *r.byte_range(t.name))
        w.finish()
        with open_checkpoint(index) as back:
            for t in r.tensors:
                assert back.sha256(t.name) == r.sha256(t.name)


def test_error_after_the_first_shard_leaves_nothing_and_keeps_the_old_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tensors()
    index = tmp_path / "model.safetensors.index.json"
    write(index, tensors(seed=1), shard_size=200)
    before = listing(tmp_path)
    real_finish = st_writer.Writer.finish
    calls = []

    def finish_then_fail(self: st_writer.Writer) -> None:
        calls.append(self.path)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        real_finish(self)

    monkeypatch.setattr(st_writer.Writer, "finish", finish_then_fail)
    with pytest.raises(OSError):
        write(index, data, shard_size=200)
    assert len(calls) == 2
    assert listing(tmp_path) == before  # no temporary file, every old file byte for byte


def test_error_while_renaming_removes_the_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = tmp_path / "model.safetensors.index.json"
    real_replace = os.replace

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        write(index, tensors(), shard_size=200)
    monkeypatch.setattr(os, "replace", real_replace)
    assert list(tmp_path.iterdir()) == []


def test_commit_renames_the_index_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_replace = os.replace

    def record(src: str | Path, dst: str | Path) -> None:
        assert TEMP_MARK in Path(src).name
        order.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", record)
    write(tmp_path / "model.safetensors.index.json", tensors(), shard_size=200)
    assert order[-1] == "model.safetensors.index.json"
    assert order[:-1] == sorted(order[:-1]) and len(order) > 2


def test_atomic_files_discard(tmp_path: Path) -> None:
    files = sharded.AtomicFiles()
    for name in ("a", "b"):
        files.temp(tmp_path / name).write_bytes(b"x")
    files.temp(tmp_path / "never-created")
    files.discard()
    assert list(tmp_path.iterdir()) == []


def test_stale_shards_are_refused_or_removed_with_force(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    write(index, tensors(), shard_size=100)
    old = {p.name for p in tmp_path.glob("model-*")}
    (tmp_path / "other-00001-of-00002.safetensors").write_bytes(b"not ours")  # another prefix: left alone
    small = {"a": np.zeros(3, np.float32)}
    before = listing(tmp_path)
    with pytest.raises(UsageError, match="would not overwrite"):
        write(index, small, shard_size=100)
    assert listing(tmp_path) == before
    write(index, small, shard_size=100, force=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"model.safetensors.index.json", "model-00001-of-00001.safetensors",
                     "other-00001-of-00002.safetensors"}
    assert old.isdisjoint(names)


def test_a_stale_shard_that_is_an_input_is_never_removed(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    write(index, tensors(), shard_size=100)
    stale = sorted(tmp_path.glob("model-*"))[-1]
    with pytest.raises(UsageError, match="is an input"):
        write(index, {"a": np.zeros(3, np.float32)}, shard_size=100, force=True, inputs=[stale])
    assert stale.exists()
