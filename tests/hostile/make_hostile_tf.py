"""Write the hostile TensorFlow corpus: small tensor bundles that ckptsurgeon must refuse cleanly.

Run ``python tests/hostile/make_hostile_tf.py [DIR]`` (default: ``tf/`` beside this script). The
output is deterministic (no randomness, no clock): the same script writes the same bytes. Each case
is a directory holding a bundle with the prefix ``ckpt`` (``ckpt.index``, ``ckpt.data-K-of-N``) and,
for the pointer cases, a ``checkpoint`` file. ``CASES.json`` maps each case to ``{"target",
"commands", "file", "message", "why"}``: the path to give ``ckpt`` (relative to the case's
directory: the prefix, or ``.`` for the directory), the commands that must refuse it (``inspect``,
``inspect-hash``, ``convert``), the file of the case the one error line must name, and a fragment
of that line; every refusal exits 3. Hostile sizes are only declared; no file is over a few hundred
bytes.

Every case is one damage done to one valid bundle (:func:`valid`): ``w`` [2, 3] and ``b`` [3]
(float32), and ``s`` [4, 2] (float32) stored as two slices, rows [0:2] and [2:4], each under its
own slice key; the index is one data block (a restart point every 16 keys), an empty metaindex
block, the index block and the footer, as TensorFlow's table builder lays them out.

The index table (:func:`index_file` builds it, with the damage asked for):

- ``bad_block_crc``: one byte of the data block flipped, its masked CRC-32C left as it was;
- ``bad_footer_magic``: the footer's magic number changed in its last byte;
- ``restart_past_block``: the data block's second restart point lies past the block;
- ``restart_not_ascending``: a restart point every key, two of them swapped;
- ``keys_out_of_order``: ``b`` after ``w`` in the data block (its CRC correct);
- ``index_handle_past_end``: the index block's handle of the data block at offset 2**20;
- ``truncated_index``: the index cut in the middle.

(Without its footer's magic number an ``.index`` is claimed by no format, so ``bad_footer_magic``
and ``truncated_index`` are refused as a file ckptsurgeon does not read, naming the ``.index``.)

The entries (``BundleEntryProto``) and the header (``BundleHeaderProto``):

- ``entry_past_shard``: ``w``'s range runs 8 bytes past the end of its shard;
- ``missing_shard``: two shards declared, ``b`` in the second, which does not exist;
- ``data_truncated``: the data file 20 bytes shorter than the index says;
- ``entry_crc_mismatch``: one byte of ``w`` flipped in the data file (found when the bytes are read:
  ``convert`` and ``inspect --hash``);
- ``slice_gap``: ``s``'s slices are rows [0:1] and [2:4] (row 1 missing);
- ``slice_overlap``: ``s``'s slices are rows [0:3] and [2:3] (row 2 twice, as many values in all);
- ``slice_missing``: ``s`` lists a third slice, rows [0:4] of column 0, that has no entry;
- ``slice_wrong_size``: the second slice's entry holds 12 bytes, not 16;
- ``slices_share_bytes``: ``s``'s second slice points at its first slice's bytes (a tensor that
  would declare more bytes than its file holds);
- ``entries_share_bytes``: ``b``'s entry points inside ``w``'s bytes;
- ``negative_dim``: ``w``'s dims [-1, 3] (a ten-byte two's complement varint);
- ``dims_overflow``: ``w``'s dims [2**40, 2**40], whose byte count overflows;
- ``varint_11_bytes``: ``w``'s entry holds an offset varint of 11 bytes;
- ``unknown_dtype``: ``w``'s dtype enum 99;
- ``big_endian``: the header's endianness BIG (1);
- ``zero_shards``: the header's num_shards 0;
- ``string_bad_checksum``: a DT_STRING scalar whose length checksum is wrong (its entry's CRC-32C
  computed over the bytes as stored);
- ``string_count_past_size``: a DT_STRING entry of shape [1000000] in 10 bytes.

The ``checkpoint`` pointer file (the case's directory is given):

- ``pointer_outside``: ``model_checkpoint_path: "../x"``;
- ``pointer_missing``: ``model_checkpoint_path: "ckpt-9"``, which has no ``.index``.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from ckptsurgeon.formats._protobuf import FIXED32, VARINT, key, length_delimited, varint  # noqa: E402
from ckptsurgeon.formats.tf._crc32c import crc32c, mask  # noqa: E402
from ckptsurgeon.formats.tf.reader import slice_key  # noqa: E402
from ckptsurgeon.formats.tf.writer import string_scalar  # noqa: E402

CASES_FILE = "CASES.json"
PREFIX = "ckpt"
INDEX = f"{PREFIX}.index"
MAGIC = 0xDB4775248B80FB57
DT_FLOAT, DT_STRING = 1, 7
RESTART_INTERVAL = 16

# name -> {"target", "commands", "file", "message", "why"}; filled by @case
CASES: dict[str, dict[str, object]] = {}
BUILDERS: list[tuple[str, Callable[[], dict[str, bytes]]]] = []


def case(name: str, message: str, why: str, *, file: str = INDEX, target: str = PREFIX,
         commands: tuple[str, ...] = ("inspect", "convert")) -> Callable:
    """Register a builder returning the files of the case ``name`` (file name -> bytes)."""

    def register(build: Callable[[], dict[str, bytes]]) -> Callable[[], dict[str, bytes]]:
        assert name not in CASES, name
        CASES[name] = {"target": target, "commands": list(commands), "file": file, "message": message, "why": why}
        BUILDERS.append((name, build))
        return build

    return register


# --------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------
def block(items: list[tuple[bytes, bytes]], restarts: list[int] | None = None,
          interval: int = RESTART_INTERVAL) -> bytes:
    """A block's contents: prefix-compressed entries, then the restart array (``restarts`` overrides it)."""
    out, points, last = bytearray(), [], b""
    for i, (k, v) in enumerate(items):
        shared = 0
        if i % interval == 0:
            points.append(len(out))
        else:
            while shared < min(len(k), len(last)) and k[shared] == last[shared]:
                shared += 1
        out += varint(shared) + varint(len(k) - shared) + varint(len(v)) + k[shared:] + v
        last = k
    points = restarts if restarts is not None else points or [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in points) + struct.pack("<I", len(points))


