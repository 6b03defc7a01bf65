"""The library's entry points; the CLI is a thin layer over these. Never imports rich or typer."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .atomic import atomic_path, check_output, write_text
from .errors import CheckFailed, CkptError, InputError, UsageError
from .formats import open_checkpoint, output_format, writer_for, writes_like
from .formats.base import Reader
from .plan import Plan, TransferOptions, build_plan, gate_failures, plan_from_dict, plan_to_dict
from .report import RenameReport, TransferReport
from .rules import Rules, apply_rules
from .tensors import TensorInfo, TensorSpec

if TYPE_CHECKING:  # execute.py brings numpy; inspect and dry runs never need it
    from .execute import Move, Progress

__all__ = [
    "Inspection",
    "Plan",
    "RenameFailed",
    "RenameReport",
    "Rules",
    "TransferFailed",
    "TransferOptions",
    "TransferReport",
    "inspect",
    "open_checkpoint",
    "plan_transfer",
    "rename",
    "transfer",
]


@dataclass
class Inspection:
    """What ``ckpt inspect`` reports: plain data, ready for a table or for JSON."""

    path: str
    format: str
    files: list[str]
    metadata: dict[str, str]
    tensors: list[TensorInfo]
    sha256: dict[str, str] = field(default_factory=dict)

    @property
    def totals(self) -> dict[str, Any]:
        dtypes = Counter(t.dtype for t in self.tensors)
        return {
            "tensors": len(self.tensors),
            "parameters": sum(t.numel for t in self.tensors),
            "bytes": sum(t.nbytes for t in self.tensors),
            "dtypes": dict(sorted(dtypes.items())),
        }

    def to_dict(self) -> dict[str, Any]:
        tensors = []
        for t in self.tensors:
            entry: dict[str, Any] = {
                "name": t.name, "shape": list(t.shape), "dtype": t.dtype, "layer": t.layer, "nbytes": t.nbytes,
            }
            if t.name in self.sha256:
                entry["sha256"] = self.sha256[t.name]
            tensors.append(entry)
        return {
            "path": self.path,
            "format": self.format,
            "files": self.files,
            "metadata": self.metadata,
            "tensors": tensors,
            "totals": self.totals,
        }


def select(names: Sequence[TensorInfo], globs: Sequence[str]) -> list[TensorInfo]:
    if not globs:
        return list(names)
    return [t for t in names if any(fnmatch.fnmatchcase(t.name, g) for g in globs)]


def inspect(path: str | Path, *, hash: bool = False, filter: Sequence[str] = ()) -> Inspection:
    """List a checkpoint's tensors from its headers; with ``hash``, also read each tensor once for its sha256."""
    with open_checkpoint(path) as reader:
        tensors = select(reader.tensors, filter)
        sums = {t.name: reader.sha256(t.name) for t in tensors} if hash else {}
        return Inspection(
            path=str(path),
            format=reader.format,
            files=[str(p) for p in reader.files],
            metadata=dict(reader.metadata),
            tensors=tensors,
            sha256=sums,
        )


class TransferFailed(CheckFailed):
    """A transfer's requested checks failed; nothing was written. ``report`` says what the plan was."""

    def __init__(self, report: TransferReport) -> None:
        self.report = report
        super().__init__(None, "; ".join(report.failures))


def _describe(reader: Reader) -> dict[str, Any]:
    return {"path": str(reader.path), "format": reader.format, "tensors": len(reader.tensors)}


def _same_input(a: Reader, b: Reader) -> bool:
    for x in a.files:
        for y in b.files:
            try:
                if os.path.samefile(x, y):
                    return True
            except OSError:
                continue
    return False


@contextlib.contextmanager
def _blame(path: str | Path) -> Iterator[None]:
    """Name ``path`` in errors raised without a file (a rule problem is a problem with that file's names)."""
    try:
        yield
    except CkptError as exc:
        if exc.path is None:
            exc.path = str(path)
        raise


def plan_transfer(source: Reader, target: Reader, options: TransferOptions) -> Plan:
    """The transfer plan from two opened checkpoints' metadata (nothing is read beyond headers)."""
    if _same_input(source, target):
        raise UsageError(source.path, f"source and target are the same file ({target.path})",
                         hint="a transfer needs two different checkpoints")
    with _blame(source.path):
        return build_plan(source.tensors, target.tensors, options)


