"""A failed check names the file it is about; the library words it without command-line flags, the CLI with them."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ckptsurgeon import api
from ckptsurgeon.errors import EXIT_CHECK_FAILED, CheckFailed, Failure
from ckptsurgeon.plan import TransferOptions
from ckptsurgeon.rules import Rules

from ..support.cli import one_line, run

SCHEMAS = Path(api.__file__).parent / "schemas"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@pytest.fixture
def head(corpus: Path) -> tuple[Path, Path]:
    """A trained small CNN and the same network with a new 4-class head (both written by torch)."""
    return corpus / "torch/smallcnn.safetensors", corpus / "torch/smallcnn_4class_target.safetensors"


def _edited(src: Path, dest: Path, name: str, at: list[int], values: list[float]) -> Path:
    tensors = load_file(src)
    array = tensors[name].copy()
    array.reshape(-1)[at] = values
    tensors[name] = array
    dest.parent.mkdir(exist_ok=True)
    save_file(tensors, dest, metadata={"format": "pt"})
    return dest


@pytest.fixture
def loud(corpus: Path, tmp_path: Path) -> Path:
    """The trained CNN with three fc.weight values far beyond float16's range."""
    return _edited(corpus / "torch/smallcnn.safetensors", tmp_path / "inputs" / "loud.safetensors",
                   "fc.weight", [0, 7, 159], [1e6, -3e38, 7e4])


@pytest.fixture
def nan_head(head: tuple[Path, Path], tmp_path: Path) -> Path:
    """The 4-class target with a NaN in its new head (a tensor a transfer keeps: its shape differs)."""
    return _edited(head[1], tmp_path / "inputs" / "nan_head.safetensors", "fc.weight", [3], [np.nan])


@pytest.fixture
def nan_conv(head: tuple[Path, Path], tmp_path: Path) -> Path:
    """The trained CNN with a NaN in conv2.weight (a tensor a transfer replaces)."""
    return _edited(head[0], tmp_path / "inputs" / "nan_conv.safetensors", "conv2.weight", [5], [np.nan])


# --- the CLI line names the file of the rule ------------------------------------------------------