def sealed(contents: bytes) -> bytes:
    """A block with its trailer: type 0 (stored), masked CRC-32C of the contents and the type."""
    return contents + b"\x00" + struct.pack("<I", mask(crc32c(contents + b"\x00")))


def index_file(items: list[tuple[bytes, bytes]], *, restarts: list[int] | None = None,
               interval: int = RESTART_INTERVAL, handle: tuple[int, int] | None = None) -> bytes:
    """The ``.index`` table of ``items`` (in the order given) in one data block, keyed in the index
    block by its greatest key; ``restarts``, ``interval`` and ``handle`` (the index block's handle of
    the data block) damage it."""
    data = sealed(block(items, restarts, interval))
    meta = sealed(block([]))
    at_data = handle if handle is not None else (0, len(data) - 5)
    index = sealed(block([(max(k for k, _ in items), varint(at_data[0]) + varint(at_data[1]))]))
    meta_at, index_at = len(data), len(data) + len(meta)
    footer = (varint(meta_at) + varint(len(meta) - 5) + varint(index_at) + varint(len(index) - 5)).ljust(40, b"\0")
    return data + meta + index + footer + struct.pack("<Q", MAGIC)


# --------------------------------------------------------------------------------------------------
# the bundle
# --------------------------------------------------------------------------------------------------
Extent = tuple[tuple[int, int | None], ...]


def entry(dtype: int, shape: list[int], *, shard: int = 0, offset: int = 0, size: int = 0, crc: int | None = None,
          slices: tuple[Extent, ...] = ()) -> bytes:
    """A ``BundleEntryProto`` (fields left at 0 are not written, as protobuf leaves them out)."""
    dims = b"".join(length_delimited(2, key(1, VARINT) + varint(d)) for d in shape)
    out = key(1, VARINT) + varint(dtype) + length_delimited(2, dims)
    for number, value in ((3, shard), (4, offset), (5, size)):
        if value:
            out += key(number, VARINT) + varint(value)
    if crc is not None:
        out += key(6, FIXED32) + struct.pack("<I", crc)
    for extent in slices:
        out += length_delimited(7, b"".join(
            length_delimited(1, (key(1, VARINT) + varint(s) if s else b"")
                             + (b"" if n is None else key(2, VARINT) + varint(n))) for s, n in extent))
    return out


