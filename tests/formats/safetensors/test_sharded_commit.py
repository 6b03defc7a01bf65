"""The sharded writer's commit: fresh shard names beside a live checkpoint, the journal, the folder lock.

The end-to-end kill and concurrency tests are in ``tests/commands/test_convert_sharded_commit.py``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from ckptsurgeon import atomic
from ckptsurgeon.atomic import AtomicFiles, finish_interrupted_commits, journal_path
from ckptsurgeon.errors import OutputError, UsageError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.safetensors import sharded
from ckptsurgeon.lock import FolderLock

from ...support.sharded import write_sharded

INDEX = "model.safetensors.index.json"
# transformers' save_pretrained removes files of an earlier save that match this (after ".safetensors" is cut)
TRANSFORMERS_SHARD = re.compile(r"(.*?)-\d{5}-of-\d{5}")


def tensors(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"t{i}": rng.standard_normal(64).astype(np.float32) for i in range(n)}  # 256 bytes each


def write(index: Path, data: dict[str, np.ndarray], shard_size: int = 512, **kwargs: object) -> sharded.Writer:
    return write_sharded(index, data, shard_size, **kwargs)


def shards_of(index: Path) -> list[str]:
    return sorted(set(json.loads(index.read_text())["weight_map"].values()))


def assert_holds(index: Path, data: dict[str, np.ndarray]) -> None:
    for shard in shards_of(index):
        with safe_open(index.parent / shard, "np") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                np.testing.assert_array_equal(f.get_tensor(key), data[key])
    with open_checkpoint(index) as r:
        assert sorted(t.name for t in r.tensors) == sorted(data)


def test_rewriting_with_the_same_shard_names_alternates_between_two_sets_of_names(tmp_path: Path) -> None:
    index = tmp_path / INDEX
    first = [f"model-{k:05d}-of-00003.safetensors" for k in (1, 2, 3)]
    second = [f"model.1-{k:05d}-of-00003.safetensors" for k in (1, 2, 3)]
    for seed, names in enumerate([first, second, first, second]):
        data = tensors(6, seed)
        write(index, data)
        assert shards_of(index) == names
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([INDEX, *names])  # the old set is gone
        assert_holds(index, data)
    for name in [*first, *second]:  # both sets are what transformers recognises as shards of "model"
        assert name.startswith("model") and TRANSFORMERS_SHARD.fullmatch(name.removesuffix(".safetensors"))


def test_a_different_shard_count_keeps_hugging_face_names(tmp_path: Path) -> None:
    index = tmp_path / INDEX
    write(index, tensors(6, 0))
    write(index, tensors(4, 1), force=True)  # two shards: the names are free
    assert shards_of(index) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([INDEX, *shards_of(index)])


def test_files_another_index_names_are_never_written_over_or_removed(tmp_path: Path) -> None:
    index = tmp_path / INDEX
    write(index, tensors(2, 0))  # model-00001-of-00001
    theirs = {"model.1-00001-of-00001.safetensors": b"another checkpoint's shard"}
    (tmp_path / "model.1-00001-of-00001.safetensors").write_bytes(theirs["model.1-00001-of-00001.safetensors"])
    (tmp_path / "other.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"x": "model.1-00001-of-00001.safetensors"}}))
    (tmp_path / "model.2.safetensors.index.json").write_text("{}")  # "model.2" is another checkpoint's prefix
    data = tensors(2, 1)
    write(index, data)
    assert shards_of(index) == ["model.3-00001-of-00001.safetensors"]
    assert (tmp_path / "model.1-00001-of-00001.safetensors").read_bytes() == b"another checkpoint's shard"
    assert not (tmp_path / "model-00001-of-00001.safetensors").exists()
    assert_holds(index, data)


def test_a_shard_being_replaced_that_is_an_input_is_refused(tmp_path: Path) -> None:
    index = tmp_path / INDEX
    write(index, tensors(2, 0))
    shard = tmp_path / "model-00001-of-00001.safetensors"
    before = shard.read_bytes()
    with pytest.raises(UsageError, match="is an input and a shard this run replaces"):
        write(index, tensors(2, 1), inputs=[shard])
    assert shard.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [shard.name, INDEX]


def test_leftovers_of_a_killed_commit_are_removed_by_the_next_writer_only_if_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = tmp_path / INDEX
    old = tensors(6, 0)
    write(index, old)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace

    def die_at_the_index(src: object, dst: object) -> None:
        if Path(str(dst)).name == INDEX:
            raise SystemExit("killed")  # as if SIGKILL: below, nothing cleans up
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", die_at_the_index)
    monkeypatch.setattr(os, "unlink", lambda *a, **k: None)
    monkeypatch.setattr(atomic, "_remove_temp", lambda tmp: None)
    with pytest.raises(SystemExit):
        write(index, tensors(6, 1))
    monkeypatch.undo()
    for tmp in [p for p in tmp_path.iterdir() if atomic.is_temp_name(p.name)]:
        tmp.unlink()  # a dead writer's temporary files are clean_stale_temps' business, tested elsewhere
    (tmp_path / ".ckpt-lock").unlink()  # left by a killed writer, unlocked by the kernel: reused by the next
    orphans = sorted(p.name for p in tmp_path.glob("model.1-*"))
    assert len(orphans) == 3 and journal_path(index).exists()
    assert {p: before[p] for p in before} == {p: (tmp_path / p).read_bytes() for p in before}  # the old checkpoint
    assert_holds(index, old)
    (tmp_path / orphans[0]).unlink()
    (tmp_path / orphans[0]).write_bytes(b"written since by someone else")
    assert finish_interrupted_commits(tmp_path) == [tmp_path / n for n in orphans[1:]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, orphans[0]])
    assert (tmp_path / orphans[0]).read_bytes() == b"written since by someone else"


def test_a_journal_that_is_not_ckptsurgeons_is_left_alone(tmp_path: Path) -> None:
    victim = tmp_path / "keep.safetensors"
    victim.write_bytes(b"x")
    st = victim.stat()
    for doc in ("not json", json.dumps({"commit": ["../index", 1, 1, 1], "new": [], "old": []}),
                json.dumps({"commit": ["index", 1, 1, 1], "new": [["keep.safetensors", st.st_ino, 1, "1"]], "old": []})):
        (tmp_path / ".index.ckpt-journal").write_text(doc)
        assert finish_interrupted_commits(tmp_path) == []
    assert victim.read_bytes() == b"x" and (tmp_path / ".index.ckpt-journal").exists()


def test_atomic_files_commit_removes_what_it_supersedes_and_leaves_no_journal(tmp_path: Path) -> None:
    (tmp_path / "old-a").write_bytes(b"old a")
    (tmp_path / "index").write_bytes(b"names old-a")
    with AtomicFiles(name=tmp_path / "index") as files:
        files.temp(tmp_path / "new-a").write_bytes(b"new a")
        files.temp(tmp_path / "index").write_bytes(b"names new-a")
        files.commit(supersedes=[tmp_path / "old-a"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"new-a": b"new a", "index": b"names new-a"}


def test_atomic_files_commit_never_replaces_a_fifo_that_appeared_at_a_destination(tmp_path: Path) -> None:
    (tmp_path / "index").write_bytes(b"names old-a")
    with pytest.raises(OutputError, match="FIFO") as info, AtomicFiles(name=tmp_path / "index") as files:
        files.temp(tmp_path / "new-a").write_bytes(b"new a")
        files.temp(tmp_path / "index").write_bytes(b"names new-a")
        os.mkfifo(tmp_path / "new-a")  # appears between writing and committing
        files.commit()
    assert str(tmp_path / "new-a") in info.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "new-a"]  # no temp, no journal left
    assert stat.S_ISFIFO((tmp_path / "new-a").stat().st_mode)
    assert (tmp_path / "index").read_bytes() == b"names old-a"


def test_the_folder_lock(tmp_path: Path) -> None:
    lock_file = tmp_path / ".ckpt-lock"
    with FolderLock(tmp_path):
        assert lock_file.exists()
        with FolderLock(tmp_path):  # the same thread again: counted, not refused
            pass
        assert lock_file.exists()
        fd = os.open(lock_file, os.O_RDWR)  # another open file description, as another process has
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                FolderLock(tmp_path).acquire()
            except OutputError as exc:
                errors.append(exc)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert len(errors) == 1 and "another ckpt run is writing into this folder" in str(errors[0])
        assert errors[0].path == str(tmp_path)
    assert list(tmp_path.iterdir()) == []  # released: the lock file is gone
    lock_file.write_bytes(b"")  # left by a killed writer: the kernel released its lock
    with FolderLock(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_symlink_in_place_of_the_lock_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".ckpt-lock").symlink_to(target)
    with pytest.raises(OutputError) as info:
        FolderLock(folder).acquire()
    assert info.value.path == str(folder) and info.value.exit_code == 4
    assert target.read_bytes() == b"keep"
    with pytest.raises(OSError) as link_error:
        os.open(folder / ".ckpt-lock", os.O_RDWR | os.O_NOFOLLOW)
    assert link_error.value.errno == errno.ELOOP


def test_a_shard_name_spelled_otherwise_is_stale_not_replaced(tmp_path: Path) -> None:
    index = tmp_path / INDEX
    (tmp_path / "model-1-of-1.safetensors").write_bytes(b"someone else's numbering")
    with pytest.raises(UsageError, match="would not overwrite"):
        write(index, tensors(2, 0))
    write(index, tensors(2, 0), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-00001-of-00001.safetensors", INDEX]