def _provenance(src: Reader, tgt: Reader, options: TransferOptions, replayed: str | None) -> dict[str, str]:
    rules = [r.text for r in options.rules.renames] + [f"--include {g}" for g in options.rules.include]
    rules += [f"--exclude {g}" for g in options.rules.exclude]
    return {
        "ckptsurgeon.version": __version__,
        "ckptsurgeon.command": "transfer",
        "ckptsurgeon.source": src.path.name,
        "ckptsurgeon.source_sha256": src.content_sha256(),
        "ckptsurgeon.target": tgt.path.name,
        "ckptsurgeon.target_sha256": tgt.content_sha256(),
        "ckptsurgeon.rules": json.dumps(
            {"rules": rules, "map_entries": len(options.rules.name_map), "match": options.match,
             "keep_dtype": options.keep_dtype, "replayed_plan": replayed},
            sort_keys=True,
        ),
    }


def verify_written(path: Path, moves: list[Move]) -> None:
    """Re-read a written checkpoint and check every tensor against what was planned.

    Replaced tensors must hold the source's bytes (after the planned cast), kept ones the target's.
    Raises CheckFailed naming the first tensor that differs.
    """
    from .values import cast_array

    with open_checkpoint(path) as written:
        names = [t.name for t in written.tensors]
        if sorted(names) != sorted(m.out.name for m in moves):
            raise CheckFailed(path, "--verify: the written file does not hold the planned tensors")
        for move in moves:
            info = move.reader[move.name]
            if info.dtype == move.out.dtype:
                expected = move.reader.sha256(move.name)
            else:
                cast, _ = cast_array(move.reader.read(move.name), move.out.dtype)
                expected = hashlib.sha256(cast.tobytes()).hexdigest()
            if written.sha256(move.out.name) != expected or written[move.out.name].shape != move.out.shape:
                raise CheckFailed(
                    path, f"--verify: tensor {move.out.name!r} as written differs from the plan; nothing was written"
                )


