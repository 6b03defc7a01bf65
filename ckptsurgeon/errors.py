"""One exception family for every error a user can cause.

Each kind carries its exit code; the CLI prints ``ckpt: error: <file>: <problem>`` and exits with it.
Anything that is not a :class:`CkptError` is a bug in ckptsurgeon (exit 70).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Failure:
    """One requested check that did not pass, as data: reports keep a list of them, CheckFailed carries them.

    ``check`` is a stable id (``nothing_loaded``, ``strict_targets``, ``strict_sources``,
    ``min_coverage``, ``unused_rules``, ``nothing_left``, ``overflow``, ``nonfinite``, ``verify``).
    ``message`` is plain words that name no command-line flag; the rules it names (``rules``) are
    written ``keyword 'value'`` (``rename 'a=>b'``, ``skip_target 'fc.*'``, ``map entry 'a' -> 'b'``).
    ``file`` is the input the failure is about (a source rule: the source; a target glob: the target).
    ``option`` is the library option that asked for the check (``strict``, ``min_coverage`` with its
    ``value``, ``fail_on_nonfinite``, ``verify``); ``accept`` the one that accepts the outcome
    (``allow_empty``, ``allow_unused_rules``, ``allow_overflow``). ``count`` is the number the
    message leads with (tensors, rules or values) and ``names`` the tensors it is about.
    """

    check: str
    message: str
    file: str | None = None
    option: str | None = None
    value: str | None = None
    accept: str | None = None
    count: int | None = None
    names: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    def text(self, flag: Callable[[str], str] | None = None) -> str:
        """The sentence: options by their library keyword, or with ``flag`` (keyword -> how the caller spells it)."""
        words = self.message
        if flag is not None:
            for rule in self.rules:
                keyword, sep, rest = rule.partition(" ")
                if flag(keyword) != keyword:
                    words = words.replace(rule, flag(keyword) + sep + rest)
        if self.option is not None:
            lead = self.option if flag is None else flag(self.option)
            words = f"{lead}{' ' + self.value if self.value else ''}: {words}"
        if self.accept is not None:
            words += f" ({self.accept + '=True' if flag is None else flag(self.accept)} accepts that)"
        return words

    def __str__(self) -> str:
        return self.text()

    def to_dict(self) -> dict[str, Any]:
        """The ``failed_checks`` entry of a JSON report."""
        return {"check": self.check, "message": self.message, "file": self.file, "option": self.option,
                "value": self.value, "accept": self.accept, "count": self.count, "names": list(self.names),
                "rules": list(self.rules)}


def describe(failures: Sequence[Failure], lead: str | None = None,
             flag: Callable[[str], str] | None = None) -> str:
    """The failures as one line after ``lead`` (the file the line names): each about another file names it."""
    return "; ".join(f"{f.file}: {f.text(flag)}" if f.file is not None and f.file != lead else f.text(flag)
                     for f in failures)


class CheckFailed(CkptError):
    """A requested check did not pass (strict mode, coverage, an unused rule, nothing loaded ...).

    Raised by the commands only when their caller asks (``check=True``); ``report`` is then the
    command's report, whose ``ok`` is False. ``failures`` holds each failed check as a
    :class:`Failure` (empty for a refusal that is not one of a report's checks).
    """

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, path: str | Path | None, problem: str, *, hint: str | None = None, report: Any = None,
                 failures: Sequence[Failure] = ()) -> None:
        super().__init__(path, problem, hint=hint)
        self.report = report
        self.failures: tuple[Failure, ...] = tuple(failures)

    @classmethod
    def of(cls, failures: Sequence[Failure], *, report: Any = None, path: str | Path | None = None,
           hint: str | None = None) -> CheckFailed:
        """The error for failed checks: it names the file of the first one (or ``path`` when that has none)."""
        lead = next((f.file for f in failures[:1] if f.file is not None), None)
        lead = lead if lead is not None else (str(path) if path is not None else None)
        return cls(lead, describe(failures, lead), hint=hint, report=report, failures=failures)
