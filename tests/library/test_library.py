"""The one-import library: keyword options that mirror the command line, reports equal to the CLI's,
errors worded with keywords, a state dict filled in place, and lazy read-only loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import ckptsurgeon as cs

from ..conftest import EXAMPLES
from ..support.cli import run

PRE, TGT = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
RENAME = r"\.ffn\.=>.mlp."
ROOT = Path(__file__).resolve().parents[2]


def _same_plan(a: dict, b: dict) -> None:
    for key in ("tensors", "layers", "summary", "rules", "unused_sources", "verdict", "ok", "failures"):
        assert a[key] == b[key], key


def test_keywords_give_the_report_the_command_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = cs.transfer(PRE, TGT, tmp_path / "a.safetensors", rename=RENAME, min_coverage=0.95, strict=False)
    code, out, _ = run(["transfer", PRE, TGT, "-o", tmp_path / "b.safetensors", "--rename", RENAME,
                        "--min-coverage", "0.95", "--json"], capsys)
    assert code == 0 and report.ok
    _same_plan(report.to_dict(), json.loads(out))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_options_and_keywords_do_not_mix() -> None:
    with pytest.raises(cs.UsageError, match="not both"):
        cs.transfer(PRE, TGT, dry_run=True, options=cs.transfer_options(rename=RENAME), strict=True)


@pytest.mark.parametrize(("call", "says"), [
    (lambda: cs.transfer(PRE, TGT, dry_run=True, rename="no arrow"), "rename 'no arrow'"),
    (lambda: cs.transfer(PRE, TGT, dry_run=True, strip_prefix=""), "strip_prefix: the prefix is empty"),
    (lambda: cs.transfer(PRE, TGT, dry_run=True, transform="x=flip"), "transform: unknown layout flip"),
    (lambda: cs.transfer(PRE, TGT, dry_run=True, preset="jax->torch"), "preset: no preset named"),
    (lambda: cs.rename(PRE, dry_run=True, include="nothing*", check=True), "include 'nothing*'"),
    (lambda: cs.load(PRE, exclude="nothing*"), "exclude 'nothing*'"),
])
def test_library_errors_name_keywords_not_flags(call, says: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(cs.CkptError) as info:
        call()
    text = str(info.value)
    assert says in text and "--" not in text, text
    assert info.value.exit_code in (1, 2) and info.value.problem


def _state() -> dict[str, np.ndarray]:
    return {k: np.zeros_like(v) for k, v in load_file(TGT).items()}


def test_transfer_into_fills_the_arrays_in_place_and_reports_as_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _state()
    before = {k: v for k, v in state.items()}
    report = cs.transfer_into(state, PRE, rename=RENAME)
    assert all(state[k] is before[k] for k in state)  # the same arrays, filled
    src = load_file(PRE)
    for name, value in state.items():
        if name.startswith("head."):
            assert not value.any()  # shape mismatch: kept as it was
        else:
            assert np.array_equal(value, src[name.replace(".mlp.", ".ffn.")]), name
    zeros = tmp_path / "zeros.safetensors"
    save_file(_state(), zeros)
    code, out, _ = run(["transfer", PRE, zeros, "--dry-run", "--rename", RENAME, "--json"], capsys)
    doc = report.to_dict()
    assert code == 0 and doc["target"]["path"] == "<memory>" and doc["output"] is None
    assert doc["tensors"] == [t | {"overflow": 0} if t["action"] == "replace" else t for t in json.loads(out)["tensors"]]


def test_transfer_into_casts_and_changes_nothing_when_a_check_fails(tmp_path: Path) -> None:
    loud = tmp_path / "loud.safetensors"
    values = load_file(PRE)
    values["blocks.0.norm1.weight"] = np.full_like(values["blocks.0.norm1.weight"], 1e6)  # overflows F16
    save_file(values, loud)
    state = {k: np.zeros(v.shape, np.float16) for k, v in load_file(TGT).items()}
    report = cs.transfer_into(state, loud, rename=RENAME)
    assert not report.ok and report.failed_checks[0].check == "overflow"
    assert not any(v.any() for v in state.values())  # nothing changed
    report = cs.transfer_into(state, loud, rename=RENAME, allow_overflow=True)
    assert report.ok and np.isinf(state["blocks.0.norm1.weight"]).all()
    assert np.array_equal(state["blocks.1.attn.qkv.weight"], values["blocks.1.attn.qkv.weight"].astype(np.float16))


@pytest.mark.parametrize(("entry", "says"), [
    (lambda a: a.copy().T, "not C-contiguous"),
    (lambda a: np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape), "read-only"),
    (lambda a: a.tolist(), "not an array numpy can view in place"),
])
def test_transfer_into_refuses_what_it_cannot_fill_in_place(entry, says: str) -> None:  # type: ignore[no-untyped-def]
    state = _state()
    state["blocks.0.attn.qkv.weight"] = entry(state["blocks.0.attn.qkv.weight"])
    with pytest.raises(cs.UsageError, match=says):
        cs.transfer_into(state, PRE, rename=RENAME)


def test_load_is_lazy_read_only_and_named_by_the_rules() -> None:
    src = load_file(PRE)
    with cs.load(PRE, strip_prefix="blocks.", exclude="head.*") as weights:
        assert len(weights) == len(src) - 2 and "0.attn.qkv.weight" in weights and "head.weight" not in weights
        w = weights["0.attn.qkv.weight"]
        assert np.array_equal(w, src["blocks.0.attn.qkv.weight"]) and not w.flags.writeable
        with pytest.raises(ValueError):
            w[0, 0] = 1.0
        assert weights.format == "safetensors"


def test_transfer_into_a_torch_model_with_real_torch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    python = os.environ.get("CKPT_TORCH_PYTHON")
    if not python:
        pytest.skip("torch is not installed here (set CKPT_TORCH_PYTHON to an interpreter that has torch)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([python, str(Path(__file__).with_name("torch_into_check.py")), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for name in ("pretrained.pt", "pretrained.safetensors"):
        got = found[name]
        assert got["same_memory"] and got["equal"] and got["strict_load"] == "<All keys matched successfully>", got
        code, out, err = run(["transfer", tmp_path / name, tmp_path / "fresh.pt", "--dry-run", "--json"], capsys)
        assert code == 0, err
        cli = json.loads(out)
        mine = got["report"]
        assert mine["summary"] | {"changed_values": None} == cli["summary"] | {"changed_values": None}
        assert [(t["name"], t["action"], t["kind"], t["cast"]) for t in mine["tensors"]] == \
               [(t["name"], t["action"], t["kind"], t["cast"]) for t in cli["tensors"]]


def test_the_library_namespace_lists_its_functions_only() -> None:
    import ckptsurgeon.api as api

    assert not {"json", "os", "hashlib", "Path"} & set(dir(api))
    assert {"transfer", "transfer_into", "load", "inspect", "rename", "convert", "diff", "verify"} <= set(dir(cs))
    assert sys.modules["ckptsurgeon"] is cs


def test_verify_follows_a_rename_and_diff_compares_across_dtypes(tmp_path: Path) -> None:
    hashes = tmp_path / "pre.hashes.json"
    assert cs.verify(PRE, write_hashes=hashes).ok and hashes.is_file()
    cs.rename(PRE, tmp_path / "renamed.safetensors", rename=r"^blocks\.=>layers.", check=True)
    assert cs.verify(tmp_path / "renamed.safetensors", hashes=hashes, rename=r"^blocks\.=>layers.").ok
    assert not cs.verify(tmp_path / "renamed.safetensors", hashes=hashes).ok
    data = Path(__file__).resolve().parents[1] / "data"
    f32, bf16 = data / "corpus" / "torch" / "smallcnn.safetensors", data / "cross_dtype" / "smallcnn_bf16.safetensors"
    assert cs.diff(f32, bf16, rtol=0.004).ok
    assert not cs.diff(f32, bf16, rtol=0.004, strict_dtypes=True).ok


def test_a_folder_output_from_the_library(tmp_path: Path) -> None:
    folder = Path(__file__).resolve().parents[1] / "data" / "folders" / "sharded"
    out = tmp_path / "out"
    other = Path(__file__).resolve().parents[1] / "data" / "folders" / "training"  # the same tiny model, saved again
    report = cs.transfer(other, folder / "model.safetensors.index.json", output_dir=out)
    assert report.ok and (out / "model.safetensors.index.json").is_file() and not (out / "config.json").exists()
    report = cs.transfer(other, folder, output_dir=out, force=True)  # a target named as a folder: its files too
    assert report.ok and (out / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    assert sorted(p.name for p in out.glob("model-*.safetensors")) == sorted(p.name for p in folder.glob("model-*.safetensors"))
    with pytest.raises(cs.UsageError, match="output and output_dir"):
        cs.transfer(folder, folder, tmp_path / "x.safetensors", output_dir=out)
