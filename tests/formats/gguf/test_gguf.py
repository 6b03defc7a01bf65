"""GGUF: the files gguf-py wrote read exactly (quantized tensors as raw blocks, metadata typed), and
what ckptsurgeon writes keeps every block and every typed value; gguf-py's own reader checks that
where it is installed (here, or in the interpreter ``CKPT_GGUF_PYTHON`` names)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.gguf import ggml
from ckptsurgeon.formats.gguf.writer import Writer
from ckptsurgeon.tensors import TensorSpec

from ...conftest import MANIFEST_DTYPES, ROOT
from ...support.cli import one_line, run

QUANT = "gguf/tiny_gpt2_quant.gguf"
LLAMA = "gguf/tiny_llama.gguf"
CHECK = Path(__file__).with_name("gguf_py_check.py")


def code(dtype: str) -> str:
    return MANIFEST_DTYPES.get(dtype, dtype)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(manifest: dict) -> list[dict]:
    found = [f for f in manifest["files"] if f["format"] == "gguf"]
    assert {f["path"] for f in found} >= {QUANT, LLAMA}
    return found


def test_corpus_files_read_exactly(corpus: Path, manifest: dict) -> None:
    """Names, numpy shapes, dtypes (Q8_0 / Q4_0 for the quantized), raw bytes, and metadata: text and typed."""
    for entry in entries(manifest):
        with open_checkpoint(corpus / entry["path"]) as reader:
            assert reader.format == "gguf"
            want = [(t["name"], tuple(t["shape"]), code(t["dtype"])) for t in entry["tensors"]]
            assert [(t.name, t.shape, t.dtype) for t in reader.tensors] == want
            data = (corpus / entry["path"]).read_bytes()
            for t in entry["tensors"]:
                assert reader.sha256(t["name"]) == t["sha256"], t["name"]
                assert reader[t["name"]].nbytes == t["n_bytes"]
                _path, offset, length = reader.byte_range(t["name"])
                assert sha(data[offset : offset + length]) == t["sha256"]
                if "data_offset" in t:
                    assert offset == t["data_offset"]
            assert reader.metadata == entry["gguf_kv"]
            if "gguf_kv_typed" in entry:
                assert reader.typed_metadata() == entry["gguf_kv_typed"]
                assert list(reader.typed_metadata()) == list(entry["gguf_kv_typed"])  # the file's order


def test_quantized_tensors_read_as_raw_blocks(corpus: Path) -> None:
    with open_checkpoint(corpus / QUANT) as reader:
        info = reader["blk.0.attn_qkv.weight"]
        assert (info.dtype, info.shape, info.numel, info.nbytes) == ("Q8_0", (96, 32), 3072, 96 * 34)
        raw = reader.read(info.name)
        assert raw.dtype == np.uint8 and raw.shape == (info.nbytes,)
        assert b"".join(bytes(c) for c in reader.iter_bytes(info.name, 100)) == raw.tobytes()


def test_inspect_shows_typed_metadata(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json holds every value whole with its type (valid against the schema); the table abbreviates arrays."""
    import jsonschema

    code_, out, err = run(["inspect", corpus / QUANT, "--json"], capsys)
    assert code_ == 0, err
    doc = json.loads(out)
    schema = json.loads((ROOT / "ckptsurgeon" / "schemas" / "inspect.schema.json").read_text())
    jsonschema.validate(doc, schema)
    typed = doc["metadata_typed"]
    assert typed["tokenizer.ggml.tokens"]["type"] == "ARRAY[STRING]" and len(typed["tokenizer.ggml.tokens"]["value"]) == 48
    assert typed["ckptsurgeon.test.int64"] == {"type": "INT64", "value": -1099511627783}
    assert doc["totals"]["dtypes"] == {"F16": 2, "F32": 4, "Q4_0": 1, "Q8_0": 1}
    code_, out, err = run(["inspect", corpus / QUANT], capsys)
    assert code_ == 0, err
    assert 'tokenizer.ggml.tokens: ARRAY[STRING] of 48: "tok0", "tok1",' in out and '"tok47"' not in out
    assert "gpt2.context_length: 16 (UINT32)" in out


