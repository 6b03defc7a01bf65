"""Atomic output files: the destination appears whole, or stays as it was.

A writer writes to a temporary file beside the destination (same directory, so the final
``os.replace`` is a rename on one file system). The writer creates it with ``O_EXCL``, never
``O_TRUNC``. On success the file is fsynced, renamed into place and the directory fsynced; on any
error or interruption (``BaseException``: also SIGINT and SIGTERM, which the CLI turns into
exceptions) the temporary file is removed and the destination is untouched. A process killed
outright (SIGKILL, power loss) leaves the old destination, or the complete new one, and a
temporary file: :func:`atomic_path` writes one file, :class:`AtomicFiles` several that appear
together (a sharded checkpoint and its index).

**Temporary names** are ``.NAME.ckpt-tmp-PID-HOST-RANDOM``: hidden, the destination's name, a fixed
mark, the writer's pid, a tag of the machine and pid namespace the pid belongs to (8 hex digits),
and 8 random hex digits. A writer that needs a scratch file of its own names it
``TEMPNAME.RANDOM.SUFFIX`` (the ``.keras`` writer's ``model.weights.h5``).

**Stale temporary files** of a killed run are removed by the next run that writes into the same
directory, before it writes (:func:`clean_stale_temps`): only names that match the scheme exactly,
carry this machine's tag and the pid of a process that no longer exists, and only regular files
(symlinks are never followed, directories never touched). A pid that is alive, or that belongs to
another machine or pid namespace (a directory shared over the network, a container), keeps its
file. The cleaning is quiet: nothing is printed; :func:`clean_stale_temps` returns what it removed.
The temporary directory of a folder output (``.NAME.ckpt-tmpdir-PID-HOST-RANDOM``, see
:mod:`ckptsurgeon.folders`) is removed by the same rules, with all it holds (:mod:`ckptsurgeon.tree`).

Every ``OSError`` while writing becomes an :class:`~ckptsurgeon.errors.OutputError` (exit 4) that
names the destination (never the temporary file), through :func:`output_error`.

**Interruptions**: a signal handler raises through :func:`interrupt`, which holds the exception
back while :class:`AtomicFiles` renames its files into place (:func:`hold_interrupts`), so SIGINT
or SIGTERM never leaves half of a sharded checkpoint renamed. Only SIGKILL can stop a run there.

**Several files** (:class:`AtomicFiles`: shards and the index naming them) have one commit point,
the rename of the last file (the index). The files before it go to names no live index refers
to, so renaming them changes nothing a reader sees; the files the new index supersedes (the old
shards) are removed after it. A small journal, ``.INDEX.ckpt-journal``, written before the first
rename and removed after the last removal, records which names are new and which are old, with
each file's identity (inode, size, mtime). A run killed in between leaves the old checkpoint with
unlisted new files, or the new checkpoint with unlisted old ones; :func:`finish_interrupted_commits`
(run by the next writer that takes the folder's :class:`~ckptsurgeon.lock.FolderLock`) looks at which index is in
place and removes the leftovers of the side that lost, only files whose identity still matches.

**One writer per folder**: :class:`ckptsurgeon.lock.FolderLock` (``.ckpt-lock``) is held for a
whole sharded write.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from . import commits
from .errors import OutputError, UsageError
from .files import check_output_target
from .tree import remove_tree_at

TEMP_MARK = ".ckpt-tmp-"
_NAME_MAX = 255  # bytes in one file name on the usual file systems

TEMP_DIR_MARK = ".ckpt-tmpdir-"  # the temporary directory of a folder output (ckptsurgeon.folders)

# .NAME.ckpt-tmpdir-PID-HOST-RANDOM: a folder output being written (or an old one being removed)
_TEMP_DIR_NAME = re.compile(
    r"\.(?P<name>.+)" + re.escape(TEMP_DIR_MARK) + r"(?P<pid>[1-9][0-9]{0,9})-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}"
)

# .NAME.ckpt-tmp-PID-HOST-RANDOM, optionally followed by a writer's scratch suffix .RANDOM.SUFFIX
_TEMP_NAME = re.compile(
    r"\.(?P<name>.+)" + re.escape(TEMP_MARK)
    + r"(?P<pid>[1-9][0-9]{0,9})-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}(?:\.[0-9a-f]{8}\.[^/\x00]+)?"
)


@functools.lru_cache(maxsize=1)
def host_tag() -> str:
    """8 hex digits naming the machine and the pid namespace this process's pid belongs to."""
    import hashlib  # here, not at the top: ``ckpt --help`` imports this module and stays fast
    import platform

    try:
        namespace = os.readlink("/proc/self/ns/pid")  # Linux: differs between containers on one host
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{platform.node()}\0{namespace}".encode()).hexdigest()[:8]


