"""Property tests on mutated checkpoints: a reader gives a clean CkptError or a valid read, nothing else.

Every format is mutated from real files (``tests/data/corpus``) and small files written here: byte
flips, truncations, insertions, deletions and overwritten length fields anywhere (half of the
time aimed at the headers), and structured edits of safetensors headers and of sharded indexes
(JSON edits, re-serialized with a correct length). For each mutant:

- opening it raises :class:`~ckptsurgeon.errors.CkptError` (one line, naming a file), or succeeds;
- after a successful open every tensor's declared size is bounded by what the file can hold, every
  name is printable UTF-8, and reading each tensor (whole, and as its sha256 in chunks) gives a
  clean CkptError or an array of the declared shape and dtype;
- nothing else escapes (no other exception type, no MemoryError, no RecursionError), a run never
  takes longer than a 10 s alarm, and the process stays under an address-space ceiling of its size
  at the start plus 768 MiB (``RLIMIT_AS``, Linux);
- safetensors mutants are also given to the reference parser (the ``safetensors`` package): every
  file it refuses, ckptsurgeon refuses too.

The default profile (``fuzz-short``) is derandomized and bounded so this file runs in well under
30 s. A long, random run is::

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py

(``long``: 3000 examples per test, no deadline; ``HYPOTHESIS_PROFILE=fuzz-short`` is the default.)
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import signal
import struct
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckptsurgeon.errors import CkptError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.tensors import DTYPES

from .conftest import CORPUS
from .support.fuzzing import fuzz_settings

try:
    import resource
except ImportError:  # not on Windows: no ceiling there
    resource = None  # type: ignore[assignment]

# A failing example would otherwise be hidden: hypothesis's report triggers this warning, which the
# suite's filterwarnings=error turns into a pytest INTERNALERROR.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
FUZZ = fuzz_settings("fuzz-short", 120)
SECONDS = 10
HEADROOM = 768 << 20
MAX_EXPANSION = 1100  # the largest ratio any reader lets a declared size exceed the stored bytes by
FILL_SLACK = 1 << 20  # HDF5 datasets up to this size may be unallocated


# --- limits -----------------------------------------------------------------------------------------
class Hang(Exception):
    """A read ran past the alarm."""


@contextlib.contextmanager
def alarm(seconds: int = SECONDS) -> Iterator[None]:
    def ring(signum: int, frame: object) -> None:
        raise Hang(f"a read took more than {seconds} s")

    if not hasattr(signal, "SIGALRM"):
        yield
        return
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _vm_size() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.fixture(autouse=True, scope="module")
def memory_ceiling() -> Iterator[None]:
    """Cap the address space at its current size plus HEADROOM while these tests run (Linux)."""
    size = _vm_size()
    if size is None or resource is None or sys.platform != "linux":
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --- the property -----------------------------------------------------------------------------------
def check_clean(exc: CkptError) -> None:
    message = str(exc)
    assert "\n" not in message and message.strip(), repr(message)


def read_all(path: Path, files_size: int | None = None) -> str:
    """Open ``path`` and read every tensor; "refused" or "read". Anything but a CkptError propagates."""
    with alarm():
        try:
            reader = open_checkpoint(path)
        except CkptError as exc:
            check_clean(exc)
            return "refused"
        with reader:
            total = files_size if files_size is not None else sum(p.stat().st_size for p in reader.files)
            bound = total * MAX_EXPANSION + FILL_SLACK
            for t in reader.tensors:
                assert t.nbytes <= bound, f"{t.name}: declares {t.nbytes} bytes from {total} bytes of files"
                assert t.dtype in DTYPES and all(isinstance(d, int) and d >= 0 for d in t.shape)
                json.dumps([t.name, t.layer]).encode("utf-8")  # printable, writable names
                (t.name + t.layer).encode("utf-8")
            for key, value in reader.metadata.items():
                (key + value).encode("utf-8")
            for t in reader.tensors:
                try:
                    arr = reader.read(t.name)
                    assert arr.shape == t.shape and arr.dtype == DTYPES[t.dtype].numpy, t
                    assert arr.flags.c_contiguous
                    del arr
                    assert len(reader.sha256(t.name)) == 64
                except CkptError as exc:
                    check_clean(exc)
            return "read"


# --- mutations --------------------------------------------------------------------------------------
positions = st.floats(0, 1, exclude_max=True, allow_nan=False)
mutation = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(0, 255)),
    st.tuples(st.just("xor"), positions, st.sampled_from([0x01, 0x80, 0xFF, 0x10])),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), positions, st.integers(1, 64)),
    st.tuples(st.just("u32"), positions, st.sampled_from([0, 1, 2**16, 2**31 - 1, 2**32 - 1])),
    st.tuples(st.just("u64"), positions, st.sampled_from([0, 1, 2**32, 2**62, 2**63 - 1, 2**64 - 1])),
)
mutations = st.lists(mutation, min_size=1, max_size=5)


def mutate(data: bytes, ops: list[tuple[Any, ...]], hot: int | None = None, tail: int = 0) -> bytes:
    """Apply ``ops``; with ``hot``, positions fall in the first ``hot`` (and last ``tail``) bytes."""
    buf = bytearray(data)
    for op in ops:
        kind, where = op[0], op[1]
        size = len(buf)
        if size == 0:
            break
        if hot is None:
            pos = int(where * size)
        elif tail and where >= 0.5:  # the upper half of ``where`` aims at the tail
            span = min(tail, size)
            pos = size - span + int((where - 0.5) * 2 * span)
        else:
            pos = int((where * 2 if tail else where) * min(hot, size))
        pos = min(pos, size - 1)
        if kind == "flip":
            buf[pos] = op[2]
        elif kind == "xor":
            buf[pos] ^= op[2]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = op[2]
        elif kind == "delete":
            del buf[pos : pos + op[2]]
        elif kind == "u32":
            buf[pos : pos + 4] = struct.pack("<L", op[2])
        elif kind == "u64":
            buf[pos : pos + 8] = struct.pack("<Q", op[2])
    return bytes(buf)


_counter = iter(range(10**9))


def write(tmp: Path, data: bytes, suffix: str) -> Path:
    path = tmp / f"m{next(_counter)}{suffix}"
    path.write_bytes(data)
    return path


# --- base files -------------------------------------------------------------------------------------
def st_file(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def small_safetensors() -> bytes:
    """Several dtypes, a scalar, an empty tensor and metadata, in 200-odd bytes of data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "note": "fuzz base"}}
    parts, offset = [], 0
    for name, dtype, shape in [("a.weight", "F32", [3, 4]), ("a.bias", "F16", [4]), ("b.w", "BF16", [2, 2]),
                               ("c", "I64", []), ("d", "U8", [0, 5]), ("e", "BOOL", [3]), ("f", "F8_E4M3", [7])]:
        n = math.prod(shape) * DTYPES[dtype].itemsize
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        parts.append(bytes(range(n % 256)) + bytes(max(0, n - n % 256)) if dtype != "BOOL" else b"\x01\x00\x01")
        offset += n
    return st_file(header, b"".join(parts))


