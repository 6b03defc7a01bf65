"""The one table from an exception to the line a user sees and the exit code the shell gets.

==========================================  ====  ==========================================
exception                                   code  line on stderr
==========================================  ====  ==========================================
:class:`~ckptsurgeon.errors.CheckFailed`       1  ``ckpt: error: FILE: what failed``
:class:`~ckptsurgeon.errors.UsageError`        2  ``ckpt: error: FILE: what is wrong``
:class:`~ckptsurgeon.errors.InputError`        3  ``ckpt: error: FILE: the problem``
  (a MemoryError or RecursionError while a file is read becomes one where it happens:
  :func:`ckptsurgeon.formats.base.reading`)
:class:`~ckptsurgeon.errors.OutputError`       4  ``ckpt: error: DEST: why it was not written``
a CkptError whose code is 70 (a writer           70  ``ckpt: error: internal error: ...``
driven out of order), any other Exception
==========================================  ====  ==========================================

A CheckFailed that carries failed checks (:class:`~ckptsurgeon.errors.Failure`) is worded here
with the command-line flags (:data:`FLAGS`): the flag that asked for each check and the one that
accepts it; the library's own words name options by their keyword and never a flag.

Signals (130, 143) and a closed stdout (141) are not errors: :mod:`ckptsurgeon.cli.app` handles them.

With ``--json`` a run that printed no report prints :func:`document` instead: the same error as one
JSON document of schema ``ckptsurgeon/error/1`` (``ckptsurgeon/schemas/error.schema.json``).
"""

from __future__ import annotations

from typing import Any

from ..errors import (
    EXIT_INTERNAL,
    CheckFailed,
    CkptError,
    Failure,
    InputError,
    OutputError,
    UnsafeInputError,
    UsageError,
    describe,
    printable,
)

ERROR_SCHEMA = "ckptsurgeon/error/1"
# The ``kind`` of an error document, most specific class first.
KINDS: tuple[tuple[type[CkptError], str], ...] = (
    (CheckFailed, "check_failed"), (UsageError, "usage"), (UnsafeInputError, "unsafe_input"),
    (InputError, "input"), (OutputError, "output"),
)

# A library option (as a failed check names it) -> the flag that sets it on the command line.
FLAGS = {
    "allow_empty": "--allow-empty", "allow_unused_rules": "--allow-unused-rules", "allow_overflow": "--allow-overflow",
    "strict": "--strict", "min_coverage": "--min-coverage", "fail_on_nonfinite": "--fail-on-nonfinite",
    "verify": "--verify",
    "rename": "--rename", "strip_prefix": "--strip-prefix", "add_prefix": "--add-prefix", "include": "--include",
    "exclude": "--exclude", "only_target": "--only-target", "skip_target": "--skip-target",
    "transform": "--transform", "resize": "--resize", "split": "--split", "concat": "--concat", "preset": "--preset",
}


def flag(option: str) -> str:
    """The command-line flag of a library option (the option itself when it has none)."""
    return FLAGS.get(option, option)


def failure_line(failure: Failure, lead: str | None = None) -> str:
    """A failed check as the terminal shows it: with the flag that asked for it and the one that accepts it;
    prefixed with its file unless that is ``lead``."""
    return describe([failure], lead, flag)


def _problem(exc: CkptError) -> str:
    """The problem of ``exc`` as the terminal words it (failed checks with their flags)."""
    if isinstance(exc, CheckFailed) and exc.failures:
        return " ".join(describe(exc.failures, exc.path, flag).split())
    return exc.problem


_REPORT = "this is a bug in ckptsurgeon; rerun with --debug and report the traceback"


def message(exc: Exception) -> tuple[str, int]:
    """The line after ``ckpt: error:`` and the exit code for ``exc``."""
    if isinstance(exc, CkptError):
        if exc.exit_code == EXIT_INTERNAL:
            return f"internal error: {exc.message} ({_REPORT})", EXIT_INTERNAL
        if isinstance(exc, CheckFailed) and exc.failures:
            text = f"{exc.path}: {_problem(exc)}" if exc.path else _problem(exc)
            return printable(f"{text} ({exc.hint})" if exc.hint else text), exc.exit_code
        return exc.message, exc.exit_code
    if isinstance(exc, MemoryError):
        return ("internal error: out of memory (MemoryError) while no input was being read "
                "(rerun with --debug to see where)", EXIT_INTERNAL)
    return f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} ({_REPORT})", EXIT_INTERNAL


def kind(exc: BaseException, code: int) -> str:
    """The ``kind`` of the error document for ``exc`` (which exited ``code``)."""
    if code == EXIT_INTERNAL:
        return "internal"
    for cls, name in KINDS:
        if isinstance(exc, cls):
            return name
    return "usage" if code == 2 else "internal"


def document(code: int, kind: str, message: str, *, file: str | None = None, hint: str | None = None) -> dict[str, Any]:
    """The ``--json`` document of a run that ended with an error instead of a report."""
    return {
        "schema": ERROR_SCHEMA,
        "ok": False,
        "exit_code": code,
        "error": {"kind": kind, "file": file, "message": printable(message),
                  "hint": None if hint is None else printable(hint)},
    }


def error_document(exc: Exception) -> dict[str, Any]:
    """:func:`document` for an exception :func:`message` maps to a code."""
    line, code = message(exc)
    if isinstance(exc, CkptError) and code != EXIT_INTERNAL:
        return document(code, kind(exc, code), _problem(exc), file=exc.path, hint=exc.hint)
    return document(code, kind(exc, code), line)
