"""Keras 3 variables are matched by the names Keras gives them, not by their class-counter paths.

Real Keras 3.15 files from ``tests/data/keras3_names/make.py``: model a is enc, proj, head (Dense
32, 32, 10); model c is enc, adapter_new, proj, head (Dense 32, 32, 32, 4). Keras stores a's proj
at ``layers/dense_1`` and c's at ``layers/dense_2``, where c has adapter_new.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckptsurgeon import api
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.hdf5.keras import keras3_variable_names, layer_configs

from ...support.cli import run

DATA = Path(__file__).resolve().parents[2] / "data" / "keras3_names"
CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"


def test_variables_are_named_as_keras_names_them() -> None:
    with open_checkpoint(DATA / "c.weights.h5") as c:
        assert [t.name for t in c.tensors][:2] == ["layers/dense/vars/0", "layers/dense/vars/1"]  # stored paths stay
        assert [c.match_names[t.name] for t in c.tensors] == [
            "enc/kernel", "enc/bias", "adapter_new/kernel", "adapter_new/bias",
            "proj/kernel", "proj/bias", "head/kernel", "head/bias",
        ]
    with open_checkpoint(DATA / "stem.weights.h5") as stem:
        assert stem.match_names == {
            "layers/batch_normalization/vars/0": "stem_bn/gamma",
            "layers/batch_normalization/vars/1": "stem_bn/beta",
            "layers/batch_normalization/vars/2": "stem_bn/moving_mean",
            "layers/batch_normalization/vars/3": "stem_bn/moving_variance",
            "layers/conv2d/vars/0": "stem_conv/kernel",
            "layers/conv2d/vars/1": "stem_conv/bias",
            "layers/dense/vars/0": "out/kernel",  # use_bias=False: the kernel alone
            "layers/embedding/vars/0": "emb/embeddings",
            "layers/layer_normalization/vars/0": "ln/gamma",
            "layers/layer_normalization/vars/1": "ln/beta",
        }


@pytest.mark.parametrize("rel", ["keras3/cnn.weights.h5", "keras3/cnn.keras", "keras3/cnn_sharded/cnn.weights.json"])
def test_corpus_names_are_keras_variable_paths(rel: str) -> None:
    """The manifest records each variable's Keras path beside its dataset path: they agree."""
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == rel)
    with open_checkpoint(CORPUS / rel) as r:
        assert [t.name for t in r.tensors if not t.name.startswith("optimizer/")] == [
            t["h5_path"] for t in entry["tensors"] if not t["h5_path"].startswith("optimizer/")]
        named = {t["h5_path"]: t["name"] for t in entry["tensors"] if not t["h5_path"].startswith("optimizer/")}
        assert r.match_names == named


def test_unknown_or_ill_fitting_classes_keep_their_index(tmp_path: Path) -> None:
    import h5py
    import numpy as np

    path = tmp_path / "x.weights.h5"
    with h5py.File(path, "w") as f:
        for group, name, shapes in [("layers/my_block", "blk", [(3, 3)]), ("layers/dense", "d", [(3, 4), (5,)]),
                                    ("layers/batch_normalization", "bn", [(3,), (3,), (3,)])]:
            g = f.create_group(group + "/vars")
            g.attrs["name"] = name
            for i, shape in enumerate(shapes):
                g[str(i)] = np.zeros(shape, np.float32)
        f.create_group("vars").attrs["name"] = "model"
    with open_checkpoint(path) as r:
        assert sorted(r.match_names.values()) == [
            "blk/vars/0", "bn/vars/0", "bn/vars/1", "bn/vars/2",  # center or scale off: which one is not known
            "d/vars/0", "d/vars/1",  # a bias that is not the kernel's width: not a Dense layer's
        ]


def test_config_json_says_which_flags_a_layer_has() -> None:
    config = {"class_name": "Functional", "module": "keras", "config": {"name": "m", "layers": [
        {"module": "keras.layers", "class_name": "BatchNormalization", "registered_name": None,
         "config": {"name": "bn", "center": False, "scale": True}},
        {"module": "my.module", "class_name": "Dense", "registered_name": "Custom>Dense", "config": {"name": "mine"}},
    ]}}
    configs = layer_configs(config)
    assert configs["bn"].kind == "batch_normalization" and not configs["bn"].center
    assert configs["mine"].kind == ""  # a custom class: its variables are not known

    from ckptsurgeon.formats.hdf5._h5 import DatasetInfo, Tree

    datasets = {f"layers/batch_normalization/vars/{i}": DatasetInfo("", (3,), "F32", False, False, None) for i in range(3)}
    tree = Tree(datasets=datasets, vars_names={"layers/batch_normalization/vars": "bn"})
    assert list(keras3_variable_names(tree).values()) == ["bn/vars/0", "bn/vars/1", "bn/vars/2"]
    assert list(keras3_variable_names(tree, configs).values()) == ["bn/gamma", "bn/moving_mean", "bn/moving_variance"]


