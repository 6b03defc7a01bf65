"""No run writes one file twice or writes over an input: every path a command writes is checked
against every other and against every input, links included, before any work (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ckptsurgeon.errors import EXIT_USAGE

from ..conftest import EXAMPLES
from ..support.cli import run

SRC = EXAMPLES / "pretrained.safetensors"
TGT = EXAMPLES / "target.safetensors"
RENAME = r"\.ffn\.=>.mlp."


def transfer(out: Path, *more: str | Path) -> list[str | Path]:
    return ["transfer", SRC, TGT, "-o", out, "--rename", RENAME, *more]


def test_output_and_report_on_one_path_is_refused_and_the_checkpoint_survives(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = tmp_path / "x.safetensors"
    shutil.copyfile(TGT, x)  # a checkpoint from an earlier run
    before = x.read_bytes()
    code, out, err = run(transfer(x, "--report", x), capsys)
    assert code == EXIT_USAGE == 2, err
    line = err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "-o" in line and "--report" in line and str(x) in line
    assert x.read_bytes() == before and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_a_new_output_and_report_on_one_path_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = tmp_path / "x.safetensors"
    code, _, err = run(transfer(x, "--report", tmp_path / "." / "x.safetensors"), capsys)
    assert code == 2 and "--report" in err
    assert list(tmp_path.iterdir()) == []


def test_a_hard_link_and_a_symbolic_link_are_the_same_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    shutil.copyfile(TGT, out)
    hard = tmp_path / "report.json"
    os.link(out, hard)
    code, _, err = run(transfer(out, "--report", hard), capsys)
    assert code == 2 and "-o and --report name the same file" in err, err
    soft = tmp_path / "plan.json"
    soft.symlink_to(tmp_path / "new.safetensors")  # a link to a file that does not exist yet
    code, _, err = run(transfer(tmp_path / "new.safetensors", "--save-plan", soft), capsys)
    assert code == 2 and "-o and --save-plan name the same file" in err, err
    assert not (tmp_path / "new.safetensors").exists()


def test_report_and_save_plan_on_one_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "doc.json"
    code, _, err = run(["transfer", SRC, TGT, "--dry-run", "--rename", RENAME, "--report", doc, "--save-plan", doc],
                       capsys)
    assert code == 2 and "--report and --save-plan name the same file" in err and str(doc) in err
    assert not doc.exists()


@pytest.mark.parametrize("which", ["SOURCE", "--plan", "--map"])
def test_an_output_that_is_an_input_file_of_any_option(
        which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src.safetensors"
    shutil.copyfile(SRC, src)
    plan = tmp_path / "plan.json"
    assert run(["transfer", src, TGT, "--dry-run", "--rename", RENAME, "--save-plan", plan], capsys)[0] == 0
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"head.weight": "head.weight"}))
    victim = {"SOURCE": src, "--plan": plan, "--map": mapping}[which]
    before = victim.read_bytes()
    argv = ["transfer", src, TGT, "-o", tmp_path / "out.safetensors", "--report", victim]
    argv += ["--plan", plan] if which == "--plan" else ["--rename", RENAME]
    if which == "--map":
        argv += ["--map", mapping, "--allow-unused-rules"]
    code, _, err = run(argv, capsys)
    assert code == 2, err
    assert f"--report and {which} name the same file" in err
    assert victim.read_bytes() == before
    assert not (tmp_path / "out.safetensors").exists()


def test_rename_convert_and_verify_check_their_outputs_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"head.weight": "classifier.weight"}))
    before = mapping.read_bytes()
    code, _, err = run(["rename", SRC, "-o", mapping, "--map", mapping], capsys)
    assert code == 2 and "-o and --map name the same file" in err
    assert mapping.read_bytes() == before

    link = tmp_path / "link.safetensors"
    link.symlink_to(SRC)
    code, _, err = run(["convert", link, "-o", SRC], capsys)
    assert code == 2 and "-o and PATH name the same file" in err

    hashes = tmp_path / "h.json"
    assert run(["verify", SRC, "--write-hashes", hashes], capsys)[0] == 0
    before = hashes.read_bytes()
    code, _, err = run(["verify", SRC, "--hashes", hashes, "--write-hashes", hashes], capsys)
    assert code == 2 and "--write-hashes and --hashes name the same file" in err
    assert hashes.read_bytes() == before
