"""Transfer features for CI jobs: saved plans, provenance, --verify, reproducible bytes, recipes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ckptsurgeon import __version__, api
from ckptsurgeon.errors import CheckFailed
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats.safetensors import writer as st_writer
from ckptsurgeon.plan import TransferOptions
from ckptsurgeon.rules import Rules

from ..conftest import EXAMPLES
from ..support.fixtures import CliRunner

RULES = TransferOptions(rules=Rules.from_options(rename=[r"\.ffn\.=>.mlp."]))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_saved_plan_replays_to_identical_bytes(tmp_path: Path) -> None:
    src, tgt = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
    plan = tmp_path / "plan.json"
    api.transfer(src, tgt, tmp_path / "a.safetensors", RULES, save_plan=plan)
    doc = json.loads(plan.read_text())
    assert doc["schema"] == "ckptsurgeon/plan/2" and len(doc["steps"]) == 55
    report = api.transfer(src, tgt, tmp_path / "b.safetensors", plan_file=plan)
    assert sha(tmp_path / "a.safetensors") == sha(tmp_path / "b.safetensors")
    assert report.summary["replaced_tensors"] == 53


def test_replay_refuses_a_changed_input_header(tmp_path: Path) -> None:
    src, tgt = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
    plan = tmp_path / "plan.json"
    api.transfer(src, tgt, dry_run=True, options=RULES, save_plan=plan)
    changed = tmp_path / "target.safetensors"
    tensors = load_file(tgt)
    tensors["head.weight"] = np.zeros((5, 64), np.float32)
    save_file(tensors, changed)
    with pytest.raises(CheckFailed, match="no longer matches the saved plan"):
        api.transfer(src, changed, tmp_path / "out.safetensors", plan_file=plan)
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("flags", [
    ["--skip-target", "head.*"], ["--only-target", "blocks.*"], ["--match", "suffix"], ["--keep-dtype"],
    ["--add-unmatched"], ["--no-auto-prefix"], ["--rename", "a=>b"],
])
def test_replay_refuses_every_option_it_would_ignore(tmp_path: Path, cli: CliRunner, flags: list[str]) -> None:
    src, tgt = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
    plan = tmp_path / "plan.json"
    api.transfer(src, tgt, dry_run=True, options=RULES, save_plan=plan)
    out = tmp_path / "out.safetensors"
    result = cli("transfer", src, tgt, "-o", out, "--plan", plan, *flags)
    assert result.code == 2, result.err
    assert f"ckpt: error: {plan}: a saved plan is replayed as it is; {flags[0]}" in result.line and "would be ignored" in result.line
    assert not out.exists()
    assert cli("transfer", src, tgt, "-o", out, "--plan", plan, "--strict", "--allow-empty").code in (0, 1)  # gates are honoured


def test_a_pinned_replay_refuses_changed_tensor_data(tmp_path: Path, cli: CliRunner) -> None:
    src, tgt = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
    plan = tmp_path / "plan.json"
    api.transfer(src, tgt, dry_run=True, options=RULES, save_plan=plan)
    doc = json.loads(plan.read_text())
    assert (doc["source_content_sha256"], doc["target_content_sha256"]) == (sha(src), sha(tgt))
    assert doc["rules"] == [r"--rename '\.ffn\.=>.mlp.'"]
    flipped = tmp_path / "pretrained.safetensors"
    data = bytearray(src.read_bytes())
    data[-1] ^= 0x40  # one byte of the last tensor's data: the header is unchanged
    flipped.write_bytes(bytes(data))
    out = tmp_path / "out.safetensors"
    assert cli("transfer", flipped, tgt, "-o", out, "--plan", plan).code == 0  # the header is what a plan pins by default
    out.unlink()
    result = cli("transfer", flipped, tgt, "-o", out, "--plan", plan, "--pin-content")
    assert result.code == 1 and result.line.startswith(f"ckpt: error: {flipped}: the source's bytes no longer match")
    assert not out.exists()
    assert cli("transfer", src, tgt, "-o", out, "--plan", plan, "--pin-content").code == 0
    assert cli("transfer", src, tgt, "-o", tmp_path / "x.safetensors", "--pin-content").code == 2  # needs --plan


def test_provenance_after_a_replay_names_the_plan_and_its_rules(tmp_path: Path) -> None:
    src, tgt = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
    plan = tmp_path / "plan.json"
    api.transfer(src, tgt, dry_run=True, options=RULES, save_plan=plan)
    out = tmp_path / "out.safetensors"
    api.transfer(src, tgt, out, plan_file=plan, provenance=True)
    with open_checkpoint(out) as r:
        recorded = json.loads(r.metadata["ckptsurgeon.rules"])
    assert recorded["rules"] == [r"--rename '\.ffn\.=>.mlp.'"]
    assert recorded["replayed_plan"] == {"path": "plan.json", "sha256": sha(plan)}


def test_provenance_in_metadata(tmp_path: Path) -> None:
    src, tgt = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
    out = tmp_path / "out.safetensors"
    api.transfer(src, tgt, out, RULES, provenance=True)
    with open_checkpoint(out) as r:
        meta = r.metadata
    assert meta["ckptsurgeon.version"] == __version__
    assert meta["ckptsurgeon.source_sha256"] == sha(src) and meta["ckptsurgeon.target_sha256"] == sha(tgt)
    assert r"\.ffn\." in json.loads(meta["ckptsurgeon.rules"])["rules"][0]
    assert meta["model"] == "tiny-vit-v2"  # the target's own metadata stays


def test_verify_catches_a_corrupted_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, tgt = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"previous")
    original = st_writer.Writer._finish

    def corrupting_finish(self: st_writer.Writer) -> None:
        original(self)
        with open(self.path, "r+b") as f:  # flip one byte of the last tensor's data
            f.seek(-3, 2)
            byte = f.read(1)
            f.seek(-3, 2)
            f.write(bytes([byte[0] ^ 0xFF]))

    monkeypatch.setattr(st_writer.Writer, "_finish", corrupting_finish)
    with pytest.raises(CheckFailed, match=r"verify: tensor .* as written differs from the plan") as failed:
        api.transfer(src, tgt, out, RULES, verify=True)
    assert failed.value.path == str(out) and failed.value.failures[0].check == "verify"
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]
    monkeypatch.setattr(st_writer.Writer, "_finish", original)
    api.transfer(src, tgt, out, RULES, verify=True)
    assert load_file(out)["blocks.3.mlp.fc2.weight"].shape == (64, 256)


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    src, tgt = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
    for fmt in (".safetensors", ".npz", ".h5"):
        a, b = tmp_path / f"a{fmt}", tmp_path / f"b{fmt}"
        api.transfer(src, tgt, a, RULES)
        api.transfer(src, tgt, b, RULES)
        assert sha(a) == sha(b), fmt
