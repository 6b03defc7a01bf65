"""``ckpt convert --shard-size`` over a live sharded checkpoint: killed at every step, and two writers at once.

The kill test runs ``ckpt convert`` in a child Python whose K-th call of ``os.replace``,
``os.rename``, ``os.unlink`` or ``os.remove`` sends SIGKILL to itself (no hook in ckptsurgeon), for
every K until a run completes. After each kill the folder must read, through the index with the
``safetensors`` library and with ckptsurgeon's reader, as exactly the old checkpoint or exactly
the new one; the next normal run must succeed and leave no file the index does not name.

The suite runs a 3-shard checkpoint replaced by one with the same shard names. The long mode adds
more shards and the other cases (from the second set of names back to the first, fewer and more
shards with --force, a folder with no checkpoint yet)::

    CKPT_LONG=1 python -m pytest tests/commands/test_convert_sharded_commit.py
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from ckptsurgeon.api import convert
from ckptsurgeon.formats import open_checkpoint
from tests.support.fixtures import CliRunner

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("CKPT_LONG") == "1"
INDEX = "model.safetensors.index.json"
TENSOR_BYTES = 1024  # 256 float32 values
SHARD_SIZE = str(2 * TENSOR_BYTES)  # two tensors a shard

KILL_AT_CALL = r"""
import os, signal, sys
kill_at = int(sys.argv[1])
calls = 0
def deadly(real):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
for name in ("replace", "rename", "unlink", "remove"):
    setattr(os, name, deadly(getattr(os, name)))
