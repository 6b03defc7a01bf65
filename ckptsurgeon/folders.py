"""Model folders as outputs: ``-o DIR/`` (or ``--output-dir DIR``) writes a folder like the target's.

PyTorch and Hugging Face users keep a model as a folder: the weights (one file, or an index and
its shards) beside ``config.json``, tokenizer files, a README. A folder output holds:

- **the weights in the target's own layout**: a sharded target gives an index of the same name
  and shards of the same names, each tensor in the shard the target's index puts it in (a tensor
  the target does not have, ``--add-unmatched``, goes to the last shard); with a shard size,
  ckptsurgeon's own sharding (:mod:`ckptsurgeon.formats.safetensors.sharded`) in the target's
  sharded format, under the target's index name. A single-file target gives a file of its name.
- **every other file of the target folder**, byte for byte (when the target was named as a
  folder): regular files, in subdirectories too. A symbolic link is copied as the file it points
  to when that file lies inside the folder; one that leads outside it, a link to a directory, a
  FIFO, a device or a socket is refused (exit 3) before anything is written. Other copies of the
  weights that ``from_pretrained`` would not load (``pytorch_model.bin`` beside
  ``model.safetensors``, and the shards of an index not chosen) are not copied: they would hold
  the old values under a name a loader may pick; nor is a git clone's ``.git`` directory (its
  history, and Git LFS's own copies of the old weights); the report lists them (``skipped``).
  ckptsurgeon's own temporary files, journals and lock are never copied.

**Atomic.** Everything is written into a temporary directory beside the destination,
``.NAME.ckpt-tmpdir-PID-HOST-RANDOM`` (the naming of :mod:`ckptsurgeon.atomic`; a killed run's is
removed by the next run writing beside it), every file and directory fsynced, then the directory
is renamed into place and the parent fsynced. On any error or interruption the temporary
directory is removed and the destination is untouched. A destination that exists is refused
(exit 4) unless ``force``: then the new folder takes its place in one ``renameat2(RENAME_EXCHANGE)``
(Linux 3.15+, through ctypes; at every instant the name holds the old folder or the new one), and
the old folder, now at the temporary name, is removed. Where the kernel or the file system lacks
it, the old folder is renamed aside, the new one renamed in (the old one is put back if that
fails), the parent fsynced, and the old one removed: there is then an instant with no folder at
the name. A new folder is renamed with ``RENAME_NOREPLACE`` where the kernel has it, so a folder
another run created meanwhile is never replaced (exit 4).

**Never over an input** (:func:`check_folder_output`): the destination may not be an input
folder, lie inside one, or contain an input file (exit 2, like an output file that is an input).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .atomic import (
    JOURNAL_SUFFIX,
    _as_output_error,
    _fsync_dir,
    clean_stale_temps,
    fsync_path,
    hold_interrupts,
    is_temp_name,
    temp_path_for,
)
from .commits import Committed
from .errors import CkptError, InputError, OutputError, UnsafeInputError, UsageError
from .files import kind, open_input
from .lock import LOCK_NAME
from .tree import remove_tree

_COPY_PIECE = 1 << 20


def wants_folder(output: str | Path | None) -> bool:
    """Whether ``output`` names a folder output: a path ending with a slash, or an existing directory."""
    if output is None:
        return False
    text = os.fspath(output)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def folder_output_options(output: str | Path | None, shard_size: int | str | None, *, force: bool,
                          dry_run: bool) -> tuple[bool, int | None]:
    """Whether ``output`` is a folder output, and the shard size asked for; UsageError for
    ``shard_size`` or ``force`` without a folder output (they mean nothing for a file)."""
    from .text import parse_size

    folder_out = wants_folder(output)
    size = parse_size(shard_size) if shard_size is not None else None
    if size is not None and not folder_out and not dry_run:
        raise UsageError(output, "--shard-size goes with a folder output (-o DIR/ or --output-dir DIR)")
    if force and not folder_out:
        raise UsageError(output, "--force replaces an existing folder output (-o DIR/ or --output-dir DIR)")
    return folder_out, size


@dataclass(frozen=True)
class Carried:
    """A file of the input folder copied into the output folder: where it is read, where it goes (relative)."""

    source: Path
    relative: PurePosixPath


@dataclass
class FolderPlan:
    """What a folder output holds, decided before anything is written."""

    dest: Path
    weights: str  # the checkpoint's file name in the folder (the index of a sharded one)
    fmt: str
    writer_options: dict[str, Any] | None
    carried: list[Carried] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # other copies of the weights, not carried
    folder: Path | None = None  # the input folder the files are carried from


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _other_weights(folder: Path, chosen: Iterable[Path]) -> set[str]:
    """Names at the folder's top that are other copies of the weights: Hugging Face's weight files
    not chosen, and the shards their indexes name."""
    from .formats import HF_WEIGHTS
    from .formats._index import ShardIndex

    chosen_names = {p.name for p in chosen if p.parent == folder}
    names: set[str] = set()
    for name in HF_WEIGHTS:
        path = folder / name
        if name in chosen_names or not path.is_file():
            continue
        names.add(name)
        if name.endswith(".index.json"):
            with contextlib.suppress(Exception):
                names.update(s for s in ShardIndex.read(path).shards if s not in chosen_names)
    return names


def _own_file(name: str) -> bool:
    """ckptsurgeon's own temporary files, journals and lock (never carried)."""
    return name == LOCK_NAME or is_temp_name(name) or name.endswith(JOURNAL_SUFFIX) or ".ckpt-tmpdir-" in name


