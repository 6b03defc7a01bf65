"""mindspore->torch and torch->mindspore on real files: MindSpore's ``SharedNet`` checkpoint
(``tests/data/mindspore``, written by mindspore 2.10) and its PyTorch twin (``torch_sharednet.pt``,
written by torch 2.13). The layouts agree; BatchNorm's names do not (gamma / beta / moving_mean /
moving_variance against weight / bias / running_mean / running_var), and PyTorch's
``num_batches_tracked`` has no MindSpore counterpart: the presets leave it out on purpose, so
``--strict`` passes with every other tensor moved."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..conftest import DATA as ALL_DATA
from ..support.fixtures import CliRunner
from .xframe import DATA, tensors

MINDSPORE = ALL_DATA / "mindspore" / "sharednet_f32.ckpt"
TORCH = DATA / "torch_sharednet.pt"
NAMES = {"conv.weight": "conv.weight", "bn.gamma": "bn.weight", "bn.beta": "bn.bias",
         "bn.moving_mean": "bn.running_mean", "bn.moving_variance": "bn.running_var",
         "fc.weight": "fc.weight", "fc.bias": "fc.bias"}


def test_mindspore_into_torch(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    r = cli("transfer", MINDSPORE, TORCH, "-o", out, "--preset", "mindspore->torch", "--strict")
    assert r.code == 0, r.out + r.err
    ms, got, before = tensors(MINDSPORE), tensors(out), tensors(TORCH)
    for ms_name, torch_name in NAMES.items():
        assert got[torch_name].tobytes() == ms[ms_name].tobytes(), torch_name
    assert np.array_equal(got["bn.num_batches_tracked"], before["bn.num_batches_tracked"])  # the target's, kept


def test_torch_into_mindspore(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out.ckpt"
    r = cli("transfer", TORCH, MINDSPORE, "-o", out, "--preset", "torch->mindspore", "--strict")
    assert r.code == 0, r.out + r.err
    pt, got = tensors(TORCH), tensors(out)
    assert set(got) == set(NAMES)  # the MindSpore names, as the target has them
    for ms_name, torch_name in NAMES.items():
        assert got[ms_name].tobytes() == pt[torch_name].tobytes(), ms_name


def test_without_the_preset_batchnorm_is_not_moved(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("transfer", MINDSPORE, TORCH, "-o", tmp_path / "out.pt", "--strict")
    assert r.code == 1 and "bn.weight" in r.err
