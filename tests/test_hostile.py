"""Hostile inputs: every reader fails closed, with one line naming the file and the problem.

The corpus is ``tests/hostile`` (written by ``tests/hostile/make_hostile.py``; ``EXPECTED.json``
says, per file, the exit code and a fragment of the message). Every file goes through ``ckpt
inspect``, ``ckpt inspect --hash``, ``ckpt transfer`` (as source and as target, with a small valid
partner) and ``ckpt convert``, in process, with every pickle entry point replaced by a trap. Each
run must give the documented exit code and exactly one line on stderr (``ckpt: error: <file>:
<problem>``), no traceback, no output file, and must leave every input byte-identical. A second
pass runs the same commands in child processes under a 500 MiB address-space limit and a 10 s
alarm per file. HDF5 links, external storage and virtual datasets pointing at a sentinel file
must never open it: the sentinel is a FIFO there, so an open would block.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import TESTS
from .support.cli import run

HOSTILE = TESTS / "hostile"
DOC = json.loads((HOSTILE / "EXPECTED.json").read_text())
EXPECTED: dict[str, dict[str, Any]] = DOC["files"]
SENTINEL: str = DOC["sentinel"]
PARTNER = HOSTILE / "partner" / "valid.safetensors"
REFUSED = [name for name, e in EXPECTED.items() if e["exit"] != 0]
ACCEPTED = [name for name, e in EXPECTED.items() if e["exit"] == 0]
# sub-corpora with their own generator and test (tests/hostile/make_hostile_<name>.py)
OWN_CORPORA = {"mindspore", "make_hostile_mindspore.py", "tf", "make_hostile_tf.py"}
COMMANDS = ("inspect", "inspect-hash", "transfer-source", "transfer-target", "convert")
MEMORY_LIMIT = 500 << 20
SECONDS_PER_FILE = 10
# What must never reach a terminal raw: C0 and C1 controls (ESC sequences ...), bidirectional overrides.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def commands(path: Path, out: Path, accepted: bool = False) -> dict[str, list[str]]:
    """The command lines each hostile file is run through; ``out`` is an empty directory for outputs."""
    allow = ["--allow-empty"] if accepted else []  # the partner shares no tensor with an accepted file
    return {
        "inspect": ["inspect", str(path)],
        "inspect-hash": ["inspect", "--hash", "--json", str(path)],
        "transfer-source": ["transfer", str(path), str(PARTNER), "-o", str(out / "t.safetensors"), *allow],
        "transfer-target": ["transfer", str(PARTNER), str(path), "-o", str(out / "t.safetensors"), *allow],
        "convert": ["convert", str(path), "-o", str(out / "c.npz")],
    }


def fragments(entry: dict[str, Any]) -> list[str]:
    message = entry["message"]
    return [message] if isinstance(message, str) else list(message)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (a changed, added or removed input shows)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def is_error_document(out: str, code: int | None, path: str) -> bool:
    """Whether ``out`` is the one ``--json`` error document of a run that exited ``code`` about ``path``."""
    try:
        doc = json.loads(out)
    except ValueError:
        return False
    return (isinstance(doc, dict) and doc.get("schema") == "ckptsurgeon/error/1" and doc.get("exit_code") == code
            and str(doc["error"]["file"]).startswith(path) and not CONTROL.search(doc["error"]["message"]))


def check_refusal(name: str, code: int | None, out: str, err: str) -> str | None:
    """Why a refused file's run is wrong, or None."""
    entry = EXPECTED[name]
    path = str(HOSTILE / name)
    lines = err.splitlines()
    if code != entry["exit"]:
        return f"exit {code}, want {entry['exit']}: {err.strip()[:500]}"
    if "Traceback" in err or len(lines) != 1:
        return f"stderr is not one line: {err[:500]!r}"
    line = lines[0]
    if not line.startswith(f"ckpt: error: {path}"):
        return f"the message does not name the file first: {line!r}"
    if not any(f in line for f in fragments(entry)):
        return f"the message lacks {fragments(entry)}: {line!r}"
    if CONTROL.search(err.rstrip("\n")):
        return f"the message holds raw control characters: {line!r}"
    if out and not is_error_document(out, code, path):  # with --json: the error document, nothing else
        return f"stdout is not empty: {out[:200]!r}"
    if SENTINEL in out + err:
        return "the sentinel's content was printed"
    return None


