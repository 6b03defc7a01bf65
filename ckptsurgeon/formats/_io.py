"""Local file I/O shared by every format: kernel copies of byte ranges, early writeback, page dropping.

Nothing here knows a format. A reader that memory-maps a file drops the pages it is done with
(:func:`drop_pages`); a writer copies byte ranges of an input file with :func:`copy_range`
(``copy_file_range``, or a bounded pread/write loop) and starts the disk early with
:class:`Writeback`; checks of what is copied may run beside the copy (:class:`Beside`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import mmap
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    from concurrent.futures import Future

CHUNK_BYTES = 16 * 1024 * 1024
#: bytes read at a time where each is checksummed at once: small enough to stay in the CPU cache
#: between the read and the checksum (a CRC-32 pass over a page-cached file takes about two thirds
#: of the time it takes through 16 MiB reads or a memory map)
CHECKSUM_BYTES = 1024 * 1024

_CAN_DROP_PAGES = hasattr(mmap, "MADV_DONTNEED")


def drop_pages(mapped: mmap.mmap, start: int, end: int) -> None:
    """Unmap the process's pages of ``mapped[start:end]`` (``MADV_DONTNEED``); the data stays valid.

    For a shared read-only file mapping this only drops page-table entries: the pages stay in the
    page cache, and an array still viewing them faults them in again with the same bytes. The
    range is widened to whole pages. Where the OS has no ``madvise`` this does nothing.
    """
    if not _CAN_DROP_PAGES or end <= start:
        return
    first = start - start % mmap.PAGESIZE
    with contextlib.suppress(OSError, ValueError):
        mapped.madvise(mmap.MADV_DONTNEED, first, min(end, len(mapped)) - first)


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range(2)`` through ctypes, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


class Writeback:
    """Starts the disk on a new file's finished bytes while later bytes are still being produced.

    Otherwise the disk sits idle until the fsync at the end while the copy, cast or comparison runs;
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts the writeback early (asynchronously; the pages
    stay cached), so the fsync has less left to do and the whole write ends sooner (measured on a
    3 GB transfer: faster than ``cp`` + ``sync`` of the output, which copies first and writes back
    after). The fsync is still what makes the output durable. Where the call does not exist this
    does nothing.
    """

    STEP = 32 * 1024 * 1024
    _SYNC_FILE_RANGE_WRITE = 2

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.started = 0

    def written_up_to(self, end: int) -> None:
        """Bytes before ``end`` are written; start writing them back once a step's worth has gathered."""
        if end - self.started >= self.STEP:
            call = _sync_file_range()
            if call is not None:
                call(self.fd, self.started, end - self.started, self._SYNC_FILE_RANGE_WRITE)  # best effort
            self.started = end


    def copy(self, src_fd: int, offset: int, length: int, position: int) -> int:
        """Copy ``length`` bytes of ``src_fd`` at ``offset`` to the end of this file (now ``position``
        bytes long), a :data:`STEP` at a time so the disk starts during a long copy; the new length."""
        for start in range(0, length, self.STEP):
            n = min(self.STEP, length - start)
            copy_range(self.fd, src_fd, offset + start, n)
            position += n
            self.written_up_to(position)
        return position


