"""Atomic output files: the destination appears whole, or stays as it was.

A writer writes to a temporary file beside the destination (same directory, so the final
``os.replace`` is a rename on one file system). On success the file is fsynced, renamed into place
and the directory fsynced; on any error the temporary file is removed and the destination is untouched.
Temporary names carry a fixed mark and the writer's pid so a later run can recognise stale ones.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import OutputError, UsageError

TEMP_MARK = ".ckpt-tmp-"


def temp_path_for(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(dest: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse an output path before any work: an input (also through a link), a directory, no place to write."""
    dest = Path(dest)
    for src in inputs:
        src = Path(src)
        if _same_file(dest, src) or dest.resolve() == src.resolve():
            raise UsageError(dest, f"the output is the input {src}; inputs are never overwritten",
                             hint="choose another -o path")
    if dest.is_dir():
        raise OutputError(dest, "is a directory")
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(dest, f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(dest, f"directory {parent} is not writable")
    return dest


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fsync_path(directory)


def _output_error(dest: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(dest, "no space left on the device; nothing was written")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(dest, f"cannot write: {exc.strerror}")
    return OutputError(dest, f"cannot write: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit make it ``dest`` durably and atomically.

    The temporary path does not exist yet: the writer creates it (``O_EXCL``, never ``O_TRUNC``).
    An ``OSError`` escaping the block is reported as an :class:`OutputError` (exit 4); readers turn
    their own OS errors into input errors before they get here.
    """
    dest = Path(dest)
    tmp = temp_path_for(dest)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise _output_error(dest, exc) from exc
        raise
    _fsync_dir(dest.parent if str(dest.parent) else Path("."))
