"""ckpt rename on Keras 3 files: stored paths that Keras loads by are never changed in a Keras 3 output.

Real Keras 3.15 files from ``tests/data/keras3_names/make.py``: model a is enc, proj, head (Dense
layers stored at ``layers/dense``, ``layers/dense_1``, ``layers/dense_2``); ``c.keras`` is model c
(enc, adapter_new, proj, head) as a ``.keras`` archive. Keras 3 finds each layer's variables by the
path its model derives from the layer's class and position, so a file whose paths were renamed
does not load (``Layer 'proj' expected 2 variables, but received 0``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ckptsurgeon import api
from ckptsurgeon.errors import UsageError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.hdf5.writer import Writer
from ckptsurgeon.rules import Rules
from ckptsurgeon.tensors import TensorSpec

from ..formats.hdf5.test_keras3_names import keras_python
from ..support.cli import run

DATA = Path(__file__).resolve().parents[1] / "data" / "keras3_names"


def hashes(path: Path) -> dict[str, str]:
    with open_checkpoint(path) as r:
        return {t.name: r.sha256(t.name) for t in r.tensors}


@pytest.mark.parametrize(("src", "out", "rule"), [
    ("a.weights.h5", "y.weights.h5", "layers/dense_1=>layers/foo"),
    ("a.weights.h5", "y.h5", "layers/dense_1=>layers/foo"),  # an HDF5 output keeps the Keras 3 layout
    ("a.weights.h5", "y.weights.h5", "vars/0$=>vars/2"),  # renumbered inside the layer: kernel loaded as bias
    ("c.keras", "y.keras", "layers/dense_2/=>layers/proj/"),
    ("c.keras", "y.weights.h5", "layers/dense_2/=>layers/proj/"),
])
def test_changed_keras3_paths_are_refused(src: str, out: str, rule: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ([], ["--dry-run"]):  # a dry run with an output says what the run would
        code, stdout, err = run(["rename", DATA / src, "-o", tmp_path / out, "--rename", rule, *extra], capsys)
        assert code == 2, err
        assert stdout == "" and err.count("\n") == 1 and err.startswith(f"ckpt: error: {DATA / src}: ")
        assert "stored paths of a Keras 3 file" in err and "class and position" in err and f"could not load {out}" in err
        assert "rename the layer there" in err and "-o y.safetensors" in err
    assert list(tmp_path.iterdir()) == []


def test_refusal_is_the_json_error_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rename", DATA / "a.weights.h5", "-o", tmp_path / "y.weights.h5",
                        "--rename", "layers/dense_1=>layers/foo", "--json"], capsys)
    doc = json.loads(out)
    assert code == 2 and doc["exit_code"] == 2 and "stored paths of a Keras 3 file" in doc["error"]["message"]
    assert list(tmp_path.iterdir()) == []


def test_the_api_refuses_too(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="'layers/dense_1/vars/0' -> 'layers/foo/vars/0' and 1 other"):
        api.rename(DATA / "a.weights.h5", tmp_path / "y.weights.h5", Rules.from_options(rename=["layers/dense_1=>layers/foo"]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_renamed_into_another_format_is_written(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"y{suffix}"
    code, _, err = run(["rename", DATA / "a.weights.h5", "-o", out, "--rename", r"^layers/dense_1/vars/(\d)$=>proj.\1"], capsys)
    assert code == 0, err
    before, after = hashes(DATA / "a.weights.h5"), hashes(out)
    assert after == {("proj." + n[-1] if n.startswith("layers/dense_1/") else n): h for n, h in before.items()}


def test_paths_left_as_they_are_are_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rules that change no stored path (a filter, a rule giving each name back) write a Keras 3 file as before."""
    out = tmp_path / "y.weights.h5"
    code, _, err = run(["rename", DATA / "a.weights.h5", "-o", out, "--rename", "^layers/=>layers/",
                        "--include", "layers/*"], capsys)
    assert code == 0, err
    assert hashes(out) == hashes(DATA / "a.weights.h5")
    with open_checkpoint(out) as r, open_checkpoint(DATA / "a.weights.h5") as a:
        assert r.layout == "keras3-h5" and r.match_names == a.match_names


@pytest.mark.parametrize("option", [["--rename", "^proj/=>projection/"], ["--include", "proj/*"],
                                    ["--exclude", "head/*"]])
@pytest.mark.parametrize("out", ["y.weights.h5", "y.safetensors"])
def test_rules_on_keras_names_are_refused(option: list[str], out: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """rename renames stored paths; a rule that matches Keras names only is told so, not just "unused"."""
    code, _, err = run(["rename", DATA / "a.weights.h5", "-o", tmp_path / out, *option], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "matches Keras names only" in err and "stored paths" in err
    assert option[1] in err and ("'proj/kernel'" in err or "'head/kernel'" in err)
    assert list(tmp_path.iterdir()) == []


def test_a_rule_matching_nothing_at_all_is_still_an_unused_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["rename", DATA / "a.weights.h5", "-o", tmp_path / "y.weights.h5", "--rename", "nowhere=>x"], capsys)
    assert code == 1 and "matched no tensor name" in err and "Keras names" not in err


KERAS_LOAD = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("make", sys.argv[1])
make = importlib.util.module_from_spec(spec); spec.loader.exec_module(make)
out = {}
for path in sys.argv[2:]:
    model = make.mlp([("enc", 32), ("proj", 32), ("head", 10)], seed=5)
    try:
        model.load_weights(path)
        out[path] = "loaded"
    except ValueError as e:
        out[path] = str(e)
print(json.dumps(out))
"""


@pytest.mark.keras
def test_keras_cannot_load_what_rename_refuses(tmp_path: Path) -> None:
    """The file a path rename would give (made here by the like-writer, as rename used to) does not load."""
    python = keras_python()
    renamed, kept = tmp_path / "renamed.weights.h5", tmp_path / "kept.weights.h5"
    with open_checkpoint(DATA / "a.weights.h5") as like:
        for out, rename in ((renamed, {"layers/dense_1/": "layers/foo/"}), (kept, {})):
            names = [next((t.name.replace(a, b) for a, b in rename.items() if a in t.name), t.name) for t in like.tensors]
            w = Writer(out, metadata=like.metadata, like=like)
            w.begin([TensorSpec(n, t.shape, t.dtype) for n, t in zip(names, like.tensors, strict=True)],
                    origins={n: t.name for n, t in zip(names, like.tensors, strict=True) if n != t.name})
            for n, t in zip(names, like.tensors, strict=True):
                w.write(n, like.read(t.name))
            w.finish()
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "numpy"))
    done = subprocess.run([python, "-c", KERAS_LOAD, str(DATA / "make.py"), str(renamed), str(kept)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result[str(kept)] == "loaded"
    assert "Layer 'proj' expected 2 variables, but received 0" in result[str(renamed)]
