"""Keras 3 <-> PyTorch transfers of one small model (``tests/data/xframe``: real files by Keras 3.15 and torch 2.13).

The model (``make_keras.cnn`` / ``make_torch.XNet``): conv1 (Conv2D) -> bn1 -> ReLU -> dw (DepthwiseConv2D,
multiplier 2) -> bn2 -> global average; emb (Embedding) -> mean -> proj (Dense) -> ln (LayerNorm); fc
(Dense) on both. Keras layers and torch modules have the same names, so ``--preset`` alone pairs every
tensor: ``keras->torch`` renames ``conv1/kernel`` to ``conv1.weight`` and moves HWIO to OIHW, a Dense
kernel (in, out) to (out, in), a depthwise kernel (kh, kw, in, mult) to (in * mult, 1, kh, kw), and
gamma / beta / moving_mean / moving_variance to weight / bias / running_mean / running_var;
``torch->keras`` goes back. Each direction is checked value by value against the same moves made by
hand with numpy, and (where an interpreter with the framework is given) by the framework itself:
the result loads strictly and its output matches the other framework's to 1e-5.

PyTorch's BatchNorm2d holds a ``num_batches_tracked`` counter Keras has no counterpart for: the
keras->torch preset keeps the target's, torch->keras leaves the source's out, so that ``--strict``
still proves every other tensor was moved.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ..support.fixtures import CliRunner
from .xframe import (
    DATA,
    keras_check,
    keras_python,
    keras_to_torch,
    match_names,
    tensors,
    torch_check,
    torch_python,
    torch_to_keras,
)

KERAS_SRC = DATA / "keras_cnn.weights.h5"
TORCH_TGT = DATA / "torch_cnn_init.pt"
TORCH_SRC = DATA / "torch_cnn.pt"
KERAS_TGT = DATA / "keras_cnn_init.weights.h5"
# The presets leave BatchNorm's num_batches_tracked out on purpose, so --strict counts every other tensor.
TO_TORCH = ("--preset", "keras->torch", "--strict")
TO_KERAS = ("--preset", "torch->keras", "--strict")
KERNELS = {"keras->torch": ("conv1.weight", "dw.weight", "proj.weight", "fc.weight"),
           "torch->keras": ("conv1/kernel", "dw/kernel", "proj/kernel", "fc/kernel")}
VECTORS = {"keras->torch": ("conv1.bias", "bn1.running_var", "ln.weight", "fc.bias"),
           "torch->keras": ("conv1/bias", "bn1/moving_variance", "ln/gamma", "fc/bias")}


def keras_to_torch_file(cli: CliRunner, out: Path) -> Path:
    r = cli("transfer", KERAS_SRC, TORCH_TGT, "-o", out, *TO_TORCH)
    assert r.code == 0, r.out + r.err
    return out


def torch_to_keras_file(cli: CliRunner, out: Path) -> Path:
    r = cli("transfer", TORCH_SRC, KERAS_TGT, "-o", out, *TO_KERAS)
    assert r.code == 0, r.out + r.err
    return out


def test_the_files_hold_what_the_tests_rely_on() -> None:
    """Every source value, moved by hand, differs from the target's, so that a tensor left as it was shows;
    the moving statistics moved off their initial 0 and 1."""
    keras, keras_init = tensors(KERAS_SRC), tensors(KERAS_TGT)
    torch_, torch_init = tensors(TORCH_SRC), tensors(TORCH_TGT)
    for moved, target in ((keras_to_torch(keras), torch_init), (torch_to_keras(torch_), keras_init)):
        assert all(not np.array_equal(value, target[name]) for name, value in moved.items())
    for name in ("bn1/moving_mean", "bn2/moving_mean"):
        assert np.abs(keras[name]).min() > 1e-4
    for name in ("bn1/moving_variance", "bn2/moving_variance"):
        assert np.abs(keras[name] - 1).min() > 1e-3
    assert torch_["bn1.num_batches_tracked"] == 6 and torch_init["bn1.num_batches_tracked"] == 0
    # Keras 3 names a DepthwiseConv2D's kernel "kernel", like a Conv2D's (tf-keras: "depthwise_kernel"):
    # only its layer's class (stored as layers/depthwise_conv2d) or the target's shape tells them apart.
    assert keras["dw/kernel"].shape == (3, 3, 4, 2) and "dw/depthwise_kernel" not in keras
    assert "layers/depthwise_conv2d/vars/0" in match_names(KERAS_SRC)


def test_keras_to_torch_moves_every_layout(cli: CliRunner, tmp_path: Path) -> None:
    out = keras_to_torch_file(cli, tmp_path / "from_keras.pt")
    keras, target, got = tensors(KERAS_SRC), tensors(TORCH_TGT), tensors(out)
    assert list(got) == list(target)  # the target's names, in its order
    assert {n: (a.shape, a.dtype) for n, a in got.items()} == {n: (a.shape, a.dtype) for n, a in target.items()}
    np.testing.assert_array_equal(got["fc.weight"], keras["fc/kernel"].T)
    np.testing.assert_array_equal(got["conv1.weight"], keras["conv1/kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
    np.testing.assert_array_equal(got["bn1.running_var"], keras["bn1/moving_variance"])
    for name, value in keras_to_torch(keras).items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    for name in ("bn1.num_batches_tracked", "bn2.num_batches_tracked"):
        np.testing.assert_array_equal(got[name], target[name])


def test_torch_to_keras_moves_every_layout(cli: CliRunner, tmp_path: Path) -> None:
    out = torch_to_keras_file(cli, tmp_path / "from_torch.weights.h5")
    source, target, got = tensors(TORCH_SRC), tensors(KERAS_TGT), tensors(out)
    assert list(got) == list(target)
    assert {n: (a.shape, a.dtype) for n, a in got.items()} == {n: (a.shape, a.dtype) for n, a in target.items()}
    np.testing.assert_array_equal(got["fc/kernel"], source["fc.weight"].T)
    np.testing.assert_array_equal(got["conv1/kernel"], source["conv1.weight"].transpose(2, 3, 1, 0))  # OIHW -> HWIO
    np.testing.assert_array_equal(got["dw/kernel"][:, :, 1, 0], source["dw.weight"][2, 0])  # in 1, multiplier 0
    expected = torch_to_keras(source)
    assert set(expected) == set(got)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_rename_with_the_preset_writes_torch_names_and_layouts(cli: CliRunner, tmp_path: Path) -> None:
    """No target to pair with: the Keras variables' own paths and layer classes say how each moves."""
    out = tmp_path / "renamed.safetensors"
    r = cli("rename", KERAS_SRC, "--preset", "keras->torch", "-o", out)
    assert r.code == 0, r.out + r.err
    got, expected = tensors(out), keras_to_torch(tensors(KERAS_SRC))
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_there_and_back_is_the_identity(cli: CliRunner, tmp_path: Path) -> None:
    """keras->torch, then torch->keras into the Keras file's own layout: every value as it was."""
    there = keras_to_torch_file(cli, tmp_path / "there.pt")
    back = tmp_path / "back.weights.h5"
    r = cli("transfer", there, KERAS_TGT, "-o", back, *TO_KERAS)
    assert r.code == 0, r.out + r.err
    original, got = tensors(KERAS_SRC), tensors(back)
    assert set(got) == set(original)
    for name, value in original.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize(("preset", "src", "tgt", "out"), [
    ("keras->torch", KERAS_SRC, TORCH_TGT, "o.pt"), ("torch->keras", TORCH_SRC, KERAS_TGT, "o.weights.h5")])