def _directory(dest: Path) -> Path:
    return dest.parent if str(dest.parent) else Path(".")


def temp_path_for(dest: str | Path, *, directory: bool = False) -> Path:
    """A fresh temporary path beside ``dest``; nothing is created.

    A very long destination name is shortened in the temporary name, which must fit in one
    file name too. With ``directory``: the name of a folder output's temporary directory
    (``.NAME.ckpt-tmpdir-PID-HOST-RANDOM``).
    """
    dest = Path(dest)
    name = dest.name
    mark = TEMP_DIR_MARK if directory else TEMP_MARK
    tail = f"{mark}{os.getpid()}-{host_tag()}-{os.urandom(4).hex()}"
    # Leave room for a writer's scratch suffix (.RANDOM.model.weights.h5).
    while name and len(os.fsencode(f".{name}{tail}")) > _NAME_MAX - 32:
        name = name[:-1]
    return dest.with_name(f".{name or 'out'}{tail}")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of ckptsurgeon's temporary names (or a writer's scratch file beside one)."""
    return _TEMP_NAME.fullmatch(name) is not None


def _pid_is_gone(pid: int) -> bool:
    """True only when no process with ``pid`` exists (a zombie, or another user's process, exists)."""
    if os.name != "posix" or pid <= 0 or pid == os.getpid():
        return False  # os.kill(pid, 0) terminates the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, and belongs to someone else
        return False
    return False


def clean_stale_temps(directory: str | Path) -> list[Path]:
    """Remove the temporary files killed ckptsurgeon runs left in ``directory``; return the removed paths.

    Only regular files whose name matches the temporary-name scheme exactly, that were made on
    this machine (and pid namespace) by a process that no longer exists; and, by the same rules,
    directories named ``.NAME.ckpt-tmpdir-PID-HOST-RANDOM`` (a folder output's temporary
    directory), removed with all they hold. Symlinks and other directories are left alone; a file
    that cannot be removed is skipped. Never raises ``OSError``.
    """
    directory = Path(directory) if str(directory) else Path(".")
    removed: list[Path] = []
    if os.name != "posix":  # pids and directory descriptors as used here are POSIX
        return removed
    tag = host_tag()
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return removed
    try:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                m = _TEMP_NAME.fullmatch(entry.name)
                folder = _TEMP_DIR_NAME.fullmatch(entry.name) if m is None else None
                m = m or folder
                if m is None or m.group("host") != tag or not _pid_is_gone(int(m.group("pid"))):
                    continue
                if folder is not None:
                    if remove_tree_at(dir_fd, entry.name):
                        removed.append(directory / entry.name)
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    os.unlink(entry.name, dir_fd=dir_fd)  # removes the name; never follows a link
                except OSError:
                    continue
                removed.append(directory / entry.name)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return removed


_held = 0  # depth of nested hold_interrupts() blocks
_pending: list[BaseException] = []


def interrupt(exc: BaseException) -> None:
    """Raise ``exc`` now, or, inside :func:`hold_interrupts`, as soon as the block ends.

    A signal handler calls this (the CLI's SIGINT/SIGTERM handler does), so that an interruption
    never splits the renames that put several files in place.
    """
    if _held:
        _pending.append(exc)
        return
    raise exc


@contextlib.contextmanager
def hold_interrupts() -> Iterator[None]:
    """A block that :func:`interrupt` does not cut short; a held interruption is raised at its end."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending:
            exc = _pending.pop(0)
            _pending.clear()
            raise exc


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


Named = tuple[str, str | Path | None]  # (the option or argument that names a path, the path or None)


def _identity_of(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """A path's resolved form (links followed as far as they go) and its (st_dev, st_ino) when it exists."""
    try:
        st = os.stat(path)
        ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        ident = None
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a link loop: the spelled path stands for itself
        resolved = path.absolute()
    return resolved, ident


def check_distinct(outputs: Iterable[Named], inputs: Iterable[Named] = ()) -> None:
    """Refuse (UsageError, exit 2) two outputs that are one file, or an output that is an input.

    Each entry is (the option naming the path, the path); None entries are skipped. Two paths are
    one file when they resolve to the same path (symbolic links followed, also a link to a file
    that does not exist yet) or, where both exist, have the same device and inode (hard links).
    Call it before any work: one line names both options and the path.
    """
    outs = [(label, Path(p)) for label, p in outputs if p is not None]
    ins = [(label, Path(p)) for label, p in inputs if p is not None]
    known = {path: _identity_of(path) for _, path in [*outs, *ins]}

    def same(a: Path, b: Path) -> bool:
        (ra, ia), (rb, ib) = known[a], known[b]
        return ra == rb or (ia is not None and ia == ib)

    for i, (label, path) in enumerate(outs):
        for other_label, other in outs[:i]:
            if same(path, other):
                also = "" if path == other else f" ({path} and {other})"
                raise UsageError(other, f"{other_label} and {label} name the same file{also}; "
                                        "each output needs a path of its own")
        for other_label, other in ins:
            if same(path, other):
                also = "" if path == other else f" ({path} and {other})"
                raise UsageError(path, f"{label} and {other_label} name the same file{also}: "
                                       "the output is the input, and inputs are never overwritten")


def check_output(dest: str | Path, inputs: Iterable[str | Path] = (), *, no_clobber: bool = False) -> Path:
    """Refuse an output path before any work: an input (also through a link), a directory, a device,
    FIFO or socket (only regular files are replaced), no place to write; with ``no_clobber`` (or in a
    :func:`ckptsurgeon.commits.recording` block that asks for it) any existing file."""
    dest = Path(dest)
    for src in inputs:
        src = Path(src)
        if _same_file(dest, src) or dest.resolve() == src.resolve():
            raise UsageError(dest, f"the output is the input {src}; inputs are never overwritten",
                             hint="choose another -o path")
    if commits.no_clobber_wanted(no_clobber):
        commits.refuse_existing(dest)
    if dest.is_dir():
        raise OutputError(dest, "is a directory")
    check_output_target(dest)
    parent = _directory(dest)
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


_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "the file is too large for the file system",
    errno.EROFS: "the file system is read-only",
}


