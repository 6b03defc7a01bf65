"""Every fast path gives the bytes (and counts) the simple path gives.

The fast paths: byte-range copies (``copy_file_range``) instead of read + write; tensors streamed
in pieces (``Writer.write_chunks``) instead of whole arrays; casts piece by piece instead of one
``astype``; change counting piece by piece, skipping identical bytes, instead of one element-wise
comparison; STORED npz members read from a memory map instead of through ``np.load``; pages of
mapped inputs released after use. No timing here: ``tests/perf/bench.py`` measures speed.
"""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from ckptsurgeon import api, execute, values
from ckptsurgeon.commands.convert import convert
from ckptsurgeon.execute import Move, Outcome, copy_tensors, write_tensor
from ckptsurgeon.formats import _io as io_module
from ckptsurgeon.formats import base, open_checkpoint
from ckptsurgeon.formats.base import WriterStateError
from ckptsurgeon.formats.hdf5 import writer as h5_writer
from ckptsurgeon.formats.npz import writer as npz_writer
from ckptsurgeon.formats.safetensors import header as st_header
from ckptsurgeon.formats.safetensors import sharded
from ckptsurgeon.formats.safetensors import writer as st_writer
from ckptsurgeon.tensors import DTYPES, TensorInfo, TensorSpec, code_of, make_info
from ckptsurgeon.values import (
    any_nonfinite,
    cast_array,
    changed_in_piece,
    count_changed,
    nonfinite,
    pieces,
    same_bytes,
)

# --- helpers -----------------------------------------------------------------------------------------


