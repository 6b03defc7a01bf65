"""HDF5 / Keras readers: the real corpus, other writers' conventions, h5py and its plugins kept in
hand, and hostile or damaged files refused."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import h5py
import ml_dtypes
import numpy as np
import pytest

from ckptsurgeon.errors import InputError, UnsafeInputError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.hdf5.archive import KerasZipReader
from ckptsurgeon.formats.hdf5.reader import KerasShardedReader, Reader
from ckptsurgeon.tensors import DTYPES

from ...conftest import CORPUS, ROOT
from ...support.fixtures import CliRunner
from .helpers import DTYPE_CODES, KERAS_FILES, KERAS_FORMATS, entry_id, open_fds, random_array

# ------------------------------------------------------------------------------------------------
# the real corpus
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", KERAS_FILES, ids=entry_id)
def test_corpus_file_reads_as_manifest_says(entry: dict[str, Any]) -> None:
    with open_checkpoint(CORPUS / entry["path"]) as r:
        assert (r.format, r.layout) == KERAS_FORMATS[entry["format"]]
        want = {t["h5_path"]: t for t in entry["tensors"] + entry.get("optimizer_tensors", [])}
        assert sorted(t.name for t in r.tensors) == sorted(want)
        for name, t in want.items():
            info = r[name]
            assert list(info.shape) == t["shape"], name
            assert info.dtype == DTYPE_CODES[t["dtype"]], name
            assert r.sha256(name) == t["sha256"], name
            if "layer" in t:
                assert info.layer == t["layer"], name
            if "h5_vars_group_name_attr" in t and not name.startswith("optimizer/"):
                assert info.layer == t["h5_vars_group_name_attr"], name
            if name.startswith(("optimizer/", "optimizer_weights/")):
                assert info.layer == "optimizer"
            arr = r.read(name)
            assert arr.dtype == DTYPES[info.dtype].numpy and arr.flags.c_contiguous
            rng = r.byte_range(name)
            if rng is not None:
                file, offset, length = rng
                with open(file, "rb") as f:
                    f.seek(offset)
                    assert f.read(length) == arr.tobytes()


def test_keras3_layer_is_the_vars_name_attribute() -> None:
    with open_checkpoint(CORPUS / "keras3/cnn.weights.h5") as r:
        assert r["layers/batch_normalization/vars/0"].layer == "bn1"
        assert r["layers/dense/vars/1"].layer == "classifier"
        assert r["optimizer/vars/0"].layer == "optimizer"
        # vars datasets in numeric order
        opt = [t.name for t in r.tensors if t.name.startswith("optimizer/")]
        assert opt == [f"optimizer/vars/{i}" for i in range(18)]


def test_legacy_order_and_metadata() -> None:
    with open_checkpoint(CORPUS / "tf_keras/cnn_full.h5") as r:
        names = [t.name for t in r.tensors]
        assert names[:2] == ["model_weights/conv_a/conv_a/kernel:0", "model_weights/conv_a/conv_a/bias:0"]
        assert names[10] == "optimizer_weights/iteration:0"
        assert r.metadata == {"backend": "tensorflow", "keras_version": "2.21.0"}  # configs left out
        assert r["model_weights/bn_a/bn_a/moving_variance:0"].layer == "bn_a"


def test_sharded_reader_lists_every_file() -> None:
    with open_checkpoint(CORPUS / "keras3/cnn_sharded") as r:
        assert isinstance(r, KerasShardedReader)
        assert [p.name for p in r.files] == ["cnn.weights.json", "cnn_00000.weights.h5", "cnn_00001.weights.h5"]
        assert r["optimizer/vars/17"].layer == "optimizer"


def test_reader_closes_its_files(tmp_path: Path) -> None:
    src = CORPUS / "keras3/cnn.keras"
    r = open_checkpoint(src)
    r.read("layers/dense/vars/0")
    r.close()
    assert str(src.resolve()) not in open_fds()
    with pytest.raises(InputError):
        r.read("layers/dense/vars/0")


# ------------------------------------------------------------------------------------------------
# conventions of other writers
# ------------------------------------------------------------------------------------------------


def test_big_endian_and_user_block(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    with h5py.File(path, "w", userblock_size=1024) as f:
        f["be"] = np.arange(12, dtype=">i4").reshape(3, 4)
        f["le"] = np.arange(5, dtype="<f4")
    with open_checkpoint(path) as r:
        be = r.read("be")
        assert r["be"].dtype == "I32" and be.dtype == np.dtype("<i4")
        assert be.tolist() == np.arange(12).reshape(3, 4).tolist()
        where = r.byte_range("le")
        assert where is not None
        file, offset, length = where
        assert file == path and offset >= 1024
        with open(path, "rb") as fh:
            fh.seek(offset)
            assert fh.read(length) == np.arange(5, dtype="<f4").tobytes()


def test_native_hdf5_bfloat16_layout_is_read_bit_for_bit(tmp_path: Path) -> None:
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(15, 7, 8, 0, 7)
    t.set_size(2)
    t.set_precision(16)
    t.set_offset(0)
    t.set_ebias(127)
    vals = np.array([1.5, -2, 3e10, 0.1], ml_dtypes.bfloat16)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        did = h5py.h5d.create(f.id, b"bf", t, h5py.h5s.create_simple((4,)))
        did.write(h5py.h5s.ALL, h5py.h5s.ALL, vals, mtype=t)
        did.close()
    with open_checkpoint(tmp_path / "x.h5") as r:
        assert r["bf"].dtype == "BF16"
        assert r.read("bf").tobytes() == vals.tobytes()


def test_keras_bfloat16_convention_is_read(tmp_path: Path) -> None:
    vals = random_array("BF16", (3, 2))
    with h5py.File(tmp_path / "x.weights.h5", "w") as f:  # as Keras 3 writes a bfloat16 variable
        g = f.create_group("layers/dense/vars")
        g.attrs["name"] = "fc"
        ds = g.create_dataset("0", data=vals)
        ds.attrs["dtype"] = "bfloat16"
        f.create_group("vars").attrs["name"] = "model"
    with open_checkpoint(tmp_path / "x.weights.h5") as r:
        assert r.layout == "keras3-h5"
        assert r["layers/dense/vars/0"].dtype == "BF16" and r["layers/dense/vars/0"].layer == "fc"
        assert r.read("layers/dense/vars/0").tobytes() == vals.tobytes()


def test_keras3_nested_layer_names(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.weights.h5", "w") as f:
        f.create_group("vars").attrs["name"] = "outer"
        f.create_group("layers/functional/vars").attrs["name"] = "encoder"
        f.create_group("layers/functional/layers/dense/vars").attrs["name"] = "proj"
        f["layers/functional/layers/dense/vars/0"] = np.ones(2, np.float32)
        f["vars/0"] = np.ones(1, np.float32)
    with open_checkpoint(tmp_path / "x.weights.h5") as r:
        assert r["layers/functional/layers/dense/vars/0"].layer == "encoder/proj"
        assert r["vars/0"].layer == "outer"


# ------------------------------------------------------------------------------------------------
# h5py comes through _h5 only: no filter plugin is ever loaded
# ------------------------------------------------------------------------------------------------


def test_h5py_is_imported_by_the_hdf5_module_only() -> None:
    code = ("import sys, ckptsurgeon.formats, ckptsurgeon.formats.hdf5\n"
            "assert 'h5py' not in sys.modules and 'numpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    package = ROOT / "ckptsurgeon"
    importers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                       if re.search(r"^\s*(import h5py|from h5py\b)", p.read_text(), re.MULTILINE))
    assert importers == ["formats/hdf5/_h5.py"]


def _env_without_plugin_settings(**extra: str) -> dict[str, str]:
    """This process's environment without HDF5's plugin variables (the hostile corpus builder sets one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDF5_PLUGIN")}
    env.update(extra)
    return env


def test_importing_the_hdf5_modules_leaves_the_environment_alone() -> None:
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import ckptsurgeon.formats.hdf5\n"
        "assert dict(os.environ) == before\n"
        "import ckptsurgeon.formats.hdf5.archive, ckptsurgeon.formats.hdf5.reader, ckptsurgeon.formats.hdf5.writer\n"
        "assert 'h5py' in sys.modules and dict(os.environ) == before\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env_without_plugin_settings())


@pytest.mark.parametrize("h5py_first", [False, True], ids=["h5_first", "h5py_first"])
def test_plugin_search_path_is_empty_once_h5py_comes_through_h5(h5py_first: bool, tmp_path: Path) -> None:
    code = (
        ("import h5py; assert h5py.h5pl.size() == 1\n" if h5py_first else "")
        + "from ckptsurgeon.formats.hdf5._h5 import h5py\n"
        + "assert h5py.h5pl.size() == 0, [h5py.h5pl.get(i) for i in range(h5py.h5pl.size())]\n"
    )
    env = _env_without_plugin_settings(HDF5_PLUGIN_PATH=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# A filter plugin (filter 311, which passes data through) that leaves a file behind when it is loaded.
_PLUGIN_C = r"""
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
typedef struct {
    int version, id;
    unsigned encoder_present, decoder_present;
    const char *name;
    void *can_apply, *set_local;
    size_t (*filter)(unsigned, size_t, const unsigned *, size_t, size_t *, void **);
} filter_class;
static size_t same(unsigned f, size_t n, const unsigned *cd, size_t nbytes, size_t *size, void **buf) {
    (void)f; (void)n; (void)cd; (void)size; (void)buf;
    return nbytes;
}
static const filter_class cls = {1, 311, 1, 1, "pass-through", NULL, NULL, same};
int H5PLget_plugin_type(void) { return 0; }
const void *H5PLget_plugin_info(void) { return &cls; }
__attribute__((constructor)) static void loaded(void) {
    FILE *f = fopen(getenv("PLUGIN_LOADED"), "w");
    if (f) fclose(f);
}
"""
_WRITE_WITH_PLUGIN = """
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((4,))
    dcpl.set_filter(311, 0, ())
    dsid = h5py.h5d.create(f.id, b"w", h5py.h5t.NATIVE_FLOAT, h5py.h5s.create_simple((8,)), dcpl=dcpl)
    dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(8, dtype=np.float32))
"""
_READ = """
import sys
if sys.argv[2] == "guarded":
    import ckptsurgeon.formats.hdf5._h5
import h5py
try:
    with h5py.File(sys.argv[1], "r") as f:
        print(f["w"][()].tolist())
except OSError as exc:
    print("refused:", exc)
"""


def test_a_filter_plugin_is_never_loaded(tmp_path: Path) -> None:
    """A real plugin on HDF5_PLUGIN_PATH: loaded by plain h5py, never once h5py came through ``_h5``,
    even when the file is read with h5py directly (past the walk, which refuses such datasets)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler to build a filter plugin")
    plugins, marker, h5 = tmp_path / "plugins", tmp_path / "loaded", tmp_path / "filtered.h5"
    plugins.mkdir()
    (tmp_path / "plugin.c").write_text(_PLUGIN_C)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(plugins / "libpassthrough.so"), str(tmp_path / "plugin.c")],
                   check=True, capture_output=True)
    env = _env_without_plugin_settings(HDF5_PLUGIN_PATH=str(plugins), PLUGIN_LOADED=str(marker))

    def run(code: str, *args: str) -> str:
        done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    run(_WRITE_WITH_PLUGIN, str(h5))
    marker.unlink()
    assert run(_READ, str(h5), "plain") == str([float(i) for i in range(8)])
    assert marker.exists(), "the test plugin was not loaded without the guard"
    marker.unlink()
    assert run(_READ, str(h5), "guarded").startswith("refused:")
    assert not marker.exists(), "a filter plugin was loaded"
    with pytest.raises(UnsafeInputError, match="filter 311"):
        open_checkpoint(h5)


# ------------------------------------------------------------------------------------------------
# hostile and damaged files
# ------------------------------------------------------------------------------------------------


def expect(exc_type: type[Exception], path: Path, *words: str) -> Any:
    """Open ``path`` and check the error: its type, the file named, the words in the message."""
    with pytest.raises(exc_type) as info:
        open_checkpoint(path)
    if exc_type is InputError:
        assert not isinstance(info.value, UnsafeInputError)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert "\n" not in message
    return info.value


def test_external_link_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["secret"] = np.arange(3)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["ok"] = np.arange(3)
        f["g/ext"] = h5py.ExternalLink(str(other), "/secret")
    expect(UnsafeInputError, tmp_path / "x.h5", "g/ext", "external link")


def test_soft_link_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a/w"] = np.arange(3)
        f["alias"] = h5py.SoftLink("/a/w")
    expect(UnsafeInputError, tmp_path / "x.h5", "alias", "soft link")


def test_external_storage_is_refused_and_never_read(tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel.bin"
    secret = b"TOP-SECRET-SENTINEL-CONTENT!" * 4
    sentinel.write_bytes(secret)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("leak", shape=(len(secret),), dtype="u1", external=[(str(sentinel), 0, len(secret))])
    err = expect(UnsafeInputError, tmp_path / "x.h5", "leak", "external file")
    assert b"SENTINEL" not in str(err).encode()


def test_virtual_dataset_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["data"] = np.arange(4.0)
    layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(src), "data", shape=(4,))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_virtual_dataset("vds", layout)
    expect(UnsafeInputError, tmp_path / "x.h5", "vds", "virtual")


def test_plugin_filter_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("z", shape=(10,), dtype="f4", chunks=(5,), compression=32001, allow_unknown_filter=True)
    expect(UnsafeInputError, tmp_path / "x.h5", "z", "32001", "plugin")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda f: f.create_dataset("s", data=np.array([b"abc", b"de"])), ("'s'", "strings")),
        (lambda f: f.create_dataset("s", data=["abc", "de"], dtype=h5py.string_dtype()), ("'s'",)),
        (lambda f: f.create_dataset("c", data=np.zeros(2, dtype=[("a", "<i4"), ("b", "<f4")])), ("'c'", "compound")),
        (lambda f: f.create_dataset("v", shape=(2,), dtype=h5py.vlen_dtype(np.int32)), ("'v'", "variable-length")),
        (lambda f: f.create_dataset("r", shape=(1,), dtype=h5py.ref_dtype), ("'r'", "references")),
        (lambda f: f.create_dataset("cx", data=np.zeros(2, np.complex64)), ("'cx'", "complex")),
        (lambda f: f.create_dataset("e", data=np.zeros(2, "i1"), dtype=h5py.enum_dtype({"A": 0, "B": 1}, "i1")),
         ("'e'", "enum")),
        (lambda f: f.create_dataset("o", data=np.zeros(2, "V2")), ("'o'", "opaque")),
        (lambda f: f.create_dataset("n", data=h5py.Empty("f4")), ("'n'", "no shape")),
    ],
)
def test_non_numeric_datasets_are_refused(tmp_path: Path, make: Any, words: tuple[str, ...]) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["fine"] = np.arange(3)
        make(f)
    expect(InputError, tmp_path / "x.h5", *words)


def test_unallocated_huge_dataset_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("huge", shape=(10**10,), dtype="f8")  # contiguous, never written
    expect(InputError, tmp_path / "x.h5", "huge", "stores none")


def test_chunked_bomb_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("bomb", shape=(10**9, 10), dtype="f8", chunks=(1000, 10), compression="gzip")
        f["bomb"][:1000] = 1.0
    expect(InputError, tmp_path / "x.h5", "bomb", "decompression bomb")


def test_dataset_claiming_more_than_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    dims = 123457
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=np.zeros(dims, np.uint8))
    raw = bytearray(path.read_bytes())
    old, new = dims.to_bytes(8, "little"), (dims * 1000).to_bytes(8, "little")
    assert raw.count(old) >= 1
    path.write_bytes(bytes(raw).replace(old, new))
    expect(InputError, path, "'w'")


class FakeStorage:
    def __init__(self, stored: int, offset: int | None) -> None:
        self.stored, self.offset = stored, offset

    def get_storage_size(self) -> int:
        return self.stored

    def get_offset(self) -> int | None:
        return self.offset


@pytest.mark.parametrize(
    ("stored", "offset", "nbytes", "layout", "nfilters", "words"),
    [
        (4000, 2048, 4000, h5py.h5d.CONTIGUOUS, 0, "past the end"),
        (10**9, 2048, 10**9, h5py.h5d.CONTIGUOUS, 0, "stored bytes"),
        (0, None, 10**9, h5py.h5d.CONTIGUOUS, 0, "stores none"),
        (1000, None, 10**8, h5py.h5d.CHUNKED, 0, "decompression bomb"),
        (1000, None, 10**9, h5py.h5d.CHUNKED, 1, "decompression bomb"),
    ],
)
def test_declared_sizes_are_checked_against_the_file(
    stored: int, offset: int | None, nbytes: int, layout: int, nfilters: int, words: str
) -> None:
    from ckptsurgeon.formats.hdf5._h5 import check_extent

    with pytest.raises(InputError, match=words):
        check_extent(FakeStorage(stored, offset), "w", Path("f.h5"), 5000, nbytes, layout, nfilters)
    assert check_extent(FakeStorage(100, 2048), "w", Path("f.h5"), 5000, 100, h5py.h5d.CONTIGUOUS, 0) == 2048
    assert check_extent(FakeStorage(1000, None), "w", Path("f.h5"), 5000, 10**6, h5py.h5d.CHUNKED, 1) is None


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["w"] = np.arange(10000, dtype=np.float64)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    expect(InputError, path)
    with pytest.raises(InputError) as reader_err:
        Reader(path)
    assert str(path) in str(reader_err.value)


def test_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    expect(InputError, path)


def test_hard_link_cycles_and_aliases_are_visited_once(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["a/w"] = np.arange(3)
        f["b"] = f["a/w"]  # a second name for the same dataset
        f["a/loop"] = f["/"]  # a cycle back to the root
        f["a/self"] = f["a"]
    with open_checkpoint(path) as r:
        assert [t.name for t in r.tensors] == ["a/w"]


def test_absurdly_deep_nesting_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_group("/".join(["g"] * 300))
    expect(InputError, tmp_path / "x.h5", "deeper than")


# --- archives ---------------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_keras_zip_with_traversal_member_is_refused(tmp_path: Path) -> None:
    weights = (CORPUS / "keras3/mlp.weights.h5").read_bytes()
    make_zip(tmp_path / "x.keras", {"../evil.json": b"{}", "model.weights.h5": weights})
    expect(UnsafeInputError, tmp_path / "x.keras", "../evil.json")


def test_keras_zip_without_weights_is_refused(tmp_path: Path) -> None:
    make_zip(tmp_path / "x.keras", {"config.json": b"{}"})
    with pytest.raises(InputError, match=r"model\.weights\.h5"):
        KerasZipReader(tmp_path / "x.keras")


def test_keras_zip_with_compressed_member_reads(tmp_path: Path) -> None:
    src = CORPUS / "keras3/mlp.keras"
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    make_zip(tmp_path / "x.keras", members, compression=zipfile.ZIP_DEFLATED)
    with open_checkpoint(tmp_path / "x.keras") as r, open_checkpoint(src) as orig:
        assert [t.name for t in r.tensors] == [t.name for t in orig.tensors]
        for t in r.tensors:
            assert r.sha256(t.name) == orig.sha256(t.name)
            assert r.byte_range(t.name) is None


def test_keras_zip_with_damaged_member_is_refused(tmp_path: Path) -> None:
    make_zip(tmp_path / "x.keras", {"model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\x01" * 200})
    expect(InputError, tmp_path / "x.keras")


def sharded_copy(tmp_path: Path) -> Path:
    src = CORPUS / "keras3/cnn_sharded"
    for p in src.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    return tmp_path / "cnn.weights.json"


@pytest.mark.parametrize("shard", ["../cnn_00000.weights.h5", "sub/cnn_00000.weights.h5", ".."])
def test_sharded_index_with_path_in_shard_name_is_refused(tmp_path: Path, shard: str) -> None:
    index = sharded_copy(tmp_path)
    doc = json.loads(index.read_text())
    doc["weight_map"]["/layers/conv2d/vars"] = [shard]
    index.write_text(json.dumps(doc))
    expect(UnsafeInputError, index, shard)


def test_sharded_missing_shard_is_refused(tmp_path: Path) -> None:
    index = sharded_copy(tmp_path)
    (tmp_path / "cnn_00001.weights.h5").unlink()
    expect(InputError, index, "cnn_00001.weights.h5", "missing")


def test_sharded_layer_name_from_another_shard(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "m_00000.weights.h5", "w") as f:
        f.create_group("layers/dense/vars").attrs["name"] = "fc"
        f["layers/dense/vars/0"] = np.ones((2, 2), np.float32)
    with h5py.File(tmp_path / "m_00001.weights.h5", "w") as f:
        f["layers/dense/vars/1"] = np.ones(2, np.float32)
    index = tmp_path / "m.weights.json"
    index.write_text(json.dumps({"weight_map": {"/layers/dense/vars": ["m_00000.weights.h5", "m_00001.weights.h5"]}}))
    with open_checkpoint(index) as r:
        assert r.format == "keras-sharded"
        assert [(t.name, t.layer) for t in r.tensors] == [("layers/dense/vars/0", "fc"), ("layers/dense/vars/1", "fc")]
        where = r.byte_range("layers/dense/vars/1")
        assert where is not None and where[0] == tmp_path / "m_00001.weights.h5"


def test_sharded_dataset_in_two_shards_is_refused(tmp_path: Path) -> None:
    index = sharded_copy(tmp_path)
    with h5py.File(tmp_path / "cnn_00001.weights.h5", "a") as f:
        f["layers/dense/vars/0"] = np.zeros((16, 10), np.float32)
    expect(InputError, index, "layers/dense/vars/0", "two shards")


def test_damaged_stored_keras_weights_fail_the_crc_check(tmp_path: Path, cli: CliRunner) -> None:
    """A byte of tensor data flipped inside a STORED model.weights.h5: HDF5 never opens the member."""
    path = tmp_path / "cnn.keras"
    path.write_bytes((CORPUS / "keras3/cnn.keras").read_bytes())
    with open_checkpoint(path) as r:
        name = r.tensors[0].name
        where = r.byte_range(name)
        assert where is not None
        assert r.read(name).size  # the undamaged archive passes the check
    data = bytearray(path.read_bytes())
    data[where[1]] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="CRC mismatch"):
        open_checkpoint(path)
    for argv in (["convert", str(path), "-o", str(tmp_path / "out.safetensors")],
                 ["verify", str(path)]):
        assert cli(*argv).code == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.keras"]
