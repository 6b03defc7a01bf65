"""One mistake, one exit code: the table in ckptsurgeon/cli/errors.py, seen through the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ckptsurgeon import execute
from ckptsurgeon.cli import errors
from ckptsurgeon.errors import (
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    CheckFailed,
    InputError,
    OutputError,
    UsageError,
)
from ckptsurgeon.formats.base import WriterStateError

from ..support.cli import one_line, run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SRC = EXAMPLES / "pretrained.safetensors"
TGT = EXAMPLES / "target.safetensors"


def commands(tmp_path: Path) -> dict[str, list[str]]:
    out = str(tmp_path / "out.safetensors")
    return {
        "transfer": ["transfer", str(SRC), str(TGT), "-o", out],
        "rename": ["rename", str(SRC), "-o", out, "--rename", r"\.ffn\.=>.mlp."],
        "convert": ["convert", str(SRC), "-o", out],
        "diff": ["diff", str(SRC), str(SRC)],
        "verify": ["verify", str(SRC)],
    }


@pytest.mark.parametrize("command", ["transfer", "rename", "convert", "diff", "verify"])
def test_an_include_glob_that_matches_nothing_is_exit_1_everywhere(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = commands(tmp_path)[command]
    code, _, err = run([*argv, "--include", "no_such_tensor*"], capsys)
    assert code == EXIT_CHECK_FAILED, err
    assert "no_such_tensor*" in one_line(err)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_writer_driven_out_of_order_is_an_internal_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def misuse(moves: Any, writer: Any, **kwargs: Any) -> Any:
        writer.finish()  # before any tensor: the writer refuses at the call
        raise AssertionError("finish() accepted a writer with tensors still to come")

    monkeypatch.setattr(execute, "copy_tensors", misuse)
    out = tmp_path / "out.safetensors"
    code, _, err = run(["convert", str(SRC), "-o", str(out)], capsys)
    assert code == EXIT_INTERNAL == 70
    line = one_line(err)
    assert line.startswith("ckpt: error: internal error: ") and "declared tensors not written" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("exc", "code"), [
    (CheckFailed("f", "x"), 1), (UsageError("f", "x"), 2), (InputError("f", "x"), 3), (OutputError("f", "x"), 4),
    (WriterStateError("f", "x"), 70), (MemoryError(), 70), (ValueError("x"), 70),
])
def test_the_error_table(exc: Exception, code: int) -> None:
    line, got = errors.message(exc)
    assert got == code
    assert line.startswith("internal error: ") == (code == 70)
