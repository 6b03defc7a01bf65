"""Renames of Keras HDF5 files keep the layout and bookkeeping Keras needs (like-writing with ``origins``).

``ckpt rename`` refuses to change the stored paths of a Keras 3 file written as Keras 3 (Keras
finds those weights by position-derived paths); the like-writer still follows such renames, and
the Keras 3 cases below go through it directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from ckptsurgeon import api
from ckptsurgeon.errors import UsageError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.hdf5.archive import KerasZipReader, KerasZipWriter
from ckptsurgeon.formats.hdf5.writer import Writer
from ckptsurgeon.rules import Rules, apply_rules
from ckptsurgeon.tensors import TensorSpec

from ...conftest import CORPUS

# (corpus file, output suffix, a rule renaming one layer, the rule renaming it back, the renamed layer)
LAYER_RENAMES = [
    ("tf_keras/cnn_weights.h5", ".h5", r"^conv_a/conv_a/=>conv_x/conv_x/", r"^conv_x/conv_x/=>conv_a/conv_a/", "conv_x"),
    # unanchored: the layer in model_weights and its Adam slots in optimizer_weights
    ("tf_keras/cnn_full.h5", ".h5", r"conv_a/=>conv_x/", r"conv_x/=>conv_a/", "conv_x"),
    ("keras3/cnn.weights.h5", ".weights.h5", r"^layers/conv2d/=>layers/conv_x/", r"^layers/conv_x/=>layers/conv2d/", "conv1"),
    ("keras3/cnn.keras", ".keras", r"^layers/conv2d/=>layers/conv_x/", r"^layers/conv_x/=>layers/conv2d/", "conv1"),
]


def tensors(path: Path) -> list[tuple[str, tuple[int, ...], str, str]]:
    """(name, shape, dtype, sha256) of every tensor, in the file's order."""
    with open_checkpoint(path) as r:
        return [(t.name, t.shape, t.dtype, r.sha256(t.name)) for t in r.tensors]


def h5_of(path: Path, tmp_path: Path) -> Path:
    """The HDF5 file itself: ``model.weights.h5`` extracted from a ``.keras`` archive."""
    if path.suffix != ".keras":
        return path
    import zipfile

    out = tmp_path / f"{path.name}.model.weights.h5"
    with zipfile.ZipFile(path) as z:
        out.write_bytes(z.read("model.weights.h5"))
    return out


def groups(path: Path) -> dict[str, Any]:
    """Every group with its attributes (value, type and string storage), the root as "/"."""
    out: dict[str, Any] = {}

    def attrs(obj: Any) -> dict[str, Any]:
        res = {}
        for k in obj.attrs:
            aid = obj.attrs.get_id(k)
            tid = aid.get_type()
            text = tid.get_class() == h5py.h5t.STRING
            res[k] = (np.asarray(obj.attrs[k]).tolist(), str(aid.dtype), aid.shape,
                      (tid.is_variable_str(), tid.get_cset()) if text else None)
        return res

    with h5py.File(path, "r") as f:
        out["/"] = attrs(f)
        f.visititems(lambda name, obj: out.__setitem__(name, attrs(obj)) if isinstance(obj, h5py.Group) else None)
    return out


def text_list(value: Any) -> list[str]:
    arr = np.asarray(value)
    if arr.dtype.kind not in "OSU":
        return []
    return [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]