class CachedApp:
    """``ckpt``'s typer app with its click command built once: typer rebuilds it on every call (~20 ms),
    which is most of the time of a run that fails at the first header. Behaviour is the same."""

    def __init__(self, app: Any) -> None:
        import typer.main

        from ckptsurgeon.cli.app import register_commands

        register_commands()
        self.command = typer.main.get_command(app)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.command(*args, **kwargs)


@pytest.fixture(autouse=True)
def fast_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptsurgeon.cli import app as app_module

    if not isinstance(app_module.app, CachedApp):
        if "app" not in _CACHED:
            _CACHED["app"] = CachedApp(app_module.app)
        monkeypatch.setattr(app_module, "app", _CACHED["app"])


_CACHED: dict[str, CachedApp] = {}


# --- every pickle entry point is a trap for the whole module --------------------------------------
UNPICKLED: list[str] = []


class Unpickled(BaseException):
    """Raised by the traps; a BaseException, so no reader can turn it into a clean InputError."""


def _trap(what: str) -> Callable[..., Any]:
    def trap(*args: object, **kwargs: object) -> Any:
        UNPICKLED.append(what)
        raise Unpickled(what)

    return trap


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``pickle.load(s)``, ``pickle.Unpickler`` (and their C and pure-Python twins) and ``numpy.load``
    with ``allow_pickle=True`` raise during every test here; the test fails if any was called."""
    import _pickle

    for module in (pickle, _pickle):
        for attr in ("load", "loads", "Unpickler", "_load", "_loads", "_Unpickler"):
            if hasattr(module, attr):
                monkeypatch.setattr(module, attr, _trap(f"{module.__name__}.{attr}"))
    real_load = np.load

    def np_load(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("allow_pickle"):
            _trap("numpy.load(allow_pickle=True)")()
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", np_load)
    UNPICKLED.clear()
    yield
    assert not UNPICKLED, f"something was unpickled: {UNPICKLED}"


def test_the_traps_work() -> None:
    with pytest.raises(Unpickled):
        pickle.loads(pickle.dumps(1))
    with pytest.raises(Unpickled):
        pickle.Unpickler(io.BytesIO(b""))
    UNPICKLED.clear()


# --- the corpus itself ---------------------------------------------------------------------------
def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_hostile", HOSTILE / "make_hostile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_is_complete_and_small() -> None:
    counts: dict[str, int] = {}
    for entry in EXPECTED.values():
        counts[entry["format"]] = counts.get(entry["format"], 0) + 1
    assert len(REFUSED) >= 40 and all(counts.get(f, 0) >= 5 for f in ("safetensors", "npz", "hdf5", "keras", "misc"))
    files = [p for p in HOSTILE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
             and p.relative_to(HOSTILE).parts[0] not in OWN_CORPORA]
    assert sum(p.stat().st_size for p in files) < 1_000_000
    indexes = {(HOSTILE / n).parent for n in EXPECTED if len(Path(n).parts) == 3}  # <format>/<case dir>/<index>
    for p in files:
        rel = p.relative_to(HOSTILE)
        support = rel.parts[0] in ("sentinel", "partner") or p.parent in indexes
        assert str(rel) in EXPECTED or support or rel.name in ("make_hostile.py", "EXPECTED.json"), rel


def test_corpus_is_reproducible(tmp_path: Path) -> None:
    """make_hostile.py rewrites the committed files byte for byte (given the same numpy, h5py, HDF5 and
    zlib: HDF5 files and deflated members depend on them; with others only names and expectations are
    compared)."""
    gen = _generator()
    gen.build(tmp_path)
    fresh, committed = tree_digest(tmp_path), tree_digest(HOSTILE)
    doc = json.loads((tmp_path / "EXPECTED.json").read_text())
    assert doc["files"] == EXPECTED and doc["sentinel"] == SENTINEL
    own = {rel for rel in committed if Path(rel).parts[0] in OWN_CORPORA}
    assert set(fresh) == set(committed) - {"make_hostile.py"} - own
    if gen.versions() == DOC["generated_with"]:
        changed = [rel for rel, digest in fresh.items() if committed[rel] != digest]
        assert not changed, f"these differ from what make_hostile.py writes: {changed}"


# --- in process: every command, every file --------------------------------------------------------
@pytest.mark.parametrize("name", REFUSED)
def test_hostile_file_is_refused_cleanly(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory shows here
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = tree_digest(HOSTILE)
    problems = []
    for label, argv in commands(HOSTILE / name, out_dir).items():
        code, out, err = run(argv, capsys)
        problem = check_refusal(name, code, out, err)
        if problem:
            problems.append(f"{label}: {problem}")
        left = sorted(p.name for p in tmp_path.rglob("*") if p != out_dir)
        if left:
            problems.append(f"{label}: left files behind: {left}")
    assert tree_digest(HOSTILE) == before, "an input changed"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ACCEPTED)
def test_trap_files_read_once(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Files that are legal but built to trap a naive reader (a hard-link cycle) read, each tensor once."""
    before = tree_digest(HOSTILE)
    for label, argv in commands(HOSTILE / name, tmp_path, accepted=True).items():
        code, out, err = run(argv, capsys)
        assert code == 0, f"{label}: {err}"
        if label == "inspect-hash":
            names = [t["name"] for t in json.loads(out)["tensors"]]
            assert len(names) == len(set(names)) > 0
    assert tree_digest(HOSTILE) == before


