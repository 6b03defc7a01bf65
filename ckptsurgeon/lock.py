"""One writer per folder: ``fcntl.flock`` on ``.ckpt-lock`` for a whole sharded write.

A sharded write renames several files into a folder and removes the ones they supersede; two
such writes into one folder at once would leave one's index over the other's shards, or orphans.
:class:`FolderLock` makes the second one fail at once with an :class:`~ckptsurgeon.errors.OutputError`
(exit 4) naming the folder, before it writes anything. The kernel releases an ``flock`` when its
holder exits, however it exits (SIGKILL too): a lock file left by a killed run is simply reused.
The holder removes the file when it is done, while still holding it; a writer that locked the
file just removed sees that it is no longer at its path and takes the new one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path
from types import TracebackType

from .atomic import finish_interrupted_commits, output_error
from .errors import OutputError

LOCK_NAME = ".ckpt-lock"
_BUSY = "another ckpt run is writing into this folder; nothing was written"
_BUSY_HINT = "wait for it to finish, or write elsewhere"


class _Held:
    def __init__(self, fd: int | None, path: Path, owner: int) -> None:
        self.fd = fd
        self.path = path
        self.owner = owner
        self.depth = 1


_locks: dict[tuple[int, int], _Held] = {}  # (device, inode) of a folder -> this process's hold on it
_locks_guard = threading.Lock()


class FolderLock:
    """The right to write several files into ``directory``: ``fcntl.flock`` on its ``.ckpt-lock``.

    :meth:`acquire` creates ``.ckpt-lock`` (``O_NOFOLLOW``) and locks it without waiting; when
    another process (or another thread of this one) holds it, it raises an :class:`OutputError`
    (exit 4) naming the folder. Taken again by the thread that holds it, it only counts. The first
    acquisition then cleans up after killed runs (:func:`finish_interrupted_commits`). :meth:`release`
    removes the file and unlocks; the kernel unlocks it when the process dies, however it dies, and
    the next writer reuses the file. On file systems without ``flock`` (and off POSIX) nothing is
    locked. Also a context manager.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory) if str(directory) else Path(".")
        self._key: tuple[int, int] | None = None

    def acquire(self) -> FolderLock:
        if self._key is not None:
            return self
        try:
            st = os.stat(self.directory)
        except OSError as exc:
            raise output_error(self.directory, exc) from exc
        key = (st.st_dev, st.st_ino)
        with _locks_guard:
            held = _locks.get(key)
            if held is not None:
                if held.owner != threading.get_ident():
                    raise OutputError(self.directory, _BUSY, hint=_BUSY_HINT)
                held.depth += 1
                self._key = key
                return self
            path = self.directory / LOCK_NAME
            _locks[key] = _Held(_take_lock(self.directory, path), path, threading.get_ident())
            self._key = key
        try:
            finish_interrupted_commits(self.directory)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        with _locks_guard:
            held = _locks[key]
            held.depth -= 1
            if held.depth:
                return
            del _locks[key]
        if held.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(held.path)  # still locked: a writer that opened the old file sees it is gone
            os.close(held.fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _take_lock(directory: Path, path: Path) -> int | None:
    """An fd of ``path`` holding ``flock(LOCK_EX)``; None where nothing can be locked."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise output_error(directory, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(directory, _BUSY, hint=_BUSY_HINT) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None  # a file system without flock: no lock to take
            raise output_error(directory, exc) from exc
        # The holder removes the file before it unlocks: a lock on a file no longer at ``path`` is worth nothing.
        try:
            now: os.stat_result | None = os.stat(path, follow_symlinks=False)
        except OSError:
            now = None
        if now is not None and os.path.samestat(os.fstat(fd), now):
            return fd
        os.close(fd)
    raise OutputError(directory, f"cannot take the lock {path}; nothing was written")
