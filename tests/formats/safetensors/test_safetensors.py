from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from ckptsurgeon.atomic import TEMP_MARK, atomic_path
from ckptsurgeon.errors import InputError
from ckptsurgeon.formats import _io as io_module
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.safetensors import reader as st_reader
from ckptsurgeon.formats.safetensors import writer as st_writer
from ckptsurgeon.tensors import DTYPES, TensorSpec

from ...conftest import manifest_code

SAFETENSORS_FORMATS = {"safetensors", "hf_sharded_safetensors"}


def manifest_files(manifest: dict, formats: set[str]) -> list[dict]:
    return [f for f in manifest["files"] if f["format"] in formats]


def test_corpus_files_read_exactly(corpus: Path, manifest: dict) -> None:
    files = manifest_files(manifest, SAFETENSORS_FORMATS)
    assert len(files) >= 7
    for entry in files:
        with open_checkpoint(corpus / entry["path"]) as reader:
            assert {t.name for t in reader.tensors} == {t["name"] for t in entry["tensors"]}
            for t in entry["tensors"]:
                info = reader[t["name"]]
                assert list(info.shape) == t["shape"]
                assert info.dtype == manifest_code(t["dtype"])
                assert reader.sha256(t["name"]) == t["sha256"], (entry["path"], t["name"])