from ckptsurgeon.cli.app import main
main(sys.argv[2:])
"""

PAUSE_AT_FIRST_RENAME = r"""
import os, sys, time
ready, go = sys.argv[1], sys.argv[2]
real = os.replace
def replace(*args, **kwargs):
    if not os.path.exists(ready):
        open(ready, "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
    return real(*args, **kwargs)
os.replace = replace
from ckptsurgeon.cli.app import main
main(sys.argv[3:])
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def ckpt_child(script: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-c", script, *map(str, args)]


def source(path: Path, tensors: int, seed: int) -> dict[str, str]:
    """A safetensors file of ``tensors`` float32 tensors of 1 kB; returns each tensor's sha256."""
    rng = np.random.default_rng(seed)
    data = {f"layers.{i}.weight": rng.standard_normal(TENSOR_BYTES // 4).astype(np.float32) for i in range(tensors)}
    save_file(data, path)
    return {name: hashlib.sha256(a.tobytes()).hexdigest() for name, a in data.items()}


def read_folder(folder: Path) -> dict[str, str] | None:
    """Each tensor's sha256 through the index, read with the safetensors library and with ckptsurgeon
    (the two must agree); None when the folder holds no index."""
    index = folder / INDEX
    if not index.exists():
        return None
    doc = json.loads(index.read_text())
    official: dict[str, str] = {}
    for shard in sorted(set(doc["weight_map"].values())):
        with safe_open(folder / shard, "np") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                assert doc["weight_map"][key] == shard, (key, shard)
                official[key] = hashlib.sha256(f.get_tensor(key).tobytes()).hexdigest()
    assert sorted(official) == sorted(doc["weight_map"]), "the index names tensors its shards do not hold"
    with open_checkpoint(index) as reader:
        ours = {t.name: reader.sha256(t.name) for t in reader.tensors}
    assert ours == official
    return official


def assert_only_the_checkpoint(folder: Path) -> None:
    """The folder holds the index and the shards it names: no orphan shard, temporary file, journal or lock."""
    doc = json.loads((folder / INDEX).read_text())
    assert sorted(p.name for p in folder.iterdir()) == sorted({INDEX, *doc["weight_map"].values()})


def shard_count(folder: Path) -> int:
    return len(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))


CASES = {
    # name: (shards before, shards after, earlier writes before the old one, --force)
    "same names": (3, 3, 0, False),
}
if LONG:
    CASES.update({
        "same names, 8 shards": (8, 8, 0, False),
        "from the second set of names back": (4, 4, 1, False),
        "fewer shards": (5, 2, 0, True),
        "more shards": (2, 5, 0, True),
        "no checkpoint yet": (0, 4, 0, False),
    })


@pytest.mark.parametrize("case", list(CASES))
def test_a_sigkill_at_any_rename_or_removal_leaves_the_old_or_the_new_checkpoint(
        case: str, tmp_path: Path, cli: CliRunner) -> None:
    before, after, earlier, force = CASES[case]
    old_src, new_src = tmp_path / "old.safetensors", tmp_path / "new.safetensors"
    old = source(old_src, 2 * before, seed=1) if before else None
    new = source(new_src, 2 * after, seed=2)
    argv = ["convert", str(new_src), "-o", "FOLDER", "--shard-size", SHARD_SIZE, "-q"] + (["--force"] if force else [])
    seen = set()
    for kill_at in itertools.count(1):
        folder = tmp_path / f"k{kill_at}"
        folder.mkdir()
        for _ in range(earlier + 1 if before else 0):
            convert(old_src, folder, shard_size=int(SHARD_SIZE))
        assert read_folder(folder) == old and shard_count(folder) == before if old else True
        run = [folder if a == "FOLDER" else a for a in argv]
        child = subprocess.run(ckpt_child(KILL_AT_CALL, kill_at, *run), env=child_env(), cwd=ROOT,
                               capture_output=True, text=True, timeout=120, check=False)
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, child.stderr
        state = read_folder(folder)
        assert state in (old, new), f"killed at call {kill_at}: a mix of the old and the new checkpoint"
        seen.add("new" if state == new else "old")
        result = cli(*run)  # the next run cleans up after the killed one
        assert result.code == 0, result.err
        assert read_folder(folder) == new and shard_count(folder) == after
        assert_only_the_checkpoint(folder)
    assert kill_at > after + 2, "the run was never killed between its renames"
    assert seen == {"old", "new"}
    assert read_folder(folder) == new and shard_count(folder) == after
    assert_only_the_checkpoint(folder)


def test_a_held_lock_is_exit_4_naming_the_folder_and_nothing_is_written(tmp_path: Path, cli: CliRunner) -> None:
    src = tmp_path / "src.safetensors"
    source(src, 6, seed=1)
    folder = tmp_path / "out"
    assert cli("convert", src, "-o", folder, "--shard-size", SHARD_SIZE, "-q").code == 0
    fd = os.open(folder / ".ckpt-lock", os.O_RDWR | os.O_CREAT)  # another writer, as far as the kernel knows
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        result = cli("convert", src, "-o", folder, "--shard-size", str(TENSOR_BYTES), "--force")
        assert result.code == 4
        assert result.line.startswith(f"ckpt: error: {folder}: another ckpt run is writing into this folder")
        assert result.out == ""
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    finally:
        os.close(fd)
    (folder / ".ckpt-lock").unlink()
    assert cli("convert", src, "-o", folder, "--shard-size", str(TENSOR_BYTES), "--force", "-q").code == 0
    assert shard_count(folder) == 6
    assert_only_the_checkpoint(folder)


def wait_for(path: Path, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120  # a safety net only: the child normally gets there in well under a second
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the first writer never reached its first rename"
        time.sleep(0.01)


def test_a_second_writer_while_the_first_is_renaming_exits_4_and_changes_nothing(
        tmp_path: Path, cli: CliRunner) -> None:
    first_src, second_src = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    first = source(first_src, 6, seed=1)
    source(second_src, 6, seed=2)
    folder = tmp_path / "out"
    folder.mkdir()
    ready, go = tmp_path / "ready", tmp_path / "go"
    child = subprocess.Popen(ckpt_child(PAUSE_AT_FIRST_RENAME, ready, go, "convert", first_src, "-o", folder,
                                        "--shard-size", SHARD_SIZE, "-q"),
                             env=child_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(ready, child)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        result = cli("convert", second_src, "-o", folder, "--shard-size", SHARD_SIZE, "--force")
        assert result.code == 4, result.err
        assert result.line.startswith(f"ckpt: error: {folder}: another ckpt run is writing into this folder")
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    finally:
        go.touch()
        _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert read_folder(folder) == first
    assert_only_the_checkpoint(folder)


def test_two_concurrent_sharded_writes_leave_one_checkpoint_and_no_orphans(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    runs = []
    for k, (tensors, shard_size) in enumerate([(6, SHARD_SIZE), (8, str(4 * TENSOR_BYTES))]):
        src = tmp_path / f"src{k}.safetensors"
        runs.append((source(src, tensors, seed=k), ["convert", src, "-o", folder, "--shard-size", shard_size,
                                                    "--force", "-q"]))
    for _ in range(2):
        children = [subprocess.Popen(ckpt_child("import sys\nfrom ckptsurgeon.cli.app import main\nmain(sys.argv[1:])",
                                                *argv), env=child_env(), cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for _, argv in runs]
        done = [(child.communicate(timeout=120), child.returncode) for child in children]
        codes = [code for _, code in done]
        assert set(codes) <= {0, 4} and 0 in codes, done
        for (_, err), code in done:
            if code == 4:
                assert err.startswith(f"ckpt: error: {folder}: another ckpt run is writing into this folder")
                assert err.count("\n") == 1
        assert read_folder(folder) in [digests for (digests, _), code in zip(runs, codes, strict=True) if code == 0]
        assert_only_the_checkpoint(folder)