def special_values(code: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` values of dtype ``code``: random ones mixed with zeros of both signs, NaN, ±inf, huge and tiny values."""
    rng = np.random.default_rng(seed)
    dt = DTYPES[code].numpy
    if DTYPES[code].kind != "float":
        info = np.iinfo(dt) if DTYPES[code].kind != "bool" else None
        if info is None:
            return rng.integers(0, 2, n).astype(dt)
        return rng.integers(info.min, info.max, n, dtype=np.int64 if info.min < 0 else np.uint64, endpoint=True).astype(dt)
    values = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)).astype(np.float64)
    specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e38, -3.5e38, 7e4, -1e5, 1e-30, 448.0, 500.0, 6e-8])
    values[rng.integers(0, n, n // 5)] = rng.choice(specials, n // 5)
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dt)


def save_st(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    """A safetensors file of these arrays (the reference library's writer where it knows every dtype)."""
    if all(v.dtype != ml_dtypes.float8_e4m3fn for v in tensors.values()):
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"k": "v"})
        return path
    w = st_writer.Writer(path, metadata={"k": "v"})
    w.begin([TensorSpec(k, v.shape, code_of(v.dtype) or "?") for k, v in tensors.items()])
    for k, v in tensors.items():
        w.write(k, v)
    w.finish()
    return path


def model_arrays() -> dict[str, np.ndarray]:
    """Odd sizes (so tensors start at unaligned offsets), a 0-d and an empty tensor, ints, bools, float8."""
    rng = np.random.default_rng(1)
    return {
        "a.weight": rng.standard_normal((33, 17)).astype(np.float32),
        "a.bias": rng.standard_normal(17).astype(np.float16),
        "b.weight": special_values("BF16", 1001),
        "b.scale": np.array(3.5, dtype=np.float64),
        "c.empty": np.zeros((0, 4), dtype=np.float32),
        "d.ids": np.arange(37, dtype=np.int64),
        "e.mask": np.array([True, False, True]),
        "f.fp8": special_values("F8_E4M3", 99),
    }


class RangesRefused(st_writer.Writer):
    """A safetensors writer that takes no byte ranges and no pieces: the simple read + write path."""

    streams_chunks = False

    def write_range(self, name: str, src: Path, offset: int, length: int) -> bool:
        return False

    def write_chunks(self, name: str, chunks: object) -> None:
        base.Writer.write_chunks(self, name, chunks)  # type: ignore[arg-type]  # the assembling fallback


class NpzWholeArrays(npz_writer.Writer):
    streams_chunks = False

    def write_chunks(self, name: str, chunks: object) -> None:
        base.Writer.write_chunks(self, name, chunks)  # type: ignore[arg-type]


def write_moves(writer: base.Writer, moves: list[Move]) -> dict[str, Outcome]:
    writer.begin([m.out for m in moves])
    outcomes = copy_tensors(moves, writer)
    writer.finish()
    return outcomes


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save_st(tmp_path / "model.safetensors", model_arrays())


# --- byte-range copies vs read + write ----------------------------------------------------------------


def test_byte_range_copy_equals_read_and_write(model: Path, tmp_path: Path) -> None:
    fast, simple = tmp_path / "fast.safetensors", tmp_path / "simple.safetensors"
    with open_checkpoint(model) as r:
        moves = [Move(TensorSpec(t.name, t.shape, t.dtype), r, t.name) for t in r.tensors]
        outcomes = write_moves(st_writer.Writer(fast, metadata=r.metadata), moves)
        write_moves(RangesRefused(simple, metadata=r.metadata), moves)
    assert all(o.byte_copy for name, o in outcomes.items() if name != "c.empty")
    assert fast.read_bytes() == simple.read_bytes()
    with open_checkpoint(fast) as got:
        for name, value in model_arrays().items():
            assert got.read(name).tobytes() == value.tobytes()


def test_sharded_and_npz_ranges_equal_read_and_write(corpus: Path, tmp_path: Path) -> None:
    for src in (corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json", corpus / "npz/weights.npz"):
        fast, simple = tmp_path / f"{src.stem}-fast.safetensors", tmp_path / f"{src.stem}-simple.safetensors"
        with open_checkpoint(src) as r:
            moves = [Move(TensorSpec(t.name, t.shape, t.dtype), r, t.name) for t in r.tensors]
            outcomes = write_moves(st_writer.Writer(fast), moves)
            write_moves(RangesRefused(simple), moves)
        assert any(o.byte_copy for o in outcomes.values())
        assert fast.read_bytes() == simple.read_bytes()


def test_transfer_output_is_the_same_with_and_without_count_changes(model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    target = model_arrays()
    target["a.weight"] = rng.standard_normal((33, 17)).astype(np.float32)
    tgt = save_st(tmp_path / "target.safetensors", target)
    plain, counted = tmp_path / "plain.safetensors", tmp_path / "counted.safetensors"
    api.transfer(model, tgt, plain)
    report = api.transfer(model, tgt, counted, count_changes=True)
    assert plain.read_bytes() == counted.read_bytes()
    assert report.outcomes["a.weight"].changed == 33 * 17
    assert report.outcomes["b.weight"].changed == 0 and report.outcomes["c.empty"].changed == 0
    # counted beside the byte-range copy, not by streaming the values through
    assert all(report.outcomes[s.name].byte_copy for s in report.plan.steps if s.action == "replace"
               and report.outcomes[s.name].changed is not None and s.shape != (0,))


def test_an_error_while_counting_beside_the_copy_leaves_nothing(model: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptsurgeon.errors import InputError

    arrays = model_arrays()
    arrays["a.weight"] = arrays["a.weight"] + 1
    tgt = save_st(tmp_path / "target.safetensors", arrays)

    def broken(new: np.ndarray, old: np.ndarray) -> int:
        raise InputError(tgt, "cannot read (simulated)")

    monkeypatch.setattr(values, "changed_in_piece", broken)
    out = tmp_path / "out.safetensors"
    with pytest.raises(InputError, match="simulated"):
        api.transfer(model, tgt, out, count_changes=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "target.safetensors"]


def data_start(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_aligned_output_lines_up_with_its_source_and_reads_everywhere(model: Path, tmp_path: Path) -> None:
    """A rename to shorter names pads the header so copied ranges keep their offsets modulo 64 KiB."""
    out = tmp_path / "renamed.safetensors"
    api.rename(model, out, api.Rules.from_options(rename=[r"\.weight$=>.w"]))
    window = st_writer.Writer.align_window
    assert (data_start(out) - data_start(model)) % window == 0 and data_start(out) % 8 == 0
    assert data_start(out) - data_start(model) < window
    expected = {k.replace(".weight", ".w"): v for k, v in model_arrays().items()}
    with open_checkpoint(out) as got:
        assert {t.name: got.read(t.name).tobytes() for t in got.tensors} == {k: v.tobytes() for k, v in expected.items()}
    from safetensors import safe_open  # the reference parser takes the padded header too

    with safe_open(str(out), "np") as f:
        assert sorted(f.keys()) == sorted(expected) and f.metadata() == {"k": "v"}
        assert f.get_slice("a.w").get_shape() == [33, 17]


def test_pad_header() -> None:
    header = st_header.build_header([TensorSpec("x", (3,), "F32")], {})
    for residue in (0, 8, 4096, 65528):
        padded = st_header.pad_header(header, residue, 65536)
        assert len(padded) % 65536 == residue and len(padded) - len(header) < 65536
        assert int.from_bytes(padded[:8], "little") == len(padded) - 8
        assert padded[8:].rstrip(b" ") == header[8:].rstrip(b" ")


# --- pieces: streamed writes vs whole arrays --------------------------------------------------------------


@pytest.mark.parametrize("piece_bytes", [1, 7, 64, 4096, 1 << 22])
def test_streamed_pieces_equal_whole_arrays(model: Path, tmp_path: Path, piece_bytes: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """npz output from safetensors goes in pieces; any piece size gives the bytes whole arrays give."""
    monkeypatch.setattr(execute, "PIECE_BYTES", piece_bytes)
    for compress in (False, True):
        fast, simple = tmp_path / f"fast{compress}.npz", tmp_path / f"simple{compress}.npz"
        with open_checkpoint(model) as r:
            moves = [Move(TensorSpec(t.name, t.shape, t.dtype), r, t.name) for t in r.tensors]
            write_moves(npz_writer.Writer(fast, compress=compress), moves)
            write_moves(NpzWholeArrays(simple, compress=compress), moves)
        assert fast.read_bytes() == simple.read_bytes()


def test_early_writeback_changes_no_byte(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io_module.Writeback, "STEP", 1)  # start writeback after every write
    for suffix in (".safetensors", ".npz"):
        convert(model, tmp_path / f"often{suffix}", dtype="F16", allow_overflow=True)
    monkeypatch.setattr(io_module.Writeback, "STEP", 1 << 60)
    for suffix in (".safetensors", ".npz"):
        convert(model, tmp_path / f"never{suffix}", dtype="F16", allow_overflow=True)
        assert (tmp_path / f"often{suffix}").read_bytes() == (tmp_path / f"never{suffix}").read_bytes()


def test_deflated_npz_streams_into_safetensors(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "PIECE_BYTES", 100)
    src = corpus / "npz/weights_compressed.npz"
    fast, simple = tmp_path / "fast.safetensors", tmp_path / "simple.safetensors"
    with open_checkpoint(src) as r:
        moves = [Move(TensorSpec(t.name, t.shape, t.dtype), r, t.name) for t in r.tensors]
        outcomes = write_moves(st_writer.Writer(fast), moves)
        write_moves(RangesRefused(simple), moves)
    assert not any(o.byte_copy for o in outcomes.values())
    assert fast.read_bytes() == simple.read_bytes()


@pytest.mark.parametrize("make", ["safetensors", "sharded", "npz", "hdf5"])
def test_write_chunks_of_any_size_equal_write(make: str, tmp_path: Path) -> None:
    arrays = {"x": special_values("F32", 1000, 3).reshape(10, 100), "y": special_values("BF16", 77, 4),
              "z": np.zeros((0,), np.float32), "s": np.array(2, np.int32)}
    specs = [TensorSpec(k, v.shape, "F32" if k == "x" else "BF16" if k == "y" else "F32" if k == "z" else "I32")
             for k, v in arrays.items()]
    cls = {"safetensors": st_writer.Writer, "npz": npz_writer.Writer, "hdf5": h5_writer.Writer,
           "sharded": functools.partial(sharded.Writer, shard_size=2000)}[make]
    suffix = {"safetensors": ".safetensors", "npz": ".npz", "hdf5": ".h5", "sharded": "/model.safetensors.index.json"}[make]
    if make == "sharded":
        (tmp_path / "whole").mkdir()
        (tmp_path / "chunked").mkdir()

    def cut(raw: bytes) -> Iterator[bytes]:
        sizes = [1, 3, 250, 17, 5000]
        pos, i = 0, 0
        while pos < len(raw):
            yield raw[pos : pos + sizes[i % len(sizes)]]
            pos += sizes[i % len(sizes)]
            i += 1

    whole, chunked = tmp_path / f"whole{suffix}", tmp_path / f"chunked{suffix}"
    w = cls(whole)
    w.begin(specs)
    for k, v in arrays.items():
        w.write(k, v)
    w.finish()
    w = cls(chunked)
    w.begin(specs)
    for k, v in arrays.items():
        w.write_chunks(k, cut(v.tobytes()))
    w.finish()
    with open_checkpoint(whole) as a, open_checkpoint(chunked) as b:
        for k in arrays:
            assert a.read(k).tobytes() == b.read(k).tobytes() == arrays[k].tobytes()
    if make == "sharded":
        shards = sorted(p.name for p in whole.parent.iterdir())
        assert len(shards) == 3 and shards == sorted(p.name for p in chunked.parent.iterdir())
        assert all((whole.parent / n).read_bytes() == (chunked.parent / n).read_bytes() for n in shards)
    elif make != "hdf5":  # HDF5 files carry no timestamps either, but their layout is h5py's business
        assert whole.read_bytes() == chunked.read_bytes()


@pytest.mark.parametrize("cls", [st_writer.Writer, npz_writer.Writer, h5_writer.Writer])
def test_write_chunks_refuses_the_wrong_number_of_bytes(cls: type[base.Writer], tmp_path: Path) -> None:
    for pieces_given in ([b"\0" * 8], [b"\0" * 12, b"\0" * 8]):
        w = cls(tmp_path / f"o{len(pieces_given)}.x")
        w.begin([TensorSpec("t", (4,), "F32")])
        with pytest.raises(WriterStateError, match="declared"):
            w.write_chunks("t", iter(pieces_given))
        w.abort()
    w = cls(tmp_path / "wrong-name.x")
    w.begin([TensorSpec("t", (1,), "F32")])
    with pytest.raises(WriterStateError, match="expected tensor 't' next"):
        w.write_chunks("u", [b"\0" * 4])
    w.abort()


class ChoppyReader(base.Reader):
    """A reader whose byte chunks have irregular sizes, cutting elements in two."""

    format = "choppy"

    def __init__(self, arrays: dict[str, np.ndarray], sizes: list[int]) -> None:
        super().__init__(Path("choppy"))
        self.arrays = arrays
        self.sizes = sizes
        self.tensors = [TensorInfo(k, v.shape, code_of(v.dtype) or "F32") for k, v in arrays.items()]

    def read(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def iter_bytes(self, name: str, chunk_bytes: int = 0) -> Iterator[memoryview]:
        raw = self.arrays[name].tobytes()
        pos, i = 0, 0
        while pos < len(raw):
            n = self.sizes[i % len(self.sizes)]
            yield memoryview(raw[pos : pos + n])
            pos, i = pos + n, i + 1


@given(n=st.integers(0, 300), elements=st.integers(1, 50), sizes=st.lists(st.integers(1, 97), min_size=1, max_size=6))
@settings(max_examples=150, deadline=None)
def test_pieces_recut_any_chunking(n: int, elements: int, sizes: list[int]) -> None:
    a = special_values("F32", n, n)
    reader = ChoppyReader({"t": a}, sizes)
    got = list(pieces(reader, "t", elements))
    assert all(p.size == elements for p in got[:-1]) and (not got or 0 < got[-1].size <= elements)
    assert b"".join(p.tobytes() for p in got) == a.tobytes()


# --- casts: piece by piece vs one astype -------------------------------------------------------------------

CASTS = [("F32", "BF16"), ("F32", "F16"), ("F64", "F32"), ("F64", "BF16"), ("BF16", "F32"), ("F16", "BF16"),
         ("F32", "F8_E4M3"), ("F16", "F8_E5M2"), ("BF16", "F8_E8M0"), ("I64", "I32"), ("I32", "I8"), ("U16", "U8")]


@pytest.mark.parametrize(("src", "dst"), CASTS)
@pytest.mark.parametrize("elements", [1, 5, 64, 10_000])
def test_piecewise_cast_equals_whole_astype(src: str, dst: str, elements: int) -> None:
    a = special_values(src, 3001, seed=len(src) + elements)
    whole, whole_overflow = cast_array(a, dst)
    with np.errstate(over="ignore", invalid="ignore"):
        assert whole.tobytes() == a.astype(DTYPES[dst].numpy).tobytes()
    parts = [cast_array(a[i : i + elements], dst) for i in range(0, a.size, elements)]
    assert b"".join(p.tobytes() for p, _ in parts) == whole.tobytes()
    assert sum(o for _, o in parts) == whole_overflow
    if DTYPES[dst].kind == "float":  # the definition: finite before (in float64) and not after
        with np.errstate(invalid="ignore"):
            finite_before = np.isfinite(a.astype(np.float64))
            assert whole_overflow == np.count_nonzero(finite_before & ~np.isfinite(whole.astype(np.float64)))


@pytest.mark.parametrize("code", [c for c, d in DTYPES.items() if d.kind == "float"])
def test_nonfinite_from_bits_equals_isfinite(code: str) -> None:
    every = np.arange(256, dtype=np.uint8) if DTYPES[code].itemsize == 1 else None
    values = every.view(DTYPES[code].numpy) if every is not None else special_values(code, 5000, seed=12)
    if DTYPES[code].itemsize == 2:  # every 16-bit pattern
        values = np.arange(1 << 16, dtype=np.uint16).view(DTYPES[code].numpy)
    with np.errstate(invalid="ignore"):
        expected = ~np.isfinite(values.astype(np.float64))
    assert np.array_equal(nonfinite(values), expected)
    assert any_nonfinite(values) == bool(expected.any())
    finite = values[~expected]
    assert not any_nonfinite(finite) and not any_nonfinite(finite[:0])
    assert all(any_nonfinite(values[i : i + 1]) == bool(expected[i]) for i in range(0, values.size, 97))


def test_overflow_count_is_finite_before_and_not_after() -> None:
    a = np.array([1.0, 1e39, -1e39, np.inf, np.nan, 65504.0, 70000.0, -0.0], dtype=np.float64)
    assert cast_array(a, "F32")[1] == 2  # ±1e39 overflow; inf and NaN were not finite before
    assert cast_array(a, "F16")[1] == 3  # ... and 70000
    assert cast_array(a, "F8_E4M3")[1] == 4  # ... and 65504 (float8_e4m3fn has no inf: NaN)
    assert cast_array(np.array([300, -1, 5], dtype=np.int64), "U8")[1] == 2


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F8_E5M2"])
def test_chunked_convert_cast_equals_whole_astype(dtype: str, model: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "PIECE_BYTES", 40)
    for suffix in (".safetensors", ".npz", ".h5"):
        out = tmp_path / f"cast-{dtype}{suffix}"
        report = convert(model, out, dtype=dtype, allow_overflow=True)  # the model holds values out of range
        with open_checkpoint(model) as src, open_checkpoint(out) as got:
            for t in report.tensors:
                original = src.read(t.name)
                expected, overflow = (cast_array(original, dtype) if t.cast else (original, 0))
                with np.errstate(over="ignore", invalid="ignore"):
                    assert expected.tobytes() == original.astype(DTYPES[t.dtype_out].numpy).tobytes()
                assert got.read(t.name).tobytes() == expected.tobytes(), (suffix, t.name)
                assert t.overflow == overflow


# --- change counting: piece by piece vs one element-wise comparison ---------------------------------------------


def numpy_changed(new: np.ndarray, old: np.ndarray) -> int:
    """The plain definition: values differ, NaN equals NaN, -0.0 equals 0.0 (compared in float64 / exactly)."""
    if new.dtype.kind in "biu" and old.dtype.kind in "biu":
        return int(np.count_nonzero(new != old))
    a, b = new.astype(np.float64), old.astype(np.float64)
    return int(np.count_nonzero(~((a == b) | (np.isnan(a) & np.isnan(b)))))


@pytest.mark.parametrize("code", ["F32", "F16", "F64", "BF16", "F8_E4M3", "F8_E5M2", "I32", "U8", "BOOL"])
@pytest.mark.parametrize("elements", [1, 3, 100, 5000])
def test_piecewise_counts_equal_elementwise(code: str, elements: int) -> None:
    new = special_values(code, 4000, seed=5)
    old = new.copy()
    rng = np.random.default_rng(6)
    flip = rng.integers(0, new.size, 300)
    old[flip] = special_values(code, 300, seed=7)
    old[:1000] = new[:1000]  # a long identical stretch: whole pieces skip the arithmetic
    if DTYPES[code].kind == "float":  # the same value in other bytes: -0.0 vs 0.0, and two NaN payloads
        zeros = np.array([0.0, -0.0], dtype=np.float64).astype(new.dtype)
        new[2000:2002], old[2000:2002] = zeros, zeros[::-1]
        old_bits = old.view(np.uint8 if new.itemsize == 1 else np.uint16 if new.itemsize == 2 else
                            np.uint32 if new.itemsize == 4 else np.uint64)
        new[2100] = old[2100] = np.nan
        old_bits[2100] ^= 1 << (8 * new.itemsize - 1)  # a NaN with its sign flipped: other bytes, equal as a value
        assert np.isnan(old[2100].astype(np.float64))
    expected = numpy_changed(new, old)
    assert count_changed(new, old) == expected
    parts = [changed_in_piece(new[i : i + elements], old[i : i + elements]) for i in range(0, new.size, elements)]
    assert sum(parts) == expected


def test_counts_across_dtypes_equal_elementwise() -> None:
    new = special_values("F32", 999, seed=8)
    old = new.astype(ml_dtypes.bfloat16)
    assert sum(changed_in_piece(new[i : i + 10], old[i : i + 10]) for i in range(0, 999, 10)) == numpy_changed(new, old)


def test_same_bytes() -> None:
    a = special_values("F32", 1001)
    b = a.copy()
    assert same_bytes(a, b) and same_bytes(a[:0], b[:0]) and same_bytes(a[1:], b[1:])
    b[-1] = 7.0 if a[-1] != 7.0 else 8.0
    assert not same_bytes(a, b)
    assert not same_bytes(a, a.view(np.uint8)[:-4].view(np.float32))


@pytest.mark.parametrize("target_kind", ["safetensors", "npz"])
def test_transfer_count_changes_equals_numpy(target_kind: str, model: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "PIECE_BYTES", 48)
    source = model_arrays()
    target = {k: v.copy() for k, v in source.items()}
    rng = np.random.default_rng(9)
    target["a.weight"][rng.integers(0, 33, 5), rng.integers(0, 17, 5)] += 1.0
    target["b.weight"] = special_values("BF16", 1001, seed=10)
    target["d.ids"][::3] += 1
    target["f.fp8"] = special_values("F8_E4M3", 99, seed=11)
    if target_kind == "safetensors":
        tgt = save_st(tmp_path / "t.safetensors", target)
    else:  # numpy's own writer: bfloat16 as 2-byte void (as JAX/Flax save it); no float8
        target.pop("f.fp8")
        tgt = tmp_path / "t.npz"
        np.savez(tgt, **{k: v.view("V2") if v.dtype == ml_dtypes.bfloat16 else v for k, v in target.items()})
    report = api.transfer(model, tgt, tmp_path / f"counted.{target_kind}", count_changes=True)
    assert all(s.action == "replace" for s in report.plan.steps)
    for name, old in target.items():
        assert report.outcomes[name].changed == numpy_changed(source[name].reshape(-1), old.reshape(-1)), name
    assert report.outcomes["a.weight"].changed == 5 and report.outcomes["d.ids"].changed == 13


def test_count_changes_with_a_non_streaming_writer(model: Path, tmp_path: Path) -> None:
    """HDF5 output: whole arrays are written, and the counts come from pieces read beside them."""
    source = model_arrays()
    target = {k: v.copy() for k, v in source.items()}
    target["a.weight"][0, :5] = 0.5
    tgt = tmp_path / "t.h5"
    convert(save_st(tmp_path / "t.safetensors", target), tgt)
    report = api.transfer(model, tgt, tmp_path / "o.h5", count_changes=True)
    assert report.outcomes["a.weight"].changed == numpy_changed(source["a.weight"], target["a.weight"])
    assert sum(o.changed or 0 for o in report.outcomes.values()) == report.outcomes["a.weight"].changed


# --- npz: STORED members through the memory map vs np.load -----------------------------------------------------


def test_stored_npz_members_equal_np_load(corpus: Path, tmp_path: Path) -> None:
    big_endian = np.arange(24, dtype=">f4").reshape(2, 3, 4)
    fortran = np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4))
    extra = tmp_path / "mixed.npz"
    np.savez(extra, be=big_endian, f=fortran, c=np.linspace(0, 1, 257, dtype=np.float64), s=np.array(5, np.uint8))
    for path in (corpus / "npz/weights.npz", corpus / "npz/weights_compressed.npz", extra):
        with np.load(path) as z, open_checkpoint(path) as r:
            raw = path.read_bytes()
            for t in r.tensors:
                expected = np.ascontiguousarray(z[t.name]).astype(z[t.name].dtype.newbyteorder("<"))
                assert r.read(t.name).tobytes() == expected.tobytes(), (path.name, t.name)
                assert b"".join(bytes(c) for c in r.iter_bytes(t.name, 10)) == expected.tobytes()
                where = r.byte_range(t.name)
                if where is not None:
                    _, offset, length = where
                    assert raw[offset : offset + length] == expected.tobytes()
                r.release(t.name)
                assert r.read(t.name).tobytes() == expected.tobytes()  # after the pages were dropped


def test_released_pages_keep_arrays_valid(model: Path) -> None:
    expected = model_arrays()
    with open_checkpoint(model) as r:
        arrays = {t.name: r.read(t.name) for t in r.tensors}
        chunks = {t.name: list(r.iter_bytes(t.name, 5)) for t in r.tensors}  # iterating drops pages behind it
        for t in r.tensors:
            r.release(t.name)
        for name, value in expected.items():
            assert arrays[name].tobytes() == value.tobytes()
            assert b"".join(bytes(c) for c in chunks[name]) == value.tobytes()


def test_npz_written_in_pieces_loads_with_numpy(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "PIECE_BYTES", 33)
    out = tmp_path / "o.npz"
    convert(model, out, exclude=["b.weight", "f.fp8"])  # numpy cannot name bfloat16 and float8
    expected = model_arrays()
    with np.load(out) as z:
        for name in z.files:
            assert z[name].tobytes() == expected[name].tobytes()
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None  # every member's CRC holds


def test_write_tensor_uses_the_cast_given(model: Path, tmp_path: Path) -> None:
    calls: list[int] = []

    def counting_cast(arr: np.ndarray, code: str) -> tuple[np.ndarray, int]:
        calls.append(arr.size)
        return cast_array(arr, code)

    with open_checkpoint(model) as r:
        w = st_writer.Writer(tmp_path / "o.safetensors")
        w.begin([TensorSpec("a.weight", (33, 17), "BF16")])
        outcome = Outcome()
        write_tensor(Move(TensorSpec("a.weight", (33, 17), "BF16"), r, "a.weight"), w, outcome, cast=counting_cast)
        w.finish()
    assert sum(calls) == 33 * 17 and not outcome.byte_copy
    got = load_file(str(tmp_path / "o.safetensors"))["a.weight"]
    assert got.tobytes() == model_arrays()["a.weight"].astype(ml_dtypes.bfloat16).tobytes()


@given(data=st.binary(min_size=0, max_size=2000), sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5))
@settings(max_examples=50, deadline=None)
def test_base_fallback_assembles_any_pieces(data: bytes, sizes: list[int]) -> None:
    n = len(data) // 4 * 4
    collected: dict[str, np.ndarray] = {}

    class Memory(base.Writer):
        format = "memory"

        def _begin(self) -> None: ...

        def _write(self, spec: TensorSpec, arr: np.ndarray) -> None:
            collected[spec.name] = arr.copy()

        def _finish(self) -> None: ...

    def cut() -> Iterator[bytes]:
        pos, i = 0, 0
        while pos < n:
            yield data[pos : min(n, pos + sizes[i % len(sizes)])]
            pos, i = pos + sizes[i % len(sizes)], i + 1

    w = Memory(Path("memory"))
    w.begin([TensorSpec("t", (n // 4,), "F32")])
    w.write_chunks("t", cut())
    w.finish()
    assert collected["t"].tobytes() == data[:n] and collected["t"].dtype == np.float32


def test_byte_view_takes_any_contiguous_buffer() -> None:
    """``write_chunks`` takes bytes, bytearrays and memoryviews of numpy arrays of numpy's own dtypes."""
    out = io.BytesIO()
    for chunk in (b"ab", bytearray(b"cd"), memoryview(np.array([1.5], np.float32))):
        out.write(base.byte_view(chunk))
    assert out.getvalue() == b"abcd" + np.array([1.5], np.float32).tobytes()


# --- HDF5 to HDF5: compressed chunks copied as stored --------------------------------------------
def _deflated_h5(path: Path, values: dict[str, np.ndarray], *, zlib_level: int | None = None,
                 fill: float | None = None, skip_chunk: bool = False) -> None:
    """Chunked, deflate(4) datasets written by h5py. With ``zlib_level`` the chunks are compressed by
    Python's zlib at that level and stored with ``write_direct_chunk``: valid deflate data whose bytes
    a recompression at level 4 would not reproduce."""
    import zlib

    import h5py

    with h5py.File(path, "w") as f:
        for name, arr in values.items():
            chunks = tuple(max(1, n // 2) for n in arr.shape)
            ds = f.create_dataset(name, shape=arr.shape, dtype=arr.dtype, chunks=chunks, compression="gzip",
                                  compression_opts=4, fillvalue=fill)
            if zlib_level is None and not skip_chunk:
                ds[...] = arr
                continue
            for index in np.ndindex(*(2,) * arr.ndim):
                if skip_chunk and not any(index):
                    continue  # chunk 0 is never written: it reads as the fill value
                offset = tuple(i * c for i, c in zip(index, chunks, strict=True))
                block = arr[tuple(slice(o, o + c) for o, c in zip(offset, chunks, strict=True))]
                ds.id.write_direct_chunk(offset, zlib.compress(np.ascontiguousarray(block).tobytes(), zlib_level or 4))


def _chunk_bytes(path: Path, name: str) -> dict[tuple[int, ...], bytes]:
    import h5py

    with h5py.File(path, "r") as f:
        dsid = f[name].id
        offsets: list[tuple[int, ...]] = []
        dsid.chunk_iter(lambda info: offsets.append(tuple(info.chunk_offset)))
        return {o: dsid.read_direct_chunk(o)[1] for o in offsets}


def _h5_values(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _stored_pair(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    src_values = {"dense/kernel": rng.standard_normal((32, 64)).astype(np.float32),
                  "dense/bias": rng.standard_normal(64).astype(np.float32),
                  "head/kernel": rng.standard_normal((16, 8)).astype(np.float32)}
    tgt_values = {k: v + 1 for k, v in src_values.items()}
    tgt_values["head/kernel"] = rng.standard_normal((16, 4)).astype(np.float32)  # kept: shape mismatch
    src, tgt = tmp_path / "src.h5", tmp_path / "tgt.h5"
    _deflated_h5(src, src_values, zlib_level=1)
    _deflated_h5(tgt, tgt_values, zlib_level=9)
    return src, tgt, src_values


def test_hdf5_transfer_copies_compressed_chunks_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, tgt, src_values = _stored_pair(tmp_path)
    fast, simple = tmp_path / "fast.h5", tmp_path / "simple.h5"
    api.transfer(src, tgt, output=fast)
    monkeypatch.setattr(h5_writer.Writer, "write_stored", lambda self, *args: False)
    api.transfer(src, tgt, output=simple)
    fast_values, simple_values = _h5_values(fast), _h5_values(simple)
    assert fast_values.keys() == simple_values.keys() == src_values.keys()
    for name, value in fast_values.items():
        assert value.tobytes() == simple_values[name].tobytes()
    assert fast_values["dense/kernel"].tobytes() == src_values["dense/kernel"].tobytes()
    # replaced tensors hold the source's chunks, the kept one the target's: as stored, never recompressed
    for name, origin in (("dense/kernel", src), ("dense/bias", src), ("head/kernel", tgt)):
        assert _chunk_bytes(fast, name) == _chunk_bytes(origin, name)
        assert _chunk_bytes(simple, name) != _chunk_bytes(origin, name)  # decoded and deflated again


def test_hdf5_stored_copy_needs_every_chunk_written(tmp_path: Path) -> None:
    """An unwritten chunk reads as the source's fill value; the values path carries it over."""
    values = {"w": np.arange(64, dtype=np.float32).reshape(8, 8)}
    src, tgt = tmp_path / "src.h5", tmp_path / "tgt.h5"
    _deflated_h5(src, values, fill=7.0, skip_chunk=True)
    _deflated_h5(tgt, {"w": np.zeros((8, 8), np.float32)})
    out = tmp_path / "out.h5"
    api.transfer(src, tgt, output=out)
    expected = values["w"].copy()
    expected[:4, :4] = 7.0
    assert np.array_equal(_h5_values(out)["w"], expected)
    assert np.array_equal(_h5_values(src)["w"], expected)


def test_hdf5_convert_keeps_chunks_of_a_like_file(tmp_path: Path) -> None:
    src, _, src_values = _stored_pair(tmp_path)
    out = tmp_path / "renamed.h5"
    api.rename(src, output=out, rules=api.Rules.from_options(rename=[r"^dense/=>fc/"]))
    assert _chunk_bytes(out, "fc/kernel") == _chunk_bytes(src, "dense/kernel")
    assert _h5_values(out)["fc/kernel"].tobytes() == src_values["dense/kernel"].tobytes()


def test_stored_chunk_offsets_without_chunk_iter(tmp_path: Path) -> None:
    """An h5py built on an HDF5 without H5Dchunk_iter lists the chunks one query at a time, the same."""
    import h5py

    src, _, _ = _stored_pair(tmp_path)

    class NoChunkIter:
        def __init__(self, dsid: Any) -> None:
            self._dsid = dsid

        def __getattr__(self, name: str) -> Any:
            if name == "chunk_iter":
                raise AttributeError(name)
            return getattr(self._dsid, name)

    with h5py.File(src, "r") as f:
        dsid = f["dense/kernel"].id
        dcpl, tid, shape = dsid.get_create_plist(), dsid.get_type(), f["dense/kernel"].shape
        assert h5_writer._stored_chunks(NoChunkIter(dsid), dcpl, tid, shape) == \
            h5_writer._stored_chunks(dsid, dcpl, tid, shape) == [(0, 0), (0, 32), (16, 0), (16, 32)]


def test_make_info_makes_the_record_the_dataclass_makes() -> None:
    fast = make_info("h.0.w", (2, 3), "BF16", "h.0", (8, 20))
    slow = TensorInfo("h.0.w", (2, 3), "BF16", "h.0", loc=(8, 20))
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert (fast.name, fast.shape, fast.dtype, fast.layer, fast.loc, fast.nbytes) == ("h.0.w", (2, 3), "BF16", "h.0", (8, 20), 12)
    with pytest.raises(FrozenInstanceError):
        fast.name = "x"  # type: ignore[misc]