SAFETENSORS_BASES = {
    "small": small_safetensors(),
    "smallcnn_bf16": (CORPUS / "torch/smallcnn_bf16.safetensors").read_bytes(),
}


def reference_refuses(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            list(f.keys())
    except Exception:
        return True
    return False


def check_against_reference(path: Path, outcome: str) -> None:
    if outcome == "read":
        assert not reference_refuses(path), f"the reference parser refuses {path.name}; ckptsurgeon read it"


# --- safetensors ------------------------------------------------------------------------------------
@FUZZ
@given(base=st.sampled_from(sorted(SAFETENSORS_BASES)), ops=mutations, headers=st.booleans())
def test_safetensors_byte_mutations(tmp_path: Path, base: str, ops: list[tuple[Any, ...]], headers: bool) -> None:
    data = SAFETENSORS_BASES[base]
    header_len = 8 + struct.unpack("<Q", data[:8])[0]
    path = write(tmp_path, mutate(data, ops, hot=header_len if headers else None), ".safetensors")
    check_against_reference(path, read_all(path))


@FUZZ
@given(base=st.sampled_from(sorted(SAFETENSORS_BASES)),
       length=st.one_of(st.integers(0, 2**64 - 1), st.integers(-16, 16)))
def test_safetensors_header_length_edits(tmp_path: Path, base: str, length: int) -> None:
    data = SAFETENSORS_BASES[base]
    n = struct.unpack("<Q", data[:8])[0]
    value = n + length if -16 <= length <= 16 else length
    path = write(tmp_path, struct.pack("<Q", value % 2**64) + data[8:], ".safetensors")
    check_against_reference(path, read_all(path))


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "Q4_K", "f32", ""]),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