def check_consistent(path: Path) -> None:
    """Keras bookkeeping that agrees with the datasets, for legacy and Keras 3 files."""
    with h5py.File(path, "r") as f:
        datasets: list[str] = []
        f.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        root = f if "layer_names" in f.attrs else f.get("model_weights")
        if root is not None and "layer_names" in root.attrs:  # legacy
            base = "" if root is f else "model_weights/"
            layers = text_list(root.attrs["layer_names"])
            assert len(set(layers)) == len(layers)
            listed = []
            holders = [base + name for name in layers] + (["optimizer_weights"] if "optimizer_weights" in f else [])
            for holder in holders:
                assert holder in f, f"layer_names names {holder!r}, which is not a group"
                for entry in text_list(f[holder].attrs["weight_names"]):
                    assert isinstance(f.get(f"{holder}/{entry}"), h5py.Dataset), f"{holder}: {entry!r} resolves to nothing"
                    listed.append(f"{holder}/{entry}")
            assert sorted(listed) == sorted(datasets), "datasets and weight_names disagree"
            return
        by_group: dict[str, set[str]] = {}
        for name in datasets:  # Keras 3: <layer>/vars/<i>, numbered 0..n-1, in a named vars group
            group, _, index = name.rpartition("/")
            assert group == "vars" or group.endswith("/vars"), name
            assert "name" in f[group].attrs, group
            by_group.setdefault(group, set()).add(index)
        for group, have in by_group.items():
            assert have == {str(i) for i in range(len(have))}, group


@pytest.mark.parametrize(("name", "suffix", "rule", "back", "layer"), LAYER_RENAMES, ids=[r[0] for r in LAYER_RENAMES])
def test_layer_rename_and_back(tmp_path: Path, name: str, suffix: str, rule: str, back: str, layer: str) -> None:
    src = CORPUS / name
    mid, out = tmp_path / f"mid{suffix}", tmp_path / f"back{suffix}"
    names = rename_like(src, mid, rule)
    assert sum(1 for old, new in names if old != new) >= 2
    rename_like(mid, out, back)

    original, renamed = tensors(src), tensors(mid)
    old_names = {new: old for old, new in names}
    assert {(old_names[n], s, d, h) for n, s, d, h in renamed} == set(original)
    with open_checkpoint(mid) as r, open_checkpoint(src) as o:
        assert r.format == o.format
        moved = [t for t in r.tensors if t.name != old_names[t.name]]
        assert moved and {t.layer for t in moved if t.layer != "optimizer"} == {layer}
    check_consistent(h5_of(mid, tmp_path))
    mid_groups = groups(h5_of(mid, tmp_path))
    assert not [g for g in mid_groups if g.split("/")[-1] in ("conv_a", "conv2d")], "a stale group of the old layer"

    assert tensors(out) == original  # names, order, shapes, dtypes and bytes
    assert groups(h5_of(out, tmp_path)) == groups(h5_of(src, tmp_path))
    check_consistent(h5_of(out, tmp_path))
    if suffix == ".keras":
        zips = KerasZipReader(out), KerasZipReader(src)
        try:
            assert zips[0].members == zips[1].members  # config.json, metadata.json ... copied along
        finally:
            for z in zips:
                z.close()