def header(shards: int = 1, endianness: int = 0) -> bytes:
    """A ``BundleHeaderProto``: num_shards, endianness (0: little), ``version {producer: 1}``."""
    out = key(1, VARINT) + varint(shards)
    if endianness:
        out += key(2, VARINT) + varint(endianness)
    return out + length_delimited(3, key(1, VARINT) + varint(1))


def checksum(data: bytes) -> int:
    return mask(crc32c(data))


W = np.arange(6, dtype="<f4").tobytes()
B = np.arange(10, 13, dtype="<f4").tobytes()
S = np.arange(20, 28, dtype="<f4").tobytes()
TOP: Extent = ((0, 2), (0, None))
BOTTOM: Extent = ((2, 2), (0, None))


@dataclass
class Bundle:
    """A bundle being built: the index's items by key and each shard's bytes."""

    items: dict[bytes, bytes] = field(default_factory=dict)
    shards: list[bytearray] = field(default_factory=lambda: [bytearray()])

    def add(self, name: bytes, dtype: int, shape: list[int], data: bytes, shard: int = 0,
            slices: tuple[Extent, ...] = ()) -> None:
        offset = len(self.shards[shard])
        self.shards[shard] += data
        self.items[name] = entry(dtype, shape, shard=shard, offset=offset, size=len(data), crc=checksum(data),
                                 slices=slices)

    def sorted_items(self) -> list[tuple[bytes, bytes]]:
        return sorted(self.items.items())

    def files(self, index: bytes | None = None) -> dict[str, bytes]:
        out = {INDEX: index_file(self.sorted_items()) if index is None else index}
        n = len(self.shards)
        out.update({f"{PREFIX}.data-{k:05d}-of-{n:05d}": bytes(d) for k, d in enumerate(self.shards)})
        return out


def valid() -> Bundle:
    """``w`` [2, 3], ``b`` [3] and ``s`` [4, 2] in two slices, float32, one shard."""
    bundle = Bundle()
    bundle.items[b""] = header()
    bundle.add(b"w", DT_FLOAT, [2, 3], W)
    bundle.add(b"b", DT_FLOAT, [3], B)
    bundle.items[b"s"] = entry(DT_FLOAT, [4, 2], slices=(TOP, BOTTOM))
    bundle.add(slice_key("s", TOP), DT_FLOAT, [2, 2], S[:16])
    bundle.add(slice_key("s", BOTTOM), DT_FLOAT, [2, 2], S[16:])
    return bundle


def sliced(*extents: Extent) -> Bundle:
    """The valid bundle with ``s``'s slices replaced by ``extents`` (each with its right bytes)."""
    bundle = valid()
    for k in [k for k in bundle.items if k.startswith(b"\x00")]:
        del bundle.items[k]
    bundle.items[b"s"] = entry(DT_FLOAT, [4, 2], slices=extents)
    rows = np.frombuffer(S, dtype="<f4").reshape(4, 2)
    for extent in extents:
        (start, length), _ = extent
        assert length is not None
        bundle.add(slice_key("s", extent), DT_FLOAT, [length, 2], rows[start : start + length].tobytes())
    return bundle


def flip(data: bytes | bytearray, at: int) -> bytes:
    return bytes(data[:at]) + bytes([data[at] ^ 0x01]) + bytes(data[at + 1 :])


# --------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------
@case("bad_block_crc", "CRC-32C mismatch", "one byte of the data block flipped, its CRC left as it was")
def bad_block_crc() -> dict[str, bytes]:
    bundle = valid()
    index = index_file(bundle.sorted_items())
    return bundle.files(flip(index, 7))


@case("bad_footer_magic", "the footer's magic number is wrong", "the footer's magic number changed in its last byte")
def bad_footer_magic() -> dict[str, bytes]:
    bundle = valid()
    index = index_file(bundle.sorted_items())
    return bundle.files(flip(index, len(index) - 1))


@case("restart_past_block", "restart array", "the second restart point lies past the block")
def restart_past_block() -> dict[str, bytes]:
    bundle = valid()
    return bundle.files(index_file(bundle.sorted_items(), restarts=[0, 1 << 16]))


