"""Through the CLI: a FIFO, a device or a directory is never read or replaced, and a shard linked
outside its checkpoint is never listed, hashed or copied; each refusal is one line and an exit code."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ..conftest import EXAMPLES
from ..support.fifos import make_fifo

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and symbolic links are POSIX")

SRC = EXAMPLES / "pretrained.safetensors"
TGT = EXAMPLES / "target.safetensors"
FIFO = "is not a regular file (a FIFO)"


@contextlib.contextmanager
def fifo(path: Path) -> Iterator[Path]:
    yield make_fifo(path)  # released after a while should a command wait on it: the test fails, never hangs


def test_a_fifo_input_is_refused_at_once(cli, tmp_path: Path) -> None:
    with fifo(tmp_path / "model.safetensors") as path:
        for argv in (["inspect", path], ["verify", path], ["diff", path, SRC],
                     ["convert", path, "-o", tmp_path / "out.npz"]):
            r = cli(*argv)
            assert (r.code, r.line) == (3, f"ckpt: error: {path}: {FIFO}")
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_input_is_refused(cli, device: str) -> None:
    r = cli("inspect", device)
    assert (r.code, r.line) == (3, f"ckpt: error: {device}: is not a regular file (a character device)")


def test_stdin_as_input_is_refused() -> None:
    # a pipe on stdin, as in `producer | ckpt inspect /dev/stdin`
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "ckptsurgeon", "inspect", "/dev/stdin"], input=b"",
                          capture_output=True, env=env, timeout=120, check=False)
    assert done.returncode == 3
    assert done.stderr.decode().splitlines() == [f"ckpt: error: /dev/stdin: {FIFO}"]


def test_side_files_that_are_fifos_are_refused(cli, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    with fifo(tmp_path / "side.json") as side:
        for argv in (["verify", SRC, "--hashes", side],
                     ["rename", SRC, "-o", out, "--map", side],
                     ["transfer", SRC, TGT, "-o", out, "--plan", side],
                     ["inspect", SRC, "--config", side]):
            r = cli(*argv)
            assert r.code == 3 and r.line.startswith(f"ckpt: error: {side}: ") and r.line.endswith(FIFO), argv
    assert not out.exists()


def test_an_output_that_is_a_fifo_is_refused_and_left_alone(cli, tmp_path: Path) -> None:
    with fifo(tmp_path / "out.safetensors") as out:
        for argv in (["convert", SRC, "-o", out, "--format", "safetensors"],
                     ["rename", SRC, "-o", out, "--rename", "a=>b", "--allow-unused-rules"],
                     ["transfer", SRC, TGT, "-o", out],
                     ["verify", SRC, "--write-hashes", out]):
            r = cli(*argv)
            assert (r.code, r.line) == (4, f"ckpt: error: {out}: {FIFO}; only a regular file is ever "
                                           "replaced by an output"), argv
            assert stat.S_ISFIFO(os.lstat(out).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]


def test_an_output_linked_to_dev_null_is_refused_and_the_link_kept(cli, tmp_path: Path) -> None:
    link = tmp_path / "out.safetensors"
    link.symlink_to(os.devnull)
    r = cli("convert", SRC, "-o", link, "--format", "safetensors")
    assert r.code == 4 and r.line.startswith(f"ckpt: error: {link}: is not a regular file (a character device)")
    assert link.is_symlink() and os.readlink(link) == os.devnull
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_sharded_output_whose_shard_name_is_a_fifo_is_refused(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with fifo(out / "model-00002-of-00005.safetensors") as shard:  # 820 kB in shards of 200 kB: 5 shards
        r = cli("convert", SRC, "-o", out, "--shard-size", "200KB")
        assert r.code == 4 and r.line.startswith(f"ckpt: error: {shard}: {FIFO}")
        assert stat.S_ISFIFO(os.lstat(shard).st_mode)
    assert sorted(p.name for p in out.iterdir()) == [shard.name]


def sharded(tmp_path: Path, make_checkpoint) -> tuple[Path, Path]:
    tensors = {f"t{i}": np.full(8, i, np.float32) for i in range(4)}
    index = make_checkpoint("ckpt/model.safetensors.index.json", "safetensors-sharded", tensors)
    return index, sorted(index.parent.glob("*.safetensors"))[1]


def test_a_shard_linked_outside_is_never_listed_hashed_or_copied(cli, tmp_path: Path, make_checkpoint) -> None:
    index, shard = sharded(tmp_path, make_checkpoint)
    secret = tmp_path / "secret.safetensors"
    shard.rename(secret)
    shard.symlink_to(secret)
    out = tmp_path / "out.safetensors"
    for argv in (["inspect", index], ["inspect", index.parent, "--hash"], ["verify", index],
                 ["convert", index, "-o", out]):
        r = cli(*argv)
        assert r.code == 3 and r.line.startswith(f"ckpt: error: {index}: shard {shard.name!r} is a link to "
                                                 f"{secret}, outside the index's directory"), argv
        assert r.out == ""
    assert not out.exists()


def test_a_shard_linked_to_a_file_beside_the_index_is_read(cli, tmp_path: Path, make_checkpoint) -> None:
    index, shard = sharded(tmp_path, make_checkpoint)
    shard.rename(index.parent / "blob")
    shard.symlink_to("blob")
    out = tmp_path / "out.safetensors"
    assert cli("convert", index, "-o", out).code == 0
    assert cli("diff", index, out).code == 0


def test_a_shard_that_is_a_fifo_or_a_folder_is_named_so(cli, tmp_path: Path, make_checkpoint) -> None:
    index, shard = sharded(tmp_path, make_checkpoint)
    shard.unlink()
    with fifo(shard):
        r = cli("inspect", index)
        assert (r.code, r.line) == (3, f"ckpt: error: {index}: shard {shard.name!r} {FIFO}")
    shard.unlink()
    shard.mkdir()
    r = cli("inspect", index)
    assert (r.code, r.line) == (3, f"ckpt: error: {index}: shard {shard.name!r} is a directory")
