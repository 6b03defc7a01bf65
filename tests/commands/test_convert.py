"""ckpt convert end to end: every corpus format to every output format, casts, shards, atomicity, JSON, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import jsonschema
import ml_dtypes
import numpy as np
import pytest
from rich.console import Console
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import ckptsurgeon
from ckptsurgeon import values
from ckptsurgeon.atomic import TEMP_MARK
from ckptsurgeon.cli.convert_render import render_convert
from ckptsurgeon.commands.convert import convert
from ckptsurgeon.errors import CheckFailed, InputError, OutputError, UsageError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.safetensors import reader as st_reader
from ckptsurgeon.formats.safetensors import writer as st_writer

from ..conftest import manifest_code
from ..support.cli import one_line, run

SCHEMA = json.loads((Path(ckptsurgeon.__file__).parent / "schemas" / "convert.schema.json").read_text())
SUFFIX = {"safetensors": ".safetensors", "hdf5": ".h5", "npz": ".npz", "keras": ".keras"}

INPUTS = [
    "torch/smallcnn.safetensors",
    "torch/smallcnn_bf16.safetensors",
    "hf_sharded/tiny_gpt2/model.safetensors.index.json",
    "npz/weights.npz",
    "npz/weights_compressed.npz",
    "npz/flax_cnn_variables.npz",
    "keras3/cnn.weights.h5",
    "keras3/cnn.keras",
    "keras3/cnn_sharded/cnn.weights.json",
    "tf_keras/cnn_weights.h5",
    "tf_keras/cnn_full.h5",
]


def expected(manifest: dict, rel: str) -> dict[str, tuple[tuple[int, ...], str, str]]:
    """name -> (shape, dtype code, sha256) from MANIFEST.json (HDF5 tensors by their dataset path)."""
    entry = next(f for f in manifest["files"] if f["path"] == rel)
    return {
        t.get("h5_path", t["name"]).lstrip("/"): (tuple(t["shape"]), manifest_code(t["dtype"]), t["sha256"])
        for t in entry["tensors"]
    }


def contents(path: Path) -> dict[str, tuple[tuple[int, ...], str, str]]:
    with open_checkpoint(path) as r:
        return {t.name: (t.shape, t.dtype, r.sha256(t.name)) for t in r.tensors}


def file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob("*") if TEMP_MARK in p.name]


@pytest.mark.parametrize("fmt", ["safetensors", "hdf5", "npz"])
@pytest.mark.parametrize("rel", INPUTS)
def test_every_corpus_format_converts_byte_exact(rel: str, fmt: str, corpus: Path, manifest: dict,
                                                 tmp_path: Path) -> None:
    src = corpus / rel
    out = tmp_path / f"out{SUFFIX[fmt]}"
    report = convert(src, out)
    got = contents(out)
    assert got == contents(src)  # names, shapes, dtypes and bytes of every tensor
    truth = expected(manifest, rel)
    assert {n: got[n] for n in truth} == truth  # and the producing library's own record of them
    assert report.output["format"] == fmt and report.summary["tensors"] == len(got)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()  # the file's bytes, as committed
    assert report.files == [{"path": str(out), "bytes": out.stat().st_size, "sha256": digest}]
    assert report.output["sha256"] == digest
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("rel", ["keras3/cnn.weights.h5", "keras3/cnn.keras", "tf_keras/cnn_weights.h5"])
def test_keras_layout_survives_a_dtype_conversion(rel: str, corpus: Path, tmp_path: Path) -> None:
    src = corpus / rel
    out = tmp_path / "out.weights.h5"
    convert(src, out, dtype="BF16")
    with open_checkpoint(src) as a, open_checkpoint(out) as b:
        assert b.layout == ("keras-h5" if a.layout == "keras-h5" else "keras3-h5")
        assert [(t.name, t.layer, t.shape) for t in b.tensors] == [(t.name, t.layer, t.shape) for t in a.tensors]
        for t in a.tensors:
            assert b[t.name].dtype == ("BF16" if t.dtype.startswith("F") else t.dtype)
            np.testing.assert_array_equal(b.read(t.name), a.read(t.name).astype(ml_dtypes.bfloat16))


def test_bf16_equals_ml_dtypes_and_integers_are_untouched(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    out = tmp_path / "bf16.safetensors"
    report = convert(src, out, dtype="bf16")
    original, got = load_file(src), load_file(out)
    assert any(a.dtype == np.int64 for a in original.values())
    for name, a in original.items():
        if a.dtype == np.float32:
            assert got[name].dtype == ml_dtypes.bfloat16
            assert got[name].tobytes() == a.astype(ml_dtypes.bfloat16).tobytes()
        else:
            assert got[name].dtype == a.dtype and got[name].tobytes() == a.tobytes()
    casts = {t.name: t for t in report.tensors}
    assert casts["bn1.num_batches_tracked"].dtype_out == "I64" and casts["bn1.num_batches_tracked"].byte_copy
    assert report.summary["cast_tensors"] == sum(a.dtype == np.float32 for a in original.values())
    with safe_open(out, "np") as f:
        assert f.metadata() == {"format": "pt"}


def test_overflow_is_counted_per_tensor(tmp_path: Path) -> None:
    src = tmp_path / "big.safetensors"
    save_file({"w": np.array([1.0, 7e4, -1e6, np.inf, np.nan], np.float32), "n": np.arange(3)}, src)
    report = convert(src, tmp_path / "half.npz", dtype="F16")
    assert {t.name: t.overflow for t in report.tensors} == {"w": 2, "n": 0}
    assert report.summary["overflow_values"] == 2 and "2 values overflowed" in report.verdict
    report = convert(src, tmp_path / "e4m3.npz", dtype="F8_E4M3")
    assert {t.name: t.overflow for t in report.tensors} == {"w": 2, "n": 0}  # float8 e4m3fn has no inf: out of range becomes NaN


def test_same_dtype_safetensors_tensors_move_as_byte_ranges(corpus: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st_reader.Reader, "read", lambda *a: pytest.fail("read through numpy"))
    report = convert(corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json", tmp_path / "one.safetensors")
    assert all(t.byte_copy for t in report.tensors) and report.summary["byte_copies"] == 28
    (tmp_path / "sh").mkdir()
    report = convert(corpus / "torch/smallcnn.safetensors", tmp_path / "sh", shard_size=2000)
    assert all(t.byte_copy for t in report.tensors)


def test_sharded_output_loads_with_the_official_library_and_round_trips(corpus: Path, manifest: dict,
                                                                       tmp_path: Path) -> None:
    src = corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json"
    out = tmp_path / "bf16"
    out.mkdir()
    report = convert(src, out, shard_size="20kB", dtype="BF16")
    index = out / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    with open_checkpoint(src) as r:
        names = [t.name for t in r.tensors]
        nbytes = {t.name: t.numel * 2 for t in r.tensors}
    assert list(doc["weight_map"]) == names
    assert doc["metadata"] == {"total_size": sum(nbytes.values()), "transformer.wte.weight": "lm_head.weight"}
    shards = sorted(set(doc["weight_map"].values()))
    assert len(shards) == len(report.shards) > 1
    assert sorted(p.name for p in out.iterdir()) == sorted([*shards, "model.safetensors.index.json"])
    held: list[str] = []
    for shard in shards:
        with safe_open(out / shard, "np") as f:
            assert f.metadata() == {"format": "pt", "transformer.wte.weight": "lm_head.weight"}
            keys = list(f.keys())
            assert sum(nbytes[k] for k in keys) <= 20_000 or len(keys) == 1
            held += keys
    assert sorted(held) == sorted(names)  # the weight map covers every tensor exactly once

    back = tmp_path / "back.safetensors"
    convert(index, back, dtype="F32")
    restored = load_file(back)
    assert sorted(restored) == sorted(names)
    with open_checkpoint(src) as r:
        for name in names:
            want = r.read(name).astype(ml_dtypes.bfloat16).astype(np.float32)
            assert restored[name].tobytes() == want.tobytes(), name

    exact = tmp_path / "exact"
    exact.mkdir()
    convert(src, exact / "weights.safetensors.index.json", shard_size=40_000)
    # the corpus was sharded by huggingface_hub with max_shard_size=40000: the same assignment
    hub = json.loads(src.read_text())["weight_map"]
    ours = json.loads((exact / "weights.safetensors.index.json").read_text())["weight_map"]
    assert ours == {name: shard.replace("model-", "weights-") for name, shard in hub.items()}
    convert(exact / "weights.safetensors.index.json", tmp_path / "exact.safetensors")
    assert contents(tmp_path / "exact.safetensors") == contents(src)
    truth = expected(manifest, "hf_sharded/tiny_gpt2/model.safetensors.index.json")
    assert {n: contents(tmp_path / "exact.safetensors")[n] for n in truth} == truth


@pytest.mark.parametrize("fmt", ["safetensors", "hdf5", "npz", "keras", "sharded"])
def test_the_same_run_twice_gives_byte_identical_files(fmt: str, corpus: Path, tmp_path: Path) -> None:
    src = corpus / ("keras3/cnn.keras" if fmt == "keras" else "hf_sharded/tiny_gpt2/model.safetensors.index.json")
    runs = []
    for name in ("a", "b"):
        directory = tmp_path / name
        directory.mkdir()
        if fmt == "sharded":
            convert(src, directory, shard_size="30kB", dtype="F16")
        else:
            convert(src, directory / f"out{SUFFIX[fmt]}", dtype="F16")
        runs.append(file_hashes(directory))
    assert runs[0] == runs[1] and runs[0]


def test_error_mid_write_leaves_the_old_sharded_checkpoint_and_no_temp_file(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json"
    convert(src, tmp_path, shard_size="30kB", dtype="F16")
    before = file_hashes(tmp_path)
    real_finish = st_writer.Writer.finish
    finished: list[Path] = []

    def fail_after_first_shard(self: st_writer.Writer) -> None:
        if finished:
            raise RuntimeError("injected failure")
        finished.append(self.path)
        real_finish(self)

    monkeypatch.setattr(st_writer.Writer, "finish", fail_after_first_shard)
    with pytest.raises(RuntimeError, match="injected"):
        convert(src, tmp_path, shard_size="30kB", dtype="BF16")
    assert finished and file_hashes(tmp_path) == before and leftovers(tmp_path) == []

    fresh = tmp_path / "fresh"  # a new directory: created for the output, removed again on failure
    finished.clear()
    with pytest.raises(RuntimeError, match="injected"):
        convert(src, fresh, shard_size="30kB")
    assert not fresh.exists() and file_hashes(tmp_path) == before
    monkeypatch.undo()
    convert(src, fresh, shard_size="30kB")
    assert (fresh / "model.safetensors.index.json").exists()


@pytest.mark.parametrize("fmt", ["safetensors", "hdf5", "npz"])
def test_error_mid_write_leaves_an_existing_single_file_untouched(
        fmt: str, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    out = tmp_path / f"out{SUFFIX[fmt]}"
    out.write_bytes(b"the previous file")
    calls = []

    def cast_then_fail(arr: np.ndarray, code: str) -> tuple[np.ndarray, int]:
        calls.append(code)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return arr.astype(np.float16), 0

    monkeypatch.setattr(values, "cast_array", cast_then_fail)
    with pytest.raises(OutputError, match="no space left"):
        convert(src, out, dtype="F16")
    assert out.read_bytes() == b"the previous file" and sorted(tmp_path.iterdir()) == [out]


def test_include_and_exclude(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    out = tmp_path / "o.npz"
    with pytest.raises(CheckFailed, match=r"matched no tensor name: exclude 'nothing\*'"):  # an unused exclude glob too
        convert(src, out, include=["conv*", "bn1.*"], exclude=["*.num_batches_tracked", "nothing*"])
    assert not out.exists()
    report = convert(src, out, include=["conv*", "bn1.*"], exclude=["*.num_batches_tracked", "nothing*"],
                     allow_unused_rules=True)
    with open_checkpoint(out) as r:
        names = [t.name for t in r.tensors]
    assert names and all(n.startswith(("conv", "bn1.")) for n in names)
    assert "bn1.num_batches_tracked" not in names and "bn1.weight" in names
    assert [(g.kind, g.glob, g.matches) for g in report.filters] == [
        ("include", "conv*", 4), ("include", "bn1.*", 5), ("exclude", "*.num_batches_tracked", 2),
        ("exclude", "nothing*", 0)]
    assert len(report.excluded) == 16 - len(names)
    code, _, err = run(["convert", str(src), "-o", str(tmp_path / "x.npz"), "--include", "cnov*"], capsys)
    assert code == 1 and "matched no tensor name: --include 'cnov*'" in err  # an unused glob is a failed check
    assert not (tmp_path / "x.npz").exists()
    code, _, err = run(["convert", str(src), "-o", str(tmp_path / "x.npz"), "--exclude", "*"], capsys)
    assert code == 2 and one_line(err).endswith("no tensors to write: --exclude '*' left none of 16")


@pytest.mark.parametrize("suffix", [".safetensors", ".h5"])
def test_an_input_without_tensors_is_named_not_the_globs(suffix: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / f"empty{suffix}"
    if suffix == ".h5":
        import h5py
        h5py.File(src, "w").close()
    else:
        save_file({}, str(src))
    code, _, err = run(["convert", str(src), "-o", str(tmp_path / "x.npz")], capsys)
    assert code == 3 and one_line(err) == f"ckpt: error: {src}: holds no tensors; there is nothing to convert"
    assert "glob" not in err and not (tmp_path / "x.npz").exists()


def test_metadata_is_carried(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "tf_keras/cnn_weights.h5"
    for fmt in ("safetensors", "npz", "hdf5"):
        out = tmp_path / f"m{SUFFIX[fmt]}"
        convert(src, out)
        with open_checkpoint(out) as r:
            assert r.metadata["keras_version"] == "2.21.0" and r.metadata["backend"] == "tensorflow"
    sharded_src = corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json"
    report = convert(sharded_src, tmp_path / "g.safetensors")
    assert report.metadata == {"transformer.wte.weight": "lm_head.weight"}  # the index's total_size is not carried
    with safe_open(tmp_path / "g.safetensors", "np") as f:
        assert f.metadata() == {"transformer.wte.weight": "lm_head.weight"}


def test_dry_run_reads_no_tensor_data_and_writes_nothing(corpus: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for attr in ("read", "iter_bytes", "byte_range", "_map"):
        monkeypatch.setattr(st_reader.Reader, attr, lambda *a, **k: pytest.fail("tensor data read in a dry run"))
    src = corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json"
    report = convert(src, tmp_path, shard_size="30kB", dtype="BF16", dry_run=True)
    assert report.dry_run and len(report.shards) == 2 and report.files == []
    assert report.verdict.startswith("would convert 28 tensors")
    assert all(t.shard for t in report.tensors)
    assert list(tmp_path.iterdir()) == []


def test_guards_and_exit_codes(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    with pytest.raises(UsageError, match="is the input"):
        convert(src, src)
    link = tmp_path / "link.safetensors"
    link.symlink_to(src)
    with pytest.raises(UsageError):
        convert(link, src)
    sharded_src = corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json"
    with pytest.raises(UsageError, match="is the input"):  # the index and its shards are inputs
        convert(sharded_src, sharded_src.parent, shard_size=40_000)
    with pytest.raises(UsageError, match="would not overwrite"):  # another checkpoint's shards would be mixed in
        convert(src, sharded_src.parent / "model.safetensors.index.json", shard_size=40_000)
    lone = tmp_path / "model-00001-of-00001.safetensors"
    lone.write_bytes(src.read_bytes())
    with pytest.raises(UsageError, match="is the input"):  # the output's one shard would overwrite the input
        convert(lone, tmp_path, shard_size=40_000)
    lone.unlink()
    with pytest.raises(UsageError, match="--shard-size"):
        convert(src, tmp_path / "model.safetensors.index.json")
    with pytest.raises(UsageError, match="sharded safetensors"):
        convert(src, tmp_path, shard_size="1MB", fmt="npz")
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    convert(corpus / "torch/smallcnn.pt", pickles / "x.npz")  # a PyTorch checkpoint is read (its pickle never run)
    pickled = pickles / "model.bin"
    pickled.write_bytes(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.")  # a pickle, not a torch.save file
    with pytest.raises(InputError):
        convert(pickled, pickles / "y.npz")
    shutil.rmtree(pickles)
    cases = [
        (["convert", str(src)], 2),  # no -o
        (["convert", str(src), "-o", str(tmp_path / "x.ckpt")], 2),  # an extension two formats use (Lightning, MindSpore)
        (["convert", str(src), "-o", str(tmp_path / "x.npz"), "--dtype", "I8"], 2),
        (["convert", str(src), "-o", str(tmp_path / "x.npz"), "--format", "onnx"], 2),
        (["convert", str(src), "-o", str(tmp_path), "--shard-size", "lots"], 2),
        (["convert", str(src), "-o", str(src)], 2),
        (["convert", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.npz")], 3),
        (["convert", str(corpus / "gguf/tiny_gpt2_quant.gguf"), "-o", str(tmp_path / "x.npz")], 4),  # quantized blocks
        (["convert", str(src), "-o", str(tmp_path / "no" / "dir.npz")], 4),
    ]
    for argv, want in cases:
        code, out, err = run(argv, capsys)
        assert code == want, (argv, err)
        assert out == ""
        if "Usage" not in err:  # typer's own usage errors aside, one line on stderr
            assert err.startswith("ckpt: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.safetensors"]


def test_cli_json_validates_and_quiet_is_one_line(corpus: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    src = corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json"
    code, out, _ = run(["convert", str(src), "-o", str(tmp_path), "--shard-size", "30kB", "--dtype", "BF16",
                        "--exclude", "lm_head.*", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["summary"]["shards"] == 2 and doc["excluded"] == ["lm_head.weight"]
    assert [f["path"] for f in doc["files"]][-1] == str(tmp_path / "model.safetensors.index.json")
    assert doc["dtype_changes"] == [{"dtype_in": "F32", "dtype_out": "BF16", "tensors": 27, "parameters": 25984,
                                     "bytes_in": 103936, "bytes_out": 51968, "overflow": 0}]
    for argv in (["--dry-run"], ["--format", "npz"], []):
        code, out, _ = run(["convert", str(corpus / "npz/weights.npz"), "-o", str(tmp_path / "w.safetensors"),
                            "--json", *argv], capsys)
        assert code == 0
        jsonschema.validate(json.loads(out), SCHEMA)
    code, out, _ = run(["convert", str(corpus / "npz/weights.npz"), "-o", str(tmp_path / "q.h5"), "-q"], capsys)
    assert code == 0 and out.count("\n") == 1
    assert out.startswith("converted 6 tensors (920 bytes -> 920 bytes) to ") and out.rstrip().endswith("(hdf5)")


GOLDEN = """\
DIR/src.safetensors (safetensors) => DIR/out.npz (npz)
┏━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━┓
┃ dtype      ┃ tensors ┃ parameters ┃ bytes in ┃ bytes out ┃ overflow ┃
┡━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━┩
│ I64        │       1 │          1 │  8 bytes │   8 bytes │        0 │
│ F32 -> F16 │       2 │      1,003 │   4.0 kB │    2.0 kB │        1 │
├────────────┼─────────┼────────────┼──────────┼───────────┼──────────┤
│ total      │       3 │      1,004 │   4.0 kB │    2.0 kB │        1 │
└────────────┴─────────┴────────────┴──────────┴───────────┴──────────┘
exclude 'skip.*': 1 tensor
excluded tensors (1): skip.me
overflow: 1 values of a.weight did not fit F16
metadata carried: format
converted 3 tensors (4.0 kB -> 2.0 kB; 2 cast F32 -> F16; 1 values overflowed; 1 excluded) to DIR/out.npz (npz)
"""


def test_table_golden(tmp_path: Path) -> None:
    src = tmp_path / "src.safetensors"
    weight = np.zeros((1000,), np.float32)
    weight[0] = 1e9
    save_file({"a.weight": weight, "a.bias": np.ones(3, np.float32), "a.steps": np.array([5]),
               "skip.me": np.zeros(2, np.float32)}, src, metadata={"format": "pt"})
    report = convert(src, tmp_path / "out.npz", dtype="F16", exclude=["skip.*"], allow_overflow=True)
    buffer = io.StringIO()
    render_convert(report, Console(file=buffer, width=100, color_system=None, no_color=True))
    assert buffer.getvalue().replace(str(tmp_path), "DIR") == GOLDEN