def output_error(dest: str | Path, exc: OSError) -> OutputError:
    """The one-line :class:`OutputError` (exit 4) for an ``OSError`` while writing ``dest``."""
    problem = _PROBLEMS.get(exc.errno or 0) or f"cannot write: {exc.strerror or exc}"
    return OutputError(dest, f"{problem}; nothing was written")


def _os_error_in(exc: BaseException) -> OSError | None:
    """The first ``OSError`` with an errno in ``exc``'s cause/context chain (a writer may wrap one)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _PROBLEMS:
            return current
        current = current.__cause__ or current.__context__
    return None


def _as_output_error(exc: BaseException, dest: Path, temps: Iterable[Path]) -> BaseException:
    """``exc`` as the error to report for ``dest``: OS errors become OutputError naming ``dest``.

    A writer's own OutputError that names a temporary file is renamed to ``dest``; one caused by
    a full disk (or quota, or a read-only file system) gets the standard wording.
    """
    if isinstance(exc, OSError):
        return output_error(dest, exc)
    if isinstance(exc, OutputError):
        names = {str(t) for t in temps}
        if exc.path is not None and (exc.path in names or any(exc.path.startswith(n + ".") for n in names)):
            cause = _os_error_in(exc)
            if cause is not None:
                return output_error(dest, cause)
            return OutputError(dest, exc.problem, hint=exc.hint)
    return exc


def _remove_temp(tmp: Path) -> None:
    """Remove a temporary file and any scratch file a writer made beside it (``TEMPNAME.RANDOM.SUFFIX``)."""
    with contextlib.suppress(OSError):
        tmp.unlink()
    prefix = tmp.name + "."
    with contextlib.suppress(OSError), os.scandir(_directory(tmp)) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def atomic_path(dest: str | Path, *, no_clobber: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit make it ``dest`` durably and atomically.

    The temporary path does not exist yet: the writer creates it (``O_EXCL``, never ``O_TRUNC``).
    Stale temporary files of killed runs in the directory are removed first. An ``OSError``
    escaping the block is reported as an :class:`OutputError` (exit 4) naming ``dest``; readers
    turn their own OS errors into input errors before they get here. On any exception, including
    ``KeyboardInterrupt`` and the CLI's signal exceptions, the temporary file is removed.

    With ``no_clobber`` (or in a :func:`ckptsurgeon.commits.recording` block that asks for it) the
    commit is a hard link that fails when ``dest`` exists (OutputError, exit 4). In a recording
    block the file's size and sha256 are recorded (hashed while it is fsynced).
    """
    dest = Path(dest)
    directory = _directory(dest)
    clean_stale_temps(directory)
    tmp = temp_path_for(dest)
    try:
        yield tmp
        hashes = commits.sync([tmp], fsync_path)
        check_output_target(dest)  # again: nothing but a regular file is ever replaced
        if commits.no_clobber_wanted(no_clobber):
            commits.link_into_place(tmp, dest)
        else:
            os.replace(tmp, dest)
        commits.record([dest], hashes)
    except BaseException as exc:
        _remove_temp(tmp)
        error = _as_output_error(exc, dest, [tmp])
        if error is exc:
            raise
        raise error from exc
    _fsync_dir(directory)


