"""ckpt verify: every corpus file reads and hashes as MANIFEST.json says; hash files catch changes; NaN/Inf."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import ckptsurgeon
from ckptsurgeon.atomic import TEMP_MARK
from ckptsurgeon.commands.verify import HashFile, check_tensor, verify, write_hashes
from ckptsurgeon.errors import CheckFailed, InputError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.values import element_chunks

from ..conftest import CORPUS
from ..support.cli import run

SCHEMA = json.loads((Path(ckptsurgeon.__file__).parent / "schemas" / "verify.schema.json").read_text())
HASHES_SCHEMA = {"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": "#/$defs/hashes_file"}

VERIFIED_FORMATS = {
    "safetensors", "hf_sharded_safetensors", "npz", "npz_compressed", "keras3_weights_h5", "keras3_keras_zip",
    "keras3_sharded_weights", "tf_keras_legacy_weights_h5", "tf_keras_legacy_full_model_h5",
}
MANIFEST = json.loads((CORPUS / "MANIFEST.json").read_text())
VERIFIED_FILES = [f for f in MANIFEST["files"] if f["format"] in VERIFIED_FORMATS]


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code, out, err = run([*argv, "--json"], capsys)
    doc = json.loads(out)  # stdout holds one JSON document and nothing else
    jsonschema.validate(doc, SCHEMA)
    return code, doc, err


def read_hashes(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, HASHES_SCHEMA)
    return doc


def flip_byte(src: Path, dest: Path, tensor: str, index: int = 5) -> Path:
    """A copy of ``src`` with one byte of ``tensor``'s data changed (nothing else touched)."""
    shutil.copy(src, dest)
    with open_checkpoint(src) as reader:
        rng = reader.byte_range(tensor)
    assert rng is not None
    _, offset, length = rng
    assert index < length
    with open(dest, "r+b") as f:
        f.seek(offset + index)
        byte = f.read(1)
        f.seek(offset + index)
        f.write(bytes([byte[0] ^ 0x01]))
    return dest


# --- the corpus ---------------------------------------------------------------------------------------


def test_the_corpus_covers_every_readable_format() -> None:
    assert {f["format"] for f in VERIFIED_FILES} == VERIFIED_FORMATS


