"""The README's exit-code table, row by row: each case is run with and without ``--json``.

The rows are read from README.md, so a case documented without a test here, or tested here without
a row, fails :func:`test_every_row_of_the_readme_table_has_a_case_and_every_case_a_row`.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ckptsurgeon import api
from ckptsurgeon.cli import app as cli_app

from ..conftest import EXAMPLES, ROOT
from ..support.cli import one_line, read_one_line_and_leave, run
from .test_terminal import many_tensors

PRE, TGT = EXAMPLES / "pretrained.safetensors", EXAMPLES / "target.safetensors"
SCHEMAS = ROOT / "ckptsurgeon" / "schemas"
KERAS3 = ROOT / "tests" / "data" / "keras3_names" / "a.weights.h5"  # written by Keras 3.15
ENCRYPTED = ROOT / "tests" / "data" / "mindspore" / "sharednet_aes_gcm.ckpt"  # written by MindSpore 2.10.0
TIED = ROOT / "tests" / "hostile" / "torch" / "proto2_state_dict.pt"  # w [2, 3]; wt and row: views of w's storage
# The README quick start's rules: with them every shared layer pairs (53 of 55 tensors).
RULES = ["--rename", r"^blocks\.(\d+)\.ffn\.=>blocks.\1.mlp."]


def readme_rows() -> list[tuple[int, str]]:
    """(code, case) for every row of the table under '## Exit codes'."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, flags=re.M)
    return [(int(code), case) for code, case in rows]


class Case:
    """One run: ``argv`` for ``ckpt``, made in ``tmp_path``; ``patch`` sets up what the run needs."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp, self.monkeypatch, self.capsys = tmp, monkeypatch, capsys
        self.out = tmp / "out.safetensors"


Setup = Callable[[Case], list[str]]


def _loud(case: Case) -> Path:
    """The pretrained sample with one weight far beyond float16's range."""
    tensors = load_file(PRE)
    tensors["norm.weight"] = tensors["norm.weight"].copy()
    tensors["norm.weight"][0] = 1e6
    path = case.tmp / "loud.safetensors"
    save_file(tensors, str(path))
    return path


def _f16_target(case: Case) -> Path:
    path = case.tmp / "target_f16.safetensors"
    api.convert(TGT, path, dtype="F16")
    return path


def _nan_source(case: Case) -> Path:
    tensors = load_file(PRE)
    tensors["norm.weight"] = tensors["norm.weight"].copy()
    tensors["norm.weight"][0] = np.nan
    path = case.tmp / "nan.safetensors"
    save_file(tensors, str(path))
    return path


def _changed_plan(case: Case) -> list[str]:
    plan = case.tmp / "plan.json"
    api.transfer(PRE, TGT, dry_run=True, save_plan=plan, options=None)
    changed = _f16_target(case)  # the target's dtypes changed since the plan was made
    return ["transfer", str(PRE), str(changed), "-o", str(case.out), "--plan", str(plan), "--allow-empty"]


def _square_kernel(case: Case) -> list[str]:
    data = EXAMPLES.parent / "tests" / "data" / "xframe"
    return ["transfer", str(data / "keras_dense16.weights.h5"), str(data / "torch_linear16.pt"), "-o",
            str(case.tmp / "out.pt"), "--rename", "/kernel$=>/weight", "--rename", "/=>.", "--strict"]


def _lossy_inverse(case: Case) -> list[str]:
    plan = case.tmp / "plan.json"
    api.transfer(PRE, TGT, case.out, save_plan=plan, options=None)  # the RULES left out: the ffn tensors are not carried
    return ["transfer", str(case.out), str(PRE), "-o", str(case.tmp / "back.safetensors"), "--plan", str(plan), "--invert"]


def _verify_difference(case: Case) -> list[str]:
    from ckptsurgeon.formats.safetensors import writer as st_writer

    original = st_writer.Writer._finish

    def corrupting_finish(self: st_writer.Writer) -> None:
        original(self)
        with open(self.path, "r+b") as f:  # one byte of the last tensor's data flipped after writing
            f.seek(-3, 2)
            byte = f.read(1)
            f.seek(-3, 2)
            f.write(bytes([byte[0] ^ 0xFF]))

    case.monkeypatch.setattr(st_writer.Writer, "_finish", corrupting_finish)
    return ["transfer", str(PRE), str(TGT), "-o", str(case.out), *RULES, "--verify"]


def _hash_mismatch(case: Case) -> list[str]:
    hashes = case.tmp / "hashes.json"
    code, _, err = run(["verify", str(PRE), "--write-hashes", str(hashes)], case.capsys)
    assert code == 0, err
    return ["verify", str(TGT), "--hashes", str(hashes)]