@st.composite
def header_edits(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    edit = st.one_of(
        st.tuples(st.just("dtype"), st.integers(0, 50), st.sampled_from(["F32", "F16", "BF16", "I8", "U64", "F64",
                                                                          "BOOL", "F8_E5M2", "Q4_K", "float32"])),
        st.tuples(st.just("dim"), st.integers(0, 50), st.integers(0, 5),
                  st.one_of(st.integers(-2, 2**66), json_scalars)),
        st.tuples(st.just("shape"), st.integers(0, 50), json_values),
        st.tuples(st.just("offset"), st.integers(0, 50), st.integers(0, 1), st.integers(-(2**65), 2**65)),
        st.tuples(st.just("shift"), st.integers(0, 50), st.integers(0, 1), st.integers(-16, 16)),
        st.tuples(st.just("offsets"), st.integers(0, 50), json_values),
        st.tuples(st.just("drop_field"), st.integers(0, 50), st.sampled_from(["dtype", "shape", "data_offsets"])),
        st.tuples(st.just("add_field"), st.integers(0, 50), st.text(max_size=6), json_values),
        st.tuples(st.just("drop_tensor"), st.integers(0, 50)),
        st.tuples(st.just("rename"), st.integers(0, 50), st.text(max_size=10)),
        st.tuples(st.just("entry"), st.integers(0, 50), json_values),
        st.tuples(st.just("metadata"), json_values),
        st.tuples(st.just("data"), st.integers(-12, 12)),
    )
    return draw(st.lists(edit, min_size=1, max_size=4))


def edit_header(data: bytes, edits: list[tuple[Any, ...]]) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    doc = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    for e in edits:
        names = [k for k in doc if k != "__metadata__"]
        kind = e[0]
        if kind == "metadata":
            doc["__metadata__"] = e[1]
            continue
        if kind == "data":
            body = body[: len(body) + e[1]] if e[1] < 0 else body + bytes(e[1])
            continue
        if not names:
            continue
        name = names[e[1] % len(names)]
        entry = doc[name]
        if not isinstance(entry, dict):
            continue
        if kind == "dtype":
            entry["dtype"] = e[2]
        elif kind == "dim" and isinstance(entry.get("shape"), list) and entry["shape"]:
            entry["shape"][e[2] % len(entry["shape"])] = e[3]
        elif kind == "shape":
            entry["shape"] = e[2]
        elif kind == "offset" and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2:
            entry["data_offsets"][e[2]] = e[3]
        elif kind == "shift" and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2:
            if isinstance(entry["data_offsets"][e[2]], int):
                entry["data_offsets"][e[2]] += e[3]
        elif kind == "offsets":
            entry["data_offsets"] = e[2]
        elif kind == "drop_field":
            entry.pop(e[2], None)
        elif kind == "add_field":
            entry[e[2]] = e[3]
        elif kind == "drop_tensor":
            del doc[name]
        elif kind == "rename":
            doc[e[2]] = doc.pop(name)
        elif kind == "entry":
            doc[name] = e[2]
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@FUZZ
@given(base=st.sampled_from(sorted(SAFETENSORS_BASES)), edits=header_edits())
def test_safetensors_header_json_edits(tmp_path: Path, base: str, edits: list[tuple[Any, ...]]) -> None:
    path = write(tmp_path, edit_header(SAFETENSORS_BASES[base], edits), ".safetensors")
    check_against_reference(path, read_all(path))


# --- npz --------------------------------------------------------------------------------------------
def small_npz(compress: bool) -> bytes:
    buf = io.BytesIO()
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float16),
              "i": np.arange(5, dtype=">i8"), "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              "s": np.array(7, np.int32), "e": np.zeros((0, 3), np.uint8)}
    (np.savez_compressed if compress else np.savez)(buf, **arrays)  # type: ignore[operator]
    return buf.getvalue()


