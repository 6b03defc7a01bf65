"""Every path ckptsurgeon opens is checked for its kind: inputs and shards are regular files (a FIFO
never blocks), shard links stay inside the index's directory, existing outputs are regular files."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from ckptsurgeon import files
from ckptsurgeon.atomic import atomic_path, check_output
from ckptsurgeon.errors import InputError, OutputError, UnsafeInputError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats._index import read_json

from ..conftest import DATA
from ..support.fifos import make_fifo

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and symbolic links are POSIX")

TENSORS = {"a": np.arange(16, dtype=np.float32), "b": np.ones(16, np.float32), "c": np.zeros(16, np.float32)}


def fifo(path: Path) -> Path:
    return make_fifo(path)


def sharded(make_checkpoint, folder: str = "ckpt") -> Path:
    index = make_checkpoint(f"{folder}/model.safetensors.index.json", "safetensors-sharded", TENSORS)
    assert len(list(index.parent.glob("*.safetensors"))) >= 2
    return index


def second_shard(index: Path) -> Path:
    return sorted(index.parent.glob("*.safetensors"))[1]


# --- inputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: fifo(p), "is not a regular file (a FIFO)"),
    (lambda p: p.mkdir() or p, "is a directory"),
    (lambda p: Path("/dev/zero"), "is not a regular file (a character device)"),
    (lambda p: p, "no such file"),
])
def test_check_input_names_the_kind_of_file(tmp_path: Path, make, problem: str) -> None:
    path = make(tmp_path / "x.safetensors")
    with pytest.raises(InputError) as info:
        files.check_input(path)
    assert info.value.path == str(path) and info.value.problem == problem
    with pytest.raises(InputError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        files.open_input(path)


def test_a_fifo_put_in_place_after_the_check_is_refused_without_blocking(tmp_path, monkeypatch) -> None:
    # The stat check passed for a regular file; by the time of the open the path is a FIFO with no
    # writer. A blocking open would wait forever; the non-blocking open returns and fstat refuses it.
    path = fifo(tmp_path / "m.safetensors")
    monkeypatch.setattr(files, "check_input", lambda p: None)
    with pytest.raises(InputError, match=r"is not a regular file \(a FIFO\)"):
        files.open_input(path)


def test_open_input_reads_a_regular_file_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "real.bin").write_bytes(b"abc")
    (tmp_path / "link.bin").symlink_to(tmp_path / "real.bin")
    with files.open_input(tmp_path / "link.bin") as f:
        assert f.read() == b"abc"  # a blocking file again: reads return everything


@pytest.mark.parametrize("name", ["model.safetensors", "model.weights.h5", "model.npz", "model.keras"])
def test_open_checkpoint_refuses_a_fifo_of_any_format_name(tmp_path: Path, name: str) -> None:
    path = fifo(tmp_path / name)
    with pytest.raises(InputError, match=r"is not a regular file \(a FIFO\)"):
        open_checkpoint(path)


def test_an_index_json_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    path = fifo(tmp_path / "model.weights.json")
    with pytest.raises(InputError, match=r"is not a regular file \(a FIFO\)"):
        read_json(path)


def test_readers_check_the_path_when_opened_directly(tmp_path: Path) -> None:
    from ckptsurgeon.formats.hdf5.archive import KerasZipReader as KerasReader
    from ckptsurgeon.formats.hdf5.reader import KerasShardedReader
    from ckptsurgeon.formats.hdf5.reader import Reader as H5Reader
    from ckptsurgeon.formats.npz.reader import Reader as NpzReader
    from ckptsurgeon.formats.safetensors.reader import Reader as StReader
    from ckptsurgeon.formats.safetensors.reader import ShardedReader

    path = fifo(tmp_path / "f")
    for reader in (StReader, ShardedReader, NpzReader, H5Reader, KerasShardedReader, KerasReader):
        with pytest.raises(InputError, match=r"is not a regular file \(a FIFO\)"):
            reader(path)


# --- shards -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: fifo(p), "is not a regular file (a FIFO)"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.symlink_to("/dev/zero"), "is not a regular file (a character device)"),
])
def test_a_shard_that_is_no_regular_file_is_named_for_what_it_is(make_checkpoint, make, problem: str) -> None:
    index = sharded(make_checkpoint)
    shard = second_shard(index)
    shard.unlink()
    make(shard)
    with pytest.raises(InputError) as info:
        open_checkpoint(index)
    assert info.value.path == str(index)
    assert info.value.problem == f"shard {shard.name!r} {problem}"


def test_a_missing_shard_still_does_not_exist(make_checkpoint) -> None:
    index = sharded(make_checkpoint)
    second_shard(index).unlink()
    with pytest.raises(InputError, match="does not exist"):
        open_checkpoint(index)


def test_a_shard_linked_to_a_file_outside_is_refused(make_checkpoint, tmp_path: Path) -> None:
    index = sharded(make_checkpoint)
    shard = second_shard(index)
    (tmp_path / "elsewhere").mkdir()
    outside = shard.rename(tmp_path / "elsewhere" / shard.name)
    shard.symlink_to(outside)
    with pytest.raises(UnsafeInputError) as info:
        open_checkpoint(index)
    assert info.value.path == str(index)
    assert f"shard {shard.name!r} is a link to {outside}, outside the index's directory" in info.value.problem
    with pytest.raises(UnsafeInputError):
        open_checkpoint(index.parent)  # the folder, whose index is found by name


def test_a_shard_linked_through_a_linked_folder_outside_is_refused(make_checkpoint, tmp_path: Path) -> None:
    index = sharded(make_checkpoint)
    shard = second_shard(index)
    (tmp_path / "elsewhere").mkdir()
    shard.rename(tmp_path / "elsewhere" / shard.name)
    (index.parent / "store").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    shard.symlink_to(Path("store") / shard.name)  # relative, apparently inside
    with pytest.raises(UnsafeInputError, match="outside the index's directory"):
        open_checkpoint(index)


def test_a_shard_linked_to_a_file_beside_the_index_is_read(make_checkpoint) -> None:
    index = sharded(make_checkpoint)
    shard = second_shard(index)
    shard.rename(index.parent / "blob-0001")
    shard.symlink_to("blob-0001")
    with open_checkpoint(index) as reader:
        assert {t.name: reader.read(t.name).tolist() for t in reader.tensors} == \
            {k: v.tolist() for k, v in TENSORS.items()}


def test_a_linked_index_is_checked_against_the_directory_it_lives_in(make_checkpoint, tmp_path: Path) -> None:
    # A cache that keeps the files as blobs and links every name to one: the index and its shards
    # all resolve into the blobs directory.
    index = sharded(make_checkpoint, "blobs")
    view = tmp_path / "snapshot"
    view.mkdir()
    for p in index.parent.iterdir():
        (view / p.name).symlink_to(p)
    with open_checkpoint(view / index.name) as reader:
        assert len(reader.tensors) == len(TENSORS)


@pytest.fixture
def keras_sharded(tmp_path: Path) -> Path:
    folder = shutil.copytree(DATA / "keras3_sharded_str", tmp_path / "keras")  # written by Keras 3.15
    return folder / "model.weights.json"


def test_keras_shard_linked_outside_is_refused(keras_sharded: Path, tmp_path: Path) -> None:
    shard = keras_sharded.parent / "model_00001.weights.h5"
    outside = shard.rename(tmp_path / "model_00001.weights.h5")
    shard.symlink_to(outside)
    with pytest.raises(UnsafeInputError) as info:
        open_checkpoint(keras_sharded)
    assert info.value.path == str(keras_sharded)
    assert "shard 'model_00001.weights.h5' is a link to" in info.value.problem


def test_keras_shard_linked_beside_the_index_is_read(keras_sharded: Path) -> None:
    shard = keras_sharded.parent / "model_00001.weights.h5"
    shard.rename(keras_sharded.parent / "blob")
    shard.symlink_to("blob")
    with open_checkpoint(keras_sharded) as reader:
        assert len(reader.tensors) > 0


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: fifo(p), "is not a regular file (a FIFO)"),
    (lambda p: p.mkdir(), "is a directory"),
])
def test_keras_shard_that_is_no_regular_file_is_named(keras_sharded: Path, make, problem: str) -> None:
    shard = keras_sharded.parent / "model_00002.weights.h5"
    shard.unlink()
    make(shard)
    with pytest.raises(InputError) as info:
        open_checkpoint(keras_sharded)
    assert info.value.problem == f"shard 'model_00002.weights.h5' {problem}"


# --- outputs ------------------------------------------------------------------------------------


def test_an_output_that_is_a_fifo_or_links_to_a_device_is_refused(tmp_path: Path) -> None:
    out = fifo(tmp_path / "out.safetensors")
    with pytest.raises(OutputError, match=r"is not a regular file \(a FIFO\)"):
        check_output(out)
    link = tmp_path / "null.safetensors"
    link.symlink_to(os.devnull)
    with pytest.raises(OutputError, match=r"is not a regular file \(a character device\)"):
        check_output(link)
    check_output(tmp_path / "new.safetensors")  # nothing there yet: fine


def test_the_final_rename_never_replaces_a_fifo(tmp_path: Path) -> None:
    dest = tmp_path / "out.json"
    with pytest.raises(OutputError, match=r"is not a regular file \(a FIFO\)"), atomic_path(dest) as tmp:
        tmp.write_text("{}")
        fifo(dest)  # appeared while the output was being written
    assert stat.S_ISFIFO(os.lstat(dest).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # the temporary file was removed