class AtomicFiles:
    """Several output files that appear together or not at all: the counterpart of :func:`atomic_path`.

    :meth:`temp` hands out a temporary path beside each destination (the caller creates the file,
    ``O_EXCL``) and, the first time it sees a directory, removes stale temporary files of killed
    runs there; :meth:`commit` puts them in place, the last one asked for last: that rename is the
    commit point (put the file that names the others last); :meth:`discard` removes every
    temporary file. These methods raise ``OSError`` as it comes; :func:`output_errors` reports it.

    The files before the last must go to names that no live file refers to (fresh shard names,
    never a live checkpoint's shards): renaming them into place is then invisible to readers, and
    a rename that fails before the commit point leaves everything as it was (:meth:`commit` removes
    what it had renamed). See the module docstring for the journal that lets the next run clean up
    after a SIGKILL; an interruption (:func:`interrupt`) waits until the commit is done.

    Used as a context manager, the block's exception (or a missing :meth:`commit`) discards the
    temporary files, and an ``OSError`` becomes an :class:`OutputError` naming ``name``::

        with AtomicFiles(name=index) as files:
            write(files.temp(shard)); write(files.temp(index))
            files.commit(supersedes=old_shards)
    """

    def __init__(self, name: str | Path | None = None) -> None:
        self.name = Path(name) if name is not None else None
        self._pending: list[tuple[Path, Path]] = []
        self._cleaned: set[Path] = set()

    def temp(self, dest: str | Path) -> Path:
        dest = Path(dest)
        directory = _directory(dest)
        if directory not in self._cleaned:
            clean_stale_temps(directory)
            self._cleaned.add(directory)
        tmp = temp_path_for(dest)
        self._pending.append((tmp, dest))
        return tmp

    @property
    def temps(self) -> list[Path]:
        return [tmp for tmp, _ in self._pending]

    def commit(self, *, supersedes: Iterable[str | Path] = ()) -> None:
        """fsync every file, rename them into place (the last one last), then remove ``supersedes``.

        Every file, and every file in ``supersedes`` (the files the last one used to name), is in
        one directory. A superseded file that is also being written is kept.
        """
        if not self._pending:
            return
        *parts, (last_tmp, last) = self._pending
        directory = _directory(last)
        written = {dest.name for _, dest in self._pending}
        old = [Path(p) for p in supersedes if Path(p).name not in written]
        if any(_directory(p) != directory for p in [*(dest for _, dest in parts), *old]):
            raise ValueError("AtomicFiles commits files of one directory")
        hashes = commits.sync([tmp for tmp, _ in self._pending], fsync_path)
        dests = [dest for _, dest in self._pending]
        for dest in dests:
            check_output_target(dest)  # a device or FIFO that appeared at a destination is never replaced
        with hold_interrupts():  # SIGINT/SIGTERM wait until the commit is done
            journal = _Journal.write(last, last_tmp, parts, old) if parts or old else None
            renamed: list[Path] = []
            try:
                for tmp, dest in parts:
                    os.replace(tmp, dest)
                    renamed.append(dest)
                if parts:
                    _fsync_dir(directory)  # the new files are in place before the index names them
                if commits.no_clobber_wanted():
                    commits.link_into_place(last_tmp, last)  # the commit point, never over an existing file
                else:
                    os.replace(last_tmp, last)  # the commit point
            except BaseException:
                for dest in renamed:  # fresh names nothing refers to: take them back
                    with contextlib.suppress(OSError):
                        os.unlink(dest)
                if journal is not None:
                    journal.remove()
                raise
            self._pending.clear()
            _fsync_dir(directory)
            if journal is not None:
                journal.finish(committed=True)
            commits.record(dests, hashes)

    def discard(self) -> None:
        for tmp, _ in self._pending:
            _remove_temp(tmp)
        self._pending.clear()

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        temps = self.temps
        self.discard()
        if ev is not None and self.name is not None:
            error = _as_output_error(ev, self.name, temps)
            if error is not ev:
                raise error from ev


