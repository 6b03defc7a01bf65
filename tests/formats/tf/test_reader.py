"""TensorFlow 2.21 checkpoints (``tests/data/tf``, written by TensorFlow) read without it: every key, shape,
dtype and byte, sliced tensors reassembled, string entries kept apart, every CRC checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckptsurgeon.formats import detect, open_checkpoint
from ckptsurgeon.formats.tf.reader import STRING_ENTRIES, Reader, slice_key

from ...conftest import DATA
from ...support.fixtures import CliRunner

TF_DATA = DATA / "tf"
EXPECTED: dict[str, Any] = json.loads((TF_DATA / "EXPECTED.json").read_text())
FILES = EXPECTED["files"]
CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64", "int32": "I32",
         "bool": "BOOL", "int8": "I8", "uint8": "U8"}


@pytest.mark.parametrize("prefix", sorted(FILES))
def test_every_checkpoint_reads_exactly(prefix: str) -> None:
    """Keys in key order, shapes, dtypes and the sha256 of every tensor, as TensorFlow's get_tensor gives them."""
    want = FILES[prefix]
    with open_checkpoint(TF_DATA / prefix) as reader:
        got = {t.name: (list(t.shape), t.dtype, reader.sha256(t.name)) for t in reader.tensors}
        assert got == {t["name"]: (t["shape"], CODES[t["dtype"]], t["sha256"]) for t in want["tensors"]}
        assert [t.name for t in reader.tensors] == sorted(got)
        assert json.loads(reader.metadata.get(STRING_ENTRIES, "[]")) == sorted(want["strings"])
        for t in reader.tensors:
            assert np.ascontiguousarray(reader.read(t.name)).tobytes() == b"".join(reader.iter_bytes(t.name))


def test_a_prefix_its_index_and_its_directory_open_the_same_checkpoint() -> None:
    prefix = TF_DATA / "tf2_obj" / "ckpt-1"
    names = []
    for path in (prefix, prefix.with_name("ckpt-1.index"), prefix.parent, prefix.parent / "checkpoint"):
        assert detect(path if path.is_file() else prefix.with_name("ckpt-1.index")) == "tf"
        with open_checkpoint(path) as reader:
            assert reader.path == prefix.with_name("ckpt-1.index") and reader.prefix == prefix
            names.append([t.name for t in reader.tensors])
            if path.is_dir() or path.name == "checkpoint":
                assert "checkpoint names ckpt-1" in (reader.layout or "")
    assert all(n == names[0] for n in names)


def test_a_sliced_tensor_is_reassembled_from_its_pieces() -> None:
    """w_bf16 is stored in three slices across two shards ([0:5, :], [5:10, 0:2], [5:10, 2:6])."""
    prefix = TF_DATA / "tf2_sharded_mixed" / "ckpt-1"
    name = "mixed/w_bf16/.ATTRIBUTES/VARIABLE_VALUE"
    with Reader(prefix.with_name("ckpt-1.index")) as reader:
        pieces = reader.stored_ranges(name)
        assert pieces is not None and len(pieces) == 3 and len({p for p, _, _ in pieces}) == 2
        assert reader.byte_range(name) is None  # not one C-order run
        assert reader.read(name).shape == (10, 6)
    assert slice_key(name, ((0, None), (0, None)))[:1] == b"\x00"


def test_tf_to_safetensors_copies_byte_ranges_and_checks_each_crc(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    result = cli("convert", TF_DATA / "tf2_obj" / "ckpt-1", "-o", out)
    assert result.code == 0, result.err
    with open_checkpoint(out) as written, open_checkpoint(TF_DATA / "tf2_obj") as source:
        assert [(t.name, written.sha256(t.name)) for t in written.tensors] == \
            [(t.name, source.sha256(t.name)) for t in source.tensors]
    damaged = tmp_path / "damaged"
    shutil.copytree(TF_DATA / "tf2_obj", damaged)
    with Reader(damaged / "ckpt-1.index") as reader:
        shard, offset, _ = reader.byte_range("model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE") or ()
    data = bytearray(Path(shard).read_bytes())
    data[offset + 3] ^= 0x40
    Path(shard).write_bytes(bytes(data))
    out2 = tmp_path / "again.safetensors"
    result = cli("convert", damaged / "ckpt-1", "-o", out2)
    assert result.code == 3 and "CRC-32C mismatch" in result.line and "layer_with_weights-0/kernel" in result.line
    assert not out2.exists()


@pytest.mark.parametrize("damage", ["index crc", "footer magic", "missing shard", "short shard"])
def test_a_damaged_bundle_is_refused_in_one_line(damage: str, cli: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(TF_DATA / "tf2_sharded_mixed", folder)
    index, shard = folder / "ckpt-1.index", folder / "ckpt-1.data-00001-of-00002"
    data = bytearray(index.read_bytes())
    if damage == "index crc":
        data[10] ^= 0x01
        index.write_bytes(bytes(data))
    elif damage == "footer magic":
        data[-1] ^= 0x01
        index.write_bytes(bytes(data))
    elif damage == "missing shard":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:-10])
    result = cli("inspect", folder / "ckpt-1")
    assert result.code == 3, result.err
    assert result.line.startswith(f"ckpt: error: {folder}")


def test_short_names_match_an_object_based_checkpoint_by_attribute_path(cli: CliRunner, tmp_path: Path) -> None:
    """--tf-names short: model/layer_with_weights-0/kernel pairs with a safetensors tensor of that name; the
    keys as stored stay the default, and the output keeps them."""
    from safetensors.numpy import save_file

    prefix = TF_DATA / "tf_checkpoint" / "ckpt-1"
    with open_checkpoint(prefix) as reader:
        kernel = "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
        new = np.asarray(reader.read(kernel) + 1)
        assert reader.match_names == {}
        assert reader[kernel].layer == "model/layer_with_weights-0"
    save_file({"model/layer_with_weights-0/kernel": new}, str(tmp_path / "src.safetensors"))
    out = tmp_path / "out"
    assert cli("transfer", tmp_path / "src.safetensors", prefix, "-o", out, "--allow-empty").code == 0
    with open_checkpoint(out) as written:
        assert not np.array_equal(written.read(kernel), new)  # by key: nothing pairs
    result = cli("transfer", tmp_path / "src.safetensors", prefix, "-o", tmp_path / "short", "--tf-names", "short")
    assert result.code == 0, result.err
    with open_checkpoint(tmp_path / "short") as written:
        assert np.array_equal(written.read(kernel), new) and kernel in written
