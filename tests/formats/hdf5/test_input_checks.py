"""What an HDF5 input cannot give is refused when it is read (exit 3 naming the input), not blamed on the output.

- text attributes the file declares UTF-8 whose bytes are not UTF-8 (on the root, where metadata
  lives, or on a dataset, whose attributes a like-copy carries);
- a contiguous dataset that declares an extendible shape (maxshape larger than its shape), which
  HDF5 allows only for chunked storage;
- a link name whose bytes are not UTF-8 (no tensor name could be made of it).

More metadata keys than an HDF5 root can hold is a limit of the output: refused before anything is
written, with exit 4 naming the output and the limit.
"""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from h5py import h5d, h5s, h5t
from safetensors.numpy import save_file

from ckptsurgeon.formats.hdf5.writer import MAX_ROOT_ATTRS

from ...support.fixtures import CliRunner

BAD_TEXT = b"caf\xe9"  # Latin-1, not UTF-8


def _with_bad_text(path: Path, on_dataset: bool) -> Path:
    with h5py.File(path, "w") as f:
        f["dense/kernel"] = np.arange(6, dtype=np.float32).reshape(2, 3)
        obj = f["dense/kernel"] if on_dataset else f
        obj.attrs.create("note", BAD_TEXT, dtype=h5py.string_dtype("utf-8"))
    return path


def _extendible_contiguous(path: Path) -> Path:
    """A contiguous dataset of shape [1234] whose dataspace is patched to declare maxshape [2468]."""
    with h5py.File(path, "w") as f:
        dsid = h5d.create(f.id, b"w", h5t.NATIVE_FLOAT, h5s.create_simple((1234,), (1234,)))
        dsid.write(h5s.ALL, h5s.ALL, np.arange(1234, dtype=np.float32))
        assert dsid.get_create_plist().get_layout() == h5d.CONTIGUOUS
        dsid.close()
    data = path.read_bytes()
    dims = struct.pack("<QQ", 1234, 1234)  # current and maximum size in the dataspace message
    assert data.count(dims) == 1
    path.write_bytes(data.replace(dims, struct.pack("<QQ", 1234, 2468)))
    with h5py.File(path) as f:
        assert f["w"].maxshape == (2468,)
    return path


def _expect_input_refused(tmp_path: Path, path: Path, cli: CliRunner, words: str) -> None:
    out = tmp_path / "out.h5"
    for argv in (["inspect", path], ["verify", path], ["convert", path, "-o", out],
                 ["convert", path, "-o", tmp_path / "out.safetensors"]):
        result = cli(*argv)
        assert result.code == 3, (argv, result.err)
        assert result.line.startswith(f"ckpt: error: {path}: ") and words in result.line
    assert not out.exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("where", ["root", "dataset"])
def test_attribute_text_that_is_not_utf8_is_refused_at_read(tmp_path: Path, where: str, cli: CliRunner) -> None:
    path = _with_bad_text(tmp_path / f"{where}.h5", on_dataset=where == "dataset")
    _expect_input_refused(tmp_path, path, cli, "attribute 'note'")


def test_latin1_bytes_not_declared_utf8_are_carried_as_bytes(tmp_path: Path, cli: CliRunner) -> None:
    path = tmp_path / "bytes.h5"
    with h5py.File(path, "w") as f:
        f["w"] = np.arange(3.0)
        f["w"].attrs["raw"] = np.bytes_(BAD_TEXT)  # a fixed-length ASCII string: bytes, not declared text
    assert cli("convert", path, "-o", tmp_path / "out.h5").code == 0
    with h5py.File(tmp_path / "out.h5") as f:
        assert bytes(f["w"].attrs["raw"]) == BAD_TEXT


def test_contiguous_dataset_with_an_extendible_shape_is_refused_at_read(tmp_path: Path, cli: CliRunner) -> None:
    path = _extendible_contiguous(tmp_path / "extendible.h5")
    _expect_input_refused(tmp_path, path, cli, "dataset 'w' is contiguous but declares the extendible shape [2468]")


def test_a_link_name_that_is_not_utf8_is_refused_at_read(tmp_path: Path, cli: CliRunner) -> None:
    path = tmp_path / "names.h5"
    with h5py.File(path, "w") as f:
        f["dense/kernel"] = np.arange(3.0)
        f["dense"][BAD_TEXT] = np.arange(2.0)  # h5py stores a bytes name as it is
    _expect_input_refused(tmp_path, path, cli, "a link name in group 'dense' (b'caf\\xe9') is not valid UTF-8")


def test_more_metadata_keys_than_an_hdf5_root_holds_is_refused_before_writing(tmp_path: Path, cli: CliRunner) -> None:
    src = tmp_path / "many.safetensors"
    count = MAX_ROOT_ATTRS + 4465  # 70,000
    save_file({"w": np.arange(3.0)}, str(src), metadata={f"k{i}": "v" for i in range(count)})
    out = tmp_path / "out.h5"
    result = cli("convert", src, "-o", out)
    assert result.code == 4, result.err
    assert result.line.startswith(f"ckpt: error: {out}: ") and f"at most {MAX_ROOT_ATTRS}" in result.line
    assert str(count) in result.line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.safetensors"]
    assert cli("convert", src, "-o", tmp_path / "out.safetensors").code == 0