@pytest.mark.parametrize("entry", VERIFIED_FILES, ids=lambda e: e["path"])
def test_corpus_files_verify_with_the_manifest_hashes(
    entry: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hashes = tmp_path / "hashes.json"
    code, out, err = run(["verify", str(CORPUS / entry["path"]), "--write-hashes", str(hashes)], capsys)
    assert code == 0, err
    assert out.splitlines()[-1].startswith("ok: ")
    doc = read_hashes(hashes)
    assert doc["schema"] == "ckptsurgeon/hashes/1"
    want = {t.get("h5_path") or t["name"]: t for t in entry["tensors"] + entry.get("optimizer_tensors", [])}
    assert sorted(doc["tensors"]) == sorted(want)
    for name, t in want.items():
        assert doc["tensors"][name]["sha256"] == t["sha256"], name
        assert doc["tensors"][name]["shape"] == t["shape"], name
    # and the file checks out against its own hashes
    code, out, _ = run(["verify", str(CORPUS / entry["path"]), "--hashes", str(hashes), "-q"], capsys)
    assert code == 0
    n = len(want)
    assert out.endswith(f"{n:,} of {n:,} recorded hashes match\n")


def test_a_hash_file_checks_a_conversion_to_another_format(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    hashes = tmp_path / "h.json"
    assert run(["verify", str(src), "--write-hashes", str(hashes)], capsys)[0] == 0
    npz = tmp_path / "smallcnn.npz"
    np.savez(npz, **load_file(str(src)))
    assert run(["verify", str(npz), "--hashes", str(hashes)], capsys)[0] == 0


# --- hash mismatches --------------------------------------------------------------------------------


def test_a_flipped_byte_is_caught(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    hashes = tmp_path / "h.json"
    assert run(["verify", str(src), "--write-hashes", str(hashes), "-q"], capsys)[0] == 0
    bad = flip_byte(src, tmp_path / "bad.safetensors", "conv2.weight")

    code, out, err = run(["verify", str(bad), "--hashes", str(hashes)], capsys)
    assert code == 1
    assert "conv2.weight" in out and "sha256 differs" in out
    assert err == f"ckpt: error: {bad}: {hashes}: 1 tensor changed ('conv2.weight')\n"

    code, doc, _ = run_json(["verify", str(bad), "--hashes", str(hashes)], capsys)
    assert code == 1 and not doc["ok"]
    (m,) = doc["hashes"]["mismatches"]
    assert (m["name"], m["problem"], m["detail"]) == ("conv2.weight", "changed", "sha256 differs")
    assert m["expected"]["sha256"] != m["actual"]["sha256"]

    # a glob that leaves the tensor out lets the rest pass; one that matches nothing fails
    assert run(["verify", str(bad), "--hashes", str(hashes), "--exclude", "conv2.*"], capsys)[0] == 0
    code, _, err = run(["verify", str(bad), "--hashes", str(hashes), "--include", "fc.*", "--exclude", "nope*"], capsys)
    assert code == 1 and "--exclude 'nope*'" in err
    code, doc, _ = run_json(["verify", str(bad), "--hashes", str(hashes), "--include", "fc.*", "--exclude", "nope*",
                             "--allow-unused-rules"], capsys)
    assert code == 0 and doc["summary"]["tensors"] == 2 and doc["hashes"]["recorded"] == 2


def test_missing_extra_shape_and_dtype_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.arange(12, dtype=np.float32)
    save_file({"a": x, "b": x, "c": x, "d": x}, str(tmp_path / "old.safetensors"))
    save_file({"a": x, "b": x.reshape(3, 4), "c": x.view(np.int32), "e": x}, str(tmp_path / "new.safetensors"))
    hashes = tmp_path / "h.json"
    assert run(["verify", str(tmp_path / "old.safetensors"), "--write-hashes", str(hashes)], capsys)[0] == 0
    code, doc, err = run_json(["verify", str(tmp_path / "new.safetensors"), "--hashes", str(hashes)], capsys)
    assert code == 1
    got = sorted((m["name"], m["problem"], m["detail"]) for m in doc["hashes"]["mismatches"])
    assert got == [
        ("b", "changed", "shape [12] -> [3, 4]"),  # the same bytes, another shape
        ("c", "changed", "dtype F32 -> I32"),
        ("d", "missing", "missing from the checkpoint"),
        ("e", "extra", "not in the hash file"),
    ]
    assert doc["hashes"]["mismatches"][-1]["name"] == "d"  # missing ones come after the checkpoint's own
    assert "2 tensors changed (" in err and "1 tensor not in the hash file ('e')" in err
    assert err.endswith("; 1 tensor missing ('d')\n")
    assert doc["verdict"].startswith("FAILED: ") and "1 of 4 recorded hashes match, 4 mismatches" in doc["verdict"]


def test_hash_files_are_validated(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = str(corpus / "npz/weights.npz")
    bad = tmp_path / "h.json"
    for text, problem in [
        ("{", "is not valid JSON"),
        ('{"schema": "other"}', "expected 'ckptsurgeon/hashes/1'"),
        ('{"schema": "ckptsurgeon/hashes/1", "path": "x", "format": "npz", "tensors": {"t": {"sha256": "00", '
         '"shape": [], "dtype": "F32"}}}', "64 lowercase hex digits"),
    ]:
        bad.write_text(text)
        code, out, err = run(["verify", src, "--hashes", str(bad)], capsys)
        assert code == 3 and out == "", text
        assert err.startswith(f"ckpt: error: {bad}: ") and problem in err and err.count("\n") == 1
    code, _, err = run(["verify", src, "--hashes", str(tmp_path / "none.json")], capsys)
    assert code == 3 and "no such file" in err


# --- NaN and Inf --------------------------------------------------------------------------------------


@pytest.fixture
def nonfinite(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    f32 = np.arange(1000, dtype=np.float32)
    f32[[3, 500, 999]] = np.nan
    f32[[7, 8]] = [np.inf, -np.inf]
    f16 = np.ones((4, 5), dtype=np.float16)
    f16[0, 0] = np.inf
    bf16 = np.array([np.nan, 1, np.nan, -np.inf], dtype=ml_dtypes.bfloat16)
    tensors = {"f32": f32, "f16": f16, "bf16": bf16, "clean": np.ones(3, np.float64), "ints": np.arange(4)}
    path = tmp_path / "nonfinite.safetensors"
    save_file(tensors, str(path))
    return path, {"f32": (3, 2), "f16": (0, 1), "bf16": (2, 1), "clean": (0, 0)}


def test_nan_and_inf_are_counted(nonfinite: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    path, counts = nonfinite
    code, doc, _ = run_json(["verify", str(path)], capsys)
    assert code == 0 and doc["ok"]  # reported only, by default
    rows = {t["name"]: t for t in doc["tensors"]}
    assert {n: (rows[n]["nan"], rows[n]["inf"]) for n in counts} == counts
    assert rows["ints"]["nan"] is None and rows["ints"]["inf"] is None
    s = doc["summary"]
    assert (s["nan"], s["inf"], s["nonfinite_tensors"], s["float_tensors"]) == (5, 4, 3, 4)

    code, out, _ = run(["verify", str(path)], capsys)
    assert code == 0
    assert "tensors with NaN or Inf" in out and "clean" not in out and "\x1b[" not in out
    assert out.splitlines()[-1] == "ok: 5 tensors read (1,031 parameters); 3 tensors with NaN/Inf (5 NaN, 4 Inf)"

    code, out, err = run(["verify", str(path), "--fail-on-nonfinite", "-q"], capsys)
    assert code == 1 and out.startswith("FAILED: ")
    assert err.startswith(f"ckpt: error: {path}: 3 tensors hold NaN or Inf (") and err.count("\n") == 1
    assert all(f"'{name}'" in err for name in ("f32", "f16", "bf16"))


@pytest.mark.parametrize("chunk_bytes", [1, 6, 64, 1 << 20])
def test_chunked_reading_counts_and_hashes_the_same(nonfinite: tuple, chunk_bytes: int) -> None:
    path, counts = nonfinite
    result = verify(path, chunk_bytes=chunk_bytes)
    with open_checkpoint(path) as reader:
        for t in result.tensors:
            assert t.sha256 == reader.sha256(t.name)
            if t.name in counts:
                assert (t.nan, t.inf) == counts[t.name]


def test_element_chunks_are_whole_elements(tmp_path: Path) -> None:
    x = np.arange(1001, dtype=np.float32)
    h5 = tmp_path / "x.h5"
    import h5py

    with h5py.File(h5, "w") as f:
        f["x"] = x.reshape(7, 11, 13)
    with open_checkpoint(h5) as reader:
        info = reader["x"]
        pieces = [bytes(p) for p in element_chunks(reader, "x", 100)]
        assert [len(p) for p in pieces] == [400] * 10 + [4]
        assert b"".join(pieces) == x.tobytes()
        assert check_tensor(reader, info, chunk_bytes=40).sha256 == reader.sha256("x")


# --- output and errors ------------------------------------------------------------------------------


def test_corrupt_files_are_one_line_and_exit_3(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(src.read_bytes()[:-100])
    code, out, err = run(["verify", str(truncated)], capsys)
    assert code == 3 and out == ""
    assert err.startswith(f"ckpt: error: {truncated}: ") and err.count("\n") == 1

    npz = tmp_path / "bad.npz"
    np.savez(npz, w=np.arange(4096, dtype=np.float32))
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the member's data: its CRC no longer matches
    npz.write_bytes(bytes(data))
    code, out, err = run(["verify", str(npz)], capsys)
    assert code == 3 and err.startswith(f"ckpt: error: {npz}: ") and err.count("\n") == 1


def test_write_hashes_is_atomic_and_only_on_success(
    nonfinite: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = nonfinite
    hashes = tmp_path / "h.json"
    code, _, err = run(["verify", str(path), "--fail-on-nonfinite", "--write-hashes", str(hashes)], capsys)
    assert code == 1 and not hashes.exists() and "not written" in err
    code, _, err = run(["verify", str(path), "--write-hashes", str(hashes)], capsys)
    assert code == 0 and "wrote the hashes of 5 tensors" in err
    assert read_hashes(hashes)["path"] == str(path)
    assert not [p for p in os.listdir(tmp_path) if TEMP_MARK in p]
    # the checkpoint itself is never the hash file
    code, _, err = run(["verify", str(path), "--write-hashes", str(path)], capsys)
    assert code == 2 and "inputs are never overwritten" in err
    # the library refuses the same
    result = verify(path)
    with pytest.raises(Exception, match="never overwritten"):
        write_hashes(result.hash_file(), path, result.files)


def test_all_lists_every_sha256(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = corpus / "npz/weights.npz"
    code, out, _ = run(["verify", str(src), "--all"], capsys)
    assert code == 0
    entry = next(f for f in MANIFEST["files"] if f["path"] == "npz/weights.npz")
    for t in entry["tensors"]:
        assert f"{t['sha256']}  {t['name']}\n" in out


def test_library_api(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json"
    result = verify(src, include=["transformer.h.0.*"])
    assert result.ok and len(result.files) == 5
    assert result.tensors and all(t.name.startswith("transformer.h.0.") for t in result.tensors)
    hashes = result.hash_file()
    assert HashFile.from_dict(hashes.to_dict(), "x.json") == hashes
    write_hashes(hashes, tmp_path / "h.json")
    again = verify(src, hashes=tmp_path / "h.json", include=["transformer.h.0.*"])
    assert again.ok and again.recorded == len(result.tensors)
    everything = verify(src, hashes=tmp_path / "h.json")
    assert not everything.ok and {m.problem for m in everything.mismatches} == {"extra"}
    with pytest.raises(CheckFailed):
        verify(src, include=["nothing.*"])
    with pytest.raises(InputError):
        verify(tmp_path / "h.json")
