"""Target-side globs are rules like the others, and --strict counts only what no rule left out on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from ckptsurgeon import api
from ckptsurgeon.errors import EXIT_CHECK_FAILED
from ckptsurgeon.plan import TransferOptions

from ..support.cli import one_line, run

SCHEMA = json.loads((Path(api.__file__).parent / "schemas" / "transfer-report.schema.json").read_text())


@pytest.fixture
def fresh(corpus: Path) -> tuple[Path, Path]:
    """A trained small CNN and a freshly initialised one of the same architecture (both written by torch)."""
    return corpus / "torch/smallcnn.safetensors", corpus / "torch/smallcnn_fresh_target.safetensors"


@pytest.mark.parametrize("option", ["--skip-target", "--only-target"])
def test_a_target_glob_with_a_typo_fails_and_protects_nothing(
        option: str, fresh: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt = fresh
    out = tmp_path / "out.safetensors"
    code, _, err = run(["transfer", src, tgt, "-o", out, option, "fcc.*"], capsys)
    assert code == EXIT_CHECK_FAILED, err
    line = one_line(err)
    assert f"matched no tensor name: {option} 'fcc.*'" in line and "--allow-unused-rules" in line
    assert not out.exists()
    # The same message as an --include glob that matches nothing.
    code, _, err = run(["transfer", src, tgt, "-o", out, "--include", "fcc.*"], capsys)
    assert code == EXIT_CHECK_FAILED and "matched no tensor name: --include 'fcc.*'" in one_line(err)


def test_the_glob_as_meant_protects_the_classifier_and_unused_is_allowed_on_request(
        fresh: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt = fresh
    out = tmp_path / "out.safetensors"
    code, stdout, err = run(["transfer", src, tgt, "-o", out, "--skip-target", "fc.*", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert {"rule": "--skip-target 'fc.*'", "matches": 2} in doc["rules"]
    written, fresh_values, trained = load_file(out), load_file(tgt), load_file(src)
    assert (written["fc.weight"] == fresh_values["fc.weight"]).all()
    assert (written["conv1.weight"] == trained["conv1.weight"]).all()
    code, _, err = run(["transfer", src, tgt, "-o", out, "--skip-target", "fcc.*", "--allow-unused-rules"], capsys)
    assert code == 0, err


def test_strict_expresses_a_fine_tune_init(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new 4-class head: skip it and leave out the batch counters; --strict checks everything else."""
    src, tgt = corpus / "torch/smallcnn.safetensors", corpus / "torch/smallcnn_4class_target.safetensors"
    out, report = tmp_path / "init.safetensors", tmp_path / "report.json"
    code, _, err = run(["transfer", src, tgt, "-o", out, "--strict"], capsys)
    assert code == EXIT_CHECK_FAILED and "--strict" in err and not out.exists()

    argv = ["transfer", src, tgt, "-o", out, "--strict", "--skip-target", "fc.*",
            "--exclude", "*num_batches_tracked", "--report", report]
    code, table, err = run(argv, capsys)
    assert code == 0, err
    assert "left out on purpose by --skip-target 'fc.*': 2 target tensors ('fc.bias' and 'fc.weight')" in table
    assert "left out on purpose by --exclude '*num_batches_tracked'" in table
    assert "not counted by --strict" in table
    doc = json.loads(report.read_text())
    import jsonschema

    jsonschema.validate(doc, SCHEMA)
    deliberate = {(e["side"], e["name"]): e["rule"] for e in doc["excluded_on_purpose"]}
    assert deliberate[("target", "fc.weight")] == "--skip-target 'fc.*'"
    assert deliberate[("source", "fc.weight")] == "--skip-target 'fc.*'"  # its target was skipped
    assert deliberate[("target", "bn1.num_batches_tracked")] == "--exclude '*num_batches_tracked'"
    assert deliberate[("source", "bn2.num_batches_tracked")] == "--exclude '*num_batches_tracked'"
    assert doc["summary"]["excluded_on_purpose"] == len(doc["excluded_on_purpose"]) == 8
    assert doc["failures"] == []

    # What no rule asked for still counts: the new head, when only the counters are left out on purpose.
    from ckptsurgeon.plan import gate_failures
    from ckptsurgeon.rules import Rules

    options = TransferOptions(strict=True, rules=Rules(exclude=("*num_batches_tracked",)))
    plan = api.plan_transfer(*_open(src, tgt), options)
    assert [str(f) for f in gate_failures(plan)] == ["strict: 2 target tensor(s) not replaced: fc.bias, fc.weight",
                                                     "strict: 2 source tensor(s) unused: fc.bias, fc.weight"]


def _open(*paths: Path) -> list:
    from ckptsurgeon.formats import open_checkpoint

    return [open_checkpoint(p) for p in paths]


def test_a_replayed_plan_keeps_what_its_rules_left_out_on_purpose(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--strict on a replay counts what the saved rules excluded as it did when the plan was made."""
    src, tgt = corpus / "torch/smallcnn.safetensors", corpus / "torch/smallcnn_4class_target.safetensors"
    plan, out = tmp_path / "plan.json", tmp_path / "init.safetensors"
    code, _, err = run(["transfer", src, tgt, "--dry-run", "--strict", "--skip-target", "fc.*",
                        "--exclude", "*num_batches_tracked", "--save-plan", plan], capsys)
    assert code == 0, err
    saved = json.loads(plan.read_text())
    import jsonschema

    jsonschema.validate(saved, json.loads((Path(api.__file__).parent / "schemas" / "plan.schema.json").read_text()))
    assert len(saved["excluded_on_purpose"]) == 8
    code, _, err = run(["transfer", src, tgt, "-o", out, "--plan", plan, "--strict"], capsys)
    assert code == 0, err
    # Without the record, the skipped head would count against --strict.
    del saved["excluded_on_purpose"]
    plan.write_text(json.dumps(saved))
    code, _, err = run(["transfer", src, tgt, "-o", out, "--plan", plan, "--strict"], capsys)
    assert code == EXIT_CHECK_FAILED and "fc.weight" in one_line(err)
    saved["excluded_on_purpose"] = [{"side": "target", "name": "nope", "rule": "--skip-target 'x'"}]
    plan.write_text(json.dumps(saved))
    code, _, err = run(["transfer", src, tgt, "-o", out, "--plan", plan, "--strict"], capsys)
    assert code != 0 and "nope" in one_line(err)
