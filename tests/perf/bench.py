"""Benchmark ckpt's data paths against a durable copy and against the naive numpy way, in one run.

    python tests/perf/bench.py --size 3GB            # the full run (needs about 25 GB of free disk)
    python tests/perf/bench.py --size 1GB,3GB        # two sizes: also shows whether peak RSS stays flat
    python tests/perf/bench.py --quick               # 200 MB, 2 repetitions: a smoke run in a minute

For each path the script runs, as separate child processes and alternating within each repetition:

* **floor**: ``cp OUT.ref FLOOR && sync FLOOR``, a durable copy of a file of the output's size (the
  output of an unmeasured warm-up run of ckpt). No tool that writes a durable output can beat it.
* **ckpt**: the ``ckpt`` command for the path.
* **naive**: what a script would do with safetensors / numpy / h5py: load every tensor, update or
  convert in memory, save, and fsync the output (so it is as durable as ckpt's).

It reports medians of wall time, throughput (output bytes per second), peak RSS (``ru_maxrss`` from
``os.wait4``; file pages a process maps count too), ``ckpt/floor`` (median of the run-by-run ratios)
and ``naive/ckpt`` (likewise), then checks the targets of the performance issue. The page cache is
warm: every input was read by the warm-up run just before.

The parent stays small on purpose (no numpy): children are started with ``posix_spawn``, and on
Linux a spawned child's ``ru_maxrss`` starts from its parent's resident size. Inputs are written by
child processes too, with the reference libraries (safetensors' layout from ``common.py``, h5py,
numpy's own ``.npy`` writer), and cached in ``--dir`` for later runs; ``--clean`` removes them.

MindSpore is not installed in this interpreter, so by default the MindSpore ``.ckpt`` inputs are not
written by MindSpore: the plain one by ``common.write_mindspore`` (the source's tensors, one protobuf
``Checkpoint`` message per parameter, as ``mindspore.save_checkpoint`` 2.10 writes them; identical
bytes), the AES-GCM one by ckptsurgeon's own ``Encrypter`` over the plain file, in 64 MiB blocks as
``save_checkpoint(enc_key=...)`` encrypts. Set ``CKPT_MS_PYTHON`` to an interpreter with mindspore
(and safetensors) to have ``mindspore.save_checkpoint`` write both instead, and to run the naive
``mindspore.load_checkpoint`` + ``save_file`` baseline, which is skipped otherwise (as the PyTorch
path's naive run is without ``CKPT_TORCH_PYTHON``).

TensorFlow is not installed here either: by default the TensorFlow checkpoints (tensor bundles,
``PREFIX.index`` + ``PREFIX.data-0000K-of-0000N``, of the source's tensors) are written by
``common.write_tf_bundle``, the index SSTable and BundleEntryProto encoded by hand (the one-shard
bundle is byte for byte what ``tf.raw_ops.SaveV2`` writes from the same tensors); the four-shard one
spreads the tensors over four data files as a sharded save merges them (num_shards 4, a shard_id
per entry). Set ``CKPT_TF_PYTHON`` to an interpreter with tensorflow (and safetensors) to have
``tf.raw_ops.SaveV2`` write the one-shard bundle and to run the naive ``tf.train.load_checkpoint`` +
``save_file`` baseline on both, which is skipped otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import common

PY = sys.executable

# --- the targets of the issue ------------------------------------------------------------------------
TRANSFER_VS_FLOOR = 1.25  # safetensors -> safetensors transfer of a 3 GB pair, x durable copy
TRANSFER_VS_FLOOR_SMALL = 1.5  # the same below 3 GB, where fixed costs weigh more
TRANSFER_VS_NAIVE = 3.0  # naive / transfer, for the 3 GB pair
TRANSFER_RSS_MIB = 150.0
RENAME_VS_FLOOR = 1.15
GGUF_RENAME_VS_FLOOR = 1.25  # rename of a GGUF file (typed metadata, aligned tensors), x durable copy
GGUF_RSS_MIB = 150
TORCH_VS_FLOOR = 1.25  # pytorch_model.bin -> safetensors against a durable copy
TORCH_RSS_MIB = 150
#: an interpreter with torch for the naive torch.load + save_file baseline (that path's naive run is skipped without it)
TORCH_PY = os.environ.get("CKPT_TORCH_PYTHON")
MINDSPORE_VS_FLOOR = 1.25  # MindSpore .ckpt -> safetensors against a durable copy
MINDSPORE_ENC_VS_FLOOR = 2.0  # the same from an AES-GCM encrypted .ckpt (decryption included)
MINDSPORE_RSS_MIB = 150
#: an interpreter with mindspore: it writes the .ckpt inputs (mindspore.save_checkpoint) and runs the naive
#: load_checkpoint + save_file baseline; without it ckptsurgeon's own writer writes them and that naive run is skipped
MS_PY = os.environ.get("CKPT_MS_PYTHON")
TF_VS_FLOOR = 1.25  # TensorFlow checkpoint (1 or 4 data shards) -> safetensors against a durable copy
TF_RSS_MIB = 150
#: an interpreter with tensorflow: SaveV2 writes the one-shard bundle and the naive load_checkpoint + save_file
#: baseline runs; without it common.write_tf_bundle writes both bundles and that naive run is skipped
TF_PY = os.environ.get("CKPT_TF_PYTHON")
TF_SHARDS = (1, 4)
INSPECT_WALL_S = 0.3
NPZ_VS_NUMPY = 2.0  # npz and HDF5 paths, x numpy's / h5py's own read + write
NPZ_RSS_SLACK_MIB = 100.0  # npz and HDF5 paths: peak RSS <= largest tensor + this
RSS_FLAT_SLACK = 1.15  # peak RSS at the largest size <= this x the smallest size's

# --- naive baselines (child processes; every one fsyncs its output like ckpt does) -------------------
_FSYNC = """
import os, sys