JOURNAL_SUFFIX = ".ckpt-journal"
_JOURNAL_NAME = re.compile(r"\..+" + re.escape(JOURNAL_SUFFIX))
_MAX_JOURNAL_BYTES = 64 * 1024 * 1024
Identity = tuple[int, int, int]  # inode, size, mtime in ns: the file a name held when the journal was written


def journal_path(dest: str | Path) -> Path:
    """The journal of a commit whose last file is ``dest``: ``.NAME.ckpt-journal`` beside it (shortened to fit)."""
    dest = Path(dest)
    name = dest.name
    while len(os.fsencode(f".{name}{JOURNAL_SUFFIX}")) > _NAME_MAX - 64:  # room for its temporary name
        name = name[:-1]
    return dest.with_name(f".{name}{JOURNAL_SUFFIX}")


def _identity(path: str | Path, dir_fd: int | None = None) -> Identity | None:
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _plain_name(value: object) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\0" not in value


class _Journal:
    """What one commit of several files changes: the last file, the new files before it, the old files after it."""

    def __init__(self, path: Path, commit: tuple[str, Identity], new: list[tuple[str, Identity]],
                 old: list[tuple[str, Identity]]) -> None:
        self.path = path
        self.commit = commit
        self.new = new
        self.old = old

    @classmethod
    def write(cls, last: Path, last_tmp: Path, parts: list[tuple[Path, Path]], old: list[Path]) -> _Journal:
        import json

        def known(path: Path) -> Identity:
            found = _identity(path)
            if found is None:
                raise FileNotFoundError(2, os.strerror(2), str(path))
            return found

        journal = cls(journal_path(last), (last.name, known(last_tmp)),
                      [(dest.name, known(tmp)) for tmp, dest in parts],
                      [(p.name, ident) for p in old if (ident := _identity(p)) is not None])
        doc = {"commit": [journal.commit[0], *journal.commit[1]],
               "new": [[name, *ident] for name, ident in journal.new],
               "old": [[name, *ident] for name, ident in journal.old]}
        tmp = temp_path_for(journal.path)
        try:
            with open(tmp, "xb") as f:
                f.write(json.dumps(doc).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, journal.path)
        except BaseException:
            _remove_temp(tmp)
            raise
        _fsync_dir(_directory(journal.path))
        return journal

    @classmethod
    def read(cls, path: Path) -> _Journal | None:
        """The journal at ``path``, or None when it is not one of ckptsurgeon's (it is then left alone)."""
        import json

        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_JOURNAL_BYTES + 1)
            doc = json.loads(raw) if len(raw) <= _MAX_JOURNAL_BYTES else None
        except (OSError, ValueError, RecursionError):
            return None

        def entry(value: object) -> tuple[str, Identity]:
            if not (isinstance(value, list) and len(value) == 4 and _plain_name(value[0])
                    and all(type(v) is int for v in value[1:])):
                raise ValueError(value)
            return value[0], (value[1], value[2], value[3])

        try:
            if not isinstance(doc, dict) or not isinstance(doc.get("new"), list) or not isinstance(doc.get("old"), list):
                return None
            return cls(path, entry(doc.get("commit")), [entry(v) for v in doc["new"]], [entry(v) for v in doc["old"]])
        except ValueError:
            return None

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def finish(self, *, committed: bool) -> list[Path]:
        """Remove the files of the side that lost (the old ones after the commit, else the new ones), then the journal.

        Only a file whose identity is still the journal's is removed (never one written since by
        someone else), and never one that the winning side names. The journal stays when a file
        could not be removed, for the next run to try again.
        """
        directory = _directory(self.path)
        losers, winners = (self.old, self.new) if committed else (self.new, self.old)
        keep = {name for name, _ in winners} | {self.commit[0]}
        removed: list[Path] = []
        done = True
        try:
            dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return removed
        try:
            for name, ident in losers:
                if name in keep or _identity(name, dir_fd) != ident:
                    continue
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue
                except OSError:
                    done = False
                    continue
                removed.append(directory / name)
        finally:
            os.close(dir_fd)
        if done:
            self.remove()
        if removed or done:
            _fsync_dir(directory)
        return removed


