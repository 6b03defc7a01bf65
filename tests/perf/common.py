"""Shared helpers for the ckptsurgeon measurement scripts in ``tests/perf``.

Three things live here:

* **Synthetic checkpoints.** :func:`model_for_size` picks a transformer-shaped layout (embedding,
  N blocks of attention q/k/v/o and MLP up/down projections with their norms, a final norm and an
  lm head) close to a requested size; :func:`write_safetensors` and :func:`write_sharded` write it
  with plain Python (``struct`` + ``json`` + ``os.write``): the header first, then the data in
  chunks cut from one small pool of patterned bytes, so the model is never held in memory.
  :func:`target_model` is the "target" variant: a different head shape and one renamed layer.
  :func:`write_mindspore` writes the same tensors as a plain MindSpore ``.ckpt`` (protobuf values
  encoded by hand, laid out as ``mindspore.save_checkpoint`` lays them out); :func:`write_tf_bundle`
  writes them as a TensorFlow tensor bundle (index SSTable and BundleEntryProto encoded by hand, one
  or several data shards; with one shard, the bytes ``tf.raw_ops.SaveV2`` writes).
* **Measured child processes.** :func:`run_measured` starts a command, waits for it with
  ``os.wait4`` and returns its wall time and peak RSS (``ru_maxrss``, KiB on Linux), plus the peak
  anonymous RSS sampled from ``/proc/<pid>/status`` (memory-mapped file pages count in
  ``ru_maxrss`` but are page cache, not memory the process allocated).
* **Floors and I/O accounting.** :func:`durable_copy` times ``cp SRC DST && sync DST`` (copy +
  fsync) the same way; :func:`strace_input_io` and :func:`procio_input_io` tell how many bytes a
  ``ckpt`` run read from its input files.

Nothing here imports ckptsurgeon: the scripts measure the installed ``ckpt`` command from outside.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

DEFAULT_DIR = Path(tempfile.gettempdir()) / "ckptsurgeon-perf"

# --------------------------------------------------------------------------------------------
# Sizes and formatting
# --------------------------------------------------------------------------------------------

_UNITS = {
    "": 1, "b": 1,
    "k": KIB, "kib": KIB, "kb": 1000,
    "m": MIB, "mib": MIB, "mb": 1000**2,
    "g": GIB, "gib": GIB, "gb": 1000**3,
}


def parse_size(text: str) -> int:
    """``"2GiB"`` -> 2147483648. Accepts B, KiB/MiB/GiB (or K/M/G, binary) and kB/MB/GB (decimal)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 2GiB, 512MiB, 100MB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def fmt_bytes(n: float) -> str:
    """A byte count for people: ``2.00 GiB``, ``17.3 KiB``, ``512 B``."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}" if unit == "GiB" else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def machine_line() -> str:
    """CPUs, memory and load average: timings on a busy machine are worth less."""
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * KIB
    except (OSError, ValueError, IndexError):
        mem = 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: {os.cpu_count()} CPUs, {fmt_bytes(mem)} RAM, load average {load}"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> None:
    """A plain, aligned text table (first column left-aligned, the others right-aligned)."""
    text_rows = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    if title:
        print(title)
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in text_rows:
        print(line(r))
    print()


# --------------------------------------------------------------------------------------------
# Synthetic transformer-shaped checkpoints
# --------------------------------------------------------------------------------------------

ITEMSIZE = {"F32": 4, "BF16": 2}


class TensorDef(NamedTuple):
    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Model:
    """A decoder-only transformer layout (Llama-style names) and the dtype every tensor has."""

    hidden: int
    intermediate: int
    layers: int
    vocab: int
    dtype: str = "F32"
    head_vocab: int | None = None  # lm_head rows, when they differ from the embedding's (the target)
    renamed_block: int | None = None  # this block's attention is called "attention", not "self_attn"

    def tensors(self) -> list[TensorDef]:
        """Every tensor in file order."""
        h, ff = self.hidden, self.intermediate
        out = [TensorDef("model.embed_tokens.weight", (self.vocab, h))]
        for i in range(self.layers):
            p = f"model.layers.{i}"
            attn = f"{p}.attention" if i == self.renamed_block else f"{p}.self_attn"
            out.append(TensorDef(f"{p}.input_layernorm.weight", (h,)))
            out += [TensorDef(f"{attn}.{w}_proj.weight", (h, h)) for w in "qkvo"]
            out.append(TensorDef(f"{p}.post_attention_layernorm.weight", (h,)))
            out.append(TensorDef(f"{p}.mlp.up_proj.weight", (ff, h)))
            out.append(TensorDef(f"{p}.mlp.down_proj.weight", (h, ff)))
        out.append(TensorDef("model.norm.weight", (h,)))
        out.append(TensorDef("lm_head.weight", (self.head_vocab or self.vocab, h)))
        return out

    @property
    def data_bytes(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors()) * ITEMSIZE[self.dtype]

    def describe(self) -> str:
        head = f", head {self.head_vocab}" if self.head_vocab else ""
        ren = f", block {self.renamed_block} attention renamed" if self.renamed_block is not None else ""
        return (f"{self.layers} blocks, hidden {self.hidden}, mlp {self.intermediate}, vocab {self.vocab}{head}{ren}, "
                f"{self.dtype}, {len(self.tensors())} tensors, {fmt_bytes(self.data_bytes)} of data")


def model_for_size(total_bytes: int, dtype: str = "F32", layers: int = 24) -> Model:
    """A layout whose data is close to ``total_bytes`` (within about one block).

    The hidden size is chosen so ``layers`` blocks hold most of the bytes (multiple of 64), the
    vocabulary is 32000 unless that would dominate a small model, and the number of blocks is
    then adjusted to land on the requested size.
    """
    if dtype not in ITEMSIZE:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(ITEMSIZE)}")
    params = max(1, total_bytes // ITEMSIZE[dtype])
    hidden = max(64, int(math.sqrt(0.85 * params / (12 * layers))) // 64 * 64)
    vocab = max(64, min(32000, int(0.075 * params / hidden) // 64 * 64))
    per_block = 12 * hidden * hidden + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    n_blocks = max(1, round((params - fixed) / per_block))
    return Model(hidden=hidden, intermediate=4 * hidden, layers=n_blocks, vocab=vocab, dtype=dtype)


def target_model(source: Model) -> Model:
    """The "target" of a transfer: the head has 128 more rows and one block's attention is renamed."""
    return replace(source, head_vocab=source.vocab + 128, renamed_block=source.layers // 2)


def header_bytes(tensors: Sequence[TensorDef], dtype: str, metadata: dict[str, str] | None = None) -> bytes:
    """The 8-byte length and JSON header of a safetensors file, padded with spaces to 8-byte alignment."""
    doc: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for t in tensors:
        n = math.prod(t.shape) * ITEMSIZE[dtype]
        doc[t.name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw


POOL_BYTES = 4 * MIB


def _value_pool(dtype: str, seed: int) -> memoryview:
    """Two copies of ``POOL_BYTES`` of random, always-finite values (any 8-aligned slice of it is valid).

    Random bytes whose top byte (sign and high exponent bits) is forced into 0x3C..0x3F or
    0xBC..0xBF: for F32 and BF16 that is magnitudes in [2**-7, 2), no zeros, NaNs or infinities.
    """
    buf = bytearray(random.Random(seed).randbytes(POOL_BYTES))
    step = ITEMSIZE[dtype]
    table = bytes((b & 0x80) | 0x3C | (b & 0x03) for b in range(256))
    buf[step - 1 :: step] = bytes(buf[step - 1 :: step]).translate(table)
    return memoryview(bytes(buf) * 2)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _write_file(path: Path, tensors: Sequence[TensorDef], dtype: str, pool: memoryview,
                metadata: dict[str, str], first_index: int) -> None:
    """Write one safetensors file to ``path.partial``, fsync it and rename it into place."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, memoryview(header_bytes(tensors, dtype, metadata)))
        for i, t in enumerate(tensors, start=first_index):
            remaining = math.prod(t.shape) * ITEMSIZE[dtype]
            start = (i * 1_000_003 * 8) % POOL_BYTES  # each tensor starts elsewhere in the pool
            while remaining:
                n = min(remaining, POOL_BYTES)
                _write_all(fd, pool[start : start + n])
                remaining -= n
        os.fsync(fd)  # no writeback of this file overlaps the measurements that follow
    finally:
        os.close(fd)
    os.replace(partial, path)


def _expected_size(tensors: Sequence[TensorDef], dtype: str, metadata: dict[str, str]) -> int:
    return len(header_bytes(tensors, dtype, metadata)) + sum(math.prod(t.shape) for t in tensors) * ITEMSIZE[dtype]


def _is_cached(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


METADATA = {"format": "pt", "generator": "ckptsurgeon tests/perf"}


def write_safetensors(path: Path, model: Model, seed: int = 0) -> bool:
    """Write ``model`` as one safetensors file unless an identical one is already there; True if written."""
    tensors = model.tensors()
    if _is_cached(path, _expected_size(tensors, model.dtype, METADATA)):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_file(path, tensors, model.dtype, _value_pool(model.dtype, seed), METADATA, 0)
    return True


def split_shards(tensors: Sequence[TensorDef], n_shards: int, itemsize: int) -> list[list[TensorDef]]:
    """Contiguous groups of tensors of roughly equal bytes; every group holds at least one tensor."""
    if len(tensors) < n_shards:
        raise ValueError(f"{len(tensors)} tensors cannot fill {n_shards} shards")
    sizes = [math.prod(t.shape) * itemsize for t in tensors]
    shards: list[list[TensorDef]] = [[]]
    current, remaining = 0, sum(sizes)
    for i, (t, n) in enumerate(zip(tensors, sizes, strict=True)):
        shards_left = n_shards - len(shards) + 1  # including the current one
        tensors_left = len(tensors) - i
        if shards[-1] and shards_left > 1 and (
            current >= remaining / shards_left or tensors_left == shards_left - 1
        ):
            remaining -= current
            shards.append([])
            current = 0
        shards[-1].append(t)
        current += n
    return shards


def write_sharded(directory: Path, model: Model, n_shards: int, seed: int = 0) -> tuple[Path, bool]:
    """Write ``model`` as a Hugging Face sharded checkpoint (index + ``n_shards`` files) unless cached.

    Returns the index path and whether anything was written. The index is written last, so a
    present index means a complete checkpoint.
    """
    directory.mkdir(parents=True, exist_ok=True)
    index = directory / "model.safetensors.index.json"
    groups = split_shards(model.tensors(), n_shards, ITEMSIZE[model.dtype])
    names = [f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors" for k in range(n_shards)]
    cached = index.exists() and all(
        _is_cached(directory / name, _expected_size(group, model.dtype, METADATA))
        for name, group in zip(names, groups, strict=True)
    )
    if cached:
        return index, False
    pool = _value_pool(model.dtype, seed)
    first = 0
    weight_map: dict[str, str] = {}
    for name, group in zip(names, groups, strict=True):
        _write_file(directory / name, group, model.dtype, pool, METADATA, first)
        first += len(group)
        weight_map.update({t.name: name for t in group})
    doc = {"metadata": {"total_size": model.data_bytes}, "weight_map": weight_map}
    partial = index.with_name(index.name + ".partial")
    partial.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(partial, index)
    return index, True


# MindSpore .ckpt: one protobuf ``Checkpoint`` message per value, as mindspore.save_checkpoint writes them:
#   Checkpoint  { repeated Value value = 1; }      Value { string tag = 1; TensorProto tensor = 2; }
#   TensorProto { repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3; }
# A parameter larger than the slice size becomes consecutive values of that many bytes, each with
# the parameter's tag and full dims. MindSpore 2.10's SLICE_SIZE is 512 * 1024 *KiB*
# (``_write_parameter_bytes_data`` cuts ``1024 * SLICE_SIZE`` bytes), so a parameter is one value up
# to 512 MiB.
MINDSPORE_SLICE_BYTES = 512 * MIB
MINDSPORE_TYPES = {"F32": "Float32", "BF16": "BFloat16"}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mindspore_value_header(tag: str, dims: Sequence[int], type_name: str, content_bytes: int) -> bytes:
    """One ``Checkpoint`` message up to its ``tensor_content`` bytes, which end it."""
    tensor = b"".join(b"\x08" + _varint(d) for d in dims)
    tensor += b"\x12" + _varint(len(type_name)) + type_name.encode("ascii") + b"\x1a" + _varint(content_bytes)
    tensor_len = len(tensor) + content_bytes
    raw_tag = tag.encode("utf-8")
    value = b"\x0a" + _varint(len(raw_tag)) + raw_tag + b"\x12" + _varint(tensor_len)
    return b"\x0a" + _varint(len(value) + tensor_len) + value + tensor


def _mindspore_values(tensors: Sequence[TensorDef], dtype: str, slice_bytes: int) -> list[tuple[int, bytes, int]]:
    """``(tensor index, value header, content bytes)`` of every value in file order."""
    out = []
    for i, t in enumerate(tensors):
        nbytes = math.prod(t.shape) * ITEMSIZE[dtype]
        for done in range(0, max(nbytes, 1), slice_bytes):
            n = min(slice_bytes, nbytes - done)
            out.append((i, mindspore_value_header(t.name, t.shape, MINDSPORE_TYPES[dtype], n), n))
    return out


def write_mindspore(path: Path, model: Model, seed: int = 0, slice_bytes: int = MINDSPORE_SLICE_BYTES) -> bool:
    """Write ``model`` as a plain MindSpore ``.ckpt`` unless one of the same size is there; True if written.

    The values are those :func:`write_safetensors` writes with the same ``seed``, so both files
    hold the same tensors. Streamed from the value pool like the safetensors files, fsynced, renamed
    into place.
    """
    tensors = model.tensors()
    values = _mindspore_values(tensors, model.dtype, slice_bytes)
    if _is_cached(path, sum(len(h) + n for _, h, n in values)):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    pool = _value_pool(model.dtype, seed)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        done: dict[int, int] = {}  # tensor index -> its bytes written so far
        for i, head, n in values:
            _write_all(fd, memoryview(head))
            start = (i * 1_000_003 * 8) % POOL_BYTES  # where write_safetensors starts this tensor in the pool
            offset = done.get(i, 0)
            done[i] = offset + n
            while n:
                at = start + offset % POOL_BYTES
                piece = min(n, 2 * POOL_BYTES - at, POOL_BYTES - offset % POOL_BYTES)
                _write_all(fd, pool[at : at + piece])
                offset += piece
                n -= piece
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)
    return True


# TensorFlow tensor bundle: ``PREFIX.index`` (an SSTable, LevelDB's table format as TensorFlow's table
# builder writes it, uncompressed) and the data shards ``PREFIX.data-0000K-of-0000N`` (tensor bytes, no
# padding). The table maps "" to a BundleHeaderProto {num_shards = 1; version = 3 {producer = 1}} and every
# tensor name, in byte order, to a BundleEntryProto {dtype = 1; shape = 2; shard_id = 3; offset = 4;
# size = 5; fixed32 crc32c = 6 (masked CRC-32C of the bytes)}; proto3 leaves zero fields out.
#   block  = entries (varint shared, varint unshared, varint value length, key suffix, value; a restart
#            point every 16 keys) | u32 restarts[] | u32 count, then type 0 and the block's masked CRC-32C
#   footer = varint handles (offset, size) of the metaindex and index blocks, zero-padded to 40 bytes,
#            u64 magic 0xdb4775248b80fb57
# A data block is cut once it reaches 256 KiB (TensorFlow's table::Options.block_size); the index block
# (a restart point at every key) maps a short separator between a block's last key and the next block's
# first (the last block: a short successor of its last key) to the block's handle. Sharded saving
# (several devices' bundles merged by MergeV2Checkpoints) leaves each tensor in its own shard at its
# offset there, num_shards in the header and shard_id in the entry.
TF_MAGIC = 0xDB4775248B80FB57
TF_BLOCK_BYTES = 256 * KIB
TF_RESTART_INTERVAL = 16
TF_DTYPES = {"F32": 1, "BF16": 14}  # DataType enum: DT_FLOAT, DT_BFLOAT16


def _crc_extend(crc: int, data: bytes) -> int:
    import google_crc32c  # imported only when a bundle is written

    return int(google_crc32c.extend(crc, data))


def _mask(crc: int) -> int:
    """LevelDB's CRC mask: rotate right by 15 bits, add a constant."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _pb_varint(field_no: int, value: int) -> bytes:
    return _varint(field_no << 3) + _varint(value) if value else b""


def _pb_bytes(field_no: int, raw: bytes) -> bytes:
    return _varint(field_no << 3 | 2) + _varint(len(raw)) + raw


def tf_entry(dtype: str, shape: Sequence[int], shard: int, offset: int, size: int, masked_crc: int) -> bytes:
    """One tensor's ``BundleEntryProto``, serialized as protobuf does (fields in order, zeros left out)."""
    dims = b"".join(_pb_bytes(2, _pb_varint(1, d)) for d in shape)
    return (_pb_varint(1, TF_DTYPES[dtype]) + _pb_bytes(2, dims) + _pb_varint(3, shard) + _pb_varint(4, offset)
            + _pb_varint(5, size) + b"\x35" + struct.pack("<I", masked_crc))


def tf_header(n_shards: int) -> bytes:
    return _pb_varint(1, n_shards) + _pb_bytes(3, _pb_varint(1, 1))


def _shared(a: bytes, b: bytes) -> int:
    """The length of the common prefix of two keys."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _sst_block(items: Sequence[tuple[bytes, bytes]], interval: int) -> bytes:
    out, restarts, last = bytearray(), [], b""
    for i, (k, v) in enumerate(items):
        shared = 0 if i % interval == 0 else _shared(last, k)
        if i % interval == 0:
            restarts.append(len(out))
        out += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
        last = k
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts) + 1}I", *restarts, len(restarts))


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's bytewise FindShortestSeparator: a short key in [start, limit)."""
    n = _shared(start, limit)
    if n < min(len(start), len(limit)) and start[n] < 0xFF and start[n] + 1 < limit[n]:
        return start[:n] + bytes([start[n] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """LevelDB's bytewise FindShortSuccessor: a short key >= ``key``."""
    for n, b in enumerate(key):
        if b != 0xFF:
            return key[:n] + bytes([b + 1])
    return key


def sstable(items: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The ``.index`` table of ``items`` (sorted by key), laid out as TensorFlow's TableBuilder lays it out."""
    out = bytearray()

    def emit(contents: bytes) -> bytes:
        handle = _varint(len(out)) + _varint(len(contents))
        out.extend(contents + b"\x00" + struct.pack("<I", _mask(_crc_extend(0, contents + b"\x00"))))
        return handle

    index: list[tuple[bytes, bytes]] = []
    pending: list[tuple[bytes, bytes]] = []
    size, last_handle = 0, None
    for k, v in items:
        if last_handle is not None:
            index.append((_shortest_separator(pending[-1][0], k), last_handle))
            pending, last_handle = [], None
        shared = 0 if len(pending) % TF_RESTART_INTERVAL == 0 else _shared(pending[-1][0], k)
        pending.append((k, v))
        size += len(_varint(shared)) + len(_varint(len(k) - shared)) + len(_varint(len(v))) + len(k) - shared + len(v)
        restarts = (len(pending) + TF_RESTART_INTERVAL - 1) // TF_RESTART_INTERVAL
        if size + 4 * restarts + 4 >= TF_BLOCK_BYTES:
            last_handle = emit(_sst_block(pending, TF_RESTART_INTERVAL))
            size = 0
    if pending and last_handle is None:
        last_handle = emit(_sst_block(pending, TF_RESTART_INTERVAL))
    if last_handle is not None:
        index.append((_short_successor(pending[-1][0]), last_handle))
    meta = emit(_sst_block([], 1))
    handles = meta + emit(_sst_block(index, 1))
    return bytes(out) + handles.ljust(40, b"\x00") + struct.pack("<Q", TF_MAGIC)


def tf_files(prefix: Path, n_shards: int) -> list[Path]:
    """A bundle's index and data shards."""
    data = [prefix.with_name(f"{prefix.name}.data-{k:05d}-of-{n_shards:05d}") for k in range(n_shards)]
    return [prefix.with_name(prefix.name + ".index"), *data]


def write_tf_bundle(prefix: Path, model: Model, n_shards: int = 1, seed: int = 0) -> bool:
    """Write ``model`` as a TensorFlow tensor bundle at ``prefix`` unless one with shards of the right
    sizes is there; True if written.

    The values are those :func:`write_safetensors` writes with the same ``seed``. With ``n_shards``
    > 1 the tensors are cut into contiguous groups of about equal bytes, one data file each, as a
    sharded save merges them. Every data file is fsynced and renamed into place, the index last.
    """
    tensors = model.tensors()
    itemsize = ITEMSIZE[model.dtype]
    groups = split_shards(tensors, n_shards, itemsize)
    index, *data = tf_files(prefix, n_shards)
    if index.exists() and all(_is_cached(d, sum(math.prod(t.shape) for t in g) * itemsize)
                              for d, g in zip(data, groups, strict=True)):
        return False
    prefix.parent.mkdir(parents=True, exist_ok=True)
    index.unlink(missing_ok=True)
    pool = _value_pool(model.dtype, seed)
    entries: dict[bytes, bytes] = {}
    i = 0
    for shard, (path, group) in enumerate(zip(data, groups, strict=True)):
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        offset = 0
        try:
            for t in group:
                nbytes = math.prod(t.shape) * itemsize
                start = (i * 1_000_003 * 8) % POOL_BYTES  # where write_safetensors starts this tensor in the pool
                crc, remaining = 0, nbytes
                while remaining:
                    piece = bytes(pool[start : start + min(remaining, POOL_BYTES)])
                    crc = _crc_extend(crc, piece)
                    _write_all(fd, memoryview(piece))
                    remaining -= len(piece)
                entries[t.name.encode()] = tf_entry(model.dtype, t.shape, shard, offset, nbytes, _mask(crc))
                offset += nbytes
                i += 1
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
    partial = index.with_name(index.name + ".partial")
    with open(partial, "wb") as f:
        f.write(sstable([(b"", tf_header(n_shards)), *sorted(entries.items())]))
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, index)
    return True


def header_size(path: Path) -> int:
    """Bytes before a safetensors file's data: the 8-byte length plus the JSON header."""
    with open(path, "rb") as f:
        return 8 + int(struct.unpack("<Q", f.read(8))[0])


def sharded_files(index: Path) -> list[Path]:
    """The index and every shard it names."""
    weight_map = json.loads(index.read_text())["weight_map"]
    return [index, *(index.parent / s for s in sorted(set(weight_map.values())))]


# --------------------------------------------------------------------------------------------
# Measured child processes
# --------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One child process run: wall time, peak RSS from ``wait4`` and a sampled peak of anonymous RSS."""

    argv: list[str]
    wall_s: float
    maxrss_kib: int  # ru_maxrss: resident pages of any kind, file-backed (mmap) ones included
    peak_anon_kib: int | None  # sampled every few ms from /proc/<pid>/status (RssAnon); may miss short spikes
    exit_code: int
    cpu_s: float = 0.0  # user + system CPU time (ru_utime + ru_stime); in-kernel copying counts as system
    stderr: str = ""

    @property
    def maxrss_mib(self) -> float:
        return self.maxrss_kib / KIB

    @property
    def peak_anon_mib(self) -> float | None:
        return None if self.peak_anon_kib is None else self.peak_anon_kib / KIB

    def check(self) -> Measurement:
        """Raise if the child failed, quoting its stderr."""
        if self.exit_code != 0:
            raise RuntimeError(f"{' '.join(self.argv)} exited with {self.exit_code}:\n{self.stderr[-2000:]}")
        return self


class _AnonSampler(threading.Thread):
    """Polls ``/proc/<pid>/status`` for RssAnon until stopped; keeps the largest value seen."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.path = f"/proc/{pid}/status"
        self.interval = interval
        self.peak: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    for line in f:
                        if line.startswith(b"RssAnon:"):
                            kib = int(line.split()[1])
                            self.peak = kib if self.peak is None else max(self.peak, kib)
                            break
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            self.stop.wait(self.interval)


def run_measured(argv: Sequence[str], *, stdout: str | os.PathLike[str] = os.devnull,
                 env: dict[str, str] | None = None, sample_interval: float = 0.005) -> Measurement:
    """Run ``argv`` as a child process; measure wall time and peak RSS with ``os.wait4``.

    The child is started with ``posix_spawnp`` (stdin from /dev/null, stdout to ``stdout``, stderr
    to a temporary file that is read back). The parent first waits with ``waitid(WNOWAIT)`` so the
    clock stops the moment the child exits and the RSS sampler stops before the pid is released,
    then reaps it with ``wait4`` for its resource usage.
    """
    argv = [os.fspath(a) for a in argv]
    with tempfile.TemporaryFile() as err:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.fspath(stdout), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
        ]
        start = time.perf_counter()
        pid = os.posix_spawnp(argv[0], argv, dict(os.environ if env is None else env), file_actions=actions)
        sampler = _AnonSampler(pid, sample_interval)
        sampler.start()
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        _, status, usage = os.wait4(pid, 0)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return Measurement(argv, wall, usage.ru_maxrss, sampler.peak, os.waitstatus_to_exitcode(status),
                       usage.ru_utime + usage.ru_stime, stderr)


def ckpt_command() -> list[str]:
    """How to start the installed ``ckpt``: its script beside this interpreter, else the one on PATH.

    The script next to ``sys.executable`` skips wrappers such as pyenv shims, which would add
    their own start-up time to every measurement.
    """
    beside = Path(sys.executable).parent / "ckpt"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("ckpt")
    if found:
        return [found]
    return [sys.executable, "-m", "ckptsurgeon"]


def ckpt_env(bytecode_cache: Path | None) -> dict[str, str]:
    """The environment for measured ``ckpt`` runs.

    With ``bytecode_cache``, compiled bytecode is kept (in that directory, via
    ``PYTHONPYCACHEPREFIX``, so the checkout is not touched) even where ``PYTHONDONTWRITEBYTECODE``
    is set: an installed package has its bytecode, and compiling ckptsurgeon's sources on every
    start would be measured otherwise. ``None`` leaves the environment as it is.
    """
    env = dict(os.environ)
    if bytecode_cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode_cache)
    return env


@dataclass
class Summary:
    """Several runs of one command, reduced to median/min wall time and the highest peak RSS."""

    label: str
    runs: list[Measurement] = field(default_factory=list)

    @property
    def wall_median(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def wall_min(self) -> float:
        return min(r.wall_s for r in self.runs)

    @property
    def cpu_median(self) -> float:
        return statistics.median(r.cpu_s for r in self.runs)

    @property
    def maxrss_mib(self) -> float:
        return max(r.maxrss_mib for r in self.runs)

    @property
    def anon_mib(self) -> float | None:
        values = [r.peak_anon_mib for r in self.runs if r.peak_anon_mib is not None]
        return max(values) if values else None


def repeat(label: str, argv: Sequence[str], times: int, *, warmup: bool = True,
           stdout: str | os.PathLike[str] = os.devnull, env: dict[str, str] | None = None) -> Summary:
    """Run ``argv`` ``times`` times (each must succeed), after one unmeasured warm-up run."""
    summary = Summary(label)
    if warmup:
        run_measured(argv, stdout=stdout, env=env).check()
    for _ in range(times):
        summary.runs.append(run_measured(argv, stdout=stdout, env=env).check())
    return summary


# --------------------------------------------------------------------------------------------
# The durable-copy floor
# --------------------------------------------------------------------------------------------


def durable_copy(src: Path, dst: Path) -> Measurement:
    """Time ``cp SRC DST && sync DST`` (a copy, then an fsync of the copy), measured like ``ckpt``.

    ``sync FILE`` fsyncs just that file (GNU coreutils >= 8.24). Without ``cp``/``sync`` a small
    Python child does the same with ``shutil.copyfile`` and ``os.fsync``.
    """
    if shutil.which("cp") and shutil.which("sync"):
        argv = ["sh", "-c", 'cp -- "$1" "$2" && sync -- "$2"', "sh", str(src), str(dst)]
    else:
        code = ("import os, shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2]); "
                "fd = os.open(sys.argv[2], os.O_RDONLY); os.fsync(fd); os.close(fd)")
        argv = [sys.executable, "-c", code, str(src), str(dst)]
    return run_measured(argv).check()


# --------------------------------------------------------------------------------------------
# Bytes read from input files
# --------------------------------------------------------------------------------------------


@dataclass
class InputIO:
    """What one run did with its input files."""

    method: str
    read_bytes: int = 0  # read/pread/readv (strace); rchar delta (procio), which also counts copy_file_range
    data_read_bytes: int | None = None  # of those, bytes at or after a file's data start (strace only)
    copied_bytes: int | None = None  # copy_file_range/sendfile/splice out of an input file (strace only)
    mapped_bytes: int | None = None  # lengths of mmap calls on an input file (strace only)
    opens: int | None = None  # openat calls on an input file (strace only)


_STRACE_CALLS = "read,pread64,readv,preadv,preadv2,lseek,mmap,openat,copy_file_range,sendfile,splice"
_FD_ARG = re.compile(r"^(?P<fd>\d+)<(?P<path>[^>]*)>")  # "3</tmp/x.safetensors>" with strace -y
_RESULT = re.compile(r"\)\s+=\s+(?P<ret>-?\d+|0x[0-9a-f]+)")
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<call>\w+)\((?P<rest>.*)$")
_RESUMED = re.compile(r"^(?P<pid>\d+)\s+<\.\.\. (?P<call>\w+) resumed>(?P<rest>.*)$")
_UNFINISHED = " <unfinished ...>"


def _split_args(args: str) -> list[str]:
    """Split a strace argument list on top-level commas (not inside [], {}, <>, () or quotes)."""
    out: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for i, ch in enumerate(args):
        if quoted:
            quoted = not (ch == '"' and args[i - 1] != "\\")
        elif ch == '"':
            quoted = True
        elif ch in "[{<(":
            depth += 1
        elif ch in "]}>)":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _calls(lines: Iterable[str]) -> Iterable[tuple[str, list[str], int]]:
    """``(call, args, result)`` of every successful call in ``strace -f -y`` output.

    Interrupted calls (``<unfinished ...>`` / ``<... resumed>``) are stitched back together per pid.
    """
    pending: dict[str, str] = {}
    for raw in lines:
        line = raw.rstrip("\n")
        m = _LINE.match(line)
        if m and line.endswith(_UNFINISHED):
            pending[m["pid"]] = f"{m['call']}({m['rest'][: -len(_UNFINISHED)]}"
            continue
        r = _RESUMED.match(line)
        if r:
            m = _LINE.match(f"{r['pid']} {pending.pop(r['pid'], r['call'] + '(')}{r['rest']}")
        if not m:
            continue
        res = _RESULT.search(m["rest"])
        if res and not res["ret"].startswith("-"):
            yield m["call"], _split_args(m["rest"][: res.start()]), int(res["ret"], 0)


def parse_strace(lines: Iterable[str], data_start: dict[Path, int]) -> InputIO:
    """Sum what a traced run did with its input files (the keys of ``data_start``).

    ``data_start`` gives each input's first tensor-data offset (a safetensors file's header size;
    a file's size when all of it is metadata). File positions are followed through openat, lseek
    and read, so bytes read at or after that offset are counted apart: they are tensor data.
    """
    starts = {os.path.realpath(p): n for p, n in data_start.items()}
    io = InputIO("strace", data_read_bytes=0, copied_bytes=0, mapped_bytes=0, opens=0)
    position: dict[int, int] = {}

    def on_input(arg: str) -> tuple[int, str] | None:
        m = _FD_ARG.match(arg)
        return (int(m["fd"]), m["path"]) if m and m["path"] in starts else None

    def count_read(path: str, offset: int, n: int) -> None:
        io.read_bytes += n
        io.data_read_bytes = (io.data_read_bytes or 0) + max(0, offset + n - max(offset, starts[path]))

    for call, args, ret in _calls(lines):
        if call == "openat":
            name = re.match(r'^"(?P<name>(?:[^"\\]|\\.)*)"', args[1]) if len(args) > 1 else None
            if name and os.path.realpath(name["name"]) in starts:
                io.opens = (io.opens or 0) + 1
                position[ret] = 0
            continue
        hit = on_input(args[0]) if args else None
        if call == "lseek" and hit:
            position[hit[0]] = ret
        elif call in ("read", "readv") and hit:
            offset = position.get(hit[0], 0)
            count_read(hit[1], offset, ret)
            position[hit[0]] = offset + ret
        elif call in ("pread64", "preadv", "preadv2") and hit and len(args) > 3:
            count_read(hit[1], int(args[3], 0), ret)
        elif (call in ("copy_file_range", "splice") and hit) or (
            call == "sendfile" and len(args) > 1 and on_input(args[1])
        ):
            io.copied_bytes = (io.copied_bytes or 0) + ret
        elif call == "mmap" and len(args) > 4 and on_input(args[4]):
            io.mapped_bytes = (io.mapped_bytes or 0) + int(args[1], 0)
    return io


def strace_input_io(argv: Sequence[str], data_start: dict[Path, int], workdir: Path,
                    env: dict[str, str] | None = None) -> InputIO:
    """Run ``argv`` under ``strace -f -y`` and sum what it read, copied and mapped from its inputs."""
    trace = workdir / "strace.log"
    cmd = ["strace", "-f", "-y", "-qq", "-s", "0", "-e", f"trace={_STRACE_CALLS}", "-o", str(trace), "--", *argv]
    try:
        run_measured(cmd, env=env).check()
        with open(trace, errors="replace") as f:
            return parse_strace(f, data_start)
    finally:
        trace.unlink(missing_ok=True)


# Runs the CLI in-process and reports the rchar of /proc/self/io around one run. A warm-up run
# first (a dry run of the same transfer, say) does every lazy import, so the difference is the
# measured run's own reading.
_PROCIO_WRAPPER = r"""
import json, sys
def rchar():
    with open("/proc/self/io") as f:
        return dict(line.split(":") for line in f)["rchar"]
import ckptsurgeon.cli.app as app
def run(args):
    try:
        app.main(args)
    except SystemExit as exc:
        return exc.code
warmup, args = json.loads(sys.argv[1]), sys.argv[2:]
if warmup:
    run(warmup)
before = int(rchar())
try:
    code = run(args)
finally:
    sys.stderr.write("CKPT_PERF_IO rchar=%d\n" % (int(rchar()) - before))
sys.exit(code)
"""


def procio_input_io(ckpt_args: Sequence[str], warmup_args: Sequence[str] = (),
                    env: dict[str, str] | None = None) -> InputIO:
    """Run ``ckpt ARGS`` in-process in a child Python and read the ``rchar`` it added (an upper bound).

    ``rchar`` counts every byte the process got from read-like calls, ``copy_file_range``
    included, from any file (not only the inputs); bytes reached through ``mmap`` do not appear.
    ``warmup_args`` run first, unmeasured, so lazy imports are not counted.
    """
    argv = [sys.executable, "-c", _PROCIO_WRAPPER, json.dumps(list(warmup_args)), *ckpt_args]
    run = run_measured(argv, env=env).check()
    m = re.search(r"CKPT_PERF_IO rchar=(\d+)", run.stderr)
    if not m:
        raise RuntimeError(f"no I/O line from the wrapper:\n{run.stderr[-2000:]}")
    return InputIO("/proc/self/io rchar", read_bytes=int(m[1]))


def input_io(argv: Sequence[str], ckpt_args: Sequence[str], warmup_args: Sequence[str],
             data_start: dict[Path, int], workdir: Path, method: str = "auto",
             env: dict[str, str] | None = None) -> InputIO:
    """What ``ckpt ARGS`` takes from its inputs: with strace when there is one (or asked), else /proc/self/io."""
    if method == "strace" or (method == "auto" and shutil.which("strace")):
        return strace_input_io(argv, data_start, workdir, env)
    return procio_input_io(ckpt_args, warmup_args, env)
