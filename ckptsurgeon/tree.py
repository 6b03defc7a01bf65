"""Removing a directory and all it holds without ever following a symbolic link.

A folder output's temporary directory, a killed run's, and the old folder a ``--force`` run
replaced are removed through descriptors (``openat``/``unlinkat``, ``O_NOFOLLOW``): a link inside is
removed, never what it points to, and a directory swapped for a link meanwhile is left alone.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def remove_tree_at(dir_fd: int, name: str) -> bool:
    """Remove the directory ``name`` in ``dir_fd`` and all it holds, never following a link; True when it is gone."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            return False
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0), dir_fd=dir_fd)
    except OSError:
        return False
    try:
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
            return False
        with os.scandir(fd) as entries:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in children:
            if is_dir:
                remove_tree_at(fd, child)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(child, dir_fd=fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        return False
    return True


def remove_tree(path: str | Path) -> bool:
    """Remove a directory and all it holds, never following a link (a link is removed, not its target)."""
    path = Path(path)
    try:
        dir_fd = os.open(path.parent if str(path.parent) else Path("."), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return False
    try:
        return remove_tree_at(dir_fd, path.name)
    finally:
        os.close(dir_fd)
