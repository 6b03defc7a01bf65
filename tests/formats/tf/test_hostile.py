"""Hostile TensorFlow checkpoints: each refused with exit 3 and one line naming a file of it, nothing written.

The corpus is ``tests/hostile/tf`` (written by ``tests/hostile/make_hostile_tf.py``; ``CASES.json``
gives, per case, the path to name, the commands that must refuse it, the file the error names and
a fragment of the message). Each case goes through its commands in process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckptsurgeon.errors import InputError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.tf.reader import MAX_SLICES
from ckptsurgeon.formats.tf.writer import table

from ...conftest import TESTS
from ...support.fixtures import CliRunner

HOSTILE = TESTS / "hostile"
CORPUS = HOSTILE / "tf"
GENERATOR = HOSTILE / "make_hostile_tf.py"
CASES: dict[str, dict[str, Any]] = json.loads((CORPUS / "CASES.json").read_text())
RUNS = [(name, command) for name in sorted(CASES) for command in CASES[name]["commands"]]


def _generator() -> Any:
    if "make_hostile_tf" in sys.modules:
        return sys.modules["make_hostile_tf"]
    spec = importlib.util.spec_from_file_location("make_hostile_tf", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_hostile_tf"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _argv(command: str, target: Path, out: Path) -> list[str | os.PathLike[str]]:
    return {"inspect": ["inspect", target], "inspect-hash": ["inspect", "--hash", "--json", target],
            "convert": ["convert", target, "-o", out / "out.safetensors"]}[command]


@pytest.mark.parametrize(("name", "command"), RUNS)
def test_hostile_bundle_is_refused_cleanly(name: str, command: str, cli: CliRunner, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory shows here
    out = tmp_path / "out"
    out.mkdir()
    spec = CASES[name]
    where = CORPUS / name
    target = where if spec["target"] == "." else where / spec["target"]
    before = _digests(where)
    result = cli(*_argv(command, target, out))
    assert result.code == 3, result.err
    line = result.line  # exactly one line, no traceback
    assert line.startswith(f"ckpt: error: {where / spec['file']}: "), line
    assert spec["message"] in line, line
    assert not list(out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert _digests(where) == before


def test_the_crc_mismatch_is_found_only_when_the_bytes_are_read(cli: CliRunner) -> None:
    """``inspect`` reads the index alone, so the damaged bytes of entry_crc_mismatch pass it."""
    result = cli("inspect", CORPUS / "entry_crc_mismatch" / "ckpt")
    assert result.code == 0, result.err


def test_the_bundle_every_case_damages_reads(tmp_path: Path) -> None:
    """The valid bundle the cases start from reads exactly, and its index is what the writer's table builder
    writes for the same items (so each case differs from a valid bundle by its damage alone)."""
    gen = _generator()
    bundle = gen.valid()
    assert gen.index_file(bundle.sorted_items()) == table(bundle.sorted_items())
    for file, data in bundle.files().items():
        (tmp_path / file).write_bytes(data)
    with open_checkpoint(tmp_path / "ckpt") as reader:
        assert [(t.name, t.shape) for t in reader.tensors] == [("b", (3,)), ("s", (4, 2)), ("w", (2, 3))]
        np.testing.assert_array_equal(reader.read("s"), np.arange(20, 28, dtype=np.float32).reshape(4, 2))
        np.testing.assert_array_equal(reader.read("w"), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_corpus_is_reproducible_and_small(tmp_path: Path) -> None:
    """make_hostile_tf.py rewrites the committed files byte for byte."""
    gen = _generator()
    gen.build(tmp_path)
    assert json.loads((tmp_path / "CASES.json").read_text()) == CASES
    fresh, committed = _digests(tmp_path), _digests(CORPUS)
    assert set(fresh) == set(committed)
    assert {Path(rel).parts[0] for rel in committed} == set(CASES) | {"CASES.json"}
    changed = [rel for rel, digest in fresh.items() if committed[rel] != digest]
    assert not changed, f"these differ from what make_hostile_tf.py writes: {changed}"
    assert max(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file() and p.name != "CASES.json") < 1024
    required = {"bad_block_crc", "bad_footer_magic", "restart_past_block", "restart_not_ascending",
                "keys_out_of_order", "index_handle_past_end", "entry_past_shard", "missing_shard", "data_truncated",
                "entry_crc_mismatch", "slice_gap", "slice_overlap", "slice_missing", "slice_wrong_size",
                "negative_dim", "dims_overflow", "varint_11_bytes", "unknown_dtype", "big_endian", "zero_shards",
                "string_bad_checksum", "pointer_outside", "pointer_missing", "truncated_index"}
    assert required <= set(CASES)


def _row_slices(tmp_path: Path, n: int) -> Path:
    """A bundle whose one tensor ``s`` [n, 1] is stored as n slices of one row each."""
    gen = _generator()
    bundle = gen.Bundle()
    bundle.items[b""] = gen.header()
    extents = tuple(((i, 1), (0, None)) for i in range(n))
    bundle.items[b"s"] = gen.entry(gen.DT_FLOAT, [n, 1], slices=extents)
    for i, extent in enumerate(extents):
        bundle.add(gen.slice_key("s", extent), gen.DT_FLOAT, [1, 1], np.float32(i).tobytes())
    for file, data in bundle.files().items():
        (tmp_path / file).write_bytes(data)
    return tmp_path / "ckpt"


def test_many_slices_are_checked_without_comparing_every_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices sorted along the dim they partition are compared with their neighbours only: 2000 row slices
    take fewer than 2 * 2000 comparisons (every pair would be about two million)."""
    import ckptsurgeon.formats.tf.reader as tf_reader

    compared = 0
    meets = tf_reader._meets

    def counting(start: Any, end: Any, starts: Any, ends: Any) -> Any:
        nonlocal compared
        compared += len(starts)
        return meets(start, end, starts, ends)

    prefix = _row_slices(tmp_path, 2000)
    monkeypatch.setattr(tf_reader, "_meets", counting)
    with open_checkpoint(prefix) as reader:
        np.testing.assert_array_equal(reader.read("s").ravel(), np.arange(2000, dtype=np.float32))
    assert compared < 4000


