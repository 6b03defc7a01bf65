"""Every path ckptsurgeon opens, checked for what kind of file it is before it is opened.

- **Inputs** (:func:`check_input`, :func:`open_input`) must be regular files. A FIFO, a device
  (``/dev/zero``), a socket or a directory is refused with one line naming the kind
  (``is not a regular file (a FIFO)``), exit 3. Inputs are opened with ``O_NONBLOCK``, which is
  cleared once the descriptor is known to be a regular file, so a FIFO put in place between the
  check and the open cannot hang the run either. A path the user names may be a symbolic link: it
  is followed, and its target must be a regular file.
- **Shards** named by a sharded index (:func:`shard_path`) are looked up beside the index, their
  symbolic links resolved, and the file they resolve to must lie inside the directory the index
  really lives in: a link to another file of the checkpoint is fine, a link (or a linked
  subdirectory) that leads elsewhere is refused, so a checkpoint from a tarball or a git clone
  cannot make ckptsurgeon read, hash or copy a file outside it.
- **Outputs** (:func:`check_output_target`) that exist already must be regular files (or links to
  one): a device, a FIFO or a socket is never replaced by the output.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import InputError, OutputError, UnsafeInputError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def kind(mode: int) -> str | None:
    """What a file of ``mode`` is, in a few words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def not_regular(mode: int) -> str | None:
    """The problem with a file of ``mode`` as an input or output (None for a regular file)."""
    found = kind(mode)
    if found is None:
        return None
    return "is a directory" if found == "a directory" else f"is not a regular file ({found})"


def check_input(path: str | Path) -> os.stat_result:
    """``os.stat`` of an input that must be a regular file (links followed); InputError (exit 3) otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise InputError(path, "no such file") from exc
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    problem = not_regular(st.st_mode)
    if problem is not None:
        raise InputError(path, problem)
    return st


def open_input_fd(path: str | Path) -> int:
    """A read-only descriptor of a regular file, opened without blocking on a FIFO (see :func:`open_input`)."""
    check_input(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise InputError(path, "no such file") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        problem = not_regular(os.fstat(fd).st_mode)  # the file opened, not the one checked a moment ago
        if problem is not None:
            raise InputError(path, problem)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_input(path: str | Path, buffering: int = -1) -> BinaryIO:
    """Open a regular file for reading, never blocking on a FIFO (InputError naming ``path`` otherwise)."""
    fd = open_input_fd(path)
    try:
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_input(path: str | Path) -> bytes:
    """The bytes of a regular file (see :func:`open_input`)."""
    with open_input(path) as f:
        try:
            return f.read()
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def shard_path(index: Path, name: str, *, missing: str | None = None) -> Path:
    """The shard file ``name`` beside ``index``, checked to be a regular file inside the index's directory.

    ``name`` is a plain file name (see :func:`ckptsurgeon.formats._index.shard_file_name`). Its
    links are resolved; the file must lie in the directory the index itself resolves to, or below
    it. Errors name the index and the shard: ``missing`` (or "shard NAME does not exist") when no
    file is there, the kind of file when it is not a regular one, an UnsafeInputError when a link
    leads outside.
    """
    path = index.parent / name
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise InputError(index, missing or f"shard {name!r} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise InputError(index, f"shard {name!r}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    problem = not_regular(st.st_mode)
    if problem is not None:
        raise InputError(index, f"shard {name!r} {problem}")
    folder = os.path.dirname(os.path.realpath(index))
    real = os.path.realpath(path)
    if not _inside(real, folder):
        raise UnsafeInputError(
            index, f"shard {name!r} is a link to {real}, outside the index's directory {folder}; "
            "refusing to read a file outside the checkpoint",
        )
    return path


def check_output_target(path: str | Path) -> None:
    """Refuse an existing output path that is not a regular file (a device, a FIFO, a socket): OutputError, exit 4.

    Links are followed: a link to ``/dev/null`` is refused as ``/dev/null`` is. A path that does
    not exist yet (or a dangling link) is fine.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return  # nothing there (or nothing reachable): the writer reports what it cannot do
    problem = not_regular(st.st_mode)
    if problem is not None:
        raise OutputError(path, f"{problem}; only a regular file is ever replaced by an output")