def test_files_whose_pickle_bytes_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    """Every file that holds a pickle is refused with a message that says "pickle", whatever its name."""
    pickles = [n for n in REFUSED if "pickle" in EXPECTED[n]["why"].lower()]
    assert len(pickles) >= 7
    for name in pickles:
        _code, _out, err = run(["inspect", str(HOSTILE / name)], capsys)
        assert "pickle" in err.lower(), (name, err)


@pytest.mark.parametrize(
    ("disguise", "content", "fmt"),
    [("model.safetensors", "npz", "npz"), ("weights.h5", "safetensors", "safetensors"), ("arrays.npz", "hdf5", "hdf5")],
)
def test_extensions_never_decide(
    disguise: str, content: str, fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid file under another format's extension is read by its content."""
    path = tmp_path / disguise
    if content == "npz":
        with zipfile.ZipFile(path, "w") as zf:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.arange(3, dtype=np.float32))
            zf.writestr("w.npy", buf.getvalue())
    elif content == "safetensors":
        shutil.copy(PARTNER, path)
    else:
        import h5py

        with h5py.File(path, "w") as f:
            f["w"] = np.arange(3, dtype=np.float32)
    code, out, err = run(["inspect", "--json", str(path)], capsys)
    assert code == 0, err
    assert json.loads(out)["format"] == fmt


