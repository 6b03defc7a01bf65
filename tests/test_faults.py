"""Faults: kill -9 at any moment, SIGTERM and SIGINT, a full disk, an unwritable directory, stale
temporary files of killed runs, MemoryError/RecursionError while reading, a closed stdout.

The process tests run ``python -m ckptsurgeon`` on two generated 256 MiB checkpoints and pause the
child with SIGSTOP before looking at it, so what they assert never depends on timing; they poll
with generous time limits and never sleep for a fixed time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptsurgeon import atomic
from ckptsurgeon import values as values_module
from ckptsurgeon.atomic import TEMP_MARK, AtomicFiles, atomic_path, clean_stale_temps, host_tag, temp_path_for
from ckptsurgeon.cli.app import EXIT_SIGINT, EXIT_SIGPIPE, EXIT_SIGTERM
from ckptsurgeon.errors import OutputError
from ckptsurgeon.formats import _zip as zip_module
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.npz import writer as npz_writer
from ckptsurgeon.formats.safetensors import reader as st_reader
from ckptsurgeon.formats.safetensors import sharded

from .conftest import CORPUS
from .support.cli import one_line, run

OLD = b"the previous output, which must survive"


def temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if TEMP_MARK in p.name)


def listing(directory: Path) -> dict[str, bytes | None]:
    """Every entry below ``directory``: a file's bytes, None for a directory."""
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def small_checkpoint(path: Path, tensors: int = 4, elements: int = 16_384) -> Path:
    save_file({f"layer{i}.weight": np.arange(elements, dtype=np.float32) * (i + 1) for i in range(tensors)}, str(path))
    return path


# ------------------------------------------------------------------------------------------------
# child processes
# ------------------------------------------------------------------------------------------------

BIG_TENSORS = 4
BIG_ELEMENTS = 16 * 2**20  # 64 MiB of F32 per tensor, 256 MiB per file
CHUNK_ELEMENTS = 2**20