def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
"""

NAIVE = {
    "transfer": _FSYNC + """
from safetensors.numpy import load_file, save_file
src, tgt, out = sys.argv[1:4]
source, target = load_file(src), load_file(tgt)
for name, value in source.items():
    if name in target and target[name].shape == value.shape:
        target[name] = value.astype(target[name].dtype)
save_file(target, out, metadata={"format": "pt"})
fsync(out)
""",
    "count": _FSYNC + """
import numpy as np
from safetensors.numpy import load_file, save_file
src, tgt, out = sys.argv[1:4]
source, target = load_file(src), load_file(tgt)
changed = 0
for name, value in source.items():
    if name in target and target[name].shape == value.shape:
        changed += int(np.count_nonzero(value != target[name]))
        target[name] = value
save_file(target, out, metadata={"format": "pt"})
fsync(out)
""",
    "rename": _FSYNC + """
import re
from safetensors.numpy import load_file, save_file
src, out = sys.argv[1:3]
save_file({re.sub(r"^model\\.", "net.", k): v for k, v in load_file(src).items()}, out, metadata={"format": "pt"})
fsync(out)
""",
    "sharded": _FSYNC + """
import json
from safetensors.numpy import load_file, save_file
index, out = sys.argv[1:3]
weight_map = json.load(open(index))["weight_map"]
tensors = {}
for shard in sorted(set(weight_map.values())):
    tensors.update(load_file(os.path.join(os.path.dirname(index), shard)))
save_file({k: tensors[k] for k in weight_map}, out, metadata={"format": "pt"})
fsync(out)
""",
    "to_h5": _FSYNC + """
import h5py
from safetensors.numpy import load_file
src, out = sys.argv[1:3]
with h5py.File(out, "w") as f:
    for name, value in load_file(src).items():
        f.create_dataset(name, data=value)
fsync(out)
""",
    "from_h5": _FSYNC + """
import h5py
from safetensors.numpy import save_file
src, out = sys.argv[1:3]
tensors = {}
with h5py.File(src, "r") as f:
    f.visititems(lambda name, obj: tensors.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
save_file(tensors, out)
fsync(out)
""",
    "h5_transfer": _FSYNC + """
import h5py
src, tgt, out = sys.argv[1:4]

def datasets(f):
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found

with h5py.File(src, "r") as s, h5py.File(tgt, "r") as t, h5py.File(out, "w") as o:
    for name in datasets(t):
        old = t[name]
        use = s[name] if name in s and s[name].shape == old.shape else old
        o.create_dataset(name, data=use[()], chunks=old.chunks, compression=old.compression,
                         compression_opts=old.compression_opts)
fsync(out)
""",
    "npz_to_st": _FSYNC + """
import numpy as np
from safetensors.numpy import save_file
src, out = sys.argv[1:3]
with np.load(src) as z:
    tensors = {k: z[k] for k in z.files}
save_file(tensors, out)
fsync(out)
""",
    "npz_transfer": _FSYNC + """
import numpy as np
src, tgt, out = sys.argv[1:4]
with np.load(src) as s, np.load(tgt) as t:
    source, target = {k: s[k] for k in s.files}, {k: t[k] for k in t.files}
for name, value in source.items():
    if name in target and target[name].shape == value.shape:
        target[name] = value.astype(target[name].dtype)
np.savez(out, **target)
fsync(out)
""",
    "cast": _FSYNC + """
import ml_dtypes
from safetensors.numpy import load_file, save_file
src, out = sys.argv[1:3]
save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in load_file(src).items()}, out, metadata={"format": "pt"})
fsync(out)
""",
    "inspect": """
import sys
from safetensors import safe_open
with safe_open(sys.argv[1], "np") as f:
    shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
print(len(shapes))
""",
}

# --- inputs written once by child processes (reference libraries, one tensor in memory at a time) ----
MAKE_SAFETENSORS = """
import sys
sys.path.insert(0, sys.argv[1])
import common
size, shards, source, target, index = int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:7]
model = common.model_for_size(size, "F32")
common.write_safetensors(common.Path(source), model, seed=1)
common.write_safetensors(common.Path(target), common.target_model(model), seed=2)
common.write_sharded(common.Path(index).parent, model, shards, seed=1)
"""
MAKE_H5 = """
import sys, h5py
from safetensors import safe_open
src, out = sys.argv[1:3]
gzip = out.endswith(".gzip.h5")  # chunked (h5py's automatic chunk shape) and deflate level 4
with safe_open(src, "np") as f, h5py.File(out + ".partial", "w") as h:
    for k in f.keys():
        h.create_dataset(k, data=f.get_tensor(k), **({"compression": "gzip", "compression_opts": 4} if gzip else {}))
