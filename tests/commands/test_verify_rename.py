"""ckpt verify --hashes after a rename: the rename's rule options apply to the hash file's recorded
names (the names before the rename), on a real checkpoint written by torch / safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import ckptsurgeon
from ckptsurgeon.commands.verify import verify
from ckptsurgeon.errors import CheckFailed, UsageError
from ckptsurgeon.rules import Rules

from ..conftest import CORPUS
from ..support.cli import one_line, run
from .test_verify import flip_byte

SCHEMA = json.loads((Path(ckptsurgeon.__file__).parent / "schemas" / "verify.schema.json").read_text())
SRC = CORPUS / "torch" / "smallcnn.safetensors"  # conv1, bn1, conv2, bn2, fc: 16 tensors
RULES = ["--rename", r"^conv(\d)\.=>features.conv\1.", "--rename", r"^bn(\d)\.=>features.bn\1.", "--add-prefix", "model."]


@pytest.fixture
def renamed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """H.json recorded from SRC, then SRC renamed by RULES into B: (B, H.json)."""
    hashes, out = tmp_path / "H.json", tmp_path / "B.safetensors"
    assert run(["verify", SRC, "--write-hashes", hashes, "-q"], capsys)[0] == 0
    assert run(["rename", SRC, "-o", out, *RULES, "-q"], capsys)[0] == 0
    return out, hashes


def verify_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, dict, str]:
    code, out, err = run(["verify", *argv, "--json"], capsys)
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    return code, doc, err


def test_the_rename_rules_follow_a_rename(renamed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, hashes = renamed
    code, doc, err = verify_json(capsys, out, "--hashes", hashes, *RULES)
    assert code == 0 and doc["ok"] and err == "", doc["failures"]
    assert doc["hashes"]["recorded"] == 16 and doc["hashes"]["mismatches"] == []
    assert {t["name"] for t in doc["tensors"]} == {
        "model.features.conv1.weight", "model.features.conv1.bias", "model.features.conv2.weight",
        "model.features.conv2.bias", "model.fc.weight", "model.fc.bias",
        *(f"model.features.bn{i}.{p}" for i in (1, 2)
          for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
    }
    assert doc["rules"] == [{"rule": r"--rename '^conv(\d)\.=>features.conv\1.'", "matches": 4},
                            {"rule": r"--rename '^bn(\d)\.=>features.bn\1.'", "matches": 10},
                            {"rule": "--add-prefix model.", "matches": 16}]
    assert doc["verdict"] == ("ok: 16 tensors read (1,660 parameters); no NaN/Inf; "
                              "16 of 16 recorded hashes match (16 recorded names renamed by the rules)")
    code, text, _ = run(["verify", out, "--hashes", hashes, *RULES], capsys)
    assert code == 0 and "rule --add-prefix model.: 16 recorded names" in text


def test_without_the_rules_the_missing_names_are_named(renamed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, hashes = renamed
    code, doc, err = verify_json(capsys, out, "--hashes", hashes)
    assert code == 1
    problems = {(m["problem"], m["name"]) for m in doc["hashes"]["mismatches"]}
    assert ("missing", "conv1.weight") in problems and ("extra", "model.features.conv1.weight") in problems
    assert len(problems) == 32 and all(m["recorded_name"] is None for m in doc["hashes"]["mismatches"])
    line = one_line(err)
    assert "16 tensors missing ('bn1.num_batches_tracked', " in line and "16 tensors not in the hash file ('model." in line


def test_a_changed_tensor_is_still_found(renamed: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out, hashes = renamed
    bad = flip_byte(out, tmp_path / "bad.safetensors", "model.features.conv2.weight")
    code, doc, err = verify_json(capsys, bad, "--hashes", hashes, *RULES)
    assert code == 1
    (m,) = doc["hashes"]["mismatches"]
    assert (m["name"], m["problem"], m["recorded_name"]) == ("model.features.conv2.weight", "changed", "conv2.weight")
    assert m["detail"] == "sha256 differs (recorded as 'conv2.weight')"
    assert one_line(err) == f"ckpt: error: {bad}: {hashes}: 1 tensor changed ('model.features.conv2.weight')"


def test_a_rule_matching_no_recorded_name_fails(renamed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, hashes = renamed
    code, _, err = run(["verify", out, "--hashes", hashes, *RULES, "--strip-prefix", "module."], capsys)
    assert code == 1
    assert one_line(err) == f"ckpt: error: {hashes}: 1 rule matched no tensor name: --strip-prefix module. " \
                            "(--allow-unused-rules accepts that)"
    code, doc, _ = verify_json(capsys, out, "--hashes", hashes, *RULES, "--strip-prefix", "module.",
                               "--allow-unused-rules")
    assert code == 0 and doc["rules"][0] == {"rule": "--strip-prefix module.", "matches": 0}


def test_rename_rules_need_a_hash_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["verify", SRC, "--rename", "a=>b"], capsys)
    assert code == 2 and "give --hashes H.json" in one_line(err)
    with pytest.raises(UsageError):
        verify(SRC, rules=Rules.from_options(strip_prefix=["x."]))


def test_a_map_and_globs_see_the_recorded_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hashes, out, names = tmp_path / "H.json", tmp_path / "B.safetensors", tmp_path / "names.json"
    names.write_text(json.dumps({"fc.weight": "head.weight", "fc.bias": "head.bias"}))
    assert run(["verify", SRC, "--write-hashes", hashes, "-q"], capsys)[0] == 0
    # the rename wrote only the conv layers and the head, renamed
    assert run(["rename", SRC, "-o", out, "--map", names, "--exclude", "bn*", "-q"], capsys)[0] == 0
    code, doc, _ = verify_json(capsys, out, "--hashes", hashes, "--map", names, "--exclude", "bn*")
    assert code == 0, doc["failures"]
    assert doc["map"] == {"entries": 2, "used": 2} and doc["hashes"]["recorded"] == 6
    assert doc["filters"] == [{"rule": "--exclude 'bn*'", "matches": 10}]
    # a recorded name the map does not name is an unused map entry
    names.write_text(json.dumps({"fc.weight": "head.weight", "fc.bias": "head.bias", "gone": "x"}))
    code, _, err = run(["verify", out, "--hashes", hashes, "--map", names, "--exclude", "bn*"], capsys)
    assert code == 1 and "map entry 'gone' -> 'x'" in one_line(err)


def test_the_library_takes_the_rules(renamed: tuple[Path, Path]) -> None:
    out, hashes = renamed
    rules = Rules.from_options(rename=[RULES[1], RULES[3]], add_prefix=["model."])
    result = verify(out, hashes=hashes, rules=rules)
    assert result.ok and result.recorded == 16
    assert not verify(out, hashes=hashes).ok
    with pytest.raises(CheckFailed):
        verify(out, hashes=hashes, rules=Rules.from_options(rename=["nothing=>x"]))
