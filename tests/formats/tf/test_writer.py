"""TensorFlow bundles written by ckptsurgeon, read back here and, where ``CKPT_TF_PYTHON`` names an
interpreter with tensorflow-cpu 2.21, by TensorFlow itself (``tf_check.py``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.tf.reader import METADATA_ENTRY, Reader

from ...conftest import DATA
from ...support.fixtures import CliRunner

TF_DATA = DATA / "tf"
CHECK = Path(__file__).with_name("tf_check.py")
PREFIXES = ["tf_checkpoint/ckpt-1", "tf2_obj/ckpt-1", "tf1_saver/model.ckpt-2", "tf1_saver_target/model.ckpt-0",
            "tf2_sharded_mixed/ckpt-1", "tf2_mixed_dtypes/ckpt-1"]


def hashes(path: Path) -> dict[str, tuple[list[int], str, str]]:
    with open_checkpoint(path) as reader:
        return {t.name: (list(t.shape), t.dtype, reader.sha256(t.name)) for t in reader.tensors}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_bundle_rewritten_holds_the_same_entries(prefix: str, cli: CliRunner, tmp_path: Path) -> None:
    """convert to TF: every tensor (a sliced one written whole) and every string entry, as they were."""
    out = tmp_path / "out"
    result = cli("convert", TF_DATA / prefix, "-o", out, "--format", "tf")
    assert result.code == 0, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.data-00000-of-00001", "out.index"]
    assert hashes(out) == hashes(TF_DATA / prefix)
    with Reader(TF_DATA / f"{prefix}.index") as source, Reader(tmp_path / "out.index") as written:
        strings = [n for n, e in source.entries.items() if e.dtype == 7]
        assert [n for n, e in written.entries.items() if e.dtype == 7 and n != METADATA_ENTRY] == strings
        assert all(written.entry_bytes(n) == source.entry_bytes(n) for n in strings)


def test_metadata_is_one_string_entry_read_back_as_metadata(cli: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "m.safetensors"
    save_file({"w": np.arange(6, dtype="<f4").reshape(2, 3)}, str(source), metadata={"note": "ünï ✓"})
    assert cli("convert", source, "-o", tmp_path / "out", "--format", "tf").code == 0
    with Reader(tmp_path / "out.index") as reader:
        assert reader.metadata == {"note": "ünï ✓"} and METADATA_ENTRY in reader.entries
        assert [t.name for t in reader.tensors] == ["w"]


# --- the real TensorFlow ----------------------------------------------------------------------------
def tf_python() -> str:
    other = os.environ.get("CKPT_TF_PYTHON")
    if other and Path(other).is_file():
        return other
    pytest.skip("TensorFlow is not installed here (set CKPT_TF_PYTHON to an interpreter with tensorflow-cpu 2.21)")


def tf_check(*args: str | Path) -> dict[str, Any]:
    done = subprocess.run([tf_python(), str(CHECK), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("prefix", ["tf2_sharded_mixed/ckpt-1", "tf1_saver/model.ckpt-2"])
def test_tensorflow_reads_what_ckptsurgeon_writes(prefix: str, cli: CliRunner, tmp_path: Path) -> None:
    tf_python()
    out = tmp_path / "out"
    assert cli("convert", TF_DATA / prefix, "-o", out, "--format", "tf").code == 0
    loaded = {t["name"]: (t["shape"], t["dtype"], t["sha256"]) for t in tf_check("load", out)["tensors"]
              if t["dtype"] != "STRING"}
    assert loaded == hashes(out) == hashes(TF_DATA / prefix)


def test_a_transfer_into_an_object_based_target_restores_its_model(cli: CliRunner, tmp_path: Path) -> None:
    """New values for every variable of the target's model, from a safetensors file: Checkpoint.restore of the
    output (assert_consumed) gives exactly those values."""
    tf_python()
    target = TF_DATA / "tf_checkpoint" / "ckpt-1"
    with open_checkpoint(target) as reader:
        new = {t.name: np.asarray(reader.read(t.name) * 3 + 1, dtype=reader.read(t.name).dtype) for t in reader.tensors}
    save_file(new, str(tmp_path / "new.safetensors"))
    out = tmp_path / "out"
    result = cli("transfer", tmp_path / "new.safetensors", target, "-o", out, "--strict")
    assert result.code == 0, result.err
    restored = tf_check("restore", out, "tf_checkpoint")["variables"]
    got = hashes(out)
    assert sorted(restored.values()) == sorted(sha for _, _, sha in got.values())
    import hashlib

    assert {hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in new.values()} == set(restored.values())
