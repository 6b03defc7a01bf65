"""The HDF5 end of file: bytes appended to an HDF5 file, or a file cut short, are refused by name.

Real files (Keras, tf-keras, h5py with a user block and with the latest file format) end exactly
where their superblock says, and pass.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from ckptsurgeon.formats.hdf5._superblock import hdf5_end

from ...conftest import CORPUS, DATA
from ...support.fixtures import CliRunner

REAL_FILES = sorted(p for p in DATA.rglob("*") if p.suffix in (".h5", ".keras"))
H5PY_KINDS = {  # name -> h5py.File options
    "v0": {},
    "latest": {"libver": "latest"},  # superblock version 3
    "v108": {"libver": "v108"},  # superblock version 2
    "userblock": {"userblock_size": 512},
    "userblock-latest": {"userblock_size": 2048, "libver": "latest"},
}


def _h5py_file(path: Path, **options: object) -> Path:
    with h5py.File(path, "w", **options) as f:  # type: ignore[arg-type]
        f["dense/kernel"] = np.arange(12, dtype=np.float32).reshape(3, 4)
        f.attrs["note"] = "text"
    return path


def _safetensors_bytes() -> bytes:
    header = b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    return struct.pack("<Q", len(header)) + header + b"\x00\x00\x80\x3f"


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_real_files_pass(path: Path, cli: CliRunner) -> None:
    assert cli("inspect", path).code == 0


@pytest.mark.parametrize("kind", H5PY_KINDS)
def test_h5py_files_end_where_their_superblock_says(tmp_path: Path, kind: str, cli: CliRunner) -> None:
    path = _h5py_file(tmp_path / f"{kind}.h5", **H5PY_KINDS[kind])
    data = path.read_bytes()
    assert hdf5_end(path, lambda o, n: data[o : o + n], len(data)) == len(data)
    assert cli("inspect", path).code == 0


@pytest.mark.parametrize("tail", ["random", "pickle", "safetensors"])
@pytest.mark.parametrize("kind", ["v0", "latest", "userblock"])
def test_bytes_after_the_end_are_refused(tmp_path: Path, kind: str, tail: str, cli: CliRunner) -> None:
    path = _h5py_file(tmp_path / f"{kind}.h5", **H5PY_KINDS[kind])
    end = path.stat().st_size
    extra = {
        "random": np.random.default_rng(0).bytes(100),
        "pickle": pickle.dumps({"a": 1}, protocol=2),
        "safetensors": _safetensors_bytes(),
    }[tail]
    with open(path, "ab") as f:
        f.write(extra)
    for argv in (["inspect", path], ["verify", path], ["convert", path, "-o", tmp_path / "out.safetensors"]):
        result = cli(*argv)
        assert result.code == 3, result.err
        assert str(path) in result.line
        assert f"{len(extra)} bytes after the HDF5 end of file at offset {end}" in result.line
    assert not (tmp_path / "out.safetensors").exists()


def test_a_file_cut_short_is_refused(tmp_path: Path, cli: CliRunner) -> None:
    path = _h5py_file(tmp_path / "cut.h5")
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    result = cli("inspect", path)
    assert result.code == 3
    assert str(path) in result.line and f"end of file at offset {len(data)}, past the end" in result.line


def test_a_user_block_added_without_the_library_still_passes(tmp_path: Path, cli: CliRunner) -> None:
    """512 bytes put in front by hand: HDF5 moves the base address (and the end) to the superblock."""
    path = _h5py_file(tmp_path / "plain.h5")
    path.write_bytes(b"\x00" * 512 + path.read_bytes())
    assert cli("inspect", path).code == 0


def test_bytes_after_the_end_of_a_keras_weights_member_are_refused(tmp_path: Path, cli: CliRunner) -> None:
    path = tmp_path / "cnn.keras"
    with zipfile.ZipFile(CORPUS / "keras3/cnn.keras") as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "model.weights.h5":
                data += _safetensors_bytes()
            out.writestr(info, data)
    result = cli("inspect", path)
    assert result.code == 3
    assert "model.weights.h5" in result.line and "bytes after the HDF5 end of file" in result.line
