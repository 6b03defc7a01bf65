"""``ckpt rename``: a copy of a checkpoint with its tensors renamed; bytes, dtypes and metadata stay.

:func:`run` plans with :func:`ckptsurgeon.plan.plan_rename` and writes through
:func:`ckptsurgeon.execute.write_checkpoint`, like the input where the output is of its family
(HDF5 Keras files keep the layout Keras needs: each renamed dataset goes where the old one was).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import check_output
from ..errors import CheckFailed, UsageError
from ..formats import open_checkpoint, output_format, writes_like
from ..formats.base import OpenOptions
from ..plan import INPUT, Plan, plan_rename
from ..rules import Renamed, Rules, unused_rules_failure
from ..text import blame, plural

Progress = Callable[[int, int], None]
RENAME_SCHEMA = "ckptsurgeon/rename/1"


@dataclass
class RenameReport:
    """What ``ckpt rename`` did: old name -> new name for every tensor written, and what was dropped."""

    path: str
    format: str
    output: dict[str, Any] | None
    plan: Plan
    dry_run: bool = False
    failures: list[str] = field(default_factory=list)
    layout_fallback: str | None = None  # why a Keras layout could not follow the renames (written plain)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def renamed(self) -> Renamed:
        return self.plan.renamed

    @property
    def names(self) -> list[tuple[str, str]]:
        """(old, new) for every tensor written, in file order."""
        return [(s.origin.name, s.name) for s in self.plan.steps]

    @property
    def summary(self) -> dict[str, int]:
        changed = sum(1 for old, new in self.names if old != new)
        return {"tensors": len(self.names), "renamed": changed, "unchanged": len(self.names) - changed,
                "dropped": len(self.renamed.excluded)}

    @property
    def verdict(self) -> str:
        s = self.summary
        text = f"renamed {s['renamed']} of {s['tensors']} tensors"
        if s["dropped"]:
            text += f"; {plural(s['dropped'], 'tensor')} left out by the filters"
        if self.dry_run:
            text += "; dry run, nothing written"
        elif not self.ok:
            text += "; nothing written"
        return text if self.ok else f"FAILED: {text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RENAME_SCHEMA,
            "path": self.path,
            "format": self.format,
            "output": self.output,
            "dry_run": self.dry_run,
            "tensors": [{"old": old, "new": new, "renamed": old != new} for old, new in self.names],
            "dropped": [{"name": n, "reason": r} for n, r in self.renamed.excluded.items()],
            "rules": [{"rule": r.text, "matches": n} for r, n in self.renamed.rule_counts]
            + [{"rule": text, "matches": n} for text, n in self.renamed.glob_counts],
            "summary": self.summary,
            "layout_fallback": self.layout_fallback,
            "ok": self.ok,
            "failures": self.failures,
            "verdict": self.verdict,
        }


def run(
    path: str | Path,
    output: str | Path | None,
    rules: Rules,
    *,
    dry_run: bool = False,
    allow_unused_rules: bool = False,
    output_format_name: str | None = None,
    progress: Progress | None = None,
    check: bool = False,
    no_clobber: bool = False,
    hash_output: bool = True,
    open_options: OpenOptions | None = None,
) -> RenameReport:
    """Write a copy of a checkpoint with its tensors renamed by ``rules``; bytes, dtypes and metadata stay.

    ``--include`` / ``--exclude`` choose which tensors are written. Two names renamed onto one
    raise CheckFailed naming both. A rule that matches nothing, or filters that leave nothing,
    fail the report (``ok`` False, nothing written; with ``check`` a CheckFailed carrying it).
    ``no_clobber``: never replace an existing file (exit 4), not even one created meanwhile. The
    report's ``output`` records the committed file's size and (with ``hash_output``) its sha256.
    """
    if output is None and not dry_run:
        raise UsageError(None, "an output path is needed (-o OUT), or --dry-run")
    with open_checkpoint(path, open_options) as reader:
        with blame(path):
            plan = plan_rename(reader.tensors, rules)
        fmt = None
        if output is not None:
            fmt = output_format(output, output_format_name)
            check_output(output, reader.files, no_clobber=no_clobber)
        report = RenameReport(
            path=str(path), format=reader.format,
            output=None if output is None else {"path": str(output), "format": fmt},
            plan=plan, dry_run=dry_run,
        )
        unused = plan.renamed.unused()
        if unused and not allow_unused_rules:
            report.failures.append(unused_rules_failure(unused))
        if not plan.steps:
            report.failures.append("no tensor is left to write after the filters")
        if report.failures:
            if check:
                raise CheckFailed(path, "; ".join(report.failures), report=report)
            return report
        if dry_run or output is None or fmt is None:
            return report
        from ..execute import write_checkpoint

        written = write_checkpoint(Path(output), fmt, plan, {INPUT: reader}, metadata=reader.metadata,
                                   like=reader if writes_like(reader, fmt) else None, progress=progress,
                                   no_clobber=no_clobber, hash_files=hash_output)
        report.layout_fallback = written.layout_fallback
        if report.output is not None and written.files:
            report.output |= written.files[-1].summary()
        return report
