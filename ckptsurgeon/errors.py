"""One exception family for every error a user can cause.

Each kind carries its exit code; the CLI prints ``ckpt: error: <file>: <problem>`` and exits with it.
Anything that is not a :class:`CkptError` is a bug in ckptsurgeon (exit 70).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_OUTPUT = 4
EXIT_INTERNAL = 70


class CkptError(Exception):
    """Base of all user-facing errors: a file (or None) and a one-line problem."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, path: str | Path | None, problem: str, *, hint: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.problem = " ".join(str(problem).split())  # always one line
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The one line a user sees; text that came from a file cannot steer their terminal."""
        text = f"{self.path}: {self.problem}" if self.path else self.problem
        return printable(f"{text} ({self.hint})" if self.hint else text)


def printable(text: str) -> str:
    """``text`` with control, format (bidi) and unpaired surrogate characters escaped as ``\\x..``/``\\u....``."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


class InputError(CkptError):
    """An input is unreadable, malformed or of a format ckptsurgeon does not read."""

    exit_code = EXIT_BAD_INPUT


class UnsafeInputError(InputError):
    """An input asks for something ckptsurgeon never does: run code, follow a link out of the file."""


class OutputError(CkptError):
    """The output could not be written; nothing was left behind."""

    exit_code = EXIT_OUTPUT


class UsageError(CkptError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = EXIT_USAGE


class CheckFailed(CkptError):
    """A requested check did not pass (strict mode, coverage, an unused rule, nothing loaded ...).

    Raised by the commands only when their caller asks (``check=True``); ``report`` is then the
    command's report, whose ``ok`` is False.
    """

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, path: str | Path | None, problem: str, *, hint: str | None = None, report: Any = None) -> None:
        super().__init__(path, problem, hint=hint)
        self.report = report