def write_big(path: Path, scale: int) -> dict[str, str]:
    """A safetensors file written with plain file writes; returns each tensor's sha256."""
    header = {f"layer{i}.weight": {"dtype": "F32", "shape": [BIG_ELEMENTS],
                                   "data_offsets": [i * BIG_ELEMENTS * 4, (i + 1) * BIG_ELEMENTS * 4]}
              for i in range(BIG_TENSORS)}
    raw = json.dumps(header).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    sums = {}
    with open(path, "xb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for i in range(BIG_TENSORS):
            chunk = (np.arange(CHUNK_ELEMENTS, dtype=np.float32) * (scale + i)).tobytes()
            h = hashlib.sha256()
            for _ in range(BIG_ELEMENTS // CHUNK_ELEMENTS):
                f.write(chunk)
                h.update(chunk)
            sums[f"layer{i}.weight"] = h.hexdigest()
    return sums


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """A source and a target of 256 MiB each, and the tensor hashes a transfer must produce (the source's)."""
    directory = tmp_path_factory.mktemp("big")
    src, tgt = directory / "src.safetensors", directory / "tgt.safetensors"
    expected = write_big(src, 1)
    write_big(tgt, 100)
    yield src, tgt, expected
    for path in directory.iterdir():
        path.unlink()


def _reset_sigint() -> None:  # the child must get SIGINT even when this run ignores it (a background job)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("CKPT_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "ckptsurgeon", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_reset_sigint)


def exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited (then reaped, its returncode set); never blocks."""
    if proc.returncode is not None:
        return True
    pid, status = os.waitpid(proc.pid, os.WNOHANG)
    if pid == 0:
        return False
    proc.returncode = os.waitstatus_to_exitcode(status)
    return True


def pause(proc: subprocess.Popen[bytes]) -> bool:
    """SIGSTOP the child and wait until it is stopped; False if it exited first."""
    if proc.returncode is not None:
        return False
    os.kill(proc.pid, signal.SIGSTOP)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if os.WIFSTOPPED(status):
        return True
    proc.returncode = os.waitstatus_to_exitcode(status)
    return False


def poll(proc: subprocess.Popen[bytes], what: str, found: Callable[[], Any], limit: float = 180.0) -> Any:
    """Wait until ``found()`` returns something or the child exits (then None)."""
    deadline = time.monotonic() + limit
    while True:
        value = found()
        if value or exited(proc):
            return value or None
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"no {what} after {limit:.0f} s")
        time.sleep(0.0005)


def temp_of(directory: Path, pid: int, name: str = "out.safetensors") -> Path | None:
    prefix = f".{name}{TEMP_MARK}{pid}-"
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                return Path(entry.path)
    return None


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def tensor_hashes(path: Path) -> dict[str, str]:
    with open_checkpoint(path) as reader:
        return {t.name: reader.sha256(t.name) for t in reader.tensors}


def test_kill_9_at_any_moment_leaves_the_old_or_the_complete_output_and_the_next_run_cleans_up(
        big_pair: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    src, tgt, expected = big_pair
    out = tmp_path / "out.safetensors"
    out.write_bytes(OLD)
    args = ["transfer", str(src), str(tgt), "-o", str(out), "-q"]
    full = BIG_TENSORS * BIG_ELEMENTS * 4
    state = "old"  # what the destination holds: the old bytes or the complete new checkpoint
    checked: tuple[int, int] | None = None
    stale: list[Path] = []
    try:
        for point in ("start", "temp appears", 0.3, 0.7, 1.0):
            proc = start(args, tmp_path)
            if point == "start":
                proc.kill()
                proc.wait()
                tmp = None
            else:
                share = 0.0 if point == "temp appears" else float(point)

                def reached(proc: subprocess.Popen[bytes] = proc, share: float = share) -> Path | None:
                    tmp = temp_of(tmp_path, proc.pid)
                    return tmp if tmp is not None and size_of(tmp) >= share * full else None

                poll(proc, f"temporary file at {point}", reached)
                tmp = temp_of(tmp_path, proc.pid) if pause(proc) else None
                if tmp is not None:
                    # This run made its temporary file, so it already removed those of the killed runs.
                    assert [p.name for p in stale if p.exists()] == [], point
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
                    assert proc.returncode == -signal.SIGKILL
                else:
                    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
            if tmp is not None:
                assert tmp.exists(), f"the temporary file of the run killed at {point} is gone"
                stale.append(tmp)
            # The destination is the old file or the complete new one, never anything in between.
            if out.stat().st_size == len(OLD) and out.read_bytes() == OLD:
                assert state == "old", f"after the kill at {point} the destination went back to the old bytes"
            else:
                stamp = (out.stat().st_ino, out.stat().st_mtime_ns)
                if stamp != checked:
                    assert tensor_hashes(out) == expected, point
                    checked = stamp
                state = "new"
        assert stale, "no kill happened while a temporary file existed"

        proc = start(args, tmp_path)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert [p.name for p in stale if p.exists()] == [] and temps(tmp_path) == []
        assert tensor_hashes(out) == expected
    finally:
        for path in tmp_path.iterdir():
            path.unlink()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, EXIT_SIGTERM), (signal.SIGINT, EXIT_SIGINT)],
                         ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_stop_cleanly(sig: signal.Signals, code: int, big_pair: tuple[Path, Path, dict[str, str]],
                                         tmp_path: Path) -> None:
    src, tgt, _ = big_pair
    out = tmp_path / "out.safetensors"
    out.write_bytes(OLD)
    proc = start(["transfer", str(src), str(tgt), "-o", str(out)], tmp_path)
    try:
        tmp = poll(proc, "temporary file", lambda: temp_of(tmp_path, proc.pid))
        assert tmp is not None and pause(proc), "the run ended before it began to write"
        assert tmp.exists()  # stopped mid-write: the signal arrives before the rename, whatever the timing
        os.kill(proc.pid, sig)
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code
    line = one_line(err.decode())
    assert line == f"ckpt: error: interrupted by {sig.name}; no partial output was left behind"
    assert out.read_bytes() == OLD and temps(tmp_path) == []
    assert code == 128 + sig


def test_a_closed_stdout_ends_the_run_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write fails with EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "ckptsurgeon", "inspect", "--all",
                            str(CORPUS / "hf_sharded/tiny_gpt2/model.safetensors.index.json")],
                           stdout=write_end, stderr=subprocess.PIPE, check=False)
    finally:
        os.close(write_end)
    assert p.returncode == EXIT_SIGPIPE and p.stderr == b""


# ------------------------------------------------------------------------------------------------
# a full disk
# ------------------------------------------------------------------------------------------------


class Disk:
    """A device with ``free`` bytes left: writes succeed (short at the end), then fail with ENOSPC."""

    def __init__(self, free: int) -> None:
        self.free = free

    def take(self, wanted: int) -> int:
        if self.free <= 0 and wanted > 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(wanted, self.free)
        self.free -= n
        return n


class FullFile:
    """A file object on a :class:`Disk`."""

    def __init__(self, f: Any, disk: Disk) -> None:
        self._f, self._disk = f, disk

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = self._disk.take(len(view))
        self._f.write(view[:n])
        if n < len(view):  # a buffered file writes everything or raises
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def __enter__(self) -> FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def fill_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """Make every file write past ``free`` bytes fail with ENOSPC: os.write, copy_file_range, npz's files."""
    disk = Disk(free)
    real_write, real_copy = os.write, os.copy_file_range

    def write(fd: int, data: Any) -> int:
        if fd <= 2:
            return real_write(fd, data)
        n = disk.take(len(memoryview(data).cast("B")))
        return real_write(fd, memoryview(data).cast("B")[:n])

    def copy_file_range(src: int, dst: int, count: int, *args: Any) -> int:
        return real_copy(src, dst, disk.take(count), *args)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> FullFile:
        return FullFile(open(path, mode, *args, **kwargs), disk)

    monkeypatch.setattr(npz_writer, "open", full_open, raising=False)


@pytest.mark.parametrize("output", ["out.safetensors", "out.npz", "shards", "model.safetensors.index.json"])
def test_a_full_disk_is_exit_4_naming_the_output_and_leaves_nothing_behind(
        output: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    src = small_checkpoint(tmp_path / "src.safetensors")  # 4 tensors of 64 kB
    work = tmp_path / "work"
    work.mkdir()
    if output == "model.safetensors.index.json":  # an earlier sharded checkpoint, to be replaced
        assert run(["convert", str(src), "-o", str(work / output), "--shard-size", "100kB"], capsys)[0] == 0
    elif output != "shards":
        (work / output).write_bytes(OLD)
    before = listing(work)
    fill_disk(monkeypatch, 150_000)
    argv = ["convert", str(src), "-o", str(work / output)]
    if output in ("shards", "model.safetensors.index.json"):
        argv += ["--shard-size", "70kB"]
    code, _, err = run(argv, capsys)
    monkeypatch.undo()
    assert code == 4
    line = one_line(err)
    named = work / "shards" / "model.safetensors.index.json" if output == "shards" else work / output
    assert line == f"ckpt: error: {named}: no space left on the device; nothing was written"
    assert listing(work) == before  # the old files byte for byte, no temporary file, no new directory


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs at ``path``; skips the test where mounting is not permitted (it needs root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True,
                       check=False)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_a_really_full_file_system_for_every_output_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = small_checkpoint(tmp_path / "src.safetensors", elements=300_000)  # 4.8 MB
    with mounted_tmpfs(tmp_path / "small", "size=2m,mode=0755") as small:
        outputs = ["out.safetensors", "out.h5", "out.npz", "out.keras"]
        for name in outputs:
            (small / name).write_bytes(OLD)
        before = listing(small)
        for name in [*outputs, "shards", "model.safetensors.index.json"]:
            argv = ["convert", str(src), "-o", str(small / name)]
            if name in ("shards", "model.safetensors.index.json"):
                argv += ["--shard-size", "1MB"]
            code, _, err = run(argv, capsys)
            named = small / "shards" / "model.safetensors.index.json" if name == "shards" else small / name
            assert code == 4, (name, err)
            assert one_line(err) == f"ckpt: error: {named}: no space left on the device; nothing was written"
            assert listing(small) == before, name


# ------------------------------------------------------------------------------------------------
# an unwritable destination directory
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def unwritable_directory(path: Path) -> Iterator[Path]:
    if os.geteuid() == 0:  # root may write anywhere W_OK is asked about, except on a read-only file system
        with mounted_tmpfs(path, "ro,size=1m") as directory:
            yield directory
        return
    path.mkdir()
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)


@pytest.mark.parametrize("command", ["transfer", "transfer --save-plan", "rename", "convert", "convert --shard-size",
                                     "verify --write-hashes"])
def test_an_unwritable_directory_is_exit_4_before_any_tensor_is_read(
        command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    src = small_checkpoint(tmp_path / "src.safetensors")
    tgt = small_checkpoint(tmp_path / "tgt.safetensors", tensors=3)
    with unwritable_directory(tmp_path / "ro") as ro:
        argv = {
            "transfer": ["transfer", str(src), str(tgt), "-o", str(ro / "out.safetensors")],
            "transfer --save-plan": ["transfer", str(src), str(tgt), "--dry-run", "--save-plan", str(ro / "plan.json")],
            "rename": ["rename", str(src), "-o", str(ro / "out.safetensors")],
            "convert": ["convert", str(src), "-o", str(ro / "out.npz")],
            "convert --shard-size": ["convert", str(src), "-o", str(ro / "shards"), "--shard-size", "1MB"],
            "verify --write-hashes": ["verify", str(src), "--write-hashes", str(ro / "hashes.json")],
        }[command]
        for name in ("read", "iter_bytes", "byte_range", "sha256", "_map"):
            monkeypatch.setattr(st_reader.Reader, name, lambda *a, **k: pytest.fail("a tensor was read"))
        code, _, err = run(argv, capsys)
        assert code == 4
        line = one_line(err)
        assert line.startswith(f"ckpt: error: {ro}") and line.endswith(f"directory {ro} is not writable")
        assert list(ro.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# MemoryError and RecursionError
# ------------------------------------------------------------------------------------------------


def _raise(exc: BaseException) -> Callable[..., Any]:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise exc
    return boom


@pytest.mark.parametrize("where", ["tensor data", "header", "format detection"])
@pytest.mark.parametrize("error", [MemoryError, RecursionError])
def test_memory_and_recursion_errors_while_reading_are_the_inputs_problem(
        where: str, error: type[BaseException], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if where == "format detection":
        src = tmp_path / "src.npz"
        np.savez(src, a=np.zeros(3, np.float32))
        monkeypatch.setattr(zip_module, "member_names", _raise(error()))
    else:
        src = small_checkpoint(tmp_path / "src.safetensors")
        if where == "header":
            monkeypatch.setattr(st_reader, "parse_header", _raise(error()))
        else:
            monkeypatch.setattr(st_reader.Reader, "_map", _raise(error()))
    out = tmp_path / "out.npz"
    out.write_bytes(OLD)
    code, _, err = run(["convert", str(src), "-o", str(out)], capsys)
    assert code == 3
    assert one_line(err).startswith(f"ckpt: error: {src}: cannot read: ")
    assert error.__name__ in err
    assert out.read_bytes() == OLD and temps(tmp_path) == []


@pytest.mark.parametrize("where", ["cast", "writer"])
def test_a_memory_error_outside_any_reader_is_an_internal_error(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    src = small_checkpoint(tmp_path / "src.safetensors")
    if where == "cast":
        monkeypatch.setattr(values_module, "cast_array", _raise(MemoryError()))
    else:
        real_write = os.write

        def write(fd: int, data: Any) -> int:
            if fd > 2:
                raise MemoryError
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)
    out = tmp_path / "out.safetensors"
    code, _, err = run(["convert", str(src), "-o", str(out), "--dtype", "F16"], capsys)
    assert code == 70
    assert one_line(err).startswith("ckpt: error: internal error: out of memory (MemoryError)")
    assert not out.exists() and temps(tmp_path) == []


# A child that really runs out of memory: the address space is capped a little above what it uses,
# and the patched step fills the rest with small objects that the failed step's frames keep alive,
# so the error handling itself has no memory unless it lets go of those frames first.
EXHAUST = """
import resource, sys
from ckptsurgeon.cli import app, render
from ckptsurgeon.formats.safetensors import reader
def fill(*args, **kwargs):
    hoard = []
    for size in (*(2**k for k in range(20, 9, -1)), *range(520, 1, -8)):  # every allocator size class
        try:
            while True:
                hoard.append(b"\\x01" * size)
        except MemoryError:
            pass
    raise MemoryError
def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
where = sys.argv[1]
if where == "reading":
    reader.parse_header = fill
else:
    render.render_inspect = fill
limit = vm_bytes() + 96 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
app.main(["inspect", *sys.argv[2:]])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
@pytest.mark.parametrize(("where", "code", "start"), [
    ("reading", 3, "ckpt: error: {src}: cannot read: out of memory (MemoryError)"),
    ("rendering", 70, "ckpt: error: internal error: out of memory (MemoryError)"),
])
def test_memory_exhausted_by_small_objects_still_ends_in_one_line(
        where: str, code: int, start: str, tmp_path: Path) -> None:
    src = small_checkpoint(tmp_path / "src.safetensors")
    proc = subprocess.run([sys.executable, "-c", EXHAUST, where, str(src)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONFAULTHANDLER": ""})
    assert proc.returncode == code, proc.stderr[-2000:]
    assert one_line(proc.stderr).startswith(start.format(src=src))
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# stale temporary files
# ------------------------------------------------------------------------------------------------


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    return p.pid


def test_stale_temps_of_dead_runs_are_removed_by_the_next_run_and_nothing_else(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = small_checkpoint(tmp_path / "src.safetensors")
    work = tmp_path / "work"
    work.mkdir()
    tag, dead = host_tag(), dead_pid()
    other_tag = "0" * 8 if tag != "0" * 8 else "1" * 8
    stale = [
        f".out.npz{TEMP_MARK}{dead}-{tag}-0123abcd",
        f".other.safetensors{TEMP_MARK}{dead}-{tag}-89abcdef",  # another output of a killed run, same directory
        f".out.keras{TEMP_MARK}{dead}-{tag}-01234567.89abcdef.model.weights.h5",  # a writer's scratch file
    ]
    kept = [
        f".out.npz{TEMP_MARK}{os.getpid()}-{tag}-0123abcd",  # a live process: this one
        f".out.npz{TEMP_MARK}{dead}-{other_tag}-0123abcd",  # another machine's (or container's) pid
        f"out.npz{TEMP_MARK}{dead}-{tag}-0123abcd",  # not hidden: not our name
        f".out.npz{TEMP_MARK}{dead}-{tag}-0123abcd.bak",  # a suffix that is not a scratch file's
        f".out.npz{TEMP_MARK}{dead}-{tag}-0123ABCD",
        f".out.npz{TEMP_MARK}{dead}-0123abcd",  # no machine tag
        "notes.txt",
    ]
    for name in stale + kept:
        (work / name).write_bytes(b"x")
    precious = tmp_path / "precious"
    precious.write_bytes(b"keep me")
    link = f".link.safetensors{TEMP_MARK}{dead}-{tag}-0123abcd"
    (work / link).symlink_to(precious)  # a symlink named like a stale file is neither followed nor removed
    directory = f".dir.safetensors{TEMP_MARK}{dead}-{tag}-0123abcd"
    (work / directory).mkdir()

    code, _, err = run(["convert", str(src), "-o", str(work / "out.npz"), "-q"], capsys)
    assert code == 0, err
    assert err == ""  # the cleaning is quiet
    assert sorted(p.name for p in work.iterdir()) == sorted([*kept, link, directory, "out.npz"])
    assert precious.read_bytes() == b"keep me" and (work / link).is_symlink()


def test_the_sharded_writer_cleans_stale_temps_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = small_checkpoint(tmp_path / "src.safetensors")
    work = tmp_path / "work"
    work.mkdir()
    stale = work / f".model-00001-of-00002.safetensors{TEMP_MARK}{dead_pid()}-{host_tag()}-0123abcd"
    stale.write_bytes(b"half a shard")
    code, _, err = run(["convert", str(src), "-o", str(work), "--shard-size", "100kB", "-q"], capsys)
    assert code == 0, err
    assert not stale.exists() and temps(work) == []
    assert (work / "model.safetensors.index.json").exists()


def test_clean_stale_temps_returns_what_it_removed(tmp_path: Path) -> None:
    stale = temp_path_for(tmp_path / "a.npz").name.replace(f"{TEMP_MARK}{os.getpid()}-", f"{TEMP_MARK}{dead_pid()}-")
    (tmp_path / stale).write_bytes(b"x")
    assert clean_stale_temps(tmp_path) == [tmp_path / stale]
    assert clean_stale_temps(tmp_path) == [] and clean_stale_temps(tmp_path / "missing") == []


# ------------------------------------------------------------------------------------------------
# atomic.py: names, errors, several files
# ------------------------------------------------------------------------------------------------


def test_temp_names_are_recognisable_and_fit_a_long_destination_name(tmp_path: Path) -> None:
    for name in ("out.safetensors", "é" * 120 + ".npz", "x" * 250):
        tmp = temp_path_for(tmp_path / name)
        assert tmp.parent == tmp_path and atomic.is_temp_name(tmp.name)
        assert len(os.fsencode(tmp.name + ".0123abcd.model.weights.h5")) <= 255
        assert f"{TEMP_MARK}{os.getpid()}-{host_tag()}-" in tmp.name


def test_an_output_error_about_the_temporary_file_names_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "out.h5"
    with pytest.raises(OutputError) as info, atomic_path(dest) as tmp:
        tmp.write_bytes(b"partial")
        try:
            raise OSError(errno.ENOSPC, "Can't write data (errno = 28, 'No space left on device')")
        except OSError as exc:
            raise OutputError(tmp, f"cannot write tensor 'a' ({exc})") from exc
    assert info.value.path == str(dest) and info.value.problem == "no space left on the device; nothing was written"
    with pytest.raises(OutputError) as info, atomic_path(dest) as tmp:
        raise OutputError(tmp.with_name(tmp.name + ".0123abcd.model.weights.h5"), "cannot write the structure")
    assert info.value.path == str(dest) and info.value.problem == "cannot write the structure"
    assert list(tmp_path.iterdir()) == []


def test_atomic_files_appear_together_or_not_at_all(tmp_path: Path) -> None:
    assert sharded.AtomicFiles is AtomicFiles  # the sharded writer uses the one in atomic.py
    (tmp_path / "b").write_bytes(b"old b")
    with pytest.raises(OutputError, match=r"index: cannot write: Input/output error; nothing was written"), \
            AtomicFiles(name=tmp_path / "index") as files:
        files.temp(tmp_path / "a").write_bytes(b"new a")
        files.temp(tmp_path / "b").write_bytes(b"new b")
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    assert listing(tmp_path) == {"b": b"old b"}
    with AtomicFiles(name=tmp_path / "index") as files:
        files.temp(tmp_path / "a").write_bytes(b"new a")
        files.temp(tmp_path / "index").write_bytes(b"names a")
        files.commit()
    assert listing(tmp_path) == {"a": b"new a", "b": b"old b", "index": b"names a"}
    with AtomicFiles() as files:  # never committed: nothing appears
        files.temp(tmp_path / "c").write_bytes(b"c")
    assert "c" not in listing(tmp_path) and temps(tmp_path) == []


def test_an_interruption_waits_until_every_file_is_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def replace_then_signal(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        atomic.interrupt(KeyboardInterrupt())  # what the CLI's signal handler does, right after the first rename

    monkeypatch.setattr(os, "replace", replace_then_signal)
    files = AtomicFiles()
    for name in ("shard-1", "shard-2", "index"):
        files.temp(tmp_path / name).write_bytes(name.encode())
    with pytest.raises(KeyboardInterrupt):
        files.commit()
    assert listing(tmp_path) == {"shard-1": b"shard-1", "shard-2": b"shard-2", "index": b"index"}
    with pytest.raises(KeyboardInterrupt):  # outside a held block it is raised at once
        atomic.interrupt(KeyboardInterrupt())