@pytest.mark.parametrize("rule", [
    ["--rename", "zzz=>y"], ["--strip-prefix", "module."], ["--include", "fcc.*"], ["--exclude", "fcc.*"],
])
def test_an_unused_source_rule_names_the_source_and_the_rule(
        rule: list[str], head: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt = head
    out = tmp_path / "out.safetensors"
    code, _, err = run(["transfer", src, tgt, "-o", out, "--allow-empty", "--exclude", "fc.*", *rule], capsys)
    assert code == EXIT_CHECK_FAILED, err
    line = one_line(err)
    assert line.startswith(f"ckpt: error: {src}: 1 rule matched no tensor name: {rule[0]} {shlex.quote(rule[1])}"), line
    assert line.endswith("(--allow-unused-rules accepts that)") and str(tgt) not in line
    assert not out.exists()


def test_an_unused_map_entry_names_the_source(
        head: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt = head
    mapping = tmp_path / "map.json"
    mapping.write_text('{"no.such.tensor": "fc.weight"}')
    code, _, err = run(["transfer", src, tgt, "--dry-run", "--map", mapping], capsys)
    assert code == EXIT_CHECK_FAILED
    assert one_line(err).startswith(f"ckpt: error: {src}: 1 rule matched no tensor name: "
                                    "map entry 'no.such.tensor' -> 'fc.weight'")


@pytest.mark.parametrize("option", ["--skip-target", "--only-target"])
def test_an_unused_target_glob_names_the_target(
        option: str, head: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt = head
    code, _, err = run(["transfer", src, tgt, "--dry-run", option, "fcc.*", "--allow-empty"], capsys)
    assert code == EXIT_CHECK_FAILED
    line = one_line(err)
    assert line == (f"ckpt: error: {tgt}: 1 rule matched no tensor name: {option} 'fcc.*' "
                    "(--allow-unused-rules accepts that)")


def test_unused_rules_on_both_sides_are_two_failures_each_naming_its_file(
        head: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt = head
    code, stdout, err = run(["transfer", src, tgt, "--dry-run", "--json", "--rename", "zzz=>y",
                             "--skip-target", "fcc.*"], capsys)
    assert code == EXIT_CHECK_FAILED
    line = one_line(err)  # the first failure's file leads; the other failure names its own
    assert line.startswith(f"ckpt: error: {src}: 1 rule matched no tensor name: --rename 'zzz=>y'")
    assert f"; {tgt}: 1 rule matched no tensor name: --skip-target 'fcc.*'" in line
    checks = json.loads(stdout)["failed_checks"]
    assert [(c["check"], c["file"], c["rules"]) for c in checks] == [
        ("unused_rules", str(src), ["rename 'zzz=>y'"]), ("unused_rules", str(tgt), ["skip_target 'fcc.*'"])]


def test_strict_names_the_target_for_kept_tensors_and_the_source_for_unused_ones(
        head: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt = head
    code, _, err = run(["transfer", src, tgt, "--dry-run", "--strict"], capsys)
    assert code == EXIT_CHECK_FAILED
    assert one_line(err) == (f"ckpt: error: {tgt}: --strict: 2 target tensor(s) not replaced: fc.bias, fc.weight; "
                             f"{src}: --strict: 2 source tensor(s) unused: fc.bias, fc.weight")


def test_nonfinite_values_name_the_input_they_were_read_from(
        nan_conv: Path, nan_head: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    code, stdout, err = run(["transfer", nan_conv, nan_head, "-o", out, "--fail-on-nonfinite", "--json"], capsys)
    assert code == EXIT_CHECK_FAILED and not out.exists()
    line = one_line(err)
    assert line.startswith(f"ckpt: error: {nan_conv}: --fail-on-nonfinite: 1 tensor to write already holds NaN")
    assert "'conv2.weight'" in line and f"; {nan_head}: --fail-on-nonfinite: " in line and "'fc.weight'" in line
    checks = json.loads(stdout)["failed_checks"]
    assert [(c["check"], c["file"], c["names"]) for c in checks] == [
        ("nonfinite", str(nan_conv), ["conv2.weight"]), ("nonfinite", str(nan_head), ["fc.weight"])]


# --- the library's words name no flag; the CLI's line names it ---------------------------------------


def _transfer(options: TransferOptions, *, src: str = "torch/smallcnn.safetensors",
              tgt: str = "torch/smallcnn_4class_target.safetensors") -> Callable[[Path, Path], Any]:
    def call(corpus: Path, tmp_path: Path) -> Any:
        return api.transfer(corpus / src, corpus / tgt, tmp_path / "out.safetensors", options, check=True)
    return call


# (case, the library call, check id, which input (source/target/input), option, accept, the CLI argv, its flags)
GATES: list[tuple[str, Callable[[Path, Path], Any], str, str, str | None, str | None, list[str], list[str]]] = [
    ("unused source rule", _transfer(TransferOptions(rules=Rules.from_options(rename=["zzz=>y"]), allow_empty=True)),
     "unused_rules", "source", None, "allow_unused_rules",
     ["transfer", "{src}", "{tgt}", "--rename", "zzz=>y", "--allow-empty"], ["--rename 'zzz=>y'", "--allow-unused-rules"]),
    ("unused target glob", _transfer(TransferOptions(skip_target=("fcc.*",), allow_empty=True)),
     "unused_rules", "target", None, "allow_unused_rules",
     ["transfer", "{src}", "{tgt}", "--skip-target", "fcc.*", "--allow-empty"], ["--skip-target 'fcc.*'", "--allow-unused-rules"]),
    ("nothing loaded", _transfer(TransferOptions(auto_prefix=False), src="torch/smallcnn_compiled.safetensors",
                                 tgt="torch/smallcnn_fresh_target.safetensors"),
     "nothing_loaded", "target", None, "allow_empty",
     ["transfer", "{compiled}", "{fresh}", "--no-auto-prefix"], ["--allow-empty", "--strip-prefix _orig_mod. would pair 16"]),
    ("strict", _transfer(TransferOptions(strict=True)), "strict_targets", "target", "strict", None,
     ["transfer", "{src}", "{tgt}", "--strict"], ["--strict: 2 target", "--strict: 2 source"]),
    ("min coverage", _transfer(TransferOptions(min_coverage=0.99)), "min_coverage", "target", "min_coverage", None,
     ["transfer", "{src}", "{tgt}", "--min-coverage", "0.99"], ["--min-coverage 0.99: replaced 95.6%"]),
]


@pytest.mark.parametrize(("case", "call", "check", "side", "option", "accept", "argv", "flags"), GATES,
                         ids=[g[0] for g in GATES])
def test_every_transfer_gate_speaks_library_in_the_library_and_cli_on_the_command_line(
        case: str, call: Callable[[Path, Path], Any], check: str, side: str, option: str | None, accept: str | None,
        argv: list[str], flags: list[str], corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckFailed) as info:
        call(corpus, tmp_path)
    failed = info.value
    assert "--" not in str(failed) and "--" not in failed.problem, str(failed)
    first = failed.failures[0]
    assert isinstance(first, Failure) and (first.check, first.option, first.accept) == (check, option, accept)
    report = failed.report
    assert first.file == report.to_dict()[side]["path"] == failed.path
    assert not report.ok and report.failures == [str(f) for f in failed.failures]
    assert all("--" not in text for text in report.failures)
    if accept is not None:
        assert str(first).endswith(f"({accept}=True accepts that)")
    if option is not None:
        assert str(first).startswith(f"{option}")
    assert not (tmp_path / "out.safetensors").exists()

    paths = {"src": corpus / "torch/smallcnn.safetensors", "tgt": corpus / "torch/smallcnn_4class_target.safetensors",
             "compiled": corpus / "torch/smallcnn_compiled.safetensors",
             "fresh": corpus / "torch/smallcnn_fresh_target.safetensors"}
    code, _, err = run([a.format(**{k: str(v) for k, v in paths.items()}) for a in argv] + ["--dry-run", "-q"], capsys)
    assert code == EXIT_CHECK_FAILED
    line = one_line(err)
    assert line.startswith(f"ckpt: error: {first.file}: "), line
    for text in flags:
        assert text in line, (text, line)


def test_value_gates_and_the_other_commands_too(loud: Path, nan_conv: Path, corpus: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    fp16 = corpus / "torch/smallcnn_fp16.safetensors"
    cases: list[tuple[Callable[[], Any], str, str, str | None, str | None]] = [
        (lambda: api.transfer(loud, fp16, out, check=True), "overflow", str(loud), None, "allow_overflow"),
        (lambda: api.transfer(nan_conv, corpus / "torch/smallcnn_fresh_target.safetensors", out,
                              TransferOptions(fail_on_nonfinite=True), check=True),
         "nonfinite", str(nan_conv), "fail_on_nonfinite", None),
        (lambda: api.convert(loud, out, dtype="F16", check=True), "overflow", str(loud), None, "allow_overflow"),
        (lambda: api.convert(nan_conv, out, fail_on_nonfinite=True, check=True), "nonfinite", str(nan_conv),
         "fail_on_nonfinite", None),
        (lambda: api.convert(loud, out, include=["zz*"]), "unused_rules", str(loud), None, "allow_unused_rules"),
        (lambda: api.rename(loud, out, Rules.from_options(rename=["zz=>y"]), check=True), "unused_rules", str(loud),
         None, "allow_unused_rules"),
        (lambda: api.rename(loud, out, Rules.from_options(exclude=["*"]), check=True), "nothing_left", str(loud),
         None, None),
        (lambda: api.diff(loud, fp16, api.DiffOptions(rules=Rules.from_options(strip_prefix=["module."]))),
         "unused_rules", str(loud), None, "allow_unused_rules"),
        (lambda: api.verify(loud, include=["zz*"]), "unused_rules", str(loud), None, "allow_unused_rules"),
    ]
    for call, check, file, option, accept in cases:
        with pytest.raises(CheckFailed) as info:
            call()
        failed = info.value
        assert "--" not in str(failed), str(failed)
        first = failed.failures[0]
        assert (first.check, first.file, first.option, first.accept) == (check, file, option, accept), str(failed)
        assert failed.path == file and not out.exists()
    overflow = _first(lambda: api.convert(loud, out, dtype="F16", check=True))
    assert overflow.count == 3 and overflow.names == ("fc.weight",)

    code, _, err = run(["rename", loud, "-o", out, "--exclude", "*", "--rename", "zz=>y"], capsys)
    assert code == EXIT_CHECK_FAILED
    assert one_line(err) == (f"ckpt: error: {loud}: 1 rule matched no tensor name: --rename 'zz=>y' "
                             "(--allow-unused-rules accepts that); no tensor is left to write after the filters")
    code, _, err = run(["convert", nan_conv, "-o", out, "--fail-on-nonfinite"], capsys)
    assert code == EXIT_CHECK_FAILED and one_line(err).startswith(f"ckpt: error: {nan_conv}: --fail-on-nonfinite: ")
    code, _, err = run(["verify", loud, "--exclude", "zz*"], capsys)
    assert code == EXIT_CHECK_FAILED and one_line(err).startswith(f"ckpt: error: {loud}: 1 rule matched no tensor name: "
                                                                  "--exclude 'zz*' (--allow-unused-rules accepts that)")


def _first(call: Callable[[], Any]) -> Failure:
    with pytest.raises(CheckFailed) as info:
        call()
    return info.value.failures[0]


# --- JSON: failures in the library's words, failed_checks as data, both in the schemas -----------------


def test_json_reports_carry_failed_checks_that_validate(
        head: tuple[Path, Path], loud: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema

    src, tgt = head
    code, stdout, _ = run(["transfer", src, tgt, "--dry-run", "--json", "--min-coverage", "0.99"], capsys)
    doc = json.loads(stdout)
    jsonschema.validate(doc, schema("transfer-report"))
    assert code == EXIT_CHECK_FAILED and doc["failures"] == ["min_coverage 0.99: replaced 95.6% of the target's parameters"]
    assert doc["failed_checks"] == [{
        "check": "min_coverage", "message": "replaced 95.6% of the target's parameters", "file": str(tgt),
        "option": "min_coverage", "value": "0.99", "accept": None, "count": None, "names": [], "rules": []}]

    out = tmp_path / "out.safetensors"
    code, stdout, _ = run(["rename", loud, "-o", out, "--json", "--rename", "zz=>y"], capsys)
    doc = json.loads(stdout)
    jsonschema.validate(doc, schema("rename"))
    assert code == EXIT_CHECK_FAILED and [(c["check"], c["file"], c["accept"]) for c in doc["failed_checks"]] == [
        ("unused_rules", str(loud), "allow_unused_rules")]
    assert doc["failures"] == ["1 rule matched no tensor name: rename 'zz=>y' (allow_unused_rules=True accepts that)"]

    code, stdout, _ = run(["convert", loud, "-o", out, "--json", "--dtype", "F16"], capsys)
    doc = json.loads(stdout)
    jsonschema.validate(doc, schema("convert"))
    assert code == EXIT_CHECK_FAILED and [(c["check"], c["file"], c["count"], c["names"]) for c in doc["failed_checks"]] \
        == [("overflow", str(loud), 3, ["fc.weight"])]
    assert all("--" not in text for text in doc["failures"])

    code, stdout, _ = run(["transfer", src, tgt, "--dry-run", "--json", "--skip-target", "fc.*",
                           "--exclude", "*num_batches_tracked"], capsys)
    doc = json.loads(stdout)
    jsonschema.validate(doc, schema("transfer-report"))
    assert code == 0 and doc["failures"] == [] and doc["failed_checks"] == []