import os; os.replace(out + ".partial", out)
"""
NAIVE_TORCH = _FSYNC + """
import torch
from safetensors.torch import save_file
src, out = sys.argv[1:3]
state = torch.load(src, weights_only=True)
save_file({k: v.contiguous() for k, v in state.items()}, out, metadata={"format": "pt"})
fsync(out)
"""

MAKE_TORCH_BIN = """
import sys
from ckptsurgeon import api
api.convert(sys.argv[1], sys.argv[2], fmt="torch")
"""

# MindSpore .ckpt inputs. No mindspore is installed in this interpreter: by default the plain file is
# written by common.write_mindspore (the source's tensors and values, as save_checkpoint lays them out)
# and the encrypted one by ckptsurgeon's own AES-GCM Encrypter over the plain file's bytes, in 64 MiB
# blocks, as save_checkpoint(enc_key=...) encrypts its serialized plaintext. With CKPT_MS_PYTHON,
# mindspore.save_checkpoint writes both instead.
MAKE_MS_ENCRYPTED = """
import sys, os
from ckptsurgeon.formats.mindspore.crypto import Encrypter, Secret
src, out, key = sys.argv[1:4]
partial = out + ".partial"
fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
try:
    encrypter = Encrypter(fd, Secret(open(key, "rb").read()), "AES-GCM")
    with open(src, "rb") as f:
        while chunk := f.read(8 << 20):
            encrypter.write(chunk)
    encrypter.finish()
    os.fsync(fd)
finally:
    os.close(fd)
os.replace(partial, out)
"""
MAKE_MS_CKPT_REAL = """
import sys, os, json, struct
import mindspore as ms
src, out = sys.argv[1:3]
partial = out[: -len(".ckpt")] + ".partial.ckpt"  # save_checkpoint wants a name ending in .ckpt
if len(sys.argv) > 3:  # PLAIN.ckpt OUT KEY: the plain checkpoint's parameters, encrypted (AES-GCM)
    ms.save_checkpoint(ms.load_checkpoint(src), partial, enc_key=open(sys.argv[3], "rb").read(), enc_mode="AES-GCM")
