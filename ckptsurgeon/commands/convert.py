"""Convert a checkpoint to another format, another float dtype, or into Hugging Face shards.

``convert(src, out)`` opens any checkpoint ckptsurgeon reads, chooses tensors with include /
exclude globs, and streams them, one at a time and in the input's order, into a writer for the
output format (by ``out``'s extension or ``fmt``), atomically. Names, shapes and bytes are kept;
``dtype`` casts floating tensors only (integers and bools keep theirs) and counts, per tensor, the
values that overflowed. A tensor that keeps its dtype moves as a byte range where the reader knows
one and the writer takes it (safetensors to safetensors: ``copy_file_range``, no Python memory).

Metadata travels where the output can hold it: safetensors ``__metadata__``, HDF5 root
attributes, the npz archive comment, a sharded index's ``metadata``. An HDF5/Keras input written
as HDF5 or ``.keras`` is written like the input (its groups and attributes), so Keras still loads
it after a dtype change. The ``total_size`` of a sharded input's index is not carried: it
describes the index, not the weights.

With ``shard_size`` the output is a sharded safetensors checkpoint (see
:mod:`ckptsurgeon.formats.sharded`). Nothing here prints; the report is plain data.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import folders, formats
from ..atomic import check_output, output_error
from ..errors import CheckFailed, Failure, InputError, UsageError
from ..formats import (
    DEFAULT_SHARDED_OF,
    open_checkpoint,
    output_format,
    sharded_format,
    spec,
    writer_for,
    writes_like,
)
from ..formats.base import OpenOptions, Reader, ShardedWriter, ShardPlan
from ..lock import FolderLock
from ..metadata_edit import MetadataEdits, metadata_options
from ..plan import INPUT, plan_convert
from ..rules import Rules, apply_rules, unused_rules_failure
from ..tensors import DTYPES, FLOAT_CODES, TensorInfo, TensorSpec, byte_size, numel
from ..text import human_bytes, parse_size, quote

__all__ = ["SCHEMA_ID", "ConvertReport", "ConvertedTensor", "GlobCount", "convert", "float_dtype"]

SCHEMA_ID = "ckptsurgeon/convert/1"

Progress = Callable[[int, int], None]  # (bytes written, bytes in all)


@dataclass
class ConvertedTensor:
    """One output tensor: where it came from, its dtype before and after, what happened while writing."""

    name: str
    shape: tuple[int, ...]
    dtype_in: str
    dtype_out: str
    shard: str | None = None  # the shard file holding it (sharded output)
    overflow: int = 0  # values finite before the cast and not after it (or out of range)
    byte_copy: bool = False  # moved as a byte range, never through Python memory
    nonfinite: int | None = None  # NaN / Inf values in the input (counted with fail_on_nonfinite)

    @property
    def cast(self) -> bool:
        return self.dtype_in != self.dtype_out

    @property
    def numel(self) -> int:
        return numel(self.shape)

    @property
    def nbytes_in(self) -> int:
        return byte_size(self.dtype_in, self.shape)

    @property
    def nbytes_out(self) -> int:
        return byte_size(self.dtype_out, self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "shape": list(self.shape), "dtype_in": self.dtype_in, "dtype_out": self.dtype_out,
            "nbytes_in": self.nbytes_in, "nbytes_out": self.nbytes_out, "shard": self.shard,
            "overflow": self.overflow, "byte_copy": self.byte_copy, "nonfinite": self.nonfinite,
        }


@dataclass(frozen=True)
class GlobCount:
    """How many input tensors an ``--include`` or ``--exclude`` glob matched."""

    kind: str  # "include" or "exclude"
    glob: str
    matches: int


@dataclass(frozen=True)
class DtypeRow:
    """The tensors sharing one dtype change (or one kept dtype), for the table."""

    dtype_in: str
    dtype_out: str
    tensors: int
    parameters: int
    bytes_in: int
    bytes_out: int
    overflow: int

    @property
    def label(self) -> str:
        return self.dtype_in if self.dtype_in == self.dtype_out else f"{self.dtype_in} -> {self.dtype_out}"


@dataclass
class ConvertReport:
    """What ``ckpt convert`` did (or, with ``dry_run``, would do): plain data, ready for a table or JSON."""

    input: dict[str, Any]  # path, format, files, tensors
    output: dict[str, Any]  # path, format, shard_size
    dtype: str | None
    dry_run: bool
    metadata: dict[str, str]
    tensors: list[ConvertedTensor]
    filters: list[GlobCount] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    #: tensors sharing one storage in the input (tied weights): each is written with its own bytes
    tied: list[list[str]] = field(default_factory=list)
    shards: list[dict[str, Any]] = field(default_factory=list)  # name, tensors, bytes
    files: list[dict[str, Any]] = field(default_factory=list)  # written: path, bytes, sha256
    failed_checks: list[Failure] = field(default_factory=list)  # the value gates that failed (nothing was written)

    def dtype_rows(self) -> list[DtypeRow]:
        """One row per (dtype in, dtype out) pair, in order of first appearance."""
        groups: dict[tuple[str, str], list[ConvertedTensor]] = {}
        for t in self.tensors:
            groups.setdefault((t.dtype_in, t.dtype_out), []).append(t)
        return [
            DtypeRow(a, b, len(ts), sum(t.numel for t in ts), sum(t.nbytes_in for t in ts),
                     sum(t.nbytes_out for t in ts), sum(t.overflow for t in ts))
            for (a, b), ts in groups.items()
        ]

    @property
    def failures(self) -> list[str]:
        """Each failed check as one sentence (the library's words: options by their keyword)."""
        return [str(f) for f in self.failed_checks]

    @property
    def ok(self) -> bool:
        """False when a value gate failed (overflow, NaN/Inf); every other check raises before anything is written."""
        return not self.failed_checks

    @property
    def summary(self) -> dict[str, Any]:
        return {
            "tensors": len(self.tensors),
            "parameters": sum(t.numel for t in self.tensors),
            "cast_tensors": sum(t.cast for t in self.tensors),
            "byte_copies": sum(t.byte_copy for t in self.tensors),
            "overflow_values": sum(t.overflow for t in self.tensors),
            "nonfinite_values": (sum(t.nonfinite or 0 for t in self.tensors)
                                 if any(t.nonfinite is not None for t in self.tensors) else None),
            "excluded_tensors": len(self.excluded),
            "bytes_in": sum(t.nbytes_in for t in self.tensors),
            "bytes_out": sum(t.nbytes_out for t in self.tensors),
            "shards": len(self.shards) or None,
        }

    @property
    def verdict(self) -> str:
        s = self.summary
        out = f"{self.output['path']} ({self.output['format']}"
        out += f", {s['shards']} shard{'s' if s['shards'] != 1 else ''})" if s["shards"] else ")"
        parts = [f"{human_bytes(s['bytes_in'])} -> {human_bytes(s['bytes_out'])}"]
        for row in self.dtype_rows():
            if row.dtype_in != row.dtype_out:
                parts.append(f"{row.tensors} cast {row.label}")
        if s["overflow_values"]:
            parts.append(f"{s['overflow_values']:,} values overflowed")
        if s["excluded_tensors"]:
            parts.append(f"{s['excluded_tensors']} excluded")
        verb = "would convert" if self.dry_run else "did not write" if self.failed_checks else "converted"
        plural = "s" if s["tensors"] != 1 else ""
        return f"{verb} {s['tensors']} tensor{plural} ({'; '.join(parts)}) to {out}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of schema ``ckptsurgeon/convert/1``."""
        return {
            "schema": SCHEMA_ID,
            "input": self.input,
            "output": self.output,
            "dry_run": self.dry_run,
            "dtype": self.dtype,
            "metadata": self.metadata,
            "filters": [{"kind": g.kind, "glob": g.glob, "matches": g.matches} for g in self.filters],
            "tensors": [t.to_dict() for t in self.tensors],
            "dtype_changes": [
                {"dtype_in": r.dtype_in, "dtype_out": r.dtype_out, "tensors": r.tensors, "parameters": r.parameters,
                 "bytes_in": r.bytes_in, "bytes_out": r.bytes_out, "overflow": r.overflow}
                for r in self.dtype_rows()
            ],
            "excluded": self.excluded,
            "tied": self.tied,
            "shards": self.shards,
            "files": self.files,
            "summary": self.summary,
            "failures": self.failures,
            "failed_checks": [f.to_dict() for f in self.failed_checks],
            "ok": self.ok,
            "verdict": self.verdict,
        }


def float_dtype(code: str) -> str:
    """A floating dtype code from user input (case-insensitive); a usage error for anything else."""
    canonical = code.strip().upper()
    if canonical not in DTYPES or DTYPES[canonical].kind != "float":
        raise UsageError(None, f"--dtype {code!r} is not a floating dtype", hint=f"choose one of {', '.join(FLOAT_CODES)}")
    return canonical


def _select(tensors: Sequence[TensorInfo], include: Sequence[str], exclude: Sequence[str],
            allow_unused_rules: bool = False, file: str | None = None) -> tuple[list[TensorInfo], list[str], list[GlobCount]]:
    """The chosen tensors (input order), the excluded names and each glob's match count.

    The globs are the rules of every other command (:func:`ckptsurgeon.rules.apply_rules`): an
    ``--include`` or ``--exclude`` glob that matches no tensor is refused (CheckFailed, exit 1;
    a typo would silently keep or drop tensors) unless ``allow_unused_rules``.
    """
    renamed = apply_rules([t.name for t in tensors], Rules(include=tuple(include), exclude=tuple(exclude)))
    unused = renamed.unused()
    if unused and not allow_unused_rules:
        raise CheckFailed.of([unused_rules_failure(unused, file)], hint="list the names with `ckpt inspect`; globs match whole names")
    counts = [GlobCount("include", g, sum(fnmatch.fnmatchcase(t.name, g) for t in tensors)) for g in include]
    counts += [GlobCount("exclude", g, sum(fnmatch.fnmatchcase(t.name, g) for t in tensors)) for g in exclude]
    chosen = [t for t in tensors if t.name in renamed.mapping]
    return chosen, list(renamed.excluded), counts


def _carried_metadata(reader: Reader, fmt: str, edits: MetadataEdits | None = None) -> dict[str, str]:
    """The input's metadata for the output. An input of a framework's format (PyTorch) written where
    the framework is recorded (safetensors) also gets ``format: pt`` unless it says otherwise, as
    Hugging Face's conversion writes and transformers requires of a safetensors file with metadata."""
    meta = dict(reader.metadata)
    if spec(reader.format).shards_of:  # an index's total_size describes the index, not the weights
        meta.pop("total_size", None)
    framework = spec(reader.format).framework
    if framework is not None and writer_for(fmt).caps.records_framework:
        meta.setdefault("format", framework)
    return edits.apply(meta) if edits is not None else meta


def _tied(reader: Reader, chosen: Sequence[TensorInfo]) -> list[list[str]]:
    """Groups of the chosen tensors that share one storage in the input (PyTorch tied weights and views)."""
    names = {t.name for t in chosen}
    return [g for g in ([n for n in group if n in names] for group in reader.shared_storages()) if len(g) > 1]


def _sharded_writer(fmt: str) -> type[ShardedWriter]:
    writer = writer_for(fmt)
    assert issubclass(writer, ShardedWriter), f"{fmt} declares caps.sharded without being a ShardedWriter"
    return writer


def _destination(out: str | Path, fmt: str | None, shard_size: int | None) -> tuple[Path, str]:
    """The file to write (a sharded output's index) and the output format (--shard-size: the sharded
    format of ``fmt``'s kind, or of the output's extension, safetensors by default)."""
    if shard_size is not None:
        name = Path(out).name
        named = [s.name for s in formats.FORMATS  # an index's own name: pytorch_model.bin.index.json
                 if s.shards_of and s.writer and any(fnmatch.fnmatchcase(name, g) for g in s.folder_globs)]
        single = fmt or (output_format(out) if Path(out).suffix and not name.endswith(".json") else None)
        found = named[0] if named and fmt is None else sharded_format(single or DEFAULT_SHARDED_OF)
        if found is None:
            choices = ", ".join(s.shards_of or "" for s in formats.FORMATS if s.shards_of and s.writer)
            raise UsageError(None, f"--shard-size writes sharded {choices}, not {single}")
        return _sharded_writer(found).destination(out), found
    dest = Path(out)
    for s in formats.FORMATS:
        if s.shards_of and s.writer and any(fnmatch.fnmatchcase(dest.name, g) for g in s.folder_globs):
            raise UsageError(dest, "names a sharded checkpoint's index", hint="add --shard-size, e.g. --shard-size 5GB")
    return dest, output_format(dest, fmt)


@contextlib.contextmanager
def _claimed(dest: Path, *, sharded: bool, create: bool) -> Iterator[None]:
    """For a sharded write: the index's folder, created when ``create``, locked (exit 4 when another
    run holds it) from before the shard names are planned until the index is in place; a folder
    created here is removed again when the run fails. Nothing happens otherwise."""
    if not sharded:
        yield
        return
    folder = dest.parent
    if create:
        try:
            folder.mkdir()
        except FileExistsError:  # another run made it meanwhile: its lock decides
            create = False
        except OSError as exc:
            raise output_error(dest, exc) from exc
    try:
        with FolderLock(folder):
            yield
    except BaseException:
        if create:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def convert(
    src: str | Path,
    out: str | Path,
    *,
    fmt: str | None = None,
    dtype: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    shard_size: int | str | None = None,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    allow_unused_rules: bool = False,
    allow_overflow: bool = False,
    fail_on_nonfinite: bool = False,
    no_clobber: bool = False,
    hash_output: bool = True,
    open_options: OpenOptions | None = None,
    encrypt: Any = None,
    metadata_edits: MetadataEdits | None = None,
) -> ConvertReport:
    """Write ``src``'s tensors (those ``include``/``exclude`` choose) to ``out`` in another format.

    ``fmt`` names the output format (safetensors, hdf5, keras, npz); by default ``out``'s extension
    does. ``dtype`` casts floating tensors to that float dtype. ``shard_size`` (bytes, or a size
    such as ``"2GB"``) writes a sharded safetensors checkpoint: ``out`` is its index
    (``PREFIX.safetensors.index.json``) or a directory to hold ``model.safetensors.index.json``
    (created when missing; its parent must exist). ``force`` removes shards of an earlier
    checkpoint with that prefix that this run does not overwrite (otherwise they are refused).
    With ``dry_run`` only headers are read and nothing is written. ``progress`` is called with
    (bytes written, bytes in all) after each tensor. An ``include`` or ``exclude`` glob that
    matches nothing raises CheckFailed unless ``allow_unused_rules``. A cast that overflows, unless
    ``allow_overflow``, and with ``fail_on_nonfinite`` a tensor whose input holds NaN or Inf, fail the
    report (``ok`` False, ``failures``, the counts per tensor) and nothing is written. With
    ``no_clobber`` an existing file (a sharded output's index) is never replaced, not even one
    created meanwhile (OutputError). ``files`` records every file committed with its size and (with
    ``hash_output``) its sha256. ``metadata_edits`` drops and sets metadata keys (``--drop-metadata``,
    ``--set-metadata``; see :mod:`ckptsurgeon.metadata_edit`).

    Raises :class:`~ckptsurgeon.errors.UsageError` (exit 2) for contradictory options or an output
    that is an input, :class:`~ckptsurgeon.errors.InputError` (3) for a bad input and
    :class:`~ckptsurgeon.errors.OutputError` (4) when the output cannot be written; the destination
    is then left as it was.
    """
    from ..formats._s3 import url_of

    url = url_of(out)
    if url is not None:  # written here, then uploaded: a sharded output's shards first, its index last
        import tempfile

        from ..execute_remote import upload_staged

        if Path(str(src)).is_dir() or no_clobber or encrypt is not None:
            raise UsageError(str(url), "an s3:// output of convert takes a file (not a folder), without --no-clobber "
                             "or --enc-key-file")
        args = {"fmt": fmt, "dtype": dtype, "include": include, "exclude": exclude,
                "shard_size": shard_size, "force": force, "progress": progress, "allow_unused_rules": allow_unused_rules,
                "allow_overflow": allow_overflow, "fail_on_nonfinite": fail_on_nonfinite, "hash_output": False,
                "open_options": open_options, "metadata_edits": metadata_edits}
        if dry_run:
            with tempfile.TemporaryDirectory(prefix="ckpt-s3-") as nowhere:
                report = convert(src, Path(nowhere) / url.name, dry_run=True, **args)  # type: ignore[arg-type]
        else:
            report, moved = upload_staged(url, lambda local: convert(src, local, **args))  # type: ignore[arg-type]
        report.output = {"path": str(url), "format": report.output["format"] if report.output else fmt}
        if not dry_run:
            report.output["remote"] = moved
        return report
    cast_to = float_dtype(dtype) if dtype is not None else None
    size = parse_size(shard_size) if shard_size is not None else None
    folder: folders.FolderPlan | None = None
    into_folder = Path(src).is_dir() and folders.wants_folder(out)  # a model folder into a model folder
    dest, out_fmt = (Path(out), "") if into_folder else _destination(out, fmt, size)

    with open_checkpoint(src, open_options) as reader:
        chosen, excluded, counts = _select(reader.tensors, include, exclude, allow_unused_rules, str(src))
        if not reader.tensors:
            raise InputError(reader.path, "holds no tensors; there is nothing to convert")
        if not chosen:
            given = " and ".join(f"--{name} {' '.join(quote(g) for g in globs)}" for name, globs in
                                 (("include", include), ("exclude", exclude)) if globs)
            raise UsageError(reader.path, f"no tensors to write: {given} left none of {len(reader.tensors)}")
        steps = plan_convert(chosen, cast_to)
        plan = [ConvertedTensor(s.name, s.shape, s.origin.dtype, s.dtype) for s in steps.steps]
        inputs = list(reader.files)
        if into_folder:
            folder = folders.prepare(out, reader, src, fmt_name=fmt, shard_size=size, force=force,
                                     no_clobber=no_clobber, inputs=inputs, folders=(src,))
            dest, out_fmt = folder.dest, folder.fmt
        fmt = out_fmt
        report = ConvertReport(
            input={"path": str(src), "format": reader.format, "files": [str(p) for p in inputs],
                   "tensors": len(reader.tensors)},
            output={"path": str(dest), "format": fmt, "shard_size": size},
            dtype=cast_to, dry_run=dry_run, metadata=_carried_metadata(reader, fmt, metadata_edits), tensors=plan, filters=counts,
            excluded=excluded, tied=_tied(reader, chosen),
        )

        if folder is not None:
            return _into_folder(report, folder, reader, steps, progress=progress, force=force,
                                hash_output=hash_output, dry_run=dry_run, encrypt=encrypt,
                                gates=(allow_overflow, fail_on_nonfinite))

        # Refuse a bad destination before anything is written (and in a dry run too).
        new_dir = size is not None and not dest.parent.exists()
        # nothing in a new directory can be an input
        check_output(dest.parent if new_dir else dest, inputs, no_clobber=no_clobber and not new_dir)
        from ..execute import GateFailed

        try:  # a failed value gate leaves nothing, not even a folder made for the shards
            with _claimed(dest, sharded=size is not None and not dry_run, create=new_dir):
                layout: ShardPlan | None = None
                if size is not None:
                    writer = _sharded_writer(fmt)
                    layout = writer.plan_layout(dest, [TensorSpec(t.name, t.shape, t.dtype_out) for t in plan], size)
                    for path in layout.paths if not new_dir else ():
                        check_output(path, inputs)
                    writer.check_stale(layout, force=force, inputs=inputs)
                    where = layout.weight_map()
                    for t in plan:
                        t.shard = where[t.name]
                    report.shards = [{"name": n, "tensors": len(g), "bytes": sum(s.nbytes for s in g)}
                                     for n, g in zip(layout.names, layout.groups, strict=True)]
                if dry_run:
                    return report

                from ..execute import ValueGates, write_checkpoint

                written = write_checkpoint(
                    dest, fmt, steps, {INPUT: reader}, metadata=report.metadata,
                    like=reader if writes_like(reader, fmt) else None, progress=progress, cast=None,
                    writer_options={"shard_size": size, "force": force, "inputs": inputs} if layout is not None
                    else metadata_options(metadata_edits, fmt),
                    gates=ValueGates(allow_overflow=allow_overflow, fail_on_nonfinite=fail_on_nonfinite),
                    no_clobber=no_clobber, hash_files=hash_output, encrypt=encrypt,
                )
                report.files = [c.to_dict() for c in written.files]  # sizes and hashes of the bytes committed
                if written.files:
                    report.output |= written.files[-1].summary()
        except GateFailed as failed:  # nothing was written; the report keeps the counts
            outcomes, report.failed_checks = failed.outcomes, list(failed.failures)
        else:
            outcomes = written.outcomes
        for t in plan:
            o = outcomes[t.name]
            t.overflow, t.byte_copy, t.nonfinite = o.overflow, o.byte_copy, o.nonfinite
        return report


def _into_folder(report: ConvertReport, folder: folders.FolderPlan, reader: Reader, steps: Any, *,
                 progress: Progress | None, force: bool, hash_output: bool, dry_run: bool, encrypt: Any,
                 gates: tuple[bool, bool]) -> ConvertReport:
    """Write a model folder's converted weights (in the input's layout) beside a copy of its other files."""
    from ..execute import GateFailed, ValueGates, Written, write_checkpoint
    from ..formats.safetensors.sharded import Folder, ShardLayout
    from ..formats.safetensors.sharded import Writer as SafetensorsSharded

    assert report.output is not None
    fmt = folder.fmt
    options = folder.writer_options
    if options is not None:  # sharded: where each tensor goes, for the report
        specs = [TensorSpec(t.name, t.shape, t.dtype_out) for t in report.tensors]
        writer = writer_for(fmt)
        assert issubclass(writer, SafetensorsSharded)
        naming = writer.naming
        index = folder.dest / folder.weights
        if "assignment" in options:
            layout = ShardLayout.assigned(index, specs, options["assignment"], naming)
        else:
            nothing = Folder(folder.dest, frozenset(), frozenset(), frozenset(), frozenset())  # a new folder
            layout = ShardLayout.plan(index, specs, options["shard_size"], nothing, naming)
        where = layout.weight_map()
        for t in report.tensors:
            t.shard = where[t.name]
        report.shards = [{"name": n, "tensors": len(g), "bytes": sum(s.nbytes for s in g)}
                         for n, g in zip(layout.names, layout.groups, strict=True)]
    if dry_run:
        return report

    def write(dest: Path, writer_options: dict[str, Any] | None) -> Written:
        return write_checkpoint(
            dest, fmt, steps, {INPUT: reader}, metadata=report.metadata,
            like=reader if writes_like(reader, fmt) else None, progress=progress, cast=None,
            writer_options=writer_options, gates=ValueGates(allow_overflow=gates[0], fail_on_nonfinite=gates[1]),
            hash_files=hash_output, encrypt=encrypt,
        )

    try:
        written, entries = folders.write(folder, write, force=force, hashes=hash_output)
    except GateFailed as failed:  # nothing was written; the report keeps the counts
        outcomes, report.failed_checks = failed.outcomes, list(failed.failures)
    else:
        outcomes = written.outcomes
        report.files = entries.pop("files")
        report.output |= entries
    for t in report.tensors:
        o = outcomes[t.name]
        t.overflow, t.byte_copy, t.nonfinite = o.overflow, o.byte_copy, o.nonfinite
    return report