def test_sharded_index_reads_as_one_checkpoint(corpus: Path) -> None:
    with open_checkpoint(corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json") as reader:
        assert reader.format == "safetensors-sharded"
        assert len(reader.files) == 5
        assert reader.read("lm_head.weight").shape == (64, 32)
        path, _offset, length = reader.byte_range("lm_head.weight")
        assert path.name.startswith("model-0000") and length == 64 * 32 * 4


def test_format_detected_by_content_not_extension(corpus: Path, tmp_path: Path) -> None:
    disguised = tmp_path / "weights.bin"
    disguised.write_bytes((corpus / "torch/smallcnn.safetensors").read_bytes())
    with open_checkpoint(disguised) as reader:
        assert reader.format == "safetensors" and len(reader) == 16


ALL_CODES = sorted(c for c, d in DTYPES.items() if not d.is_block)


def sample(code: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = DTYPES[code].numpy
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
    if DTYPES[code].kind == "bool":
        raw = raw % 2
    if DTYPES[code].kind == "float":  # avoid NaN bit patterns so values compare equal
        return rng.standard_normal(shape).astype(np.float32).astype(dt)
    return raw.view(dt).reshape(shape)


def write(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        w = st_writer.Writer(tmp, metadata=metadata)
        w.begin([TensorSpec(n, a.shape, next(c for c, d in DTYPES.items() if d.numpy == a.dtype)) for n, a in arrays.items()])
        for n, a in arrays.items():
            w.write(n, a)
        w.finish()


def test_round_trip_every_dtype_loads_with_official_library(tmp_path: Path) -> None:
    arrays = {f"t.{code}": sample(code, (3, 5), i) for i, code in enumerate(ALL_CODES)}
    arrays["scalar"] = np.array(3.5, dtype=np.float32)
    arrays["empty"] = np.zeros((0, 4), dtype=np.float16)
    out = tmp_path / "out.safetensors"
    write(out, arrays, {"format": "np", "note": "ünïcode"})
    with open_checkpoint(out) as reader:
        assert reader.metadata == {"format": "np", "note": "ünïcode"}
        for name, a in arrays.items():
            assert reader.read(name).tobytes() == a.tobytes()
            assert reader.read(name).dtype == a.dtype
    with safe_open(out, framework="np") as f:
        assert f.metadata() == {"format": "np", "note": "ünïcode"}
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            if name.startswith("t.F8"):
                continue  # the official numpy binding names no float8 dtypes
            got = f.get_tensor(name)
            assert got.tobytes() == arrays[name].tobytes()
    assert (8 + struct.unpack("<Q", out.read_bytes()[:8])[0]) % 8 == 0


def test_reads_files_written_by_official_library(tmp_path: Path) -> None:
    arrays = {"a": np.arange(12, dtype=np.int32).reshape(3, 4), "b": np.ones(5, dtype=ml_dtypes.bfloat16)}
    save_file(arrays, tmp_path / "x.safetensors", metadata={"k": "v"})
    with open_checkpoint(tmp_path / "x.safetensors") as reader:
        assert reader.metadata == {"k": "v"}
        assert reader["b"].dtype == "BF16"
        np.testing.assert_array_equal(reader.read("a"), arrays["a"])


def test_read_is_zero_copy_view_of_the_map(corpus: Path) -> None:
    with open_checkpoint(corpus / "torch/smallcnn.safetensors") as reader:
        arr = reader.read("conv1.weight")
        assert not arr.flags.owndata and not arr.flags.writeable
        del arr


def test_write_range_copies_bytes_verbatim(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "torch/smallcnn.safetensors"
    out = tmp_path / "copy.safetensors"
    with open_checkpoint(src) as reader, atomic_path(out) as tmp:
        w = st_writer.Writer(tmp, metadata=reader.metadata)
        w.begin([TensorSpec(t.name, t.shape, t.dtype) for t in reader.tensors])
        for t in reader.tensors:
            assert w.write_range(t.name, *reader.byte_range(t.name))
        w.finish()
    assert out.read_bytes()[8:].rstrip() != b""
    with open_checkpoint(src) as a, open_checkpoint(out) as b:
        assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
        assert all(a.sha256(t.name) == b.sha256(t.name) for t in a.tensors)


def test_copy_range_fallback_without_copy_file_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 100)
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    dst = tmp_path / "dst.bin"
    with open(src, "rb") as s, open(dst, "wb") as d:
        io_module.copy_range(d.fileno(), s.fileno(), 10, 1000)
    assert dst.read_bytes() == src.read_bytes()[10:1010]


def test_exception_mid_write_leaves_destination_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "out.safetensors"
    dest.write_bytes(b"old contents")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        w = st_writer.Writer(tmp)
        w.begin([TensorSpec("a", (4,), "F32"), TensorSpec("b", (4,), "F32")])
        w.write("a", np.zeros(4, np.float32))
        raise RuntimeError("injected")
    assert dest.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]
    assert not any(TEMP_MARK in p.name for p in tmp_path.iterdir())


def test_writer_state_machine_refuses_misuse(tmp_path: Path) -> None:
    w = st_writer.Writer(tmp_path / "x.safetensors")
    with pytest.raises(Exception, match="expected state WEIGHTS"):
        w.write("a", np.zeros(1, np.float32))
    w.begin([TensorSpec("a", (1,), "F32"), TensorSpec("b", (1,), "F32")])
    with pytest.raises(Exception, match="expected tensor 'a' next"):
        w.write("b", np.zeros(1, np.float32))
    with pytest.raises(Exception, match="declared F32"):
        w.write("a", np.zeros(2, np.float32))
    w2 = st_writer.Writer(tmp_path / "y.safetensors")
    w2.begin([TensorSpec("a", (1,), "F32")])
    with pytest.raises(Exception, match="not written"):
        w2.finish()
    w.abort()
    w2.abort()


# --- malformed files ---------------------------------------------------------------------------


def raw_file(path: Path, header: bytes | dict, data: bytes = b"", length: int | None = None) -> Path:
    if isinstance(header, dict):
        header = json.dumps(header).encode()
    n = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + header + data)
    return path


def t(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


BAD_HEADERS = {
    "truncated_len": (b"", None, b"", "truncated"),
    "len_past_end": ({"a": t("F32", [1], 0, 4)}, 10_000, b"\0" * 4, "runs past the end"),
    "too_large": (b"{}", 200_000_000, b"", "100 MB"),
    "not_object": (b"[1, 2]", None, b"", "does not start with '{'"),
    "bad_json": (b"{\"a\": ", None, b"", "not valid JSON"),
    "bad_utf8": (b"{\"\xff\": 1}", None, b"", "not valid JSON"),
    "duplicate_key": (b'{"a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}, "a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', None, b"\0" * 4, "duplicate key"),
    "duplicate_field": (b'{"a": {"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', None, b"\0" * 4, "duplicate key"),
    "duplicate_metadata_key": (b'{"__metadata__": {"k": "1", "k": "2"}}', None, b"", "duplicate key"),
    "duplicate_metadata": (b'{"__metadata__": {"k": "1"}, "__metadata__": {"j": "2"}}', None, b"", "duplicate key"),
    "duplicate_key_with_colons": (b'{"a:b": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}, "a:b": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', None, b"\0" * 4, "duplicate key"),
    "duplicate_key_escaped_colon": (b'{"a\\u003ab": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}, "a:b": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', None, b"\0" * 4, "duplicate key"),
    "duplicate_key_and_hole": (b'{"a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}, "a": {"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', None, b"\0" * 8, "duplicate key"),
    "nan_token": (b'{"__metadata__": {"x": NaN}}', None, b"", "NaN"),
    "deep_nesting": (b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, b"", "invalid safetensors header"),
    "unknown_dtype": ({"a": t("F33", [1], 0, 4)}, None, b"\0" * 4, "unknown dtype"),
    "negative_dim": ({"a": t("F32", [-1], 0, 4)}, None, b"\0" * 4, "non-negative integers"),
    "bool_dim": ({"a": t("F32", [True], 0, 4)}, None, b"\0" * 4, "non-negative integers"),
    "float_dim": ({"a": t("F32", [1.0], 0, 4)}, None, b"\0" * 4, "non-negative integers"),
    "size_mismatch": ({"a": t("F32", [2], 0, 4)}, None, b"\0" * 4, "offsets span 4"),
    "overlap": ({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 4, 12)}, None, b"\0" * 12, "overlaps"),
    "hole": ({"a": t("F32", [1], 0, 4), "b": t("F32", [1], 8, 12)}, None, b"\0" * 12, "hole"),
    "trailing": ({"a": t("F32", [1], 0, 4)}, None, b"\0" * 8, "data section holds 8"),
    "past_data": ({"a": t("F32", [2], 0, 8)}, None, b"\0" * 4, "truncated"),
    "metadata_not_str": ({"__metadata__": {"a": 1}}, None, b"", "strings to strings"),
    "extra_field": ({"a": {**t("F32", [1], 0, 4), "x": 1}}, None, b"\0" * 4, "exactly dtype"),
    "bom": ("\ufeff{}".encode(), None, b"", "invalid safetensors header"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_malformed_headers_are_refused(case: str, tmp_path: Path) -> None:
    header, length, data, message = BAD_HEADERS[case]
    path = tmp_path / f"{case}.safetensors"
    if case == "truncated_len":
        path.write_bytes(b"\x05\x00\x00")
        with pytest.raises(InputError):
            open_checkpoint(path)
        return
    raw_file(path, header, data, length)
    with pytest.raises(InputError, match=message) as info:
        st_reader.Reader(path)
    assert str(path) in info.value.message and "\n" not in info.value.message


def write_index(directory: Path, weight_map: dict) -> Path:
    index = directory / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 8}, "weight_map": weight_map}))
    return index


def test_sharded_index_is_checked_both_ways(tmp_path: Path) -> None:
    save_file({"a": np.zeros(1, np.float32)}, tmp_path / "s1.safetensors")
    save_file({"b": np.zeros(1, np.float32), "c": np.zeros(1, np.float32)}, tmp_path / "s2.safetensors")
    ok = write_index(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"})
    with open_checkpoint(ok) as reader:
        assert [t.name for t in reader.tensors] == ["a", "b", "c"]
        assert reader.metadata == {"total_size": "8"}
    cases = {
        "which does not hold it": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"},
        "which the index does not list": {"a": "s1.safetensors", "b": "s2.safetensors"},
        "does not exist": {"a": "s1.safetensors", "b": "s3.safetensors", "c": "s2.safetensors"},
        "outside": {"a": "../s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"},
    }
    for message, weight_map in cases.items():
        index = write_index(tmp_path, weight_map)
        with pytest.raises(InputError, match=message):
            open_checkpoint(index)
