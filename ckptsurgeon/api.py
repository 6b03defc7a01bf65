"""The library's entry points; the CLI is a thin layer over these. Never imports rich or typer."""

from __future__ import annotations

import fnmatch
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_path, check_output
from .errors import CheckFailed, UsageError
from .execute import Progress, execute, specs
from .formats import format_family, open_checkpoint, output_format, writer_class
from .formats.base import Reader
from .plan import Plan, TransferOptions, build_plan, gate_failures
from .report import TransferReport
from .rules import Rules
from .tensors import TensorInfo

__all__ = [
    "Inspection", "Plan", "Rules", "TransferFailed", "TransferOptions", "TransferReport",
    "inspect", "open_checkpoint", "plan_transfer", "transfer",
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


def plan_transfer(source: Reader, target: Reader, options: TransferOptions) -> Plan:
    """The transfer plan from two opened checkpoints' metadata (nothing is read beyond headers)."""
    if _same_input(source, target):
        raise UsageError(source.path, f"source and target are the same file ({target.path})",
                         hint="a transfer needs two different checkpoints")
    return build_plan(source.tensors, target.tensors, options)


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
) -> TransferReport:
    """Load ``source``'s weights into ``target`` where names (after the rules) and shapes match; write ``output``.

    The output is a new file, written atomically in the target's format (or the one ``output``'s
    extension names). Raises :class:`TransferFailed` (exit 1) when a requested check fails; then
    nothing is written. With ``dry_run`` only headers are read and nothing is written.
    """
    options = options or TransferOptions()
    if output is None and not dry_run:
        raise UsageError(None, "an output path is needed (-o OUT), or --dry-run")
    with open_checkpoint(source) as src, open_checkpoint(target) as tgt:
        plan = plan_transfer(src, tgt, options)
        fmt = None
        if output is not None:
            fmt = output_format(output, output_format_name)
            check_output(output, [*src.files, *tgt.files])
        report = TransferReport(
            source=_describe(src), target=_describe(tgt),
            output=None if output is None else {"path": str(output), "format": fmt},
            plan=plan, dry_run=dry_run,
        )
        report.failures = gate_failures(plan)
        if report.failures:
            raise TransferFailed(report)
        if dry_run or output is None or fmt is None:
            return report
        like = tgt if format_family(tgt) == fmt else None
        with atomic_path(output) as tmp:
            writer = writer_class(fmt)(tmp, metadata=tgt.metadata, like=like)
            try:
                writer.begin(specs(plan))
                report.outcomes = execute(plan, src, tgt, writer, count_changes=count_changes, progress=progress)
                writer.finish()
            except BaseException:
                writer.abort()
                raise
        return report