def test_inserted_layer_is_kept_and_weights_follow_their_layer(tmp_path: Path) -> None:
    out = tmp_path / "out.weights.h5"
    report = api.transfer(DATA / "a.weights.h5", DATA / "c.weights.h5", out)
    rows = {r.name: r.status for r in report.layer_rows()}
    assert rows == {"enc": "replaced", "adapter_new": "kept", "proj": "replaced", "head": "kept"}
    steps = {s.name: s for s in report.plan.steps}
    assert steps["layers/dense_1/vars/0"].kind == "no_source"  # same path as a's proj: never paired with it
    assert steps["layers/dense_2/vars/0"].source == "layers/dense_1/vars/0"
    assert steps["layers/dense_3/vars/0"].kind == "shape_mismatch"
    with open_checkpoint(DATA / "a.weights.h5") as a, open_checkpoint(DATA / "c.weights.h5") as c, \
            open_checkpoint(out) as o:
        assert [t.name for t in o.tensors] == [t.name for t in c.tensors]  # the target's paths, as Keras loads them
        assert o.match_names == c.match_names
        by_name = {c.match_names[t.name]: t.name for t in c.tensors}
        by_name_a = {v: k for k, v in a.match_names.items()}
        for key in ("enc/kernel", "enc/bias", "proj/kernel", "proj/bias"):
            assert o.sha256(by_name[key]) == a.sha256(by_name_a[key])
        for key in ("adapter_new/kernel", "adapter_new/bias", "head/kernel", "head/bias"):
            assert o.sha256(by_name[key]) == c.sha256(by_name[key])


def test_same_paths_with_other_layer_names_never_pair(tmp_path: Path) -> None:
    """c into a: every path of a is in c, but c's layers/dense_1 is adapter_new, a's is proj."""
    report = api.transfer(DATA / "c.weights.h5", DATA / "a.weights.h5", tmp_path / "o.weights.h5")
    pairs = {(s.name, s.source) for s in report.plan.steps if s.action == "replace"}
    assert pairs == {("layers/dense/vars/0", "layers/dense/vars/0"), ("layers/dense/vars/1", "layers/dense/vars/1"),
                     ("layers/dense_1/vars/0", "layers/dense_2/vars/0"), ("layers/dense_1/vars/1", "layers/dense_2/vars/1")}


def test_inspect_lists_the_keras_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["inspect", DATA / "c.weights.h5", "--json"], capsys)
    assert code == 0
    tensors = json.loads(out)["tensors"]
    assert [(t["name"], t["match_name"]) for t in tensors][4:6] == [
        ("layers/dense_2/vars/0", "proj/kernel"), ("layers/dense_2/vars/1", "proj/bias")]
    code, out, _ = run(["inspect", DATA / "c.weights.h5"], capsys)
    assert code == 0 and "kernel  (layers/dense_2/vars/0)" in out


def test_keras_archive_from_a_weights_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["transfer", DATA / "a.weights.h5", DATA / "c.weights.h5", "-o", tmp_path / "x.keras"],
                 ["convert", DATA / "a.weights.h5", "-o", tmp_path / "x.keras"]):
        code, _, err = run(argv, capsys)
        assert code == 4
        assert err.count("\n") == 1 and "config.json" in err and "write .weights.h5 instead" in err
    assert list(tmp_path.iterdir()) == []
    code, _, _ = run(["transfer", DATA / "a.weights.h5", DATA / "c.keras", "-o", tmp_path / "ok.keras"], capsys)
    assert code == 0
    with open_checkpoint(tmp_path / "ok.keras") as o, open_checkpoint(DATA / "c.keras") as c:
        assert o.members == c.members  # config.json and the rest copied


KERAS_CHECK = """
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("make", sys.argv[1])
make = importlib.util.module_from_spec(spec); spec.loader.exec_module(make)
a = make.mlp([("enc", 32), ("proj", 32), ("head", 10)], seed=1)
a.load_weights(sys.argv[2])
c = make.mlp([("enc", 32), ("adapter_new", 32), ("proj", 32), ("head", 4)], seed=2)
c.load_weights(sys.argv[3])
model = make.mlp([("enc", 32), ("adapter_new", 32), ("proj", 32), ("head", 4)], seed=5)
model.load_weights(sys.argv[4])
want = {"enc": a, "proj": a, "adapter_new": c, "head": c}
print(json.dumps({name: all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in
                  zip(model.get_layer(name).weights, src.get_layer(name).weights, strict=True))
                  for name, src in want.items()}))
"""


def keras_python() -> str:
    """An interpreter with Keras 3: this one, or the one CKPT_KERAS_PYTHON names; else the test is skipped."""
    if importlib.util.find_spec("keras") is not None:
        return sys.executable
    other = os.environ.get("CKPT_KERAS_PYTHON")
    if other and Path(other).is_file():
        return other
    pytest.skip("Keras is not installed here (set CKPT_KERAS_PYTHON to an interpreter that has Keras 3)")


@pytest.mark.keras
def test_keras_loads_the_transferred_weights(tmp_path: Path) -> None:
    python = keras_python()
    out = tmp_path / "out.weights.h5"
    api.transfer(DATA / "a.weights.h5", DATA / "c.weights.h5", out)
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "numpy"))
    done = subprocess.run([python, "-c", KERAS_CHECK, str(DATA / "make.py"), str(DATA / "a.weights.h5"),
                           str(DATA / "c.weights.h5"), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"enc": True, "proj": True, "adapter_new": True,
                                                               "head": True}


def test_hashes_are_keyed_by_stored_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stored path is a Keras 3 variable's identity in its file: verify records and checks hashes by it."""
    hashes = tmp_path / "c.hashes.json"
    code, _, err = run(["verify", DATA / "c.weights.h5", "--write-hashes", hashes], capsys)
    assert code == 0, err
    assert list(json.loads(hashes.read_text())["tensors"])[:2] == ["layers/dense/vars/0", "layers/dense/vars/1"]
    code, _, _ = run(["verify", DATA / "c.keras", "--hashes", hashes], capsys)
    assert code == 0