class SourceFds:
    """The input files a writer copies ranges from: each opened once (a regular file, never a FIFO that
    would block), all closed together."""

    def __init__(self) -> None:
        self._fds: dict[Any, int] = {}

    def fd(self, path: Any) -> int:
        found = self._fds.get(path)
        if found is None:
            from ..files import open_input_fd

            found = self._fds[path] = open_input_fd(path)
        return found

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def read_into(fd: int, buffer: memoryview, offset: int) -> int:
    """Read from ``fd`` at ``offset`` into ``buffer``; the number of bytes read (0 at the end of the file)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buffer], offset)
    data = os.pread(fd, len(buffer), offset)  # pragma: no cover - systems without preadv
    buffer[: len(data)] = data
    return len(data)


def copy_range(dst_fd: int, src_fd: int, offset: int, length: int) -> None:
    """Copy ``length`` bytes from ``src_fd`` at ``offset`` to the current position of ``dst_fd``.

    ``os.copy_file_range`` moves the bytes inside the kernel (or shares extents on file systems
    that can); where it is missing or refused, a bounded pread/write loop does the same.
    """
    done = 0
    use_cfr = hasattr(os, "copy_file_range")
    while done < length:
        if use_cfr:
            try:
                n = os.copy_file_range(src_fd, dst_fd, length - done, offset + done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                    raise
                use_cfr = False
                continue
        else:
            chunk = memoryview(os.pread(src_fd, min(CHUNK_BYTES, length - done), offset + done))
            n = len(chunk)
            while chunk:
                chunk = chunk[os.write(dst_fd, chunk) :]
        if n == 0:
            raise InputError(None, f"the input ended {length - done} bytes early while copying")
        done += n


class Beside:
    """Checks run on one worker thread beside a copy (CRC-32 and file reads release the GIL), collected by :meth:`settle`."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-crc")
        self._futures: dict[str, Future[object]] = {}

    def submit(self, name: str, check: Callable[[], object]) -> None:
        """Run ``check`` on the worker, once per ``name``."""
        if name not in self._futures:
            self._futures[name] = self._pool.submit(check)

    def settle(self) -> None:
        """Wait for every check; raise the first error, in the order the checks were asked for."""
        try:
            for future in self._futures.values():
                future.result()
        finally:
            self.stop()

    def stop(self) -> None:
        """Drop the checks not started, wait for the one running."""
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def checking_beside(owner: Any) -> Iterator[None]:
    """The context of a reader's ``checks_beside``: ``owner._beside`` is a :class:`Beside` while it lasts.

    Leaving it waits for every check and raises the first error; after an error inside it, it only
    waits for the check running (the others are dropped), so that nothing the checks read is closed
    under them. Nested use shares the outer context's worker.
    """
    if owner._beside is not None:
        yield
        return
    beside = owner._beside = Beside()
    try:
        yield
    except BaseException:
        beside.stop()
        raise
    finally:
        owner._beside = None
    beside.settle()


class MappedTensors:
    """Tensors that lie whole in one file at ``data_start + loc`` (``loc`` = (begin, end) in each
    ``TensorInfo``): the file memory-mapped on first use, raw bytes handed out as views of the map,
    pages dropped as a chunked read moves on or a tensor is released. Mixed into the readers of
    safetensors and GGUF (``self.path``, ``self.tensors``, ``self.by_name`` and ``data_start`` are theirs)."""

    path: Any
    tensors: Any
    by_name: Any
    data_start: int
    _mmap: mmap.mmap | None = None

    def _map(self) -> mmap.mmap:
        if self._mmap is None:
            with _MAP_LOCK:
                if self._mmap is None:
                    from ..files import open_input

                    try:
                        with open_input(self.path) as f:
                            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    except (OSError, ValueError) as exc:
                        raise InputError(self.path, f"cannot map the file: {exc}") from exc
                    if len(mapped) < self.data_start + max((t.loc[1] for t in self.tensors), default=0):
                        mapped.close()
                        raise InputError(self.path, "the file shrank after it was opened")
                    self._mmap = mapped
        return self._mmap

    def byte_range(self, name: str) -> tuple[Any, int, int]:
        begin, end = self.by_name[name].loc
        return self.path, self.data_start + begin, end - begin

    def iter_bytes(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
        """Views of the map, ``chunk_bytes`` at a time; the pages of each are released once the next is asked for."""
        begin, end = self.by_name[name].loc
        if end == begin:
            return
        mapped = self._map()
        first = self.data_start + begin
        view = memoryview(mapped)[first : self.data_start + end]
        try:
            for start in range(0, len(view), chunk_bytes):
                yield view[start : start + chunk_bytes]
                drop_pages(mapped, first + start, first + min(start + chunk_bytes, len(view)))
        finally:
            view.release()

    def release(self, name: str) -> None:
        """Drop the process's pages of this tensor's bytes (arrays read from it stay valid)."""
        begin, end = self.by_name[name].loc
        if self._mmap is not None and end > begin:
            drop_pages(self._mmap, self.data_start + begin, self.data_start + end)

    def close(self) -> None:
        if self._mmap is not None:
            # Arrays handed out may still view the map; then it closes when they are gone.
            with contextlib.suppress(BufferError):
                self._mmap.close()
            self._mmap = None


_MAP_LOCK = threading.Lock()  # a reader may be read from two threads (counting beside a copy)