# --- sentinels: links and external storage never open another file -------------------------------
def _pointing_files(root: Path, sentinel_h5: Path, sentinel_bin: Path) -> dict[str, Path]:
    """HDF5 files (and a .keras archive) whose links / storage name the sentinels by absolute path."""
    import h5py

    n = len(SENTINEL)
    made = {}
    path = made["external_link"] = root / "external_link.h5"
    with h5py.File(path, "w") as f:
        f["w"] = np.zeros(2, np.float32)
        f["leak"] = h5py.ExternalLink(str(sentinel_h5), "/secret")
    path = made["external_storage"] = root / "external_storage.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("leak", shape=(n,), dtype="u1", external=[(str(sentinel_bin), 0, n)])
    path = made["virtual"] = root / "virtual.h5"
    layout = h5py.VirtualLayout(shape=(n,), dtype="u1")
    layout[:] = h5py.VirtualSource(str(sentinel_h5), "secret", shape=(n,))
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("leak", layout)
    inner = root / "inner.h5"
    with h5py.File(inner, "w") as f:
        f["layers/dense/vars/0"] = np.zeros(2, np.float32)
        f["layers/dense/vars/1"] = h5py.ExternalLink(str(sentinel_h5), "/secret")
    path = made["keras"] = root / "linked.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(inner, "model.weights.h5")
    inner.unlink()
    return made


def test_sentinel_content_never_appears(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import h5py

    sentinel_h5, sentinel_bin = tmp_path / "secret.h5", tmp_path / "secret.bin"
    with h5py.File(sentinel_h5, "w") as f:
        f["secret"] = np.frombuffer(SENTINEL.encode(), np.uint8)
    sentinel_bin.write_bytes(SENTINEL.encode())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for kind, path in _pointing_files(tmp_path, sentinel_h5, sentinel_bin).items():
        for label, argv in commands(path, out_dir).items():
            code, out, err = run(argv, capsys)
            assert code == 3 and len(err.splitlines()) == 1, (kind, label, err)
            assert SENTINEL not in out + err, (kind, label)
            if out:  # --json: the error document, which says what the line on stderr says (the link's target)
                doc = json.loads(out)
                assert doc["exit_code"] == 3 and doc["error"]["message"] in err, (kind, label)
            assert "secret" not in out or "secret" in err, (kind, label)
        assert not list(out_dir.iterdir())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_sentinel_is_never_opened(tmp_path: Path) -> None:
    """The sentinels are FIFOs: opening one for reading blocks until the child's time runs out."""
    sentinel_h5, sentinel_bin = tmp_path / "secret.h5", tmp_path / "secret.bin"
    made = _pointing_files(tmp_path, sentinel_h5, sentinel_bin)  # h5py never opens the targets while writing
    os.mkfifo(sentinel_h5)
    os.mkfifo(sentinel_bin)
    files = [str(p) for p in made.values()]
    script = "for f in FILES: run(f, ['inspect', '--hash', f])\n"
    results = _child(script, files, tmp_path, timeout=60)
    assert [r["file"] for r in results] == files, "a run blocked: something opened a sentinel FIFO"
    for r in results:
        assert r["code"] == 3 and len(r["err"].splitlines()) == 1, r


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_strace_shows_no_open_of_the_sentinel() -> None:
    """What the issue asks to check by hand (``strace -f -e trace=openat ckpt inspect FILE``), for the
    files pointing at the sentinels, run from a folder where their relative targets resolve."""
    names = ["hdf5/external_link.h5", "hdf5/external_storage.h5", "hdf5/virtual_dataset.h5",
             "keras/weights_external_link.keras"]
    script = textwrap.dedent(
        """
        import sys
        from ckptsurgeon.cli.app import main
        for f in sys.argv[1:]:
            for argv in (["inspect", f], ["inspect", "--hash", f], ["convert", f, "-o", "/nonexistent/o.npz"]):
                try:
                    main(argv)
                except SystemExit as exc:
                    assert exc.code == 3, (argv, exc.code)
        """
    )
    p = subprocess.run(
        ["strace", "-f", "-e", "trace=open,openat,openat2", sys.executable, "-c", script,
         *(str(HOSTILE / n) for n in names)],
        capture_output=True, text=True, timeout=120, cwd=HOSTILE / "hdf5", check=False,
    )
    if p.returncode != 0 and "ptrace" in p.stderr:
        pytest.skip("ptrace is not permitted here")
    assert p.returncode == 0, p.stderr[-2000:]
    calls = [line for line in p.stderr.splitlines() if re.search(r"\bopen(at2?)?\(", line)]
    assert sum(any(n in line for n in names) for line in calls) >= len(names), "strace saw no open of the inputs"
    opened = [line for line in calls if "sentinel" in line]
    assert not opened, opened


# --- in child processes: memory and time limits ---------------------------------------------------
CHILD = textwrap.dedent(
    """
    import contextlib, io, json, resource, signal, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    import typer.main
    from ckptsurgeon.cli import app as app_module
    from ckptsurgeon.cli.app import main
    app_module.register_commands()
    _command = typer.main.get_command(app_module.app)  # built once, as CachedApp does
    app_module.app = lambda *args, **kwargs: _command(*args, **kwargs)
    FILES = json.loads(sys.argv[1])
    results = open(sys.argv[2], "w")

    def run(label, argv):
        out, err = io.StringIO(), io.StringIO()
        signal.alarm({seconds})  # the default action ends the process: the parent sees the run missing
        code = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code
        signal.alarm(0)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        results.write(json.dumps({{"file": label, "argv": argv, "code": code, "out": out.getvalue()[:2000],
                                   "err": err.getvalue(), "maxrss_kib": rss}}) + "\\n")
        results.flush()
    """
)


def _child(script: str, files: list[str], tmp: Path, timeout: float) -> list[dict[str, Any]]:
    """Run ``script`` (which calls ``run(label, argv)``) in a child under the memory limit and the alarm."""
    results = tmp / f"results-{len(list(tmp.glob('results-*')))}.jsonl"
    code = CHILD.format(limit=MEMORY_LIMIT, seconds=SECONDS_PER_FILE) + script
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    env.pop("CKPT_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", code, json.dumps(files), str(results)], capture_output=True,
                       text=True, timeout=timeout, cwd=tmp, env=env, check=False)
    done = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    if p.returncode != 0:
        last = done[-1]["argv"] if done else None
        pytest.fail(f"the child ended with {p.returncode} after {last}: {p.stderr[-2000:]}")
    return done


