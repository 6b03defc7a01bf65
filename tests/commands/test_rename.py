"""ckpt rename: old -> new names, bytes/dtypes/metadata kept, collisions and unused rules refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ckptsurgeon import api
from ckptsurgeon.errors import CheckFailed
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.rules import Rules

from ..conftest import EXAMPLES
from ..support.cli import run


def tensors(path: Path) -> dict[str, tuple[tuple[int, ...], str, str]]:
    with open_checkpoint(path) as r:
        return {t.name: (t.shape, t.dtype, r.sha256(t.name)) for t in r.tensors}


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".h5"])
def test_rename_keeps_bytes_dtypes_and_metadata(suffix: str, tmp_path: Path) -> None:
    src = EXAMPLES / "pretrained.safetensors"
    out = tmp_path / f"out{suffix}"
    report = api.rename(src, out, Rules.from_options(rename=[r"\.ffn\.=>.mlp."], add_prefix=["model."]))
    assert report.summary == {"tensors": 55, "renamed": 55, "unchanged": 0, "dropped": 0, "transformed": 0}
    before, after = tensors(src), tensors(out)
    assert {"model." + n.replace(".ffn.", ".mlp."): v for n, v in before.items()} == after
    with open_checkpoint(out) as r:
        assert r.metadata["model"] == "tiny-vit"


def test_rename_back_gives_the_original_tensors(tmp_path: Path) -> None:
    src = EXAMPLES / "pretrained.safetensors"
    api.rename(src, tmp_path / "a.safetensors", Rules.from_options(strip_prefix=["blocks."], add_prefix=["b."]))
    api.rename(tmp_path / "a.safetensors", tmp_path / "b.safetensors",
               Rules.from_options(rename=[r"^b\.(\d)=>blocks.\1", r"^b\.=>"]))
    assert tensors(src) == tensors(tmp_path / "b.safetensors")


def test_collision_names_both_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    code, _, err = run(["rename", str(EXAMPLES / "pretrained.safetensors"), "-o", str(out),
                        "--rename", r"\.(weight|bias)$=>.param"], capsys)
    assert code == 1 and "pretrained.safetensors: " in err
    assert "'blocks.0.attn.proj.bias' and 'blocks.0.attn.proj.weight'" in err and "'blocks.0.attn.proj.param'" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unused_rule_and_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = str(EXAMPLES / "pretrained.safetensors")
    code, out, err = run(["rename", src, "--dry-run", "--rename", "nothing-like-this=>x"], capsys)
    assert code == 1 and "matched no tensor name" in err
    code, out, _ = run(["rename", src, "--dry-run", "--rename", r"\.ffn\.=>.mlp."], capsys)
    assert code == 0 and "blocks.{0..3}.ffn.fc1.weight" in out and "blocks.{0..3}.mlp.fc1.weight" in out
    assert "dry run, nothing written" in out
    code, out, _ = run(["rename", src, "--dry-run", "--json", "--exclude", "head.*"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "ckptsurgeon/rename/1"
    assert doc["summary"] == {"tensors": 53, "renamed": 0, "unchanged": 53, "dropped": 2, "transformed": 0}


def test_rename_is_reproducible(tmp_path: Path) -> None:
    rules = Rules.from_options(rename=[r"\.ffn\.=>.mlp."])
    for suffix in (".safetensors", ".npz", ".h5"):
        a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        api.rename(EXAMPLES / "pretrained.safetensors", a, rules)
        api.rename(EXAMPLES / "pretrained.safetensors", b, rules)
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest(), suffix


def test_library_reports_a_failed_rename_and_raises_it_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "o.safetensors"
    report = api.rename(EXAMPLES / "pretrained.safetensors", out, Rules.from_options(rename=["zz=>y"]))
    assert not report.ok and "matched no tensor name" in report.failures[0] and not out.exists()
    with pytest.raises(CheckFailed) as info:
        api.rename(EXAMPLES / "pretrained.safetensors", out, Rules.from_options(rename=["zz=>y"]), check=True)
    assert info.value.report is not None and not info.value.report.ok and not out.exists()