NPZ_BASES = {
    "stored": small_npz(False),
    "deflated": small_npz(True),
    "corpus_stored": (CORPUS / "npz/weights.npz").read_bytes(),
    "corpus_deflated": (CORPUS / "npz/weights_compressed.npz").read_bytes(),
}


@FUZZ
@given(base=st.sampled_from(sorted(NPZ_BASES)), ops=mutations, headers=st.booleans())
def test_npz_mutations(tmp_path: Path, base: str, ops: list[tuple[Any, ...]], headers: bool) -> None:
    data = NPZ_BASES[base]
    path = write(tmp_path, mutate(data, ops, hot=300 if headers else None, tail=600 if headers else 0), ".npz")
    read_all(path)


# --- HDF5 -------------------------------------------------------------------------------------------
def small_hdf5(tmp: Path) -> bytes:
    import h5py

    path = tmp / "base.h5"
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        f.attrs["note"] = "fuzz base"
        f.create_dataset("dense/kernel", data=np.arange(12, dtype=np.float32).reshape(3, 4))
        f.create_dataset("dense/bias", data=np.ones(4, ">f8"))
        f.create_dataset("conv/w", data=np.arange(64, dtype=np.int16).reshape(8, 8), chunks=(4, 4),
                         compression="gzip", shuffle=True)
        f.create_dataset("scalar", data=np.int64(3))
        f.create_dataset("flags", data=np.array([True, False]))
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture(scope="module")
def hdf5_bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return {
        "small": small_hdf5(tmp_path_factory.mktemp("h5")),
        "keras3": (CORPUS / "keras3/mlp.weights.h5").read_bytes(),
        "tf_keras": (CORPUS / "tf_keras/mlp_weights.h5").read_bytes(),
    }


@FUZZ
@given(base=st.sampled_from(["small", "keras3", "tf_keras"]), ops=mutations, headers=st.booleans())
def test_hdf5_mutations(tmp_path: Path, hdf5_bases: dict[str, bytes], base: str, ops: list[tuple[Any, ...]],
                        headers: bool) -> None:
    path = write(tmp_path, mutate(hdf5_bases[base], ops, hot=2048 if headers else None, tail=2048 if headers else 0),
                 ".h5")
    read_all(path)


# --- .keras archives --------------------------------------------------------------------------------
KERAS_BASE = (CORPUS / "keras3/mlp.keras").read_bytes()


def _keras_hot() -> tuple[int, int]:
    """The bytes worth aiming at: up to the weights' HDF5 metadata, and the central directory."""
    with zipfile.ZipFile(io.BytesIO(KERAS_BASE)) as zf:
        info = zf.getinfo("model.weights.h5")
        return info.header_offset + 2048, len(KERAS_BASE) - zf.start_dir + 64


