"""A square Keras kernel into a PyTorch target (``tests/data/xframe``: real files by Keras 3.15 and torch 2.13).

Keras stores a Dense kernel as (in, out), PyTorch a Linear weight as (out, in). A Dense(16 -> 16)
kernel (``keras_dense16.weights.h5``, layer ``fc``) has the shape of ``nn.Linear(16, 16).weight``
(``torch_linear16.pt``), so renaming ``fc/kernel`` to ``fc.weight`` pairs it by name and shape and
would load it untransposed: a silently wrong model. Without a preset or transform that says how to
move it, ckpt warns and names the preset that does (``keras->torch``); with --strict it refuses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..support.fixtures import CliRunner
from .xframe import DATA, tensors

KERAS = DATA / "keras_dense16.weights.h5"
TORCH = DATA / "torch_linear16.pt"
RENAMES = ("--rename", "/kernel$=>/weight", "--rename", "/=>.")


def test_the_files_hold_a_square_kernel() -> None:
    keras, torch_ = tensors(KERAS), tensors(TORCH)
    assert keras["fc/kernel"].shape == (16, 16) == torch_["fc.weight"].shape
    assert not np.array_equal(keras["fc/kernel"], keras["fc/kernel"].T)


def test_renamed_without_a_transform_warns_and_names_the_preset(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    r = cli("transfer", KERAS, TORCH, "-o", out, *RENAMES)
    assert r.code == 0, r.out + r.err
    assert "keras->torch" in r.out + r.err, r.out + r.err
    assert out.exists()


def test_strict_refuses_and_writes_nothing(cli: CliRunner, tmp_path: Path) -> None:
    """Every target tensor has a source and every source tensor a target: --strict fails on the kernel alone."""
    out = tmp_path / "out.pt"
    r = cli("transfer", KERAS, TORCH, "-o", out, *RENAMES, "--strict")
    assert r.code == 1, r.out + r.err
    assert "keras->torch" in r.out + r.err, r.out + r.err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_preset_transposes(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    r = cli("transfer", KERAS, TORCH, "-o", out, "--preset", "keras->torch", "--strict")
    assert r.code == 0, r.out + r.err
    keras, got = tensors(KERAS), tensors(out)
    assert list(got) == ["fc.weight", "fc.bias"]
    np.testing.assert_array_equal(got["fc.weight"], keras["fc/kernel"].T)
    np.testing.assert_array_equal(got["fc.bias"], keras["fc/bias"])


def test_an_explicit_transform_transposes_without_a_warning(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    r = cli("transfer", KERAS, TORCH, "-o", out, *RENAMES, "--transform", "fc.weight=transpose", "--strict")
    assert r.code == 0, r.out + r.err
    assert "keras->torch" not in r.out + r.err, r.out + r.err
    keras, got = tensors(KERAS), tensors(out)
    np.testing.assert_array_equal(got["fc.weight"], keras["fc/kernel"].T)
    np.testing.assert_array_equal(got["fc.bias"], keras["fc/bias"])