def test_convert_gguf_to_gguf_gives_the_same_bytes(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What gguf-py wrote, written again: byte for byte (layout, padding, typed metadata, blocks)."""
    for name in (QUANT, LLAMA):
        out = tmp_path / Path(name).name
        code_, _, err = run(["convert", corpus / name, "-o", out], capsys)
        assert code_ == 0, err
        assert out.read_bytes() == (corpus / name).read_bytes(), name


def renamed(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *edits: str) -> Path:
    out = tmp_path / "renamed.gguf"
    code_, _, err = run(["rename", corpus / QUANT, "-o", out, "--rename", r"^blk\.0\.=>blk.zero.", *edits], capsys)
    assert code_ == 0, err
    return out


EDITS = ("--set-metadata", "general.name=edited", "--set-metadata", "gpt2.block_count=2",
         "--set-metadata", "ckptsurgeon.new.count:u64=12345678901", "--set-metadata", "ckptsurgeon.new.eps:f32=1e-5",
         "--drop-metadata", "ckptsurgeon.test.float64")
EDITED = {"general.name", "gpt2.block_count", "ckptsurgeon.new.count", "ckptsurgeon.new.eps",
          "ckptsurgeon.test.float64", "GGUF.kv_count"}


def new_name(name: str) -> str:
    return name.replace("blk.0.", "blk.zero.", 1) if name.startswith("blk.0.") else name


def test_rename_keeps_every_block_and_typed_value(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = renamed(corpus, tmp_path, capsys)
    with open_checkpoint(corpus / QUANT) as before, open_checkpoint(out) as after:
        assert [new_name(t.name) for t in before.tensors] == [t.name for t in after.tensors]
        assert [(t.shape, t.dtype) for t in before.tensors] == [(t.shape, t.dtype) for t in after.tensors]
        for t in before.tensors:
            assert after.sha256(new_name(t.name)) == before.sha256(t.name)
        assert after.typed_metadata() == before.typed_metadata()
        ends = 0
        for t in after.tensors:  # llama.cpp: each tensor exactly where the one before ends, padded
            begin, end = t.loc
            assert begin == ggml.align(ends, after.alignment)
            ends = end


def gguf_python() -> str:
    if importlib.util.find_spec("gguf") is not None:
        return sys.executable
    other = os.environ.get("CKPT_GGUF_PYTHON")
    if other and Path(other).is_file():
        return other
    pytest.skip("gguf is not installed here (set CKPT_GGUF_PYTHON to an interpreter that has gguf==0.19.0)")


def test_renamed_file_reads_back_in_gguf_py(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """gguf.GGUFReader reads the renamed file, its metadata edited: every tensor's type, ne and bytes, every
    other metadata field's types and value bytes as in the input, the edited ones typed as asked; data
    aligned and packed as llama.cpp's loader requires."""
    python = gguf_python()
    out = renamed(corpus, tmp_path, capsys, *EDITS)
    src = corpus / QUANT
    done = subprocess.run([python, str(CHECK), str(src), str(out)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    a, b = found[str(src)], found[str(out)]
    assert [new_name(t["name"]) for t in a["tensors"]] == [t["name"] for t in b["tensors"]]
    for x, y in zip(a["tensors"], b["tensors"], strict=True):
        assert (x["type"], x["ne"], x["sha256"]) == (y["type"], y["ne"], y["sha256"]), y["name"]
        assert y["offset"] % b["alignment"] == 0
    kept = [k for k in a["fields"] if k not in EDITED]
    assert [k for k in b["fields"] if k not in EDITED] == kept  # in the input's order
    assert {k: b["fields"][k] for k in kept} == {k: a["fields"][k] for k in kept}
    assert "ckptsurgeon.test.float64" not in b["fields"]
    types = {k: b["fields"][k]["types"] for k in ("general.name", "gpt2.block_count", "ckptsurgeon.new.count",
                                                  "ckptsurgeon.new.eps")}
    assert types == {"general.name": [8], "gpt2.block_count": [4], "ckptsurgeon.new.count": [10],
                     "ckptsurgeon.new.eps": [6]}
    with open_checkpoint(out) as reader:
        typed = reader.typed_metadata()
    assert typed["general.name"] == {"type": "STRING", "value": "edited"}
    assert typed["gpt2.block_count"] == {"type": "UINT32", "value": 2}
    assert typed["ckptsurgeon.new.count"] == {"type": "UINT64", "value": 12345678901}
    assert typed["ckptsurgeon.new.eps"] == {"type": "FLOAT32", "value": 9.999999747378752e-06}


def test_quantized_tensors_are_refused_by_name_outside_gguf(corpus: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """GGUF -> safetensors: quantized blocks are never decoded; the tensors are named (exit 4, nothing
    written); left out with --exclude, the rest converts, its metadata as text."""
    out = tmp_path / "out.safetensors"
    code_, _, err = run(["convert", corpus / QUANT, "-o", out], capsys)
    line = one_line(err)
    assert code_ == 4 and str(out) in line
    assert "'blk.0.attn_qkv.weight' (Q8_0)" in line and "'blk.0.ffn_up.weight' (Q4_0)" in line
    assert list(tmp_path.iterdir()) == []
    code_, _, err = run(["convert", corpus / QUANT, "-o", out, "--exclude", "blk.0.attn_qkv.*",
                         "--exclude", "blk.0.ffn_up.*"], capsys)
    assert code_ == 0, err
    with open_checkpoint(corpus / QUANT) as src, open_checkpoint(out) as st:
        assert [t.name for t in st.tensors] == [t.name for t in src.tensors if t.dtype in ("F32", "F16")]
        for t in st.tensors:
            assert st.sha256(t.name) == src.sha256(t.name)
        assert st.metadata == src.metadata  # typed values as their text: "16", "true", JSON arrays


def test_safetensors_to_gguf_and_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    tensors = {"tok.weight": rng.standard_normal((5, 3)).astype("<f4"), "x.bias": np.arange(4, dtype="<f2"),
               "steps": np.array([-(2**62), 3], dtype="<i8"), "scalar": np.array(1.5, "<f4")}
    src = tmp_path / "in.safetensors"
    save_file(tensors, str(src), metadata={"general.name": "m", "general.alignment": "64"})
    out = tmp_path / "out.gguf"
    code_, _, err = run(["convert", src, "-o", out], capsys)
    assert code_ == 0, err
    with open_checkpoint(out) as reader:
        assert reader.alignment == 64 and all(t.loc[0] % 64 == 0 for t in reader.tensors)
        assert reader.typed_metadata() == {"general.name": {"type": "STRING", "value": "m"},
                                           "general.alignment": {"type": "UINT32", "value": 64}}
        for name, want in tensors.items():
            got = reader.read(name)
            assert got.shape == want.shape and got.tobytes() == want.tobytes(), name
    back = tmp_path / "back.safetensors"
    code_, _, err = run(["convert", out, "-o", back], capsys)
    assert code_ == 0, err
    with open_checkpoint(back) as reader:
        assert reader.metadata == {"general.name": "m", "general.alignment": "64"}


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"mask": np.array([True, False])}, "dtype BOOL has no GGUF type"),
    ({"pixels": np.arange(3, dtype=np.uint8)}, "dtype U8 has no GGUF type"),
    ({"w": np.zeros((1, 1, 1, 1, 2), "<f4")}, "at most 4"),
    ({"a" * 64: np.zeros(2, "<f4")}, "longer than the 63 bytes"),
])
def test_what_gguf_cannot_hold_is_refused(arrays: dict, fragment: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.numpy import save_file

    src = tmp_path / "in.safetensors"
    save_file(arrays, str(src))
    out = tmp_path / "out" / "o.gguf"
    out.parent.mkdir()
    code_, _, err = run(["convert", src, "-o", out], capsys)
    assert code_ == 4 and fragment in one_line(err), err
    assert list(out.parent.iterdir()) == []


def test_bad_alignment_metadata_is_refused(tmp_path: Path) -> None:
    from ckptsurgeon.errors import OutputError

    writer = Writer(tmp_path / "o.gguf", metadata={"general.alignment": "24"})
    with pytest.raises(OutputError, match="power of two"):
        writer.begin([TensorSpec("w", (2,), "F32")])
    writer.abort()


def test_transfer_never_casts_quantized_blocks(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A float32 source onto a Q8_0 target keeps the target's blocks and says why; Q8_0 onto Q8_0 copies the bytes."""
    from safetensors.numpy import save_file

    src = tmp_path / "src.safetensors"
    save_file({"blk.0.attn_qkv.weight": np.ones((96, 32), "<f4"), "output_norm.weight": np.ones(32, "<f4")}, str(src))
    out = tmp_path / "out.gguf"
    code_, stdout, err = run(["transfer", src, corpus / QUANT, "-o", out, "--json"], capsys)
    assert code_ == 0, err
    steps = {t["name"]: t for t in json.loads(stdout)["tensors"]}
    kept = steps["blk.0.attn_qkv.weight"]
    assert kept["action"] == "keep" and kept["kind"] == "dtype_not_castable" and "Q8_0" in kept["reason"]
    with open_checkpoint(out) as written, open_checkpoint(corpus / QUANT) as target:
        assert written["blk.0.attn_qkv.weight"].dtype == "Q8_0"
        assert written.sha256("blk.0.attn_qkv.weight") == target.sha256("blk.0.attn_qkv.weight")
        assert written.typed_metadata() == target.typed_metadata()
    again = tmp_path / "again.gguf"
    code_, stdout, err = run(["transfer", corpus / QUANT, out, "-o", again, "--json"], capsys)
    assert code_ == 0, err
    assert all(t["action"] == "replace" for t in json.loads(stdout)["tensors"])
    assert again.read_bytes() == (corpus / QUANT).read_bytes()


def test_verify_and_diff_treat_blocks_as_bytes(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code_, out, err = run(["verify", corpus / QUANT, "--json"], capsys)
    assert code_ == 0, err
    checks = {t["name"]: t for t in json.loads(out)["tensors"]}
    assert checks["blk.0.attn_qkv.weight"]["nan"] is None  # not a float: never scanned as values
    code_, out, err = run(["diff", corpus / QUANT, corpus / QUANT], capsys)
    assert code_ == 0, err


def test_metadata_edits_on_rename_and_convert(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Typed where the output types metadata (GGUF), checked and written as canonical text elsewhere."""
    out = renamed(corpus, tmp_path, capsys, *EDITS)
    with open_checkpoint(out) as after, open_checkpoint(corpus / QUANT) as before:
        old, new = before.typed_metadata(), after.typed_metadata()
        assert {k: v for k, v in new.items() if k not in EDITED} == {k: v for k, v in old.items() if k not in EDITED}
        assert new["ckptsurgeon.new.count"] == {"type": "UINT64", "value": 12345678901}
    st = tmp_path / "edited.safetensors"
    code_, _, err = run(["convert", corpus / LLAMA, "-o", st, "--set-metadata", "n:i32=007",
                         "--set-metadata", "note=free text", "--drop-metadata", "general.name"], capsys)
    assert code_ == 0, err
    with open_checkpoint(st) as reader:
        assert reader.metadata == {"general.architecture": "llama", "llama.block_count": "1", "n": "7",
                                   "note": "free text"}


@pytest.mark.parametrize(("edits", "fragment"), [
    (["--set-metadata", "gpt2.block_count=abc"], "'gpt2.block_count' is UINT32: 'abc' is not an integer"),
    (["--set-metadata", "k:u8=300"], "outside the range of UINT8"),
    (["--set-metadata", "k:bool=maybe"], "not a bool"),
    (["--set-metadata", "novalue"], "give KEY=VALUE"),
    (["--drop-metadata", "nope"], "--drop-metadata nope: the input has no such metadata"),
    (["--set-metadata", "general.alignment:u32=24"], "power of two"),
])
def test_bad_metadata_edits_write_nothing(edits: list[str], fragment: str, corpus: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "o.gguf"
    out.parent.mkdir()
    code_, _, err = run(["rename", corpus / QUANT, "-o", out, "--rename", "x=>y", "--allow-unused-rules", *edits], capsys)
    assert code_ in (2, 4) and fragment in one_line(err), err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("rule", [["--split", r"(.*)\.attn_qkv\.(.*)=>\1.{q,k,v}.\2"],
                                  ["--transform", "blk.0.ffn_up.weight=transpose"]])
def test_quantized_tensors_are_never_split_or_laid_out(rule: list[str], corpus: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "o.gguf"
    out.parent.mkdir()
    code_, _, err = run(["rename", corpus / QUANT, "-o", out, *rule], capsys)
    assert code_ == 2 and "is quantized" in one_line(err) and "never split, joined, reshaped or cast" in err
    assert list(out.parent.iterdir()) == []
