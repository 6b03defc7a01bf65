"""HDF5 / Keras writers: plain round trips, writing "like" a Keras file, atomic output."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

import h5py
import ml_dtypes
import numpy as np
import pytest

from ckptsurgeon.atomic import atomic_path
from ckptsurgeon.errors import UsageError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.hdf5.archive import KerasZipReader, KerasZipWriter
from ckptsurgeon.formats.hdf5.reader import Reader
from ckptsurgeon.formats.hdf5.writer import Writer
from ckptsurgeon.tensors import DTYPES, TensorSpec

from ...conftest import CORPUS
from .helpers import KERAS_FILES, entry_id, file_sha, modified, random_array, write_plain

# ------------------------------------------------------------------------------------------------
# plain round trips
# ------------------------------------------------------------------------------------------------

SHAPES = [(), (0,), (3, 0, 2), (7,), (4, 3), (2, 3, 4)]


def test_plain_round_trip_every_dtype_and_shape(tmp_path: Path) -> None:
    arrays = {f"group/{code}/s{i}": random_array(code, shape, seed=i)
              for code in DTYPES if not DTYPES[code].is_block for i, shape in enumerate(SHAPES)}
    arrays["top_level"] = random_array("F32", (5, 5))
    out = tmp_path / "plain.h5"
    write_plain(out, arrays, metadata={"source": "test", "n": "3"})
    with open_checkpoint(out) as r:
        assert r.format == "hdf5"
        assert r.metadata == {"source": "test", "n": "3"}
        assert sorted(t.name for t in r.tensors) == sorted(arrays)
        for name, a in arrays.items():
            info = r[name]
            assert info.shape == a.shape and DTYPES[info.dtype].numpy == a.dtype
            assert info.layer == name.rpartition("/")[0]
            back = r.read(name)
            assert back.dtype == a.dtype and back.tobytes() == a.tobytes(), name
    with h5py.File(out, "r") as f:  # the Keras convention for dtypes numpy lacks
        bf = f["group/BF16/s3"]
        assert bf.id.get_type().get_class() == h5py.h5t.OPAQUE and bf.attrs["dtype"] == "bfloat16"
        assert f["group/F8_E4M3/s3"].attrs["dtype"] == "float8_e4m3fn"
        assert f["group/F8_E5M2/s3"].attrs["dtype"] == "float8_e5m2"
        assert "dtype" not in f["group/F32/s3"].attrs


def test_plain_output_keeps_the_written_order(tmp_path: Path) -> None:
    names = ["scalar", "t/b", "t/a", "z", "t/10", "t/9", "a"]
    write_plain(tmp_path / "o.h5", {n: np.zeros(2, np.float32) for n in names})
    with open_checkpoint(tmp_path / "o.h5") as r:
        # tree order: a group's tensors stay together, at the place of the group's first tensor
        assert [t.name for t in r.tensors] == ["scalar", "t/b", "t/a", "t/10", "t/9", "z", "a"]


def test_big_tensor_is_read_in_row_blocks(tmp_path: Path) -> None:
    a = random_array("F32", (300, 257))
    b = random_array("BF16", (64, 33))
    out = tmp_path / "big.h5"
    write_plain(out, {"a": a, "b": b})
    with Reader(out) as r:
        for name, arr in (("a", a), ("b", b)):
            chunks = list(r.iter_bytes(name, chunk_bytes=4096))
            assert len(chunks) > 1
            assert b"".join(bytes(c) for c in chunks) == arr.tobytes()
            assert r.sha256(name) == hashlib.sha256(arr.tobytes()).hexdigest()


def test_plain_output_is_reproducible(tmp_path: Path) -> None:
    arrays = {"x/w": random_array("F32", (10, 4)), "x/b": random_array("BF16", (4,)), "s": random_array("I64", ())}
    write_plain(tmp_path / "a.h5", arrays, metadata={"k": "v"})
    write_plain(tmp_path / "b.h5", arrays, metadata={"k": "v"})
    assert file_sha(tmp_path / "a.h5") == file_sha(tmp_path / "b.h5")


@pytest.mark.parametrize("bad", [["a", "a/b"], ["a/b", "a"], ["a//b"], ["/a"], ["a/"], ["a/../b"], [""]])
def test_names_that_cannot_be_hdf5_paths_are_refused(tmp_path: Path, bad: list[str]) -> None:
    w = Writer(tmp_path / "x.h5")
    with pytest.raises(UsageError):
        w.begin([TensorSpec(n, (1,), "F32") for n in bad])
    assert not (tmp_path / "x.h5").exists()


# ------------------------------------------------------------------------------------------------
# writing "like" a Keras file
# ------------------------------------------------------------------------------------------------


def tree(path: Path) -> dict[str, Any]:
    """Groups, attributes (value and type) and dataset properties of an HDF5 file, for comparison."""
    out: dict[str, Any] = {}

    def attrs(obj: Any) -> dict[str, Any]:
        res = {}
        for k in obj.attrs:
            v = obj.attrs[k]
            res[k] = (np.asarray(v).tolist(), str(obj.attrs.get_id(k).dtype), obj.attrs.get_id(k).shape)
        return res

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group):
            out[name] = ("group", attrs(obj))
        else:
            out[name] = ("dataset", attrs(obj), obj.shape, str(obj.dtype), obj.chunks, obj.compression,
                         obj.compression_opts, obj.shuffle, obj.fletcher32, obj.scaleoffset)

    with h5py.File(path, "r") as f:
        out["/"] = ("group", attrs(f))
        f.visititems(visit)
    return out


def like_round_trip(like_path: Path, out: Path, cls: type = Writer) -> dict[str, np.ndarray]:
    with open_checkpoint(like_path) as like:
        new = {t.name: modified(like.read(t.name)) for t in like.tensors}
        w = cls(out, metadata=like.metadata, like=like)
        w.begin([TensorSpec(t.name, t.shape, t.dtype) for t in like.tensors])
        for t in like.tensors:
            w.write(t.name, new[t.name])
        w.finish()
    return new


H5_FILES = [f for f in KERAS_FILES if f["format"] not in ("keras3_sharded_weights", "keras3_keras_zip")]


@pytest.mark.parametrize("entry", H5_FILES, ids=entry_id)
def test_like_writer_keeps_structure_with_new_values(tmp_path: Path, entry: dict[str, Any]) -> None:
    src = CORPUS / entry["path"]
    new = like_round_trip(src, tmp_path / "a.h5")
    like_round_trip(src, tmp_path / "b.h5")
    assert file_sha(tmp_path / "a.h5") == file_sha(tmp_path / "b.h5")
    assert tree(tmp_path / "a.h5") == tree(src)
    with open_checkpoint(tmp_path / "a.h5") as r, open_checkpoint(src) as orig:
        assert r.format == orig.format
        assert [(t.name, t.shape, t.dtype, t.layer) for t in r.tensors] == \
               [(t.name, t.shape, t.dtype, t.layer) for t in orig.tensors]
        for name, a in new.items():
            assert r.read(name).tobytes() == a.tobytes()


def test_like_writer_on_a_sharded_like_writes_one_file(tmp_path: Path) -> None:
    new = like_round_trip(CORPUS / "keras3/cnn_sharded/cnn.weights.json", tmp_path / "one.weights.h5")
    assert tree(tmp_path / "one.weights.h5") == tree(CORPUS / "keras3/cnn.weights.h5")
    with open_checkpoint(tmp_path / "one.weights.h5") as r:
        assert r.layout == "keras3-h5"
        assert all(r.read(n).tobytes() == a.tobytes() for n, a in new.items())


@pytest.mark.parametrize("name", ["mlp.keras", "cnn.keras"])
def test_keras_zip_writer_round_trip(tmp_path: Path, name: str) -> None:
    src = CORPUS / "keras3" / name
    new = like_round_trip(src, tmp_path / "a.keras", cls=KerasZipWriter)
    like_round_trip(src, tmp_path / "b.keras", cls=KerasZipWriter)
    assert file_sha(tmp_path / "a.keras") == file_sha(tmp_path / "b.keras")
    assert sorted(os.listdir(tmp_path)) == ["a.keras", "b.keras"]  # no temporary file left
    with zipfile.ZipFile(src) as zs, zipfile.ZipFile(tmp_path / "a.keras") as zo:
        assert [(i.filename, i.date_time, i.compress_type) for i in zs.infolist()] == \
               [(i.filename, i.date_time, i.compress_type) for i in zo.infolist()]
        for info in zs.infolist():
            if info.filename != "model.weights.h5":
                assert zo.read(info.filename) == zs.read(info.filename)
        (tmp_path / "member.h5").write_bytes(zo.read("model.weights.h5"))
        (tmp_path / "orig.h5").write_bytes(zs.read("model.weights.h5"))
    assert tree(tmp_path / "member.h5") == tree(tmp_path / "orig.h5")
    with open_checkpoint(tmp_path / "a.keras") as r:
        assert isinstance(r, KerasZipReader) and r.format == "keras"
        for n, a in new.items():
            assert r.read(n).tobytes() == a.tobytes()
            rng = r.byte_range(n)
            assert rng is not None and rng[0] == tmp_path / "a.keras"


def test_keras_zip_writer_without_like(tmp_path: Path) -> None:
    arrays = {"layers/dense/vars/0": random_array("F32", (3, 2)), "layers/dense/vars/1": random_array("BF16", (2,))}
    write_plain(tmp_path / "w.keras", arrays, cls=KerasZipWriter)
    with zipfile.ZipFile(tmp_path / "w.keras") as z:
        assert z.namelist() == ["model.weights.h5"]
    with open_checkpoint(tmp_path / "w.keras") as r:
        assert {n: r.read(n).tobytes() for n in arrays} == {n: a.tobytes() for n, a in arrays.items()}
    write_plain(tmp_path / "w2.keras", arrays, cls=KerasZipWriter)
    assert file_sha(tmp_path / "w.keras") == file_sha(tmp_path / "w2.keras")


def test_like_writer_drops_omitted_and_adds_new_tensors(tmp_path: Path) -> None:
    src = CORPUS / "tf_keras/cnn_weights.h5"
    out = tmp_path / "out.h5"
    with open_checkpoint(src) as like:
        keep = [t for t in like.tensors if t.name != "logits/logits/bias:0"]
        specs = [TensorSpec(t.name, t.shape, t.dtype) for t in keep] + [TensorSpec("extra/new/w", (2, 2), "F16")]
        w = Writer(out, like=like)
        w.begin(specs)
        for t in keep:
            w.write(t.name, like.read(t.name))
        w.write("extra/new/w", np.ones((2, 2), np.float16))
        w.finish()
    with h5py.File(out, "r") as f:
        assert "logits/logits/bias:0" not in f
        assert [n.decode() if isinstance(n, bytes) else n for n in f["logits"].attrs["weight_names"]] == ["logits/kernel:0"]
        assert list(f.attrs["layer_names"]) == list(h5py.File(src, "r").attrs["layer_names"])
        assert f["extra/new/w"].dtype == np.float16
    with open_checkpoint(out) as r:
        assert r.layout == "keras-h5"
        assert r["extra/new/w"].layer == "extra/new"


def test_like_writer_metadata(tmp_path: Path) -> None:
    src = CORPUS / "tf_keras/mlp_full.h5"
    out = tmp_path / "out.h5"
    with open_checkpoint(src) as like:
        w = Writer(out, metadata={"backend": "tensorflow", "keras_version": "9.9", "note": "rewritten"}, like=like)
        w.begin([TensorSpec(t.name, t.shape, t.dtype) for t in like.tensors])
        for t in like.tensors:
            w.write(t.name, like.read(t.name))
        w.finish()
    with h5py.File(out, "r") as f, h5py.File(src, "r") as orig:
        assert f.attrs.get_id("backend").dtype == orig.attrs.get_id("backend").dtype  # unchanged: verbatim
        assert f.attrs["model_config"] == orig.attrs["model_config"]
        assert (f.attrs["keras_version"], f.attrs["note"]) == ("9.9", "rewritten")
    with open_checkpoint(out) as r:
        assert r.metadata == {"backend": "tensorflow", "keras_version": "9.9", "note": "rewritten"}


def test_like_writer_with_changed_dtype_and_shape(tmp_path: Path) -> None:
    src = CORPUS / "keras3/mlp.weights.h5"
    out = tmp_path / "out.weights.h5"
    with open_checkpoint(src) as like:
        specs = []
        data = {}
        for t in like.tensors:
            code = "BF16" if t.name.endswith("/0") else t.dtype
            shape = (5,) if t.name == "layers/dense_2/vars/1" else t.shape
            specs.append(TensorSpec(t.name, shape, code))
            data[t.name] = random_array(code, shape)
        write_specs(out, specs, data, like)
    with open_checkpoint(out) as r:
        assert r["layers/dense/vars/0"].dtype == "BF16"
        assert r["layers/dense_2/vars/1"].shape == (5,)
        for n, a in data.items():
            assert r.read(n).tobytes() == a.tobytes()
    with h5py.File(out, "r") as f:
        assert f["layers/dense/vars/0"].attrs["dtype"] == "bfloat16"
        assert f["layers/dense/vars"].attrs["name"] == "dense"


def write_specs(out: Path, specs: list[TensorSpec], data: dict[str, np.ndarray], like: Any = None) -> None:
    w = Writer(out, like=like)
    w.begin(specs)
    for s in specs:
        w.write(s.name, data[s.name])
    w.finish()


def test_like_writer_copies_chunking_compression_and_byte_order(tmp_path: Path) -> None:
    like_path = tmp_path / "like.h5"
    with h5py.File(like_path, "w") as f:
        f.create_dataset("gz", data=np.arange(1000, dtype="<f4").reshape(10, 100), chunks=(5, 50),
                         compression="gzip", compression_opts=7, shuffle=True, fletcher32=True)
        f.create_dataset("lzf", data=np.arange(100, dtype="<i4"), chunks=(10,), compression="lzf")
        f.create_dataset("so", data=np.arange(100, dtype="<i2"), scaleoffset=0)
        f.create_dataset("be", data=np.arange(6, dtype=">f8").reshape(2, 3))
        f.create_dataset("compact", data=np.arange(4, dtype="<u1"))
        f["gz"].attrs["unit"] = "m"
        f.attrs["model"] = "toy"
    out = tmp_path / "out.h5"
    new = like_round_trip(like_path, out)
    assert tree(out) == tree(like_path)
    with h5py.File(out, "r") as f:
        assert f["be"].dtype == np.dtype(">f8")
        assert f["gz"].compression_opts == 7
    with open_checkpoint(out) as r:
        assert r["be"].dtype == "F64"
        for n, a in new.items():
            assert r.read(n).tobytes() == a.tobytes()
            if n in ("gz", "lzf", "so"):
                assert r.byte_range(n) is None
        assert r.byte_range("be") is None  # big-endian bytes are not copied verbatim


def test_like_writer_with_new_shape_and_dtype_on_filtered_datasets(tmp_path: Path) -> None:
    like_path = tmp_path / "like.h5"
    with h5py.File(like_path, "w") as f:
        f.create_dataset("gz", data=np.arange(1000, dtype="<f4").reshape(10, 100), chunks=(5, 50), compression="gzip")
        f.create_dataset("so", data=np.arange(100, dtype="<i2"), chunks=(10,), scaleoffset=0, shuffle=True)
        f.create_dataset("bf", data=np.arange(8).astype(ml_dtypes.bfloat16), chunks=(4,), compression="gzip")
        f["bf"].attrs["dtype"] = "bfloat16"
    specs = [TensorSpec("gz", (40, 3), "F32"), TensorSpec("so", (100,), "F32"), TensorSpec("bf", (8,), "F32"),
             TensorSpec("empty", (0, 4), "F32")]
    data = {s.name: random_array(s.dtype, s.shape) for s in specs}
    with open_checkpoint(like_path) as like:
        write_specs(tmp_path / "out.h5", specs, data, like)
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["gz"].compression == "gzip" and f["gz"].chunks is not None
        assert f["so"].scaleoffset is None and f["so"].shuffle  # scaleoffset is bound to the old dtype
        assert "dtype" not in f["bf"].attrs and f["bf"].dtype == np.float32
    with open_checkpoint(tmp_path / "out.h5") as r:
        for n, a in data.items():
            assert r.read(n).tobytes() == a.tobytes()


def test_writer_never_writes_the_like_file(tmp_path: Path) -> None:
    src = tmp_path / "like.h5"
    src.write_bytes((CORPUS / "keras3/mlp.weights.h5").read_bytes())
    os.chmod(src, 0o444)
    before = file_sha(src)
    like_round_trip(src, tmp_path / "out.h5")
    assert file_sha(src) == before


# ------------------------------------------------------------------------------------------------
# atomic output
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Writer, KerasZipWriter])
def test_error_mid_write_leaves_nothing(tmp_path: Path, cls: type) -> None:
    dest = tmp_path / ("out.h5" if cls is Writer else "out.keras")
    dest.write_bytes(b"previous")
    specs = [TensorSpec("a", (3,), "F32"), TensorSpec("b", (3,), "F32")]
    with pytest.raises(RuntimeError, match="boom"), atomic_path(dest) as tmp:
        w = cls(tmp)
        try:
            w.begin(specs)
            w.write("a", np.zeros(3, np.float32))
            raise RuntimeError("boom")
        except BaseException:
            w.abort()
            raise
    assert dest.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == [dest.name]
