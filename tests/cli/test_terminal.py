"""Terminals and pipes: piped tables never break a name, a reader that leaves early gives 141 silently,
usage lines name their arguments."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptsurgeon.cli import render
from ckptsurgeon.cli.app import EXIT_SIGPIPE

from ..conftest import EXAMPLES
from ..support.cli import read_one_line_and_leave

LONG_LAYER = "model.encoder.layers.{i}.self_attention_with_a_long_module_name_for_wrapping.query_key_value_projection"
LONG_TENSOR = "lm_head.weight_with_a_quite_long_suffix_that_goes_on_and_on_and_on_and_on_and_on_and_on_and_on"


def ckpt(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ckptsurgeon", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)


@pytest.fixture
def long_names(tmp_path: Path) -> Path:
    path = tmp_path / "long.safetensors"
    tensors = {f"{LONG_LAYER.format(i=i)}.weight": np.zeros((2, 2), np.float32) for i in range(3)}
    tensors[LONG_TENSOR] = np.zeros((3,), np.float32)
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("columns", [None, "80"])
def test_piped_tables_never_break_a_name(long_names: Path, columns: str | None) -> None:
    env = {"COLUMNS": columns} if columns else {}
    p = ckpt("inspect", long_names, "--all", env=env)
    assert p.returncode == 0, p.stderr
    for i in range(3):
        assert LONG_LAYER.format(i=i) in p.stdout
    assert LONG_TENSOR.partition(".")[2] in p.stdout
    p = ckpt("diff", long_names, EXAMPLES / "target.safetensors", "--all", env=env)
    assert p.returncode == 1 and f"{LONG_LAYER.format(i=0)}.weight" in p.stdout
    lines = p.stdout.splitlines()
    assert lines and all(not line.endswith(" ") for line in lines)  # not padded to the (unbounded) width


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_still_wraps_to_its_width(long_names: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptsurgeon import api

    monkeypatch.setenv("COLUMNS", "80")
    out = _Terminal()
    render.render_inspect(api.inspect(long_names), render.console(out), collapse=False)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # colour: it is a terminal
    assert max(len(line) for line in text.splitlines() if "│" in line) <= 80  # the table fits the terminal
    assert LONG_LAYER.format(i=0) not in text  # wrapped on a terminal, as before


def many_tensors(path: Path, n: int = 8000) -> Path:
    save_file({f"layer.{i}.weight": np.zeros((1,), np.float32) for i in range(n)}, str(path))
    return path


@pytest.mark.parametrize("args", [["--json"], ["--all"], ["--markdown", "--all"]])
def test_a_reader_that_leaves_early_ends_the_run_with_141_silently(args: list[str], tmp_path: Path) -> None:
    big = many_tensors(tmp_path / "big.safetensors")  # over a megabyte of output: far more than a pipe holds
    code, first, err = read_one_line_and_leave(["inspect", big, *args])
    assert code == EXIT_SIGPIPE == 141
    assert first and err == b""


@pytest.mark.parametrize(("command", "usage"), [
    ("inspect", "Usage: ckpt inspect [OPTIONS] PATH"),
    ("transfer", "Usage: ckpt transfer [OPTIONS] SOURCE TARGET"),
    ("rename", "Usage: ckpt rename [OPTIONS] PATH"),
    ("convert", "Usage: ckpt convert [OPTIONS] PATH"),
    ("diff", "Usage: ckpt diff [OPTIONS] A B"),
    ("verify", "Usage: ckpt verify [OPTIONS] PATH"),
])
def test_usage_lines_name_their_arguments(command: str, usage: str, capsys: pytest.CaptureFixture[str]) -> None:
    from ..support.cli import run

    code, out, _ = run([command, "--help"], capsys)
    assert code == 0
    assert out.splitlines()[0] == usage
    arguments = out[out.index("Arguments:"):out.index("Options:")]
    assert "{" not in out.splitlines()[0] and usage.split("] ")[1].split()[0] in arguments


def test_shell_completion(capsys: pytest.CaptureFixture[str]) -> None:
    from ..support.cli import run

    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "--install-completion" in out and "--show-completion" in out
    code, out, _ = run(["--show-completion", "bash"], capsys)
    assert code == 0 and "_ckpt_completion" in out and "_CKPT_COMPLETE" in out
    # what the installed script asks: the commands, and a command's options
    p = ckpt(env={"_CKPT_COMPLETE": "complete_bash", "COMP_WORDS": "ckpt tr", "COMP_CWORD": "1"})
    assert p.returncode == 0 and p.stdout.split() == ["transfer"]
    p = ckpt(env={"_CKPT_COMPLETE": "complete_bash", "COMP_WORDS": "ckpt transfer --str", "COMP_CWORD": "2"})
    assert p.returncode == 0 and set(p.stdout.split()) == {"--strip-prefix", "--strict"}
