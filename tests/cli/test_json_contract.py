"""The --json contract: every exit code of the README's table comes with exactly one JSON document on stdout,
the command's report or an error document, each valid against its published schema; stderr keeps its one line."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ckptsurgeon import api
from ckptsurgeon.cli import app as cli_app

from ..conftest import EXAMPLES, ROOT
from ..support.cli import one_line, run

SCHEMAS = ROOT / "ckptsurgeon" / "schemas"
PRE, TGT = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
REPORT_SCHEMAS = {
    "ckptsurgeon/inspect/1": "inspect.schema.json", "ckptsurgeon/transfer-report/1": "transfer-report.schema.json",
    "ckptsurgeon/rename/1": "rename.schema.json", "ckptsurgeon/convert/1": "convert.schema.json",
    "ckptsurgeon/diff/1": "diff.schema.json", "ckptsurgeon/verify/1": "verify.schema.json",
    "ckptsurgeon/error/1": "error.schema.json",
}


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def one_document(out: str) -> dict[str, Any]:
    """The one JSON document ``out`` holds, checked against the schema it names."""
    doc = json.loads(out)  # one document and nothing else: json.loads refuses anything after it
    assert isinstance(doc, dict)
    jsonschema.validate(doc, schema(REPORT_SCHEMAS[doc["schema"]]))
    return doc


def check(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    """Run ``argv`` with --json: the exit code, one schema-valid document, and (for errors) one stderr line."""
    got, out, err = run([*map(str, argv), "--json"], capsys)
    assert got == code, err
    doc = one_document(out)
    assert doc["ok"] is (code == 0)
    if doc["schema"] == "ckptsurgeon/error/1":
        assert doc["exit_code"] == code
        line = one_line(err)
        assert line.startswith("ckpt: error: ") and doc["error"]["message"] in line
        if doc["error"]["file"] is not None:
            assert doc["error"]["file"] in line
    return doc, err


def test_exit_0_every_report_has_ok_and_inspect_names_its_schema(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    doc, _ = check(["inspect", TGT], 0, capsys)
    assert doc["schema"] == "ckptsurgeon/inspect/1" and doc["ok"] is True
    for argv in (["transfer", PRE, TGT, "--dry-run"], ["rename", PRE, "--dry-run", "--add-prefix", "m."],
                 ["convert", PRE, "-o", tmp_path / "c.npz"], ["diff", PRE, PRE], ["verify", PRE]):
        doc, _ = check(argv, 0, capsys)
        assert doc["ok"] is True and not doc["verdict"].startswith("FAILED")


def test_exit_1_a_failed_gate_says_so_in_ok_and_the_verdict(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    doc, _ = check(["transfer", PRE, TGT, "-o", out, "--strict"], 1, capsys)
    assert doc["schema"] == "ckptsurgeon/transfer-report/1" and doc["failures"]
    assert doc["verdict"].startswith("FAILED: ") and doc["verdict"].endswith("nothing written")
    assert not out.exists()
    doc, _ = check(["rename", PRE, "-o", out, "--rename", "no_such=>x"], 1, capsys)
    assert doc["schema"] == "ckptsurgeon/rename/1" and doc["verdict"].startswith("FAILED: ")
    doc, _ = check(["diff", PRE, TGT], 1, capsys)
    assert doc["schema"] == "ckptsurgeon/diff/1" and doc["equal"] is False
    # -q prints the same verdict
    code, text, _ = run(["transfer", str(PRE), str(TGT), "--dry-run", "--strict", "-q"], capsys)
    assert code == 1 and text.startswith("FAILED: ")


def test_exit_1_a_plan_that_no_longer_matches_prints_an_error_document(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.json"
    api.transfer(PRE, TGT, dry_run=True, save_plan=plan)
    jsonschema.validate(json.loads(plan.read_text()), schema("plan.schema.json"))  # the plan's schema is published
    changed = tmp_path / "changed.safetensors"
    api.convert(TGT, changed, dtype="F16")  # the target's dtypes changed since the plan was made
    doc, _ = check(["transfer", PRE, changed, "-o", tmp_path / "out.safetensors", "--plan", plan], 1, capsys)
    assert doc["error"]["kind"] == "check_failed" and "no longer matches the saved plan" in doc["error"]["message"]
    assert doc["error"]["file"] == str(changed) and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("argv", [
    ["transfer"],  # click: a missing argument
    ["inspect", str(TGT), "--no-such-option"],  # click: an unknown option
    ["no-such-command"],  # click: an unknown command
    ["transfer", str(PRE), str(TGT)],  # the command: neither -o nor --dry-run
    ["convert", str(PRE), "-o", str(PRE)],  # ckptsurgeon: the output is the input
])
def test_exit_2_a_usage_error_is_one_line_and_an_error_document(argv: list[str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    doc, err = check(argv, 2, capsys)
    assert doc["error"]["kind"] == "usage"
    assert "Usage:" not in err and "Try " not in err
    code, out, err = run(argv, capsys)  # without --json: the same one line, nothing on stdout
    assert code == 2 and out == "" and one_line(err).startswith("ckpt: error: ")


def test_usage_errors_name_the_argument_and_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = run(["transfer"], capsys)
    assert one_line(err) == "ckpt: error: transfer: missing argument 'SOURCE' (see 'ckpt transfer --help')"


def test_exit_3_an_unreadable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.safetensors"
    doc, _ = check(["inspect", missing], 3, capsys)
    assert doc["error"] == {"kind": "input", "file": str(missing), "message": "no such file", "hint": None}
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.")
    doc, _ = check(["inspect", pickle], 3, capsys)
    assert doc["error"]["kind"] in ("input", "unsafe_input") and doc["error"]["file"] == str(pickle)


def test_exit_4_an_output_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no_such_dir" / "out.safetensors"
    doc, _ = check(["convert", PRE, "-o", out], 4, capsys)
    assert doc["error"]["kind"] == "output" and doc["error"]["file"] == str(out)


def test_exit_70_an_internal_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(api, "inspect", broken)
    doc, _ = check(["inspect", TGT], 70, capsys)
    assert doc["error"]["kind"] == "internal" and "ValueError: a bug" in doc["error"]["message"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["130", "143"])
def test_130_and_143_a_signal(sig: signal.Signals, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    def stopped(*args: object, **kwargs: object) -> None:
        raise cli_app.Interrupted(sig)  # what the run's signal handler raises

    monkeypatch.setattr(api, "inspect", stopped)
    doc, _ = check(["inspect", TGT], 128 + sig, capsys)
    assert doc["error"]["kind"] == "interrupted" and sig.name in doc["error"]["message"]


def test_without_json_an_error_prints_nothing_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["inspect", str(tmp_path / "missing.safetensors")], capsys)
    assert code == 3 and out == "" and one_line(err)


def test_json_after_double_dash_is_not_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["inspect", "--", "--json"], capsys)  # a file named --json
    assert code == 3 and out == "" and "--json" in one_line(err)


def test_every_schema_is_a_valid_json_schema() -> None:
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        doc = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(doc)
        assert doc["$id"].startswith("ckptsurgeon/"), path
    assert {"plan.schema.json", "error.schema.json"} <= {p.name for p in SCHEMAS.iterdir()}


def test_json_set_by_a_recipe_also_gives_the_error_document(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "inspect.toml"
    recipe.write_text('path = "missing.safetensors"\njson = true\n')
    code, out, err = run(["inspect", "--config", str(recipe)], capsys)
    assert code == 3 and one_line(err)
    doc = one_document(out)
    assert doc["error"]["file"] == str(tmp_path / "missing.safetensors")