def carried_files(folder: Path, weights: Sequence[Path]) -> tuple[list[Carried], list[str]]:
    """The files of ``folder`` to copy beside the new weights, and the other weight copies left out.

    Raises InputError (exit 3) naming the first file that cannot be copied safely: a FIFO, a
    device, a socket, a link leading outside the folder or to a directory, an unreadable directory.
    """
    root = os.path.realpath(folder)
    weight_ids = set()
    for path in weights:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            weight_ids.add((st.st_dev, st.st_ino))
    others = _other_weights(folder, weights)
    carried: list[Carried] = []
    skipped: list[str] = []

    def walk(directory: Path, relative: PurePosixPath) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise InputError(directory, f"cannot list the folder: {exc.strerror or exc}") from exc
        for entry in entries:
            path = directory / entry.name
            rel = relative / entry.name
            if _own_file(entry.name):
                continue
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError as exc:
                raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
            if stat.S_ISDIR(st.st_mode):
                if not relative.parts and entry.name == ".git":  # a clone's history (and its LFS copies of the weights)
                    skipped.append(entry.name)
                    continue
                walk(path, rel)
                continue
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(path)
                if not _inside(real, root):
                    raise UnsafeInputError(path, f"is a link to {real}, outside the folder {folder}; refusing to copy "
                                                 "a file from outside the model folder")
                try:
                    st = os.stat(path)
                except OSError as exc:
                    raise InputError(path, f"is a link to {real}, which cannot be read ({exc.strerror or exc})") from exc
                if stat.S_ISDIR(st.st_mode):
                    raise InputError(path, "is a link to a directory; only files are copied into a folder output")
            if not stat.S_ISREG(st.st_mode):
                raise InputError(path, f"is not a regular file ({kind(st.st_mode)}); a folder output copies regular "
                                       "files only")
            if (st.st_dev, st.st_ino) in weight_ids:
                continue
            if not relative.parts and entry.name in others:
                skipped.append(entry.name)
                continue
            carried.append(Carried(path, rel))

    walk(folder, PurePosixPath())
    return carried, skipped


