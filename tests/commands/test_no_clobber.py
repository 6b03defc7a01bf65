"""Two jobs, one output: --no-clobber never replaces a file, not even one created while the run writes;
every writing command's JSON report records the sha256 of the bytes it committed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ckptsurgeon import api, execute
from ckptsurgeon.atomic import TEMP_MARK
from ckptsurgeon.errors import EXIT_OUTPUT, OutputError

from ..conftest import EXAMPLES
from ..support.cli import one_line, run

SRC = EXAMPLES / "pretrained.safetensors"
TGT = EXAMPLES / "target.safetensors"
RENAME = r"\.ffn\.=>.mlp."
OTHER = b"the other job's checkpoint"
SCHEMAS = Path(api.__file__).parent / "schemas"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob("*") if TEMP_MARK in p.name]


@pytest.fixture
def other_job(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Whatever is put in the list is created by "another job" after the last tensor is written, before the commit."""
    dests: list[Path] = []
    copy = execute.copy_tensors

    def copy_then_race(*args: Any, **kwargs: Any) -> Any:
        outcomes = copy(*args, **kwargs)
        for dest in dests:
            dest.write_bytes(OTHER)
        return outcomes

    monkeypatch.setattr(execute, "copy_tensors", copy_then_race)
    return dests


def test_overwriting_stays_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    out.write_bytes(OTHER)
    code, stdout, err = run(["convert", SRC, "-o", out, "--json"], capsys)
    assert code == 0, err
    assert out.read_bytes() == SRC.read_bytes() and json.loads(stdout)["output"]["sha256"] == sha256(SRC)


@pytest.mark.parametrize("command", ["transfer", "rename", "convert", "report", "verify"])
def test_no_clobber_refuses_an_existing_destination_before_any_work(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / ("x.json" if command in ("report", "verify") else "x.safetensors")
    dest.write_bytes(OTHER)
    argv: list[str | Path] = {
        "transfer": ["transfer", SRC, TGT, "-o", dest, "--rename", RENAME],
        "rename": ["rename", SRC, "-o", dest, "--rename", RENAME],
        "convert": ["convert", SRC, "-o", dest],
        "report": ["transfer", SRC, TGT, "-o", tmp_path / "new.safetensors", "--rename", RENAME, "--report", dest],
        "verify": ["verify", SRC, "--write-hashes", dest],
    }[command]
    code, _, err = run([*argv, "--no-clobber"], capsys)
    assert code == EXIT_OUTPUT == 4, err
    line = one_line(err)
    assert str(dest) in line and "--no-clobber" in line
    assert dest.read_bytes() == OTHER
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]


def test_the_run_that_loses_the_race_exits_4_and_leaves_nothing(
        other_job: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = tmp_path / "out.safetensors", tmp_path / "report.json"
    other_job.append(out)
    code, _, err = run(["transfer", SRC, TGT, "-o", out, "--rename", RENAME, "--report", report, "--no-clobber"],
                       capsys)
    assert code == EXIT_OUTPUT, err
    line = one_line(err)
    assert str(out) in line and "another run created it" in line
    assert out.read_bytes() == OTHER  # the winner's file is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]  # no report, no temporary file


def test_without_no_clobber_the_last_commit_wins_and_its_report_says_which_file(
        other_job: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = tmp_path / "out.safetensors", tmp_path / "report.json"
    other_job.append(out)
    code, _, err = run(["transfer", SRC, TGT, "-o", out, "--rename", RENAME, "--report", report], capsys)
    assert code == 0, err
    doc = json.loads(report.read_text())
    assert doc["output"]["sha256"] == sha256(out) and doc["output"]["bytes"] == out.stat().st_size
    # A job that finds another file at the path can tell: the hash no longer matches.
    out.write_bytes(OTHER)
    assert doc["output"]["sha256"] != sha256(out)


def test_a_sharded_commit_never_replaces_an_index_created_meanwhile(other_job: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    index = folder / "model.safetensors.index.json"
    other_job.append(index)
    with pytest.raises(OutputError, match="another run created it"):
        api.convert(SRC, folder, shard_size="200kB", no_clobber=True)
    assert sorted(p.name for p in folder.iterdir() if p.name != ".ckpt-lock") == [index.name]
    assert index.read_bytes() == OTHER and not leftovers(tmp_path)


def test_every_writing_command_reports_the_sha256_it_committed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = {
        "transfer": ["transfer", SRC, TGT, "-o", tmp_path / "t.safetensors", "--rename", RENAME, "--json"],
        "rename": ["rename", SRC, "-o", tmp_path / "r.h5", "--rename", RENAME, "--json"],
        "convert": ["convert", SRC, "-o", tmp_path / "c.npz", "--dtype", "BF16", "--json"],
    }
    for name, argv in runs.items():
        code, stdout, err = run([*argv, "--no-clobber"], capsys)
        assert code == 0, (name, err)
        doc = json.loads(stdout)
        schema = {"transfer": "transfer-report", "rename": "rename", "convert": "convert"}[name]
        jsonschema.validate(doc, json.loads((SCHEMAS / f"{schema}.schema.json").read_text()))
        output = doc["output"]
        path = Path(output["path"])
        assert output["sha256"] == sha256(path) and output["bytes"] == path.stat().st_size, name
    code, stdout, err = run(["convert", SRC, "-o", tmp_path / "sharded", "--shard-size", "200kB", "--json"], capsys)
    assert code == 0, err
    files = json.loads(stdout)["files"]
    assert len(files) > 2 and files[-1]["path"].endswith("model.safetensors.index.json")
    for f in files:
        assert f["sha256"] == sha256(Path(f["path"])) and f["bytes"] == Path(f["path"]).stat().st_size


def test_a_copy_of_the_input_hashes_like_the_input(tmp_path: Path) -> None:
    """The recorded hash is of the file's bytes: a same-format convert of a safetensors file is a byte copy."""
    src = tmp_path / "in.safetensors"
    shutil.copyfile(SRC, src)
    report = api.convert(src, tmp_path / "out.safetensors")
    assert report.output["sha256"] == sha256(src)
