"""The one way tests run the ``ckpt`` command in process.

:func:`run` calls :func:`ckptsurgeon.cli.app.main` (which always ends with ``SystemExit``) and
returns the exit code with what went to stdout and stderr; :func:`one_line` checks that stderr is
exactly one line, as every error must be. The ``cli`` fixture in ``tests/conftest.py`` wraps both:
``cli("inspect", path).code``, ``.out``, ``.err`` and ``.line``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import pytest

from ckptsurgeon.cli.app import main


def run(argv: Sequence[str | os.PathLike[str]], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``ckpt ARGV`` in process: ``(exit code, stdout, stderr)`` of this run alone."""
    capsys.readouterr()  # drop whatever earlier code printed
    with pytest.raises(SystemExit) as info:
        main([os.fspath(a) for a in argv])
    out, err = capsys.readouterr()
    code = info.value.code
    if code is None:
        return 0, out, err
    assert isinstance(code, int), f"ckpt exited with a non-integer code {code!r}"
    return code, out, err


def one_line(err: str) -> str:
    """The single line of ``err`` (asserting that there is exactly one, and no traceback)."""
    assert "Traceback" not in err, f"a traceback on stderr:\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected one line on stderr, got {len(lines)}:\n{err}"
    return lines[0]


class Result(NamedTuple):
    """One ``ckpt`` run."""

    code: int
    out: str
    err: str

    @property
    def line(self) -> str:
        """The one line on stderr (an AssertionError when there is not exactly one)."""
        return one_line(self.err)


__all__ = ["Result", "one_line", "run"]


def read_one_line_and_leave(argv: Sequence[str | os.PathLike[str]]) -> tuple[int, bytes, bytes]:
    """Run ``ckpt ARGV`` in a child, read one line of its stdout and close the pipe (``| head -1``).

    Returns the exit code, the line read and everything written to stderr.
    """
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "ckptsurgeon", *map(os.fspath, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    return proc.wait(timeout=120), first, err