def test_legacy_layer_names_and_weight_names_are_rewritten_in_place(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    api.rename(CORPUS / "tf_keras/cnn_weights.h5", out, Rules.from_options(rename=[r"^conv_a/conv_a/=>conv_x/conv_x/"]))
    with h5py.File(out, "r") as f:
        assert text_list(f.attrs["layer_names"]) == ["image", "conv_x", "bn_a", "act_a", "pool_a", "conv_b", "flatten", "logits"]
        assert text_list(f["conv_x"].attrs["weight_names"]) == ["conv_x/kernel:0", "conv_x/bias:0"]
        assert "conv_a" not in f and list(f["conv_x"]) == ["conv_x"]


def test_full_model_optimizer_weight_names_follow(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    api.rename(CORPUS / "tf_keras/cnn_full.h5", out, Rules.from_options(rename=[r"conv_a/=>conv_x/"]))
    with h5py.File(out, "r") as f:
        opt = text_list(f["optimizer_weights"].attrs["weight_names"])
        assert opt[:3] == ["iteration:0", "Adam/m/conv_x/kernel:0", "Adam/v/conv_x/kernel:0"]
        assert "conv_a" not in f["optimizer_weights/Adam/m"]
        assert json.loads(f.attrs["model_config"])  # configurations are copied as they are


def test_legacy_weight_name_may_change_depth(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    api.rename(CORPUS / "tf_keras/cnn_weights.h5", out, Rules.from_options(rename=[r"^conv_a/conv_a/=>conv_x/"]))
    check_consistent(out)
    with h5py.File(out, "r") as f:
        assert text_list(f["conv_x"].attrs["weight_names"]) == ["kernel:0", "bias:0"]
        assert sorted(f["conv_x"]) == ["bias:0", "kernel:0"]  # no empty conv_a/conv_a left behind


def test_rename_with_a_weight_left_out(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    rules = Rules.from_options(rename=[r"^conv_a/conv_a/=>conv_x/conv_x/"], exclude=["conv_a/conv_a/bias:0"])
    api.rename(CORPUS / "tf_keras/cnn_weights.h5", out, rules)
    check_consistent(out)
    with h5py.File(out, "r") as f:
        assert text_list(f["conv_x"].attrs["weight_names"]) == ["conv_x/kernel:0"]


def write_like(like_path: Path, out: Path, origins: dict[str, str], cls: type = Writer) -> Any:
    """Write every tensor of ``like_path`` under a new name (``origins``: new -> old); return the writer."""
    new_of = {old: new for new, old in origins.items()}
    with open_checkpoint(like_path) as like:
        w = cls(out, metadata=like.metadata, like=like)
        specs = [TensorSpec(new_of.get(t.name, t.name), t.shape, t.dtype) for t in like.tensors]
        w.begin(specs, origins=origins)
        for t, spec in zip(like.tensors, specs, strict=True):
            w.write(spec.name, like.read(t.name))
        w.finish()
    return w


def rename_like(src: Path, out: Path, rule: str) -> list[tuple[str, str]]:
    """(old, new) names of a rename by ``rule``: by ``ckpt rename``, or for Keras 3 files by the like-writer."""
    with open_checkpoint(src) as r:
        keras3 = r.layout == "keras3-h5"
        renamed = apply_rules([t.name for t in r.tensors], Rules.from_options(rename=[rule]))
    if not keras3:
        return api.rename(src, out, Rules.from_options(rename=[rule])).names
    w = write_like(src, out, {new: old for old, new in renamed.mapping.items() if old != new},
                   KerasZipWriter if out.suffix == ".keras" else Writer)
    assert w.layout_fallback is None
    return list(renamed.mapping.items())


def test_two_layers_swap_names(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    origins = {f"conv_b/conv_b/{w}": f"conv_a/conv_a/{w}" for w in ("kernel:0", "bias:0")}
    origins |= {f"conv_a/conv_a/{w}": f"conv_b/conv_b/{w}" for w in ("kernel:0", "bias:0")}
    w = write_like(CORPUS / "tf_keras/cnn_weights.h5", out, origins)
    assert w.layout_fallback is None
    check_consistent(out)
    with h5py.File(out, "r") as f, h5py.File(CORPUS / "tf_keras/cnn_weights.h5", "r") as o:
        assert text_list(f.attrs["layer_names"]) == ["image", "conv_b", "bn_a", "act_a", "pool_a", "conv_a", "flatten", "logits"]
        assert f["conv_b/conv_b/kernel:0"].shape == o["conv_a/conv_a/kernel:0"].shape
        assert text_list(f["conv_b"].attrs["weight_names"]) == ["conv_b/kernel:0", "conv_b/bias:0"]


def test_keras3_variables_may_be_renumbered_within_their_group(tmp_path: Path) -> None:
    out = tmp_path / "out.weights.h5"
    w = write_like(CORPUS / "keras3/cnn.weights.h5", out, {"layers/dense/vars/0": "layers/dense/vars/1",
                                                          "layers/dense/vars/1": "layers/dense/vars/0"})
    assert w.layout_fallback is None
    check_consistent(out)


def test_keras_zip_writer_passes_renames_on(tmp_path: Path) -> None:
    out = tmp_path / "out.keras"
    w = write_like(CORPUS / "keras3/cnn.keras", out, {"layers/dense_x/vars/0": "layers/dense/vars/0",
                                                     "layers/dense_x/vars/1": "layers/dense/vars/1"}, KerasZipWriter)
    assert w.layout_fallback is None
    mid = h5_of(out, tmp_path)
    check_consistent(mid)
    with h5py.File(mid, "r") as f:
        assert f["layers/dense_x/vars"].attrs["name"] == "classifier" and "layers/dense" not in f


# Renames the bookkeeping cannot follow: the file is written with plain placement instead.
IMPOSSIBLE = [
    ("tf_keras/cnn_weights.h5", {"extra/kernel:0": "conv_a/conv_a/kernel:0"}, "no longer inside"),
    ("tf_keras/cnn_weights.h5", {"conv_x/conv_x/kernel:0": "conv_a/conv_a/kernel:0"}, "no longer inside"),  # layer split
    ("tf_keras/cnn_weights.h5", {"conv_b/conv_a/kernel:0": "conv_a/conv_a/kernel:0",
                                 "conv_b/conv_a/bias:0": "conv_a/conv_a/bias:0"}, "no longer inside"),  # onto a layer
    ("tf_keras/cnn_weights.h5", {"conv_x": "conv_a/conv_a/kernel:0", "conv_y": "conv_a/conv_a/bias:0"}, "no longer inside"),
    ("tf_keras/cnn_full.h5", {"conv_a/conv_a/kernel:0": "model_weights/conv_a/conv_a/kernel:0",
                              "conv_a/conv_a/bias:0": "model_weights/conv_a/conv_a/bias:0"}, "no longer inside"),
    ("tf_keras/cnn_full.h5", {"adam/iteration:0": "optimizer_weights/iteration:0"}, "no longer inside"),
    ("keras3/cnn.weights.h5", {"layers/conv2d/vars/5": "layers/conv2d/vars/0"}, "numbered"),
    ("keras3/cnn.weights.h5", {"layers/conv2d/kernel": "layers/conv2d/vars/0"}, "not <layer>/vars/<index>"),
    ("keras3/cnn.weights.h5", {"layers/conv_y/vars/0": "layers/conv2d/vars/1"}, "no renamed layer group"),  # split
    ("keras3/cnn.weights.h5", {"layers/dense/vars/2": "layers/conv2d/vars/0"}, "numbered"),
]


@pytest.mark.parametrize(("name", "origins", "words"), IMPOSSIBLE, ids=[next(iter(c[1])) for c in IMPOSSIBLE])
def test_impossible_bookkeeping_falls_back_to_plain_placement(tmp_path: Path, name: str, origins: dict[str, str],
                                                              words: str) -> None:
    out = tmp_path / "out.h5"
    w = write_like(CORPUS / name, out, origins)
    assert w.layout_fallback is not None and words in w.layout_fallback
    new_of = {old: new for new, old in origins.items()}
    with open_checkpoint(out) as r, open_checkpoint(CORPUS / name) as o:
        assert r.format == "hdf5"  # Keras 3 files are told by their paths alone
        assert sorted(t.name for t in r.tensors) == sorted(new_of.get(t.name, t.name) for t in o.tensors)
        for t in o.tensors:
            assert r.sha256(new_of.get(t.name, t.name)) == o.sha256(t.name)
    with h5py.File(out, "r") as f:
        assert list(f.attrs) == [k for k in f.attrs if k in ("keras_version", "backend")]  # metadata only
        bookkeeping: list[str] = []
        f.visititems(lambda n, obj: bookkeeping.extend(k for k in obj.attrs if k in ("weight_names", "layer_names", "name")))
        assert bookkeeping == []


def test_without_origins_nothing_changes(tmp_path: Path) -> None:
    """Like-writing a new name without ``origins`` writes it as a new tensor, as before."""
    out = tmp_path / "out.h5"
    with open_checkpoint(CORPUS / "tf_keras/cnn_weights.h5") as like:
        names = [("conv_x/conv_x/kernel:0" if t.name == "conv_a/conv_a/kernel:0" else t.name) for t in like.tensors]
        w = Writer(out, metadata=like.metadata, like=like)
        w.begin([TensorSpec(n, t.shape, t.dtype) for n, t in zip(names, like.tensors, strict=True)])
        for n, t in zip(names, like.tensors, strict=True):
            w.write(n, like.read(t.name))
        w.finish()
    assert w.layout_fallback is None
    with h5py.File(out, "r") as f:
        assert text_list(f["conv_a"].attrs["weight_names"]) == ["conv_a/bias:0"]
        assert "conv_x/conv_x/kernel:0" in f and "conv_x" not in text_list(f.attrs["layer_names"])


def test_fixed_length_string_lists_grow_with_longer_names(tmp_path: Path) -> None:
    src = tmp_path / "old_keras.h5"
    with h5py.File(src, "w") as f:
        f.attrs["layer_names"] = np.array([b"d"], dtype="S1")
        f.attrs["keras_version"] = b"2.0.0"
        g = f.create_group("d")
        g.attrs["weight_names"] = np.array([b"d/kernel:0", b"d/bias:0"], dtype="S10")
        g.create_dataset("d/kernel:0", data=np.ones((2, 3), np.float32))
        g.create_dataset("d/bias:0", data=np.zeros(3, np.float32))
    out = tmp_path / "out.h5"
    api.rename(src, out, Rules.from_options(rename=[r"^d/d/=>dense_long/dense_long/"]))
    check_consistent(out)
    with h5py.File(out, "r") as f:
        assert f.attrs["layer_names"].tolist() == [b"dense_long"]
        assert f["dense_long"].attrs["weight_names"].tolist() == [b"dense_long/kernel:0", b"dense_long/bias:0"]
        assert f["dense_long"].attrs.get_id("weight_names").dtype == np.dtype("S19")


def test_sharded_keras3_renamed_into_one_file(tmp_path: Path) -> None:
    out = tmp_path / "out.weights.h5"
    src = CORPUS / "keras3/cnn_sharded/cnn.weights.json"
    with pytest.raises(UsageError, match="stored paths of a Keras 3 file"):
        api.rename(src, out, Rules.from_options(rename=[r"^layers/dense/=>layers/head/"]))
    assert not out.exists()
    rename_like(src, out, r"^layers/dense/=>layers/head/")
    check_consistent(out)
    with open_checkpoint(out) as r:
        assert r.layout == "keras3-h5" and r["layers/head/vars/0"].layer == "classifier"


def test_plain_hdf5_groups_move_with_their_attributes(tmp_path: Path) -> None:
    src = tmp_path / "plain.h5"
    with h5py.File(src, "w") as f:
        g = f.create_group("enc")
        g.attrs["note"] = "encoder"
        g.create_dataset("w", data=np.ones((2, 2), np.float32), chunks=(1, 2), compression="gzip")
        g.create_dataset("b", data=np.zeros(2, np.float32))
        f.create_dataset("head", data=np.ones(3, np.float16))
    out = tmp_path / "out.h5"
    api.rename(src, out, Rules.from_options(rename=[r"^enc/=>encoder/"]))
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["encoder", "head"] and f["encoder"].attrs["note"] == "encoder"
        assert f["encoder/w"].chunks == (1, 2) and f["encoder/w"].compression == "gzip"
    assert [(n.replace("encoder/", "enc/"), s, d, h) for n, s, d, h in tensors(out)] == tensors(src)


def test_rename_onto_an_existing_group_path_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "plain.h5"
    with h5py.File(src, "w") as f:
        f.create_group("empty").attrs["note"] = "kept"
        f.create_dataset("x", data=np.ones(2, np.float32))
    with pytest.raises(UsageError, match="another tensor's path runs through it"):
        api.rename(src, tmp_path / "o.h5", Rules.from_options(rename=[r"^x$=>empty"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.h5"]