def _replay_with_an_option(case: Case) -> list[str]:
    plan = case.tmp / "plan.json"
    api.transfer(PRE, TGT, dry_run=True, save_plan=plan, options=None)
    return ["transfer", str(PRE), str(TGT), "-o", str(case.out), "--plan", str(plan), "--skip-target", "head.*"]


def _unsafe_input(case: Case) -> list[str]:
    pickle = case.tmp / "model.pt"
    pickle.write_bytes(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.")
    return ["inspect", str(pickle)]


def _no_clobber(case: Case) -> list[str]:
    case.out.write_bytes(b"a file another job wrote")
    return ["transfer", str(PRE), str(TGT), "-o", str(case.out), *RULES, "--no-clobber"]


def _tied_apart(case: Case) -> list[str]:
    """A source giving two views of one storage in a PyTorch target (w and its row 1) values that disagree."""
    source = case.tmp / "tied.safetensors"
    save_file({"w": np.ones((2, 3), np.float32), "row": np.zeros(3, np.float32)}, str(source))
    return ["transfer", str(source), str(TIED), "-o", str(case.tmp / "out.pt")]


def _wrong_key(case: Case) -> list[str]:
    key = case.tmp / "wrong.key"
    key.write_bytes(bytes(16))  # the file's key is 00 01 02 ... 0f
    return ["convert", str(ENCRYPTED), "-o", str(case.out), "--dec-key-file", str(key)]


def _internal(case: Case) -> list[str]:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug")

    case.monkeypatch.setattr(api, "inspect", broken)
    return ["inspect", str(TGT)]


def _signal(sig: signal.Signals) -> Setup:
    def setup(case: Case) -> list[str]:
        def stopped(*args: object, **kwargs: object) -> None:
            raise cli_app.Interrupted(sig)  # what the run's handler raises when the signal arrives

        case.monkeypatch.setattr(api, "inspect", stopped)
        return ["inspect", str(TGT)]

    return setup


FOLDERS = ROOT / "tests" / "data" / "folders"  # written by transformers' save_pretrained (make_folders.py)


def _folder_inside_input(case: Case) -> list[str]:
    target = case.tmp / "target"
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        (target / name).write_bytes((FOLDERS / "training" / name).read_bytes())
    return ["transfer", str(FOLDERS / "sharded"), str(target), "-o", f"{target / 'out'}/"]


def _fifo_in_folder(case: Case) -> list[str]:
    import os

    target = case.tmp / "target"
    target.mkdir()
    (target / "model.safetensors").write_bytes((FOLDERS / "training" / "model.safetensors").read_bytes())
    os.mkfifo(target / "events")
    return ["transfer", str(FOLDERS / "sharded"), str(target), "-o", f"{case.tmp / 'out'}/"]


def _folder_exists(case: Case) -> list[str]:
    (case.tmp / "out").mkdir()
    return ["transfer", str(FOLDERS / "training"), str(FOLDERS / "sharded"), "-o", f"{case.tmp / 'out'}/"]


# Rows of folder outputs, run once the README's table documents them (the row text is the key).
FOLDER_CASES: dict[str, Setup] = {
    "a folder output (`-o DIR/`) is or lies inside an input folder, or holds an input": _folder_inside_input,
    "a model folder to copy holds a FIFO, device or socket, or a link out of the folder or to a directory":
        _fifo_in_folder,
    "a folder output (`-o DIR/`) exists (`--force` replaces it)": _folder_exists,
}

CASES: dict[str, Setup] = {
    "done; `diff`: no differences; `verify`: every tensor read and every hash equal":
        lambda c: ["transfer", str(PRE), str(TGT), "-o", str(c.out), *RULES],
    "nothing was loaded (`--allow-empty` accepts it)":
        lambda c: ["transfer", str(PRE), str(TGT), "-o", str(c.out), "--add-prefix", "zz.", "--no-auto-prefix"],
    "a rule, glob or map entry matched nothing, source or target side (`--allow-unused-rules` accepts it)":
        lambda c: ["transfer", str(PRE), str(TGT), "-o", str(c.out), *RULES, "--skip-target", "haed.*"],
    "a `--strict` or `--min-coverage` gate failed":
        lambda c: ["transfer", str(PRE), str(TGT), "-o", str(c.out), *RULES, "--min-coverage", "1"],
    "`--strict`: a Keras kernel moved into a PyTorch weight (or back) without a layout transform":
        _square_kernel,
    "`--invert`: a step of the saved plan cannot be undone exactly (`--allow-lossy` accepts it)": _lossy_inverse,
    "a cast overflowed to Inf (`--allow-overflow` accepts it)":
        lambda c: ["transfer", str(_loud(c)), str(_f16_target(c)), "-o", str(c.out), *RULES],
    "`--fail-on-nonfinite`: a tensor to write holds NaN or Inf":
        lambda c: ["transfer", str(_nan_source(c)), str(TGT), "-o", str(c.out), *RULES, "--fail-on-nonfinite"],
    "a saved plan no longer matches an input's header (or, with `--pin-content`, its bytes)": _changed_plan,
    "`--verify`: the written file does not hold the planned tensors": _verify_difference,
    "`diff` found differences": lambda c: ["diff", str(PRE), str(TGT)],
    "`verify` found a hash mismatch": _hash_mismatch,
    "a bad option, a missing argument or an unknown command": lambda c: ["inspect", str(TGT), "--no-such-option"],
    "an output is an input, or two outputs are one file (links included)":
        lambda c: ["transfer", str(PRE), str(TGT), "-o", str(c.out), "--report", str(c.out)],
    "the source is the target": lambda c: ["transfer", str(TGT), str(TGT), "-o", str(c.out)],
    "a replayed plan was given an option it would not honour": _replay_with_an_option,
    "a rename would change the stored paths of a Keras 3 output, which Keras could not load":
        lambda c: ["rename", str(KERAS3), "-o", str(c.tmp / "renamed.weights.h5"), "--rename", "layers/dense_1/=>layers/proj/"],
    "an input is missing, unreadable, malformed or unsafe (a pickle, a link out of its folder)": _unsafe_input,
    "the output cannot be written (no such folder, permissions, disk full)":
        lambda c: ["convert", str(PRE), "-o", str(c.tmp / "no_such_folder" / "out.npz")],
    "`--no-clobber` and the destination exists, or appeared while the run wrote": _no_clobber,
    "a PyTorch target's tied tensors would get different values (the updated target keeps the tie)": _tied_apart,
    "an encrypted input's key is missing or wrong, or its blocks were tampered with": _wrong_key,
    "internal error (a bug); `--debug` or `CKPT_DEBUG=1` shows the traceback": _internal,
    "stopped by SIGINT; the temporary output was removed and the destination is untouched": _signal(signal.SIGINT),
    "stopped by SIGTERM; the same": _signal(signal.SIGTERM),
}
CASES |= {row: setup for row, setup in FOLDER_CASES.items() if row in {case for _, case in readme_rows()}}
PIPE_CASE = "stdout was closed early (`ckpt inspect X --json \\| head`); nothing more is printed"


def test_every_row_of_the_readme_table_has_a_case_and_every_case_a_row() -> None:
    rows = [case for _, case in readme_rows()]
    assert len(rows) == len(set(rows)), "a row is in the table twice"
    assert set(rows) == {*CASES, PIPE_CASE}


def _document(out: str) -> dict[str, Any]:
    doc = json.loads(out)  # exactly one document: json.loads refuses anything after it
    assert isinstance(doc, dict)
    name = doc["schema"].split("/")[1]  # ckptsurgeon/transfer-report/1 -> transfer-report.schema.json
    jsonschema.validate(doc, json.loads((SCHEMAS / f"{name}.schema.json").read_text()))
    return doc


@pytest.mark.parametrize(("code", "case"), [row for row in readme_rows() if row[1] != PIPE_CASE],
                         ids=lambda v: str(v)[:40])
def test_each_documented_case_exits_with_its_code(code: int, case: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    runs = Case(tmp_path, monkeypatch, capsys)
    argv = CASES[case](runs)
    before = sorted(p.name for p in tmp_path.iterdir())
    destination = runs.out.read_bytes() if runs.out.exists() else None

    got, out, err = run([*argv, "--json"], capsys)
    assert got == code, err
    doc = _document(out)
    assert doc["ok"] is (code == 0)
    if doc["schema"] == "ckptsurgeon/error/1":
        assert doc["exit_code"] == code
        assert doc["error"]["message"] in one_line(err)
    if code != 0:  # nothing written, nothing left behind, the destination as it was
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        assert (runs.out.read_bytes() if runs.out.exists() else None) == destination

    got, out, err = run(argv, capsys)  # the same case without --json: the same code, a line or a table
    assert got == code
    assert "Traceback" not in err
    if doc["schema"] == "ckptsurgeon/error/1":
        assert out == "" and one_line(err).startswith("ckpt: error: ")


def test_a_closed_stdout_ends_the_run_with_141(tmp_path: Path) -> None:
    [code] = [c for c, case in readme_rows() if case == PIPE_CASE]
    big = many_tensors(tmp_path / "big.safetensors")  # more output than a pipe holds
    got, first, err = read_one_line_and_leave(["inspect", big, "--json"])
    assert got == code == 141
    assert first and err == b""
