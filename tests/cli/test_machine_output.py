"""--json on every command prints one document matching its published schema; plain text has no colour codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from ..conftest import EXAMPLES, ROOT
from ..support.cli import run

SCHEMAS = ROOT / "ckptsurgeon" / "schemas"
PRE, TGT = str(EXAMPLES / "pretrained.safetensors"), str(EXAMPLES / "target.safetensors")


def commands(tmp: Path) -> dict[str, tuple[list[str], str, int]]:
    """command -> (argv, schema file, expected exit code)."""
    return {
        "inspect": (["inspect", TGT, "--hash"], "inspect.schema.json", 0),
        "transfer": (["transfer", PRE, TGT, "-o", str(tmp / "t.safetensors"), "--rename", r"\.ffn\.=>.mlp."],
                     "transfer-report.schema.json", 0),
        "transfer-failed": (["transfer", PRE, TGT, "--dry-run", "--strict"], "transfer-report.schema.json", 1),
        "rename": (["rename", PRE, "-o", str(tmp / "r.npz"), "--add-prefix", "m."], "rename.schema.json", 0),
        "convert": (["convert", PRE, "-o", str(tmp / "c.h5"), "--dtype", "BF16"], "convert.schema.json", 0),
        "diff": (["diff", PRE, TGT, "--rename", r"\.ffn\.=>.mlp."], "diff.schema.json", 1),
        "verify": (["verify", TGT], "verify.schema.json", 0),
    }


@pytest.mark.parametrize("name", ["inspect", "transfer", "transfer-failed", "rename", "convert", "diff", "verify"])
def test_json_is_one_document_matching_its_schema(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, schema, expected = commands(tmp_path)[name]
    code, out, _ = run([*argv, "--json"], capsys)
    assert code == expected
    jsonschema.validate(json.loads(out), json.loads((SCHEMAS / schema).read_text()))


@pytest.mark.parametrize("name", ["inspect", "transfer", "rename", "convert", "diff", "verify"])
def test_plain_output_has_no_ansi_escapes(name: str, tmp_path: Path) -> None:
    argv, _, expected = commands(tmp_path)[name]
    for env in ({"NO_COLOR": "1"}, {"TERM": "xterm-256color", "FORCE_COLOR": ""}):
        p = subprocess.run([sys.executable, "-m", "ckptsurgeon", *argv], capture_output=True, text=True,
                           env={**os.environ, **env}, check=False)
        assert p.returncode == expected, p.stderr
        assert "\x1b[" not in p.stdout and "\x1b[" not in p.stderr
        assert p.stdout.strip()


def test_recipes_from_examples_run_and_flags_override_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipes = EXAMPLES / "recipes"
    for recipe in ("strip_module", "new_head", "ci_transfer"):
        code, out, err = run(["transfer", "--config", str(recipes / f"{recipe}.toml"),
                              "-o", str(tmp_path / f"{recipe}.safetensors")], capsys)
        assert code == 0, err
        assert (tmp_path / f"{recipe}.safetensors").exists()
    code, out, _ = run(["rename", "--config", str(recipes / "rename_layers.toml"), "-o", str(tmp_path / "r.safetensors"),
                        "--json"], capsys)
    names = {t["new"] for t in json.loads(out)["tensors"]}
    assert code == 0 and "model.layers.3.mlp.fc2.weight" in names and "model.layers.0.attn.qkv.bias" in names
    # a flag on the command line wins over the recipe's key
    code, _, err = run(["transfer", "--config", str(recipes / "new_head.toml"), "--dry-run", "--min-coverage", "1.0"],
                       capsys)
    assert code == 1 and "--min-coverage 1" in err
    # a repeatable option given on the command line replaces the recipe's list
    code, out, _ = run(["rename", "--config", str(recipes / "rename_layers.toml"), "--dry-run", "--json",
                        "--add-prefix", "net."], capsys)
    assert all(t["new"].startswith("net.") for t in json.loads(out)["tensors"])


def test_unknown_recipe_key_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text('source = "a"\ntarget = "b"\nstirct = true\n')
    code, _, err = run(["transfer", "--config", str(recipe), "--dry-run"], capsys)
    assert code == 2 and "unknown key 'stirct'" in err and str(recipe) in err


@pytest.mark.skipif(shutil.which("ckpt") is None or shutil.which("bash") is None, reason="needs the installed ckpt")
def test_ci_job_example(tmp_path: Path) -> None:
    p = subprocess.run(["bash", str(EXAMPLES / "recipes" / "ci_job.sh"), str(tmp_path / "job")],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert "ci job passed" in p.stdout and json.loads((tmp_path / "job" / "report.json").read_text())["failures"] == []