else:  # SRC.safetensors OUT: its tensors in file order (all in memory, as save_checkpoint takes them)
    from safetensors import safe_open
    with open(src, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    with safe_open(src, "np") as f:
        params = [{"name": k, "data": ms.Tensor(f.get_tensor(k))} for k in names]
    ms.save_checkpoint(params, partial)
fd = os.open(partial, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
os.replace(partial, out)
"""
NAIVE_MS = _FSYNC + """
import mindspore as ms
from safetensors.numpy import save_file
src, out = sys.argv[1], sys.argv[-1]
if len(sys.argv) > 3:  # SRC KEY OUT: an encrypted checkpoint
    params = ms.load_checkpoint(src, dec_key=open(sys.argv[2], "rb").read(), dec_mode="AES-GCM")
else:
    params = ms.load_checkpoint(src)
save_file({k: v.asnumpy() for k, v in params.items()}, out, metadata={"format": "ms"})
fsync(out)
"""
#: the AES-GCM key of the encrypted input (AES-256; fixed, so a cached input stays readable)
MS_KEY = bytes(range(32))

# TensorFlow bundles: common.write_tf_bundle by default; with CKPT_TF_PYTHON, tf.raw_ops.SaveV2 writes the
# one-shard bundle (every tensor in memory, as SaveV2 takes them) to PREFIX.partial, renamed into place,
# its index last.
MAKE_TF_REAL = """
import sys, os, json, struct
import numpy as np
import tensorflow as tf
src, out = sys.argv[1:3]
with open(src, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
raw = np.memmap(src, dtype=np.uint8, mode="r", offset=8 + n)
def value(k):
    start, end = header[k]["data_offsets"]
    return tf.constant(np.frombuffer(raw[start:end], dtype=np.float32).reshape(header[k]["shape"]))
partial = out + ".partial"
tf.raw_ops.SaveV2(prefix=partial, tensor_names=names, shape_and_slices=[""] * len(names),
                  tensors=[value(k) for k in names])
for suffix in (".data-00000-of-00001", ".index"):
    fd = os.open(partial + suffix, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.replace(partial + suffix, out + suffix)
"""
NAIVE_TF = _FSYNC + """
import tensorflow as tf
from safetensors.numpy import save_file
src, out = sys.argv[1:3]
reader = tf.train.load_checkpoint(src)
save_file({k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}, out, metadata={"format": "tf"})
fsync(out)
"""

# The GGUF input: the source's tensors (F32) as a GGUF v3 file, written here with struct (ne reversed, each
# tensor at the next multiple of 32, zero-padded), the data copied from the safetensors file's byte ranges.
MAKE_GGUF = """
import json, os, struct, sys
src, out = sys.argv[1:3]
with open(src, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
header.pop("__metadata__", None)
tensors = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
def s(text):
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw
kv = [(b"general.architecture", 8, s("llama")), (b"general.name", 8, s("ckptsurgeon bench"))]
head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
head += b"".join(s(k.decode()) + struct.pack("<I", t) + v for k, t, v in kv)
offset = 0
for name, t in tensors:
    assert t["dtype"] == "F32"
    shape = t["shape"][::-1]
    head += s(name) + struct.pack(f"<I{len(shape)}QIQ", len(shape), *shape, 0, offset)
    size = t["data_offsets"][1] - t["data_offsets"][0]
    offset += size + (-size % 32)
head += bytes(-len(head) % 32)
with open(src, "rb") as f, open(out + ".partial", "wb") as o:
    o.write(head)
    for name, t in tensors:
        begin, end = t["data_offsets"]
        f.seek(8 + n + begin)
        left = end - begin
        while left:
            chunk = f.read(min(left, 1 << 24))
            o.write(chunk)
            left -= len(chunk)
        o.write(bytes(-(end - begin) % 32))
os.replace(out + ".partial", out)
"""

MAKE_NPZ = """
import sys, os, zipfile, numpy as np
from safetensors import safe_open
src, out = sys.argv[1:3]
with safe_open(src, "np") as f, zipfile.ZipFile(out + ".partial", "w", allowZip64=True) as z:
    for k in f.keys():
        with z.open(k + ".npy", "w", force_zip64=True) as m:
            np.lib.format.write_array(m, f.get_tensor(k), allow_pickle=False)
os.replace(out + ".partial", out)
"""


@dataclass
class Inputs:
    size: int
    model: common.Model
    source: Path
    target: Path
    index: Path  # 30-shard copy of the source
    h5: Path
    h5_target: Path
    h5_gzip: Path  # chunked, deflate level 4
    h5_gzip_target: Path
    npz_source: Path
    npz_target: Path
    torch_bin: Path  # the source as a torch.save zip, as pytorch_model.bin is
    ms_ckpt: Path  # the source as a plain MindSpore checkpoint
    ms_encrypted: Path  # the same, AES-GCM encrypted with the key in ms_key
    ms_key: Path
    tf_prefixes: dict[int, Path]  # data shards -> the source as a TensorFlow bundle (PREFIX.index, PREFIX.data-*)
    gguf: Path  # the source as a GGUF file (F32)

    def files(self) -> list[Path]:
        tf = [f for n, prefix in self.tf_prefixes.items() for f in common.tf_files(prefix, n)]
        return [self.source, self.target, self.h5, self.h5_target, self.h5_gzip, self.h5_gzip_target,
                self.npz_source, self.npz_target, self.torch_bin, self.ms_ckpt, self.ms_encrypted, self.ms_key, *tf,
                self.gguf]


def prepare(directory: Path, size: int, shards: int) -> Inputs:
    model = common.model_for_size(size, "F32")
    tag = f"{size / 1e9:g}GB"
    base = directory / f"bench-{tag}"
    paths = Inputs(size, model, Path(f"{base}-source.safetensors"), Path(f"{base}-target.safetensors"),
                   directory / f"bench-{tag}-{shards}-shards" / "model.safetensors.index.json",
                   Path(f"{base}-source.h5"), Path(f"{base}-target.h5"), Path(f"{base}-source.gzip.h5"),
                   Path(f"{base}-target.gzip.h5"), Path(f"{base}-source.npz"), Path(f"{base}-target.npz"),
                   base.parent / f"bench-{tag}-pytorch_model.bin", Path(f"{base}-source.ckpt"),
                   Path(f"{base}-source.aes-gcm.ckpt"), Path(f"{base}-mindspore.key"),
                   {n: Path(f"{base}-source-tf{n}") for n in TF_SHARDS}, Path(f"{base}-source.gguf"))
    print(f"{tag}: source {model.describe()}")
    started = time.perf_counter()
    here = str(Path(__file__).resolve().parent)
    common.run_measured([PY, "-c", MAKE_SAFETENSORS, here, str(size), str(shards), str(paths.source),
                         str(paths.target), str(paths.index)]).check()  # in a child: this parent stays small
    for script, src, out in ((MAKE_H5, paths.source, paths.h5), (MAKE_H5, paths.target, paths.h5_target),
                             (MAKE_H5, paths.source, paths.h5_gzip), (MAKE_H5, paths.target, paths.h5_gzip_target),
                             (MAKE_NPZ, paths.source, paths.npz_source), (MAKE_NPZ, paths.target, paths.npz_target),
                             (MAKE_TORCH_BIN, paths.source, paths.torch_bin), (MAKE_GGUF, paths.source, paths.gguf)):
        if not out.exists():
            common.run_measured([PY, "-c", script, str(src), str(out)]).check()
    prepare_mindspore(paths, here)
    prepare_tf(paths, here)
    print(f"  inputs ready in {time.perf_counter() - started:.1f} s (cached in {directory})")
    return paths


def prepare_mindspore(paths: Inputs, here: str) -> None:
    """The plain and the encrypted MindSpore checkpoint of the source, and the key file.

    With CKPT_MS_PYTHON, mindspore.save_checkpoint writes both; otherwise common.write_mindspore
    writes the plain one (byte for byte what save_checkpoint writes from the same tensors) and
    ckptsurgeon's Encrypter the encrypted one, each in a child process.
    """
    if not paths.ms_key.exists() or paths.ms_key.read_bytes() != MS_KEY:
        paths.ms_key.write_bytes(MS_KEY)
        paths.ms_encrypted.unlink(missing_ok=True)
    if MS_PY:
        if not paths.ms_ckpt.exists():
            common.run_measured([MS_PY, "-c", MAKE_MS_CKPT_REAL, str(paths.source), str(paths.ms_ckpt)]).check()
    else:  # cached when a file of the expected size is there
        script = ("import sys; sys.path.insert(0, sys.argv[1]); import common; common.write_mindspore("
                  "common.Path(sys.argv[3]), common.model_for_size(int(sys.argv[2]), 'F32'), seed=1)")
        common.run_measured([PY, "-c", script, here, str(paths.size), str(paths.ms_ckpt)]).check()
    if not paths.ms_encrypted.exists() or paths.ms_encrypted.stat().st_mtime < paths.ms_ckpt.stat().st_mtime:
        if MS_PY:
            argv = [MS_PY, "-c", MAKE_MS_CKPT_REAL, str(paths.ms_ckpt), str(paths.ms_encrypted), str(paths.ms_key)]
        else:
            argv = [PY, "-c", MAKE_MS_ENCRYPTED, str(paths.ms_ckpt), str(paths.ms_encrypted), str(paths.ms_key)]
        common.run_measured(argv).check()


def prepare_tf(paths: Inputs, here: str) -> None:
    """The TensorFlow bundles of the source (one and four data shards), each cached once complete.

    common.write_tf_bundle writes them in a child process (cached when the index is there and every
    shard has its size); with CKPT_TF_PYTHON, tf.raw_ops.SaveV2 writes the one-shard bundle instead.
    """
    for n, prefix in paths.tf_prefixes.items():
        if TF_PY and n == 1:
            if not common.tf_files(prefix, 1)[0].exists():
                common.run_measured([TF_PY, "-c", MAKE_TF_REAL, str(paths.source), str(prefix)]).check()
            continue
        script = ("import sys; sys.path.insert(0, sys.argv[1]); import common; common.write_tf_bundle("
                  "common.Path(sys.argv[3]), common.model_for_size(int(sys.argv[2]), 'F32'), int(sys.argv[4]), seed=1)")
        common.run_measured([PY, "-c", script, here, str(paths.size), str(prefix), str(n)]).check()


# --- one path: floor, ckpt and naive, alternating --------------------------------------------------------


@dataclass
class Path_:
    """One benchmarked path: the ckpt arguments (OUT stands for the output) and the naive script."""

    name: str
    ckpt: list[str]
    out_suffix: str
    naive: str | None = None
    naive_args: list[str] = field(default_factory=list)  # the naive script's inputs (OUT is appended)
    floor: bool = True  # writes an output, so a durable copy is the floor
    plain_copy: Path | None = None  # also time ``cp FILE OUT`` without fsync (the cost of touching that data once)
    inputs: list[Path] = field(default_factory=list)  # files read, warmed in the page cache before each run
    paired: list[str] | None = None  # also time this ckpt command in each repetition (what this path adds to it)
    naive_python: str = PY  # the interpreter of the naive script


@dataclass
class Result:
    path: Path_
    out_bytes: int
    floor: list[common.Measurement] = field(default_factory=list)
    ckpt: list[common.Measurement] = field(default_factory=list)
    naive: list[common.Measurement] = field(default_factory=list)
    copy: list[common.Measurement] = field(default_factory=list)  # cp without fsync (plain_copy)
    paired: list[common.Measurement] = field(default_factory=list)  # the paired ckpt command

    def added(self) -> float | None:
        """Median over the repetitions of (this ckpt run - the paired run), in seconds."""
        pairs = list(zip(self.ckpt, self.paired, strict=False))
        return statistics.median(a.wall_s - b.wall_s for a, b in pairs) if pairs else None

    @staticmethod
    def median(runs: list[common.Measurement], key: Callable[[common.Measurement], float]) -> float | None:
        return statistics.median(key(r) for r in runs) if runs else None

    def wall(self, which: str) -> float | None:
        return self.median(getattr(self, which), lambda r: r.wall_s)

    def rss(self, which: str) -> float | None:
        runs = getattr(self, which)
        return max(r.maxrss_mib for r in runs) if runs else None

    def ratio(self, num: str, den: str) -> float | None:
        """Median of the run-by-run ratios num/den (runs of one repetition are paired)."""
        pairs = list(zip(getattr(self, num), getattr(self, den), strict=False))
        return statistics.median(a.wall_s / b.wall_s for a, b in pairs) if pairs else None


def run_path(p: Path_, work: Path, repeat: int, env: dict[str, str], naive: bool) -> Result:
    ref = work / f"ref{p.out_suffix}"
    out = work / f"out{p.out_suffix}"

    def ckpt_argv(dest: Path) -> list[str]:
        return [str(dest) if a == "OUT" else a for a in p.ckpt]

    # Warm-up: fills the page cache with the inputs and leaves a file of the output's size for the floor.
    common.run_measured(ckpt_argv(ref if p.floor else out), env=env).check()
    result = Result(p, ref.stat().st_size if p.floor else 0)
    try:
        for _ in range(repeat):
            if p.floor:
                result.floor.append(_once(lambda: common.durable_copy(ref, out), out, [ref]))
            if p.paired is not None:
                paired = [str(out) if a == "OUT" else a for a in p.paired]
                result.paired.append(_once(lambda paired=paired: common.run_measured(paired, env=env).check(), out,
                                           p.inputs))
            result.ckpt.append(_once(lambda: common.run_measured(ckpt_argv(out), env=env).check(), out, p.inputs))
            if p.plain_copy is not None:
                cp = ["cp", "--", str(p.plain_copy), str(out)]
                result.copy.append(_once(lambda cp=cp: common.run_measured(cp).check(), out, [p.plain_copy]))
            if naive and p.naive is not None:
                argv = [p.naive_python, "-c", p.naive, *p.naive_args] + ([str(out)] if p.floor else [])
                result.naive.append(_once(lambda argv=argv: common.run_measured(argv).check(), out, p.inputs))
    finally:
        ref.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    return result


def _warm(paths: Iterable[Path]) -> None:
    """Read files through the page cache (unmeasured), so every run starts warm, as the targets assume:
    a naive run holding the model twice in memory can push the inputs out of the cache."""
    files = [str(p) for p in paths]
    if files:  # in a child: a buffer here would raise every later child's peak RSS (see common.run_measured)
        common.run_measured(["cat", "--", *files]).check()


def _once(run: Callable[[], common.Measurement], out: Path, warm: Iterable[Path] = ()) -> common.Measurement:
    _warm(warm)
    os.sync()  # unmeasured: no writeback or journal commit of an earlier run overlaps this one
    try:
        return run()
    finally:
        out.unlink(missing_ok=True)


def _files_read(argv: list[str]) -> list[Path]:
    """The input files named in a ckpt command line; a sharded index brings its shards."""
    files = []
    for arg in argv[1:]:
        path = Path(arg)
        index = Path(arg + ".index")
        if arg != "OUT" and not path.exists() and index.is_file():  # a TensorFlow bundle's prefix
            files.append(index)
            files.extend(sorted(path.parent.glob(path.name + ".data-*")))
        elif arg != "OUT" and path.is_file():
            files.append(path)
            if arg.endswith(".index.json"):
                files.extend(sorted(path.parent.glob("*.safetensors")))
    return files


def paths_for(inputs: Inputs, ckpt: list[str]) -> list[Path_]:
    paths = _paths(inputs, ckpt)
    for p in paths:
        p.inputs = _files_read(p.ckpt)
    return paths


def _paths(inputs: Inputs, ckpt: list[str]) -> list[Path_]:
    s, t, idx = str(inputs.source), str(inputs.target), str(inputs.index)
    return [
        Path_("safetensors -> safetensors: transfer", [*ckpt, "transfer", s, t, "-o", "OUT"], ".safetensors",
              NAIVE["transfer"], [s, t]),
        Path_("  the same, --count-changes", [*ckpt, "transfer", s, t, "-o", "OUT", "--count-changes"], ".safetensors",
              NAIVE["count"], [s, t], plain_copy=inputs.source, paired=[*ckpt, "transfer", s, t, "-o", "OUT"]),
        Path_("safetensors: rename", [*ckpt, "rename", s, "-o", "OUT", "--rename", r"^model\.=>net."], ".safetensors",
              NAIVE["rename"], [s]),
        Path_("GGUF: rename", [*ckpt, "rename", str(inputs.gguf), "-o", "OUT", "--rename", r"^model\.=>net."], ".gguf",
              None, [str(inputs.gguf)]),
        Path_("sharded (30) -> single: convert", [*ckpt, "convert", idx, "-o", "OUT"], ".safetensors",
              NAIVE["sharded"], [idx]),
        Path_("safetensors -> HDF5: convert", [*ckpt, "convert", s, "-o", "OUT"], ".h5", NAIVE["to_h5"], [s]),
        Path_("HDF5 -> safetensors: convert", [*ckpt, "convert", str(inputs.h5), "-o", "OUT"], ".safetensors",
              NAIVE["from_h5"], [str(inputs.h5)]),
        Path_("HDF5 -> HDF5: transfer", [*ckpt, "transfer", str(inputs.h5), str(inputs.h5_target), "-o", "OUT"],
              ".h5", NAIVE["h5_transfer"], [str(inputs.h5), str(inputs.h5_target)]),
        Path_("HDF5 gzip -> HDF5 gzip: transfer",
              [*ckpt, "transfer", str(inputs.h5_gzip), str(inputs.h5_gzip_target), "-o", "OUT"],
              ".h5", NAIVE["h5_transfer"], [str(inputs.h5_gzip), str(inputs.h5_gzip_target)]),
        Path_("npz -> safetensors: convert", [*ckpt, "convert", str(inputs.npz_source), "-o", "OUT"], ".safetensors",
              NAIVE["npz_to_st"], [str(inputs.npz_source)]),
        Path_("npz -> npz: transfer", [*ckpt, "transfer", str(inputs.npz_source), str(inputs.npz_target), "-o", "OUT"],
              ".npz", NAIVE["npz_transfer"], [str(inputs.npz_source), str(inputs.npz_target)]),
        Path_("pytorch_model.bin -> safetensors: convert", [*ckpt, "convert", str(inputs.torch_bin), "-o", "OUT"],
              ".safetensors", NAIVE_TORCH if TORCH_PY else None, [str(inputs.torch_bin)], naive_python=TORCH_PY or PY),
        Path_("MindSpore .ckpt -> safetensors: convert", [*ckpt, "convert", str(inputs.ms_ckpt), "-o", "OUT"],
              ".safetensors", NAIVE_MS if MS_PY else None, [str(inputs.ms_ckpt)], naive_python=MS_PY or PY),
        Path_("encrypted MindSpore .ckpt -> safetensors: convert",
              [*ckpt, "convert", str(inputs.ms_encrypted), "-o", "OUT", "--dec-key-file", str(inputs.ms_key)],
              ".safetensors", NAIVE_MS if MS_PY else None, [str(inputs.ms_encrypted), str(inputs.ms_key)],
              naive_python=MS_PY or PY),
        *(Path_(f"TF checkpoint ({n} shard{'s' if n > 1 else ''}) -> safetensors: convert",
                [*ckpt, "convert", str(prefix), "-o", "OUT"], ".safetensors", NAIVE_TF if TF_PY else None,
                [str(prefix)], naive_python=TF_PY or PY) for n, prefix in inputs.tf_prefixes.items()),
        Path_("F32 -> BF16: convert --dtype", [*ckpt, "convert", s, "-o", "OUT", "--dtype", "BF16"], ".safetensors",
              NAIVE["cast"], [s]),
        Path_("safetensors: transpose every 2-D tensor (rename --transform)",
              [*ckpt, "rename", s, "-o", "OUT", "--transform", "*=keras->torch"], ".safetensors", None, [s]),
        Path_("safetensors: join q,k,v of every block (rename --concat)",
              [*ckpt, "rename", s, "-o", "OUT", "--concat", r"(.*)\.{q,k,v}_proj\.weight=>\1.qkv_proj.weight"],
              ".safetensors", None, [s]),
        Path_("safetensors -> safetensors: transfer --resize lm_head=mean",
              [*ckpt, "transfer", s, t, "-o", "OUT", "--resize", "lm_head.weight=mean"], ".safetensors", None, [s, t]),
        Path_("inspect FILE", [*ckpt, "inspect", s], "", NAIVE["inspect"], [s], floor=False),
        Path_("inspect INDEX (30 shards)", [*ckpt, "inspect", idx], "", None, floor=False),
    ]


# --- reporting -----------------------------------------------------------------------------------------


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table(results: list[Result], size: int) -> None:
    rows = []
    for r in results:
        for which, label in (("floor", "durable copy"), ("copy", "cp, no fsync"), ("paired", "ckpt without it"),
                             ("ckpt", "ckpt"), ("naive", "naive")):
            wall = r.wall(which)
            if wall is None:
                continue
            gbps = r.out_bytes / wall / 1e9 if r.out_bytes else None
            rows.append([
                r.path.name if which == ("floor" if r.floor else "ckpt") else "",
                label, _f(wall, ".3f"), _f(gbps, ".2f"), _f(r.rss(which), ".0f"),
                _f(r.ratio("ckpt", "floor"), ".2f") if which == "ckpt" else "",
                _f(r.ratio("naive", "ckpt"), ".2f") if which == "naive" else "",
            ])
    common.print_table(["path", "run", "wall s", "GB/s", "peak RSS MiB", "ckpt/floor", "naive/ckpt"], rows,
                       title=f"{size / 1e9:g} GB checkpoints (medians of the repetitions; ratios: median of run-by-run ratios)")


@dataclass
class Check:
    what: str
    measured: str
    ok: bool


def checks(by_size: dict[int, list[Result]], largest_tensor: dict[int, int]) -> list[Check]:
    out: list[Check] = []
    for size, results in by_size.items():
        tag = f"{size / 1e9:g} GB"
        r = {x.path.name.strip(): x for x in results}

        def add(what: str, value: float | None, limit: float, fmt: str, below: bool = True, tag: str = tag) -> None:
            if value is not None:
                out.append(Check(f"{tag}: {what}", format(value, fmt), value < limit if below else value >= limit))

        tr = r.get("safetensors -> safetensors: transfer")
        if tr:
            limit = TRANSFER_VS_FLOOR if size >= 3e9 else TRANSFER_VS_FLOOR_SMALL
            add(f"transfer / durable copy < {limit}", tr.ratio("ckpt", "floor"), limit, ".2f")
            if size >= 3e9:
                add(f"naive / transfer >= {TRANSFER_VS_NAIVE:g}", tr.ratio("naive", "ckpt"), TRANSFER_VS_NAIVE, ".2f",
                    below=False)
            add(f"transfer peak RSS < {TRANSFER_RSS_MIB:g} MiB", tr.rss("ckpt"), TRANSFER_RSS_MIB, ".0f")
        pt = r.get("pytorch_model.bin -> safetensors: convert")
        if pt:
            add(f"pytorch_model.bin -> safetensors / durable copy < {TORCH_VS_FLOOR}", pt.ratio("ckpt", "floor"),
                TORCH_VS_FLOOR, ".2f")
            add(f"pytorch_model.bin -> safetensors peak RSS < {TORCH_RSS_MIB:g} MiB", pt.rss("ckpt"), TORCH_RSS_MIB, ".0f")
        for name, limit in (("MindSpore .ckpt -> safetensors: convert", MINDSPORE_VS_FLOOR),
                            ("encrypted MindSpore .ckpt -> safetensors: convert", MINDSPORE_ENC_VS_FLOOR)):
            if name in r:
                short = name.removesuffix(": convert")
                add(f"{short} / durable copy < {limit}", r[name].ratio("ckpt", "floor"), limit, ".2f")
                add(f"{short} peak RSS < {MINDSPORE_RSS_MIB:g} MiB", r[name].rss("ckpt"), MINDSPORE_RSS_MIB, ".0f")
        for n in TF_SHARDS:
            name = f"TF checkpoint ({n} shard{'s' if n > 1 else ''}) -> safetensors: convert"
            if name in r:
                short = name.removesuffix(": convert")
                add(f"{short} / durable copy < {TF_VS_FLOOR}", r[name].ratio("ckpt", "floor"), TF_VS_FLOOR, ".2f")
                add(f"{short} peak RSS < {TF_RSS_MIB:g} MiB", r[name].rss("ckpt"), TF_RSS_MIB, ".0f")
        rn = r.get("safetensors: rename")
        if rn:
            add(f"rename / durable copy < {RENAME_VS_FLOOR}", rn.ratio("ckpt", "floor"), RENAME_VS_FLOOR, ".2f")
        gg = r.get("GGUF: rename")
        if gg:
            add(f"GGUF rename / durable copy < {GGUF_RENAME_VS_FLOOR}", gg.ratio("ckpt", "floor"), GGUF_RENAME_VS_FLOOR, ".2f")
            add(f"GGUF rename peak RSS < {GGUF_RSS_MIB:g} MiB", gg.rss("ckpt"), GGUF_RSS_MIB, ".0f")
        for name in ("inspect FILE", "inspect INDEX (30 shards)"):
            if name in r:
                add(f"{name} wall < {INSPECT_WALL_S} s", r[name].wall("ckpt"), INSPECT_WALL_S, ".3f")
        for name in ("safetensors -> HDF5: convert", "HDF5 -> safetensors: convert", "HDF5 -> HDF5: transfer",
                     "HDF5 gzip -> HDF5 gzip: transfer", "npz -> safetensors: convert", "npz -> npz: transfer"):
            if name in r:
                add(f"{name} / {'h5py' if 'HDF5' in name else 'numpy'} < {NPZ_VS_NUMPY:g}", _inverse(r[name].ratio("naive", "ckpt")), NPZ_VS_NUMPY, ".2f")
                bound = largest_tensor[size] / common.MIB + NPZ_RSS_SLACK_MIB
                add(f"{name} peak RSS < largest tensor + {NPZ_RSS_SLACK_MIB:g} = {bound:.0f} MiB", r[name].rss("ckpt"),
                    bound, ".0f")
        for name in ("safetensors: transpose every 2-D tensor (rename --transform)",
                     "safetensors -> safetensors: transfer --resize lm_head=mean"):
            if name in r:
                bound = largest_tensor[size] / common.MIB + NPZ_RSS_SLACK_MIB
                add(f"{name} peak RSS < largest tensor + {NPZ_RSS_SLACK_MIB:g} = {bound:.0f} MiB", r[name].rss("ckpt"),
                    bound, ".0f")
        joined = r.get("safetensors: join q,k,v of every block (rename --concat)")
        if joined:
            add(f"rename --concat (byte ranges) / durable copy < {RENAME_VS_FLOOR}", joined.ratio("ckpt", "floor"),
                RENAME_VS_FLOOR, ".2f")
            add(f"rename --concat peak RSS < {TRANSFER_RSS_MIB:g} MiB", joined.rss("ckpt"), TRANSFER_RSS_MIB, ".0f")
        cc = r.get("the same, --count-changes")
        if cc and cc.copy and cc.paired:
            add(f"--count-changes: time added to transfer (s) < cp of the source, no fsync ({cc.wall('copy'):.2f} s)",
                cc.added(), cc.wall("copy") or 0.0, ".2f")
        if cc:
            add(f"--count-changes peak RSS < {TRANSFER_RSS_MIB:g} MiB", cc.rss("ckpt"), TRANSFER_RSS_MIB, ".0f")
        cast = r.get("F32 -> BF16: convert --dtype")
        if cast:
            add(f"cast peak RSS < {TRANSFER_RSS_MIB:g} MiB", cast.rss("ckpt"), TRANSFER_RSS_MIB, ".0f")
    if len(by_size) > 1:
        small, large = min(by_size), max(by_size)
        for name in ("safetensors -> safetensors: transfer", "the same, --count-changes", "F32 -> BF16: convert --dtype"):
            a = next((x for x in by_size[small] if x.path.name.strip() == name), None)
            b = next((x for x in by_size[large] if x.path.name.strip() == name), None)
            if a and b and a.rss("ckpt") and b.rss("ckpt"):
                ratio = b.rss("ckpt") / a.rss("ckpt")  # type: ignore[operator]
                out.append(Check(f"{name}: peak RSS {large / 1e9:g} GB / {small / 1e9:g} GB < {RSS_FLAT_SLACK}",
                                 f"{ratio:.2f}", ratio < RSS_FLAT_SLACK))
    return out


def _inverse(x: float | None) -> float | None:
    return None if not x else 1 / x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="3GB", help="checkpoint size(s), comma-separated (default 3GB)")
    parser.add_argument("--quick", action="store_true", help="200MB and 2 repetitions (a smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each path (default 3)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="only paths whose name contains TEXT (repeatable)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baselines (they are the slowest)")
    parser.add_argument("--shards", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=common.DEFAULT_DIR, help="where inputs are cached")
    parser.add_argument("--clean", action="store_true", help="delete the inputs at the end")
    args = parser.parse_args(argv)
    sizes = [common.parse_size("200MB")] if args.quick else [common.parse_size(s) for s in args.size.split(",")]
    repeat = 2 if args.quick else args.repeat

    ckpt = common.ckpt_command()
    env = common.ckpt_env(args.dir / "pycache")
    print(f"ckpt: {' '.join(ckpt)}; {repeat} repetitions, floor / ckpt / naive alternating; warm page cache")
    print(common.machine_line())
    by_size: dict[int, list[Result]] = {}
    largest: dict[int, int] = {}
    made: list[Inputs] = []
    for size in sizes:
        inputs = prepare(args.dir, size, args.shards)
        made.append(inputs)
        tensors = inputs.model.tensors() + common.target_model(inputs.model).tensors()
        largest[size] = max(math.prod(t.shape) for t in tensors) * common.ITEMSIZE["F32"]
        work = args.dir / "bench-out"
        work.mkdir(parents=True, exist_ok=True)
        results = []
        for p in paths_for(inputs, ckpt):
            if args.only and not any(o in p.name for o in args.only):
                continue
            print(f"  {p.name.strip()} ...", flush=True)
            results.append(run_path(p, work, repeat, env, naive=not args.no_naive))
        shutil.rmtree(work, ignore_errors=True)
        by_size[size] = results
    print(f"(this parent's own peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
          "a spawned child's peak RSS is never below it)\n")
    print(common.machine_line() + "\n")
    for size, results in by_size.items():
        table(results, size)
    found = checks(by_size, largest)
    common.print_table(["target", "measured", ""], [[c.what, c.measured, "ok" if c.ok else "MISS"] for c in found],
                       title="targets")
    if args.clean:
        for inputs in made:
            for f in inputs.files():
                f.unlink(missing_ok=True)
            shutil.rmtree(inputs.index.parent, ignore_errors=True)
        print(f"removed the inputs from {args.dir}")
    return 0 if all(c.ok for c in found) else 1


if __name__ == "__main__":
    sys.exit(main())