def test_hostile_files_under_memory_and_time_limits(tmp_path: Path) -> None:
    """Every command on every refused file in children limited to 500 MiB and 10 s a run."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    jobs = {name: commands(HOSTILE / name, out_dir) for name in REFUSED}
    script = "for name, argvs in JOBS.items():\n    for argv in argvs: run(name, argv)\n"
    script = f"JOBS = {json.dumps({n: list(c.values()) for n, c in jobs.items()})}\n" + script
    before = tree_digest(HOSTILE)
    results = _child(script, [], tmp_path, timeout=600)
    assert len(results) == len(REFUSED) * len(COMMANDS)
    problems = []
    for r in results:
        problem = check_refusal(r["file"], r["code"], r["out"], r["err"])
        if problem:
            problems.append(f"{r['argv']}: {problem}")
    assert not problems, "\n".join(problems)
    assert max(r["maxrss_kib"] for r in results) * 1024 < MEMORY_LIMIT
    assert not list(out_dir.iterdir())
    assert tree_digest(HOSTILE) == before


@pytest.mark.parametrize("name", ["safetensors/header_len_huge.safetensors", "npz/zip_bomb.npz",
                                  "hdf5/chunked_bomb.h5", "keras/zip_bomb_weights.keras", "misc/legacy_torch.pt"])
def test_real_process_one_line(name: str, tmp_path: Path) -> None:
    """The real entry point (``python -m ckptsurgeon``) under the limits: one line, nothing else, at exit too."""
    import resource

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "NO_COLOR": "1"}
    env.pop("CKPT_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "ckptsurgeon", "convert", str(HOSTILE / name), "-o",
                        str(tmp_path / "o.safetensors")], capture_output=True, text=True, timeout=60,
                       preexec_fn=limits, env=env, cwd=tmp_path, check=False)
    assert check_refusal(name, p.returncode, p.stdout, p.stderr) is None, p.stderr
    assert not list(tmp_path.iterdir())