@case("restart_not_ascending", "restart array", "a restart point every key, two of them swapped")
def restart_not_ascending() -> dict[str, bytes]:
    bundle = valid()
    items = bundle.sorted_items()
    points = list(np.cumsum([0] + [len(block([kv])) - 8 for kv in items[:-1]]))
    points[1], points[2] = points[2], points[1]
    return bundle.files(index_file(items, restarts=[int(p) for p in points], interval=1))


@case("keys_out_of_order", "not in ascending order", "b after w in the data block, its CRC right")
def keys_out_of_order() -> dict[str, bytes]:
    bundle = valid()
    items = bundle.sorted_items()
    items = [kv for kv in items if kv[0] != b"b"] + [(b"b", bundle.items[b"b"])]
    return bundle.files(index_file(items))


@case("index_handle_past_end", "runs past the end of the table", "the data block's handle at offset 2**20")
def index_handle_past_end() -> dict[str, bytes]:
    bundle = valid()
    items = bundle.sorted_items()
    size = len(block(items))
    return bundle.files(index_file(items, handle=(1 << 20, size)))


@case("truncated_index", "not a readable TensorFlow index", "the index cut in the middle")
def truncated_index() -> dict[str, bytes]:
    bundle = valid()
    index = index_file(bundle.sorted_items())
    return bundle.files(index[: len(index) // 2])


# --------------------------------------------------------------------------------------------------
# entries and header
# --------------------------------------------------------------------------------------------------
@case("entry_past_shard", "ends at byte 76; the shard holds 68", "w's range runs 8 bytes past the end of its shard",
      file=f"{PREFIX}.data-00000-of-00001")
def entry_past_shard() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b"w"] = entry(DT_FLOAT, [2, 3], offset=len(bundle.shards[0]) - 16, size=24, crc=checksum(W))
    return bundle.files()


@case("missing_shard", "ckpt.data-00001-of-00002 does not exist", "two shards declared; b in the second, absent")
def missing_shard() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b""] = header(shards=2)
    bundle.shards.append(bytearray())
    bundle.add(b"b", DT_FLOAT, [3], B, shard=1)
    files = bundle.files()
    del files[f"{PREFIX}.data-00001-of-00002"]
    return files


@case("data_truncated", "(truncated?)", "the data file 20 bytes shorter than the index says",
      file=f"{PREFIX}.data-00000-of-00001")
def data_truncated() -> dict[str, bytes]:
    bundle = valid()
    files = bundle.files()
    name = f"{PREFIX}.data-00000-of-00001"
    files[name] = files[name][:-20]
    return files


@case("entry_crc_mismatch", "CRC-32C mismatch", "one byte of w flipped in the data file",
      file=f"{PREFIX}.data-00000-of-00001", commands=("convert", "inspect-hash"))
def entry_crc_mismatch() -> dict[str, bytes]:
    bundle = valid()
    files = bundle.files()
    name = f"{PREFIX}.data-00000-of-00001"
    files[name] = flip(files[name], 5)
    return files


@case("slice_gap", "do not tile", "s's slices are rows [0:1] and [2:4]; row 1 is missing")
def slice_gap() -> dict[str, bytes]:
    return sliced(((0, 1), (0, None)), BOTTOM).files()


@case("slice_overlap", "overlap", "s's slices are rows [0:3] and [2:3]: row 2 twice, as many values in all")
def slice_overlap() -> dict[str, bytes]:
    return sliced(((0, 3), (0, None)), ((2, 1), (0, None))).files()


@case("slice_missing", "has no entry", "s lists a third slice (column 0) that has no entry")
def slice_missing() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b"s"] = entry(DT_FLOAT, [4, 2], slices=(TOP, BOTTOM, ((0, None), (0, 1))))
    return bundle.files()


@case("slice_wrong_size", "holds 12 bytes", "the second slice's entry holds 12 bytes, not 16")
def slice_wrong_size() -> dict[str, bytes]:
    bundle = valid()
    bundle.add(slice_key("s", BOTTOM), DT_FLOAT, [2, 2], S[16:28])
    return bundle.files()


@case("slices_share_bytes", "two of its slices share the bytes at offset 36", "s's second slice points at the "
      "bytes of its first (its CRC right for them)", file=f"{PREFIX}.data-00000-of-00001")