def _journal_paths(directory: Path) -> list[Path]:
    """The commit journals (regular files, never links) in ``directory``; none when it cannot be listed."""
    try:
        with os.scandir(directory) as entries:
            return [directory / e.name for e in entries
                    if _JOURNAL_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def finish_interrupted_commits(directory: str | Path) -> list[Path]:
    """Clean up after commits of several files (:meth:`AtomicFiles.commit`) that a killed run left half done.

    For each journal in ``directory``: when its last file (the index) is the one the journal
    wrote, the commit happened and the old files it superseded are removed; otherwise the new
    files renamed before the commit point are. Returns the removed paths; never raises ``OSError``.
    Call it only while holding the directory's :class:`~ckptsurgeon.lock.FolderLock` (a journal of a run still going
    looks like one that was killed).
    """
    directory = Path(directory) if str(directory) else Path(".")
    removed: list[Path] = []
    found = _journal_paths(directory)
    for path in sorted(found):
        journal = _Journal.read(path)
        if journal is None:
            continue
        name, ident = journal.commit
        removed += journal.finish(committed=_identity(directory / name) == ident)
    return removed


def interrupted_commit_leftovers(directory: str | Path) -> set[str]:
    """The names :func:`finish_interrupted_commits` would remove now (nothing is changed)."""
    directory = Path(directory) if str(directory) else Path(".")
    names: set[str] = set()
    found = _journal_paths(directory)
    for path in found:
        journal = _Journal.read(path)
        if journal is None:
            continue
        committed = _identity(directory / journal.commit[0]) == journal.commit[1]
        losers, winners = (journal.old, journal.new) if committed else (journal.new, journal.old)
        keep = {n for n, _ in winners} | {journal.commit[0]}
        names.update(n for n, ident in losers if n not in keep and _identity(directory / n) == ident)
    return names


@contextlib.contextmanager
def output_errors(dest: str | Path) -> Iterator[None]:
    """Report an ``OSError`` while writing as an :class:`OutputError` (exit 4) naming ``dest``."""
    try:
        yield
    except OSError as exc:
        raise output_error(dest, exc) from exc


def write_text(dest: str | Path, text: str, inputs: Iterable[str | Path] = (), *, no_clobber: bool = False) -> Path:
    """Write a small text file (a report, a plan, a hash list) atomically; never over an input
    (nor over any file, with ``no_clobber``)."""
    dest = check_output(dest, inputs, no_clobber=no_clobber)
    with atomic_path(dest, no_clobber=no_clobber) as tmp, open(tmp, "x", encoding="utf-8") as f:
        f.write(text)
    return dest