def test_a_tensor_in_more_slices_than_the_cap_is_refused(tmp_path: Path) -> None:
    prefix = _row_slices(tmp_path, MAX_SLICES + 1)
    with pytest.raises(InputError, match=f"stored in {MAX_SLICES + 1} slices; ckptsurgeon reads at most"):
        open_checkpoint(prefix).close()


def test_a_string_entry_of_many_strings_is_checked_in_bounded_memory(tmp_path: Path) -> None:
    """The lengths of a string entry are checked as they are read (their CRC-32C taken in runs), not
    gathered: 200000 empty strings open with well under a byte of Python objects per string, and one
    damaged length is still found."""
    gen = _generator()
    n = 200_000
    data, crc = gen.strings(n)
    bundle = gen.valid()
    offset = len(bundle.shards[0])
    bundle.shards[0] += data
    bundle.items[b"many"] = gen.entry(gen.DT_STRING, [n], offset=offset, size=len(data), crc=crc)
    for file, content in bundle.files().items():
        (tmp_path / file).write_bytes(content)
    tracemalloc.start()
    try:
        with open_checkpoint(tmp_path / "ckpt") as reader:
            assert json.loads(reader.metadata["tf.string_entries"]) == ["many"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * n, f"{peak} bytes traced while checking {n} string lengths"
    shard = tmp_path / "ckpt.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[: offset + 7] + b"\x01" + shard.read_bytes()[offset + 8 :])
    with pytest.raises(InputError, match="do not match their checksum"):
        open_checkpoint(tmp_path / "ckpt").close()


def test_an_index_is_read_into_a_buffer_of_its_own_size(tmp_path: Path) -> None:
    """Opening a bundle of a few hundred bytes allocates about that much, not the largest index allowed."""
    gen = _generator()
    for file, content in gen.valid().files().items():
        (tmp_path / file).write_bytes(content)
    open_checkpoint(tmp_path / "ckpt").close()  # the modules it imports on first use, imported
    tracemalloc.start()
    try:
        open_checkpoint(tmp_path / "ckpt").close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes traced while opening a {(tmp_path / 'ckpt.index').stat().st_size}-byte index"
