"""Every format as source and as target of a transfer, and byte-exact round trips between formats."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptsurgeon import api
from ckptsurgeon.atomic import atomic_path
from ckptsurgeon.formats import open_checkpoint, writer_for
from ckptsurgeon.plan import TransferOptions
from ckptsurgeon.tensors import DTYPES, TensorSpec, code_of

SUFFIX = {"safetensors": ".safetensors", "hdf5": ".h5", "npz": ".npz", "keras": ".keras"}


def write_with(fmt: str, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Write tensors with ckptsurgeon's own streaming writer for ``fmt``."""
    with atomic_path(path) as tmp:
        w = writer_for(fmt)(tmp, metadata=metadata)
        w.begin([TensorSpec(n, a.shape, code_of(a.dtype)) for n, a in tensors.items()])  # type: ignore[arg-type]
        for n, a in tensors.items():
            w.write(n, a)
        w.finish()
    return path


def write_sharded(directory: Path, tensors: dict[str, np.ndarray]) -> Path:
    """A Hugging Face style sharded checkpoint written by the official safetensors library."""
    names = list(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, members in halves.items():
        save_file({n: tensors[n] for n in members}, directory / shard)
        weight_map |= dict.fromkeys(members, shard)
    index = directory / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def make(kind: str, directory: Path, tensors: dict[str, np.ndarray]) -> Path:
    directory.mkdir()
    if kind == "sharded":
        return write_sharded(directory, tensors)
    return write_with(kind, directory / f"ckpt{SUFFIX[kind]}", tensors)


def model(seed: int, classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "enc/0/w": rng.standard_normal((6, 4)).astype(np.float32),
        "enc/0/b": rng.standard_normal(6).astype(np.float32),
        "enc/1/w": rng.standard_normal((6, 6)).astype(ml_dtypes.bfloat16),
        "enc/1/steps": np.array(7, dtype=np.int64),
        "head/w": rng.standard_normal((classes, 6)).astype(np.float16),
    }


KINDS = ["safetensors", "sharded", "hdf5", "npz"]


@pytest.mark.parametrize("src_kind", KINDS)
@pytest.mark.parametrize("tgt_kind", KINDS)
def test_transfer_between_formats(src_kind: str, tgt_kind: str, tmp_path: Path) -> None:
    source, target = model(1, 10), model(2, 4)
    src = make(src_kind, tmp_path / "src", source)
    tgt = make(tgt_kind, tmp_path / "tgt", target)
    out = tmp_path / ("out" + (".safetensors" if tgt_kind == "sharded" else SUFFIX[tgt_kind]))
    report = api.transfer(src, tgt, out)
    assert report.summary["replaced_tensors"] == 4 and report.summary["shape_mismatches"] == 1
    with open_checkpoint(out) as r, open_checkpoint(tgt) as t:
        assert [x.name for x in r.tensors] == [x.name for x in t.tensors]
        for name in source:
            expected = target[name] if name == "head/w" else source[name]
            assert r.read(name).tobytes() == expected.tobytes(), name
            assert r[name].dtype == code_of(expected.dtype)


ALL_DTYPES = {code: d for code, d in DTYPES.items() if not d.is_block}


def every_dtype() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    out = {}
    for code, d in ALL_DTYPES.items():
        if d.kind == "float":
            out[f"t/{code}"] = rng.standard_normal((3, 2)).astype(np.float32).astype(d.numpy)
        elif d.kind == "bool":
            out[f"t/{code}"] = rng.integers(0, 2, (3, 2)).astype(bool)
        else:
            out[f"t/{code}"] = rng.integers(0, 100, (3, 2)).astype(d.numpy)
    out["scalar"] = np.array(2.5, np.float32)
    out["empty"] = np.zeros((0, 3), np.float32)
    return out


@pytest.mark.parametrize("chain", [("safetensors", "npz", "hdf5", "safetensors"), ("hdf5", "safetensors", "npz", "hdf5")])
def test_round_trips_keep_names_shapes_dtypes_and_bytes(chain: tuple[str, ...], tmp_path: Path) -> None:
    tensors = every_dtype()
    path = write_with(chain[0], tmp_path / f"0{SUFFIX[chain[0]]}", tensors)
    for i, fmt in enumerate(chain[1:], start=1):
        with open_checkpoint(path) as reader:
            data = {t.name: reader.read(t.name) for t in reader.tensors}
        path = write_with(fmt, tmp_path / f"{i}{SUFFIX[fmt]}", data)
    with open_checkpoint(path) as reader:
        assert [t.name for t in reader.tensors] == list(tensors)
        for name, a in tensors.items():
            assert reader[name].shape == a.shape and reader[name].dtype == code_of(a.dtype)
            assert reader.read(name).tobytes() == a.tobytes()


def test_written_files_load_with_official_libraries(tmp_path: Path) -> None:
    from safetensors import safe_open

    tensors = {k: v for k, v in every_dtype().items() if not k.startswith("t/F8")}
    st = write_with("safetensors", tmp_path / "a.safetensors", tensors)
    with safe_open(st, framework="np") as f:
        for name in f.keys():  # noqa: SIM118
            assert f.get_tensor(name).tobytes() == tensors[name].tobytes()
    npz = write_with("npz", tmp_path / "a.npz", tensors)
    with np.load(npz, allow_pickle=False) as z:
        for name, a in tensors.items():
            assert z[name].tobytes() == a.tobytes() and z[name].shape == a.shape


KERAS_PAIRS = [
    ("keras3/cnn.weights.h5", "keras3/cnn.keras", ".keras"),
    ("keras3/cnn.keras", "keras3/cnn.weights.h5", ".weights.h5"),
    ("keras3/cnn_sharded/cnn.weights.json", "keras3/cnn.weights.h5", ".weights.h5"),
    ("tf_keras/cnn_full.h5", "tf_keras/cnn_weights.h5", ".h5"),
    ("tf_keras/cnn_weights.h5", "tf_keras/cnn_full.h5", ".h5"),
    ("keras3/mlp.weights.h5", "tf_keras/mlp_weights.h5", ".h5"),
]


@pytest.mark.parametrize(("src", "tgt", "suffix"), KERAS_PAIRS)
def test_keras_files_as_source_and_target(src: str, tgt: str, suffix: str, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / f"out{suffix}"
    options = TransferOptions(match="order") if "mlp" in src else TransferOptions()
    report = api.transfer(corpus / src, corpus / tgt, out, options)
    with open_checkpoint(corpus / src) as s, open_checkpoint(corpus / tgt) as t, open_checkpoint(out) as o:
        assert o.format == t.format
        assert [x.name for x in o.tensors] == [x.name for x in t.tensors]
        for step in report.plan.steps:
            expected = s.sha256(step.source) if step.action == "replace" else t.sha256(step.name)
            assert o.sha256(step.name) == expected, step.name
    assert report.summary["replaced_tensors"] >= 6