def slices_share_bytes() -> dict[str, bytes]:
    bundle = valid()
    offset = bytes(bundle.shards[0]).index(S[:16])
    bundle.items[slice_key("s", BOTTOM)] = entry(DT_FLOAT, [2, 2], offset=offset, size=16, crc=checksum(S[:16]))
    return bundle.files()


@case("entries_share_bytes", "tensors 'w' and 'b' share the bytes at offset 8", "b's entry points inside w's bytes",
      file=f"{PREFIX}.data-00000-of-00001")
def entries_share_bytes() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b"b"] = entry(DT_FLOAT, [3], offset=8, size=12, crc=checksum(W[8:20]))
    return bundle.files()


@case("negative_dim", "negative dim", "w's dims [-1, 3]")
def negative_dim() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b"w"] = entry(DT_FLOAT, [-1, 3], size=24, crc=checksum(W))
    return bundle.files()


@case("dims_overflow", "overflows", "w's dims [2**40, 2**40]")
def dims_overflow() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b"w"] = entry(DT_FLOAT, [1 << 40, 1 << 40], size=24, crc=checksum(W))
    return bundle.files()


@case("varint_11_bytes", "longer than 10 bytes", "w's entry holds an offset varint of 11 bytes")
def varint_11_bytes() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b"w"] = entry(DT_FLOAT, [2, 3]) + key(4, VARINT) + b"\x80" * 10 + b"\x00" + key(5, VARINT) + b"\x18"
    return bundle.files()


@case("unknown_dtype", "TensorFlow dtype 99", "w's dtype enum 99")
def unknown_dtype() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b"w"] = entry(99, [2, 3], size=24, crc=checksum(W))
    return bundle.files()


@case("big_endian", "big-endian", "the header's endianness BIG (1)")
def big_endian() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b""] = header(endianness=1)
    return bundle.files()


@case("zero_shards", "declares 0 shards", "the header's num_shards 0")
def zero_shards() -> dict[str, bytes]:
    bundle = valid()
    bundle.items[b""] = header(shards=0)
    return bundle.files()


@case("string_bad_checksum", "do not match their checksum", "a string scalar whose length checksum is wrong",
      file=f"{PREFIX}.data-00000-of-00001")
def string_bad_checksum() -> dict[str, bytes]:
    bundle = valid()
    data, _ = string_scalar("hello")
    data = flip(data, 2)  # inside the masked CRC-32C of the length
    bundle.add(b"note", DT_STRING, [], data)
    return bundle.files()


@case("string_count_past_size", "1000000 strings in 10 bytes", "a string entry of shape [1000000] holding 10 bytes",
      file=f"{PREFIX}.data-00000-of-00001")
def string_count_past_size() -> dict[str, bytes]:
    bundle = valid()
    data, _ = string_scalar("hello")
    bundle.add(b"note", DT_STRING, [1000000], data)
    return bundle.files()


def strings(count: int) -> tuple[bytes, int]:
    """A DT_STRING entry of ``count`` empty strings, as TensorFlow writes one, and its entry checksum."""
    lengths = crc32c(bytes(4 * count))
    checksum_ = struct.pack("<I", mask(lengths))
    return bytes(count) + checksum_, mask(crc32c(checksum_, lengths))


# --------------------------------------------------------------------------------------------------
# the checkpoint file
# --------------------------------------------------------------------------------------------------
def pointer(name: str) -> bytes:
    return f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n'.encode()


@case("pointer_outside", "outside its directory", 'a checkpoint file naming "../x"', file="checkpoint", target=".")
def pointer_outside() -> dict[str, bytes]:
    return {**valid().files(), "checkpoint": pointer("../x")}


@case("pointer_missing", "does not exist", 'a checkpoint file naming "ckpt-9", which has no .index',
      file="checkpoint", target=".")
def pointer_missing() -> dict[str, bytes]:
    return {**valid().files(), "checkpoint": pointer("ckpt-9")}


# --------------------------------------------------------------------------------------------------
def build(out: Path) -> None:
    """Write every case (a directory) and ``CASES.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, make in BUILDERS:
        where = out / name
        where.mkdir(exist_ok=True)
        for stale in where.iterdir():
            stale.unlink()
        for file, data in make().items():
            (where / file).write_bytes(data)
    (out / CASES_FILE).write_text(json.dumps(CASES, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "tf")