def _load_plan(plan_file: Path, src: Reader, tgt: Reader, options: TransferOptions) -> Plan:
    try:
        doc = json.loads(Path(plan_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(plan_file, f"cannot read the plan: {exc}") from exc
    for role, reader in (("source", src), ("target", tgt)):
        if isinstance(doc, dict) and doc.get(f"{role}_digest") != reader.header_digest():
            raise CheckFailed(
                reader.path, f"the {role}'s header no longer matches the saved plan {plan_file}; "
                "names, shapes, dtypes or metadata changed since it was made",
            )
    try:
        return plan_from_dict(doc, src.tensors, tgt.tensors, str(plan_file), options)
    except ValueError as exc:
        raise InputError(plan_file, str(exc)) from exc


def transfer(
    source: str | Path,
    target: str | Path,
    output: str | Path | None = None,
    options: TransferOptions | None = None,
    *,
    dry_run: bool = False,
    count_changes: bool = False,
    output_format_name: str | None = None,
    progress: Progress | None = None,
    save_plan: str | Path | None = None,
    plan_file: str | Path | None = None,
    provenance: bool = False,
    verify: bool = False,
) -> TransferReport:
    """Load ``source``'s weights into ``target`` where names (after the rules) and shapes match; write ``output``.

    The output is a new file, written atomically in the target's format (or the one ``output``'s
    extension names). Raises :class:`TransferFailed` (exit 1) when a requested check fails; then
    nothing is written. With ``dry_run`` only headers are read and nothing is written.

    ``save_plan`` writes the resolved mapping with the inputs' header digests; ``plan_file``
    replays such a mapping instead of applying rules, and refuses inputs whose headers changed.
    ``provenance`` records the tool version, the inputs' sha256 and the rules in the output's
    metadata. ``verify`` re-reads the written file before it is renamed into place.
    """
    options = options or TransferOptions()
    if output is None and not dry_run:
        raise UsageError(None, "an output path is needed (-o OUT), or --dry-run")
    if plan_file is not None and not options.rules.empty:
        raise UsageError(plan_file, "a saved plan is replayed as it is; rename, map and filter rules cannot be added")
    with open_checkpoint(source) as src, open_checkpoint(target) as tgt:
        if plan_file is not None:
            plan_transfer(src, tgt, options)  # the same-file guard
            plan = _load_plan(Path(plan_file), src, tgt, options)
        else:
            plan = plan_transfer(src, tgt, options)
        fmt = None
        if output is not None:
            fmt = output_format(output, output_format_name)
            check_output(output, [*src.files, *tgt.files])
        if save_plan is not None:
            check_output(save_plan, [*src.files, *tgt.files])
        report = TransferReport(
            source=_describe(src), target=_describe(tgt),
            output=None if output is None else {"path": str(output), "format": fmt},
            plan=plan, dry_run=dry_run,
        )
        report.failures = gate_failures(plan)
        if report.failures:
            raise TransferFailed(report)
        if save_plan is not None:
            doc = plan_to_dict(plan, src.header_digest(), tgt.header_digest())
            write_text(save_plan, json.dumps(doc, indent=2, ensure_ascii=False) + "\n", [*src.files, *tgt.files])
        if dry_run or output is None or fmt is None:
            return report
        like = tgt if writes_like(tgt, fmt) else None
        metadata = dict(tgt.metadata)
        if provenance:
            metadata |= _provenance(src, tgt, options, str(plan_file) if plan_file else None)
        from .execute import execute, plan_moves

        moves = plan_moves(plan, src, tgt)
        with atomic_path(output) as tmp:
            writer = writer_for(fmt)(tmp, metadata=metadata, like=like)
            try:
                writer.begin([m.out for m in moves])
                report.outcomes = execute(plan, src, tgt, writer, count_changes=count_changes, progress=progress)
                writer.finish()
            except BaseException:
                writer.abort()
                raise
            if verify:
                verify_written(tmp, moves)
        return report


class RenameFailed(CheckFailed):
    """A rename's checks failed (a rule matched nothing); nothing was written. ``report`` has the table."""

    def __init__(self, report: RenameReport) -> None:
        self.report = report
        super().__init__(report.path, "; ".join(report.failures))


def rename(
    path: str | Path,
    output: str | Path | None,
    rules: Rules,
    *,
    dry_run: bool = False,
    allow_unused_rules: bool = False,
    output_format_name: str | None = None,
    progress: Progress | None = None,
) -> RenameReport:
    """Write a copy of a checkpoint with its tensors renamed by ``rules``; bytes, dtypes and metadata stay.

    ``--include`` / ``--exclude`` choose which tensors are written. HDF5 Keras files keep the layout
    Keras needs (the writer puts each renamed dataset where the old one was). Two names renamed onto
    one raise CheckFailed naming both; a rule that matches nothing fails unless allowed.
    """
    if output is None and not dry_run:
        raise UsageError(None, "an output path is needed (-o OUT), or --dry-run")
    with open_checkpoint(path) as reader:
        with _blame(path):
            renamed = apply_rules([t.name for t in reader.tensors], rules)
        names = [(old, new) for old, new in renamed.mapping.items()]
        fmt = None
        if output is not None:
            fmt = output_format(output, output_format_name)
            check_output(output, reader.files)
        report = RenameReport(
            path=str(path), format=reader.format,
            output=None if output is None else {"path": str(output), "format": fmt},
            renamed=renamed, names=names, dry_run=dry_run,
        )
        unused = renamed.unused()
        if unused and not allow_unused_rules:
            report.failures.append(
                f"{len(unused)} rule(s) matched no tensor name: {'; '.join(unused)} (--allow-unused-rules accepts that)"
            )
        if not names:
            report.failures.append("no tensor is left to write after the filters")
        if report.failures:
            raise RenameFailed(report)
        if dry_run or output is None or fmt is None:
            return report
        from .execute import Move, copy_tensors

        moves = [Move(TensorSpec(new, reader[old].shape, reader[old].dtype), reader, old) for old, new in names]
        like = reader if writes_like(reader, fmt) else None
        with atomic_path(output) as tmp:
            writer = writer_for(fmt)(tmp, metadata=reader.metadata, like=like)
            try:
                writer.begin([m.out for m in moves], origins={new: old for old, new in names if old != new})
                copy_tensors(moves, writer, progress=progress)
                writer.finish()
                report.layout_fallback = writer.layout_fallback
            except BaseException:
                writer.abort()
                raise
        return report
