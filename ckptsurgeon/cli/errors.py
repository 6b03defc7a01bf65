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

Signals (130, 143) and a closed stdout (141) are not errors: :mod:`ckptsurgeon.cli.app` handles them.
"""

from __future__ import annotations

from ..errors import EXIT_INTERNAL, CkptError

_REPORT = "this is a bug in ckptsurgeon; rerun with --debug and report the traceback"


def message(exc: Exception) -> tuple[str, int]:
    """The line after ``ckpt: error:`` and the exit code for ``exc``."""
    if isinstance(exc, CkptError):
        if exc.exit_code == EXIT_INTERNAL:
            return f"internal error: {exc.message} ({_REPORT})", EXIT_INTERNAL
        return exc.message, exc.exit_code
    if isinstance(exc, MemoryError):
        return ("internal error: out of memory (MemoryError) while no input was being read "
                "(rerun with --debug to see where)", EXIT_INTERNAL)
    return f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} ({_REPORT})", EXIT_INTERNAL