def test_the_report_names_each_transform(cli: CliRunner, tmp_path: Path, preset: str, src: Path, tgt: Path,
                                         out: str) -> None:
    """--dry-run --json: a kernel's entry holds its transform; a vector moved as it is has none."""
    r = cli("transfer", src, tgt, "-o", tmp_path / out, "--preset", preset, "--dry-run", "--json")
    assert r.code == 0, r.out + r.err
    assert not (tmp_path / out).exists()
    keras_paths = match_names(tgt)  # a Keras target's entries are named by stored path
    entries = {keras_paths.get(t["name"], t["name"]): t for t in json.loads(r.out)["tensors"]}
    for name in KERNELS[preset]:
        assert entries[name]["transform"], (name, entries[name])  # an object, or a list of steps
        assert entries[name]["action"] == "replace", (name, entries[name])
    for name in VECTORS[preset]:
        assert entries[name]["transform"] in (None, []), (name, entries[name])
        assert entries[name]["action"] == "replace", (name, entries[name])


def test_torch_loads_the_keras_weights_and_computes_what_keras_did(cli: CliRunner, tmp_path: Path) -> None:
    python = torch_python()
    out = keras_to_torch_file(cli, tmp_path / "from_keras.pt")
    result = torch_check(python, out, DATA / "keras_io.npz")
    assert result["ok"], result
    assert result["tensors"] == 21


def test_keras_loads_the_torch_weights_and_computes_what_torch_did(cli: CliRunner, tmp_path: Path) -> None:
    python = keras_python()
    out = torch_to_keras_file(cli, tmp_path / "from_torch.weights.h5")
    result = keras_check(python, out, DATA / "torch_io.npz")
    assert result["ok"], result
    assert result["variables"] == 19


def test_the_torch_check_fails_on_the_untransferred_target() -> None:
    """The framework checks can fail: the targets as they are compute something else."""
    result = torch_check(torch_python(), TORCH_TGT, DATA / "keras_io.npz")
    assert not result["ok"] and float(result["max_abs_diff"]) > 1e-2, result


def test_the_keras_check_fails_on_the_untransferred_target() -> None:
    result = keras_check(keras_python(), KERAS_TGT, DATA / "torch_io.npz")
    assert not result["ok"] and float(result["max_abs_diff"]) > 1e-2, result


def test_the_saved_plan_run_backwards_gives_the_keras_file_back(cli: CliRunner, tmp_path: Path) -> None:
    """keras->torch saved as a plan (renames, HWIO->OIHW, transposes, a depthwise regrouping), then
    --invert into the Keras file itself: every Keras variable byte for byte."""
    out, plan, back = tmp_path / "o.pt", tmp_path / "plan.json", tmp_path / "back.weights.h5"
    r = cli("transfer", KERAS_SRC, TORCH_TGT, "-o", out, *TO_TORCH, "--save-plan", plan)
    assert r.code == 0, r.out + r.err
    r = cli("transfer", out, KERAS_SRC, "-o", back, "--plan", plan, "--invert")
    assert r.code == 0, r.out + r.err
    original, got = tensors(KERAS_SRC), tensors(back)
    assert set(got) == set(original)
    for name, value in original.items():
        assert got[name].tobytes() == value.tobytes() and got[name].shape == value.shape, name