def check_folder_output(dest: Path, *, inputs: Iterable[str | Path], folders: Iterable[str | Path] = (),
                        others: Iterable[tuple[str, str | Path | None]] = (), force: bool = False,
                        no_clobber: bool = False) -> None:
    """Refuse a folder output before any work.

    UsageError (exit 2): the destination is or contains an input file, is or lies inside an input
    folder, contains another output (``others``: the option and its path), or ``force`` with
    ``no_clobber``. OutputError (exit 4): it exists (unless ``force``), is a link or not a
    directory, or its parent is missing or not writable.
    """
    if force and no_clobber:
        raise UsageError(dest, "--force replaces the folder and --no-clobber refuses to: choose one")
    real = os.path.realpath(dest)
    for folder in folders:
        where = os.path.realpath(folder)
        if _inside(real, where):
            what = "is the input folder" if real == where else f"lies inside the input folder {folder}"
            raise UsageError(dest, f"{what}; inputs are never overwritten", hint="write the folder elsewhere")
    for src in inputs:
        if _inside(os.path.realpath(src), real):
            raise UsageError(dest, f"holds the input {src}; inputs are never overwritten", hint="write the folder elsewhere")
    for label, path in others:
        if path is not None and _inside(os.path.realpath(path), real):
            raise UsageError(path, f"{label} lies inside the output folder {dest}; write it elsewhere")
    try:
        st = os.stat(dest, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(dest, f"cannot write: {exc.strerror or exc}") from exc
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise OutputError(dest, "is a symbolic link; a folder output is written only to a new directory or over one")
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(dest, f"exists and is not a directory ({kind(st.st_mode) or 'a regular file'})")
        if not force:
            why = "--no-clobber never replaces it" if no_clobber else "--force replaces it"
            raise OutputError(dest, f"exists; {why}", hint=None if no_clobber else "or choose a new folder")
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(dest, f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(dest, f"directory {parent} is not writable")


# --- renameat2 -------------------------------------------------------------------------------------
_AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False when this kernel, libc or file system does not have it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    if function(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def _rename_new(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``, which must not exist (never replacing a folder created meanwhile)."""
    try:
        if _renameat2(tmp, dest, RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise OutputError(dest, "exists now: another run created it while this one wrote; nothing was written") from None
    if os.path.lexists(dest):
        raise OutputError(dest, "exists now: another run created it while this one wrote; nothing was written")
    os.rename(tmp, dest)


def _swap(tmp: Path, dest: Path) -> Path | None:
    """Put ``tmp`` at ``dest``, replacing the folder there; the path the old folder is at now (None: there was none)."""
    try:
        if _renameat2(tmp, dest, RENAME_EXCHANGE):
            return tmp  # the old folder is at the temporary name
    except FileNotFoundError:  # nothing at dest any more
        _rename_new(tmp, dest)
        return None
    aside = temp_path_for(dest, directory=True)
    try:
        os.rename(dest, aside)
    except FileNotFoundError:
        _rename_new(tmp, dest)
        return None
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(aside, dest)
        raise
    return aside


# --- writing ---------------------------------------------------------------------------------------
def _copy(src: Path, dst: Path, hashes: bool) -> tuple[int, str | None]:
    """Copy a regular file's bytes and permission bits to a new file ``dst`` (``O_EXCL``), fsynced; (size, sha256)."""
    digest = hashlib.sha256() if hashes else None
    size = 0
    with open_input(src, buffering=0) as f, open(dst, "xb") as out:
        os.chmod(out.fileno(), os.fstat(f.fileno()).st_mode & 0o777)  # the file's permissions too (an executable script)
        buffer = bytearray(_COPY_PIECE)
        view = memoryview(buffer)
        while True:
            try:
                n = f.readinto(buffer)  # type: ignore[attr-defined]
            except OSError as exc:
                raise InputError(src, f"cannot read: {exc.strerror or exc}") from exc
            if not n:
                break
            out.write(view[:n])
            if digest is not None:
                digest.update(view[:n])
            size += n
        out.flush()
        os.fsync(out.fileno())
    return size, None if digest is None else digest.hexdigest()


def _directories(root: Path) -> Iterator[Path]:
    """Every directory under ``root``, deepest first, then ``root``."""
    for top, dirs, _ in os.walk(root, topdown=False):
        for d in dirs:
            yield Path(top) / d
    yield root


def write_folder(plan: FolderPlan, write_weights: Callable[[Path], list[Committed]], *, force: bool = False,
                 hashes: bool = True) -> list[Committed]:
    """Write the folder ``plan`` describes, atomically (see the module docstring); every file written.

    ``write_weights`` writes the checkpoint at the path it is given (inside the temporary directory)
    and returns the files it committed there. The files returned are named at the destination.
    """
    dest = plan.dest
    parent = dest.parent if str(dest.parent) else Path(".")
    clean_stale_temps(parent)
    tmp = temp_path_for(dest, directory=True)
    committed = False
    try:
        try:
            os.mkdir(tmp)
        except OSError as exc:
            raise OutputError(dest, f"cannot write: {exc.strerror or exc}; nothing was written") from exc
        files = [Committed(dest / c.path.relative_to(tmp), c.bytes, c.sha256) for c in write_weights(tmp / plan.weights)]
        for item in plan.carried:
            target = tmp.joinpath(*item.relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            size, sha = _copy(item.source, target, hashes)
            files.append(Committed(dest.joinpath(*item.relative.parts), size, sha))
        for directory in _directories(tmp):
            fsync_path(directory)
        old = None
        with hold_interrupts():  # SIGINT/SIGTERM wait until the folder is in place
            if force and os.path.lexists(dest):
                old = _swap(tmp, dest)
            else:
                _rename_new(tmp, dest)
            committed = True
            _fsync_dir(parent)
        if old is not None:
            remove_tree(old)
    except BaseException as exc:
        if not committed:
            remove_tree(tmp)
        inner = str(tmp) + os.sep
        if isinstance(exc, CkptError) and exc.path is not None and exc.path.startswith(inner):
            exc.path = str(dest / exc.path[len(inner):])  # name the destination, never the temporary directory
        error = _as_output_error(exc, dest, [tmp])
        if error is exc:
            raise
        raise error from exc
    return files


# --- planning --------------------------------------------------------------------------------------
def plan_folder(dest: Path, like: Any, folder: Path | None, *, fmt_name: str | None = None,
                shard_size: int | None = None) -> FolderPlan:
    """The folder output at ``dest`` for a checkpoint laid out like ``like`` (an open reader), whose
    other files are carried from ``folder`` (None: the input was named as a file; only weights then).

    UsageError (exit 2) for a ``fmt_name`` other than ``like``'s format, a format whose sharded form
    ckptsurgeon does not write, or a checkpoint of several files that is not a sharded one.
    """
    from .formats import sharded_format, spec, writer_for
    from .formats.base import ShardedWriter

    own = spec(like.format)
    single = own.shards_of or own.name
    if fmt_name is not None and fmt_name not in (own.name, single):
        raise UsageError(dest, f"a folder output keeps the format of the folder's checkpoint ({own.name}); "
                               f"--format {fmt_name} goes with an output file (-o FILE)")
    options: dict[str, Any] | None
    if shard_size is not None or own.shards_of:
        fmt = sharded_format(single)
        if fmt is None:
            raise UsageError(dest, f"ckptsurgeon writes no sharded {single} checkpoints; write an output file (-o FILE)")
        writer = writer_for(fmt)
        assert issubclass(writer, ShardedWriter)
        default = writer.destination(f"{dest}{os.sep}").name  # model.safetensors.index.json
        naming = getattr(writer, "naming", None)
        suffix = naming.index_suffix if naming is not None else ".index.json"
        weights = like.path.name if own.shards_of and like.path.name.endswith(suffix) else default
        if shard_size is not None:
            options = {"shard_size": shard_size, "force": False, "inputs": []}
        else:
            options = {"assignment": like.shard_of}
    else:
        if len(like.files) != 1 or own.writer is None:
            raise UsageError(dest, f"a {own.description} checkpoint of {len(like.files)} files is not written as a "
                                   "folder; write an output file (-o FILE)")
        fmt, weights, options = own.name, like.path.name, None
    carried, skipped = carried_files(folder, like.files) if folder is not None else ([], [])
    return FolderPlan(dest, weights, fmt, options, carried, skipped, folder)


def prepare(output: str | Path, like: Any, named: str | Path, *, fmt_name: str | None, shard_size: int | None,
            force: bool, no_clobber: bool, inputs: Iterable[str | Path], folders: Iterable[str | Path],
            others: Iterable[tuple[str, str | Path | None]] = (), origins: dict[str, str] | None = None) -> FolderPlan:
    """:func:`plan_folder` and :func:`check_folder_output` for a command: ``named`` is how the
    checkpoint laid out like ``like`` was named (a folder: its other files are carried); ``origins``
    maps an output tensor to the tensor of ``like`` it was written from (a rename keeps its shard)."""
    plan = plan_folder(Path(output), like, Path(named) if Path(named).is_dir() else None, fmt_name=fmt_name,
                       shard_size=shard_size)
    if origins is not None and plan.writer_options is not None and "assignment" in plan.writer_options:
        shard_of = plan.writer_options["assignment"]
        plan.writer_options["assignment"] = {out: shard_of[src] for out, src in origins.items() if src in shard_of}
    check_folder_output(plan.dest, inputs=inputs, folders=[p for p in folders if Path(p).is_dir()], others=others,
                        force=force, no_clobber=no_clobber)
    return plan


def write(plan: FolderPlan, weights: Callable[[Path, dict[str, Any] | None], Any], *, force: bool,
          hashes: bool) -> tuple[Any, dict[str, Any]]:
    """Write the folder, the weights through ``weights(path, writer_options)`` (returning a
    :class:`~ckptsurgeon.execute.Written`); that Written and the report's ``output`` entries."""
    done: list[Any] = []

    def write_weights(dest: Path) -> list[Committed]:
        done.append(weights(dest, plan.writer_options))
        files: list[Committed] = done[-1].files
        return files

    files = write_folder(plan, write_weights, force=force, hashes=hashes)
    main = next(c for c in files if c.path == plan.dest / plan.weights)
    return done[-1], main.summary() | {"weights": plan.weights, "files": [c.to_dict() for c in files],
                                       "skipped": list(plan.skipped)}