@FUZZ
@given(ops=mutations, headers=st.booleans())
def test_keras_zip_mutations(tmp_path: Path, ops: list[tuple[Any, ...]], headers: bool) -> None:
    hot, tail = _keras_hot()
    path = write(tmp_path, mutate(KERAS_BASE, ops, hot=hot if headers else None, tail=tail if headers else 0), ".keras")
    read_all(path)


# --- sharded indexes --------------------------------------------------------------------------------
index_edit = st.one_of(
    st.tuples(st.just("value"), st.integers(0, 50), st.one_of(json_values, st.sampled_from(
        ["../x.safetensors", "/etc/hostname", "", ".", "..", "a\\b", "nul\x00", "model-00009-of-00004.safetensors",
         "model-00001-of-00004.safetensors", "cnn_00000.weights.h5", "cnn_00001.weights.h5", "../cnn_00000.weights.h5"]))),
    st.tuples(st.just("key"), st.integers(0, 50), st.text(max_size=12)),
    st.tuples(st.just("drop"), st.integers(0, 50)),
    st.tuples(st.just("top"), st.sampled_from(["weight_map", "metadata"]), json_values),
)


def edit_index(doc: dict[str, Any], edits: list[tuple[Any, ...]]) -> dict[str, Any]:
    wm = doc["weight_map"]
    for e in edits:
        keys = list(wm) if isinstance(wm, dict) else []
        if e[0] == "top":
            doc[e[1]] = e[2]
            wm = doc["weight_map"]
        elif keys and e[0] == "value":
            key = keys[e[1] % len(keys)]
            old = wm[key]
            wm[key] = [e[2]] if isinstance(old, list) and isinstance(e[2], str) else e[2]
        elif keys and e[0] == "key":
            wm[e[2]] = wm.pop(keys[e[1] % len(keys)])
        elif keys and e[0] == "drop":
            del wm[keys[e[1] % len(keys)]]
    return doc


@pytest.fixture(scope="module")
def sharded_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for key, src in (("hf", CORPUS / "hf_sharded/tiny_gpt2"), ("keras", CORPUS / "keras3/cnn_sharded")):
        dest = tmp_path_factory.mktemp(key) / "ckpt"
        shutil.copytree(src, dest)
        dest.chmod(0o755)
        for p in dest.iterdir():
            p.chmod(0o644)
        out[key] = dest
    return out


@FUZZ
@given(kind=st.sampled_from(["hf", "keras"]), edits=st.lists(index_edit, min_size=1, max_size=4), raw=st.booleans(),
       ops=mutations)
def test_sharded_index_edits(sharded_dirs: dict[str, Path], kind: str, edits: list[tuple[Any, ...]], raw: bool,
                             ops: list[tuple[Any, ...]]) -> None:
    folder = sharded_dirs[kind]
    original = next(folder.glob("*.json"))
    doc = edit_index(json.loads(original.read_text()), edits)
    text = json.dumps(doc).encode()
    if raw:
        text = mutate(text, ops)
    path = folder / f"fuzz{next(_counter)}{'.safetensors.index.json' if kind == 'hf' else '.weights.json'}"
    path.write_bytes(text)
    try:
        read_all(path)
    finally:
        path.unlink()


# --- any bytes at all -------------------------------------------------------------------------------
PREFIXES = [b"", b"\x89HDF\r\n\x1a\n", b"PK\x03\x04", b"PK\x05\x06", b"\x80\x02", b"GGUF", b"\x93NUMPY", b"{",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{", b"(dp0\n", b"version https://git-lfs"]


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), rest=st.binary(max_size=600),
       suffix=st.sampled_from([b"", b".", b"PK\x05\x06" + bytes(18)]))
def test_arbitrary_bytes(tmp_path: Path, prefix: bytes, rest: bytes, suffix: bytes) -> None:
    path = write(tmp_path, prefix + rest + suffix, ".bin")
    read_all(path)
