"""FIFOs for tests of code that must never open one for reading.

:func:`make_fifo` makes a FIFO and, should something open it for reading and wait for a writer,
releases it after a while: a writer opens it (without blocking) and closes it at once, so the
reader sees an empty file. Code that wrongly reads the FIFO then fails its test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

RELEASE_AFTER = 20.0  # seconds; only ever reached by code that blocks on the FIFO


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)

    def release() -> None:
        # ENXIO: nobody is reading (the FIFO was refused, as it should be); ENOENT: it is gone
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(RELEASE_AFTER, release)
    timer.daemon = True
    timer.start()
    return path


__all__ = ["make_fifo"]
