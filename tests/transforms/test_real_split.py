"""--split and --concat on a file safetensors wrote for PyTorch (``tests/data/xframe/torch_mha.safetensors``).

``nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64)`` keeps its attention's query,
key and value projections fused: ``self_attn.in_proj_weight`` [96, 32] and ``self_attn.in_proj_bias``
[96], q, k, v in that order along axis 0. Split into three and concatenated back, the file is the
one safetensors wrote, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ..support.fixtures import CliRunner
from .xframe import DATA, tensors

MHA = DATA / "torch_mha.safetensors"
SPLIT = r"(.*)\.in_proj_(weight|bias)=>\1.{q,k,v}_proj.\2"
CONCAT = r"(.*)\.{q,k,v}_proj\.(.*)=>\1.in_proj_\2"
FUSED = ("self_attn.in_proj_weight", "self_attn.in_proj_bias")


def split(cli: CliRunner, out: Path, rule: str = SPLIT) -> dict[str, np.ndarray]:
    r = cli("rename", MHA, "--split", rule, "-o", out)
    assert r.code == 0, r.out + r.err
    return tensors(out)


@pytest.mark.parametrize("axis", ["", "@0", "@0:32,32,32"])
def test_split_gives_the_thirds(cli: CliRunner, tmp_path: Path, axis: str) -> None:
    original = tensors(MHA)
    got = split(cli, tmp_path / "split.safetensors", SPLIT + axis)
    assert set(got) == (set(original) - set(FUSED)) | {
        f"self_attn.{p}_proj.{kind}" for p in "qkv" for kind in ("weight", "bias")}
    for kind in ("weight", "bias"):
        fused = original[f"self_attn.in_proj_{kind}"]
        for i, part in enumerate("qkv"):
            np.testing.assert_array_equal(got[f"self_attn.{part}_proj.{kind}"], fused[32 * i:32 * (i + 1)])
    for name in set(original) - set(FUSED):
        np.testing.assert_array_equal(got[name], original[name], err_msg=name)


def test_concat_after_split_is_the_file_safetensors_wrote(cli: CliRunner, tmp_path: Path) -> None:
    split(cli, tmp_path / "split.safetensors")
    back = tmp_path / "back.safetensors"
    r = cli("rename", tmp_path / "split.safetensors", "--concat", CONCAT, "-o", back)
    assert r.code == 0, r.out + r.err
    original, got = tensors(MHA), tensors(back)
    assert set(got) == set(original)
    for name, value in original.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert list(got) == list(original)  # the fused tensors back in their place
    assert back.read_bytes() == MHA.read_bytes()


def test_split_unequal_sizes_in_rename(cli: CliRunner, tmp_path: Path) -> None:
    """Sizes given after the axis: three parts of 16, 48 and 32 rows."""
    got = split(cli, tmp_path / "split.safetensors", SPLIT + "@0:16,48,32")
    fused = tensors(MHA)["self_attn.in_proj_weight"]
    np.testing.assert_array_equal(got["self_attn.q_proj.weight"], fused[:16])
    np.testing.assert_array_equal(got["self_attn.k_proj.weight"], fused[16:64])
    np.testing.assert_array_equal(got["self_attn.v_proj.weight"], fused[64:])
    assert got["self_attn.v_proj.bias"].shape == (32,)


def test_split_in_a_transfer_into_bert_takes_the_targets_sizes(cli: CliRunner, tmp_path: Path) -> None:
    """PyTorch's fused projection into a BERT layer's separate query, key and value (transformers' file):
    the parts' sizes come from the target (32 rows each); the target's other tensors are kept."""
    target = DATA / "bert_cls3.safetensors"
    out = tmp_path / "bert.safetensors"
    rule = r"self_attn\.in_proj_(weight|bias)=>bert.encoder.layer.0.attention.self.{query,key,value}.\1"
    r = cli("transfer", MHA, target, "-o", out, "--split", rule)
    assert r.code == 0, r.out + r.err
    original, before, got = tensors(MHA), tensors(target), tensors(out)
    assert list(got) == list(before)
    replaced = set()
    for kind in ("weight", "bias"):
        fused = original[f"self_attn.in_proj_{kind}"]
        for i, part in enumerate(("query", "key", "value")):
            name = f"bert.encoder.layer.0.attention.self.{part}.{kind}"
            np.testing.assert_array_equal(got[name], fused[32 * i:32 * (i + 1)], err_msg=name)
            replaced.add(name)
    for name in set(before) - replaced:
        np.testing.assert_array_equal(got[name], before[name], err_msg=name)
