"""All rich rendering lives here: tables for people, plain text when there is no terminal."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

from ..api import Inspection
from ..layers import group_layers, relative_name
from ..report import TransferReport
from ..tensors import TensorInfo


def console(file: TextIO | None = None, width: int | None = None) -> Console:
    """A console on stdout: colour on a terminal, plain text otherwise (and with NO_COLOR)."""
    file = file or sys.stdout
    is_tty = file.isatty()
    if width is None and not is_tty and not os.environ.get("COLUMNS"):
        width = 120
    return Console(
        file=file,
        width=width,
        no_color=bool(os.environ.get("NO_COLOR")) or not is_tty,
        color_system="auto" if is_tty else None,
        highlight=False,
        soft_wrap=False,
    )


def print_json(doc: Any, file: TextIO | None = None) -> None:
    (file or sys.stdout).write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def count(n: int) -> str:
    return f"{n:,}"


def inspect_table(result: Inspection, *, collapse: bool = True) -> Table:
    table = Table(show_lines=False)
    table.add_column("layer", overflow="fold")
    table.add_column("tensor", overflow="fold")
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("bytes", justify="right", no_wrap=True)

    def signature(t: TensorInfo) -> tuple[str, tuple[int, ...], str]:
        return relative_name(t.name, t.layer), t.shape, t.dtype

    groups = group_layers(result.tensors, lambda t: t.layer, signature, collapse=collapse)
    for i, group in enumerate(groups):
        if i:
            table.add_section()
        label = Text(group.name or "(top level)", style="bold")
        if group.count > 1:
            label.append(f"  ×{group.count}", style="dim")
        for j, t in enumerate(group.rows):
            table.add_row(
                label if j == 0 else "",
                relative_name(t.name, t.layer),
                shape_text(t.shape),
                t.dtype,
                count(t.numel * group.count),
                decimal(t.nbytes * group.count),
            )
    return table


def totals_text(result: Inspection) -> Text:
    tot = result.totals
    dtypes = ", ".join(f"{code} ({n})" for code, n in tot["dtypes"].items()) or "none"
    return Text(
        f"{count(tot['tensors'])} tensors, {count(tot['parameters'])} parameters, "
        f"{decimal(tot['bytes'])}; dtypes: {dtypes}"
    )


def render_inspect(result: Inspection, out: Console, *, collapse: bool = True) -> None:
    files = f", {len(result.files)} files" if len(result.files) > 1 else ""
    out.print(Text(f"{result.path} ({result.format}{files})", style="bold"), soft_wrap=True)
    out.print(inspect_table(result, collapse=collapse))
    out.print(totals_text(result))
    if result.metadata:
        meta = Table(title="metadata", title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
        meta.add_column("key", style="bold", no_wrap=True)
        meta.add_column("value", overflow="fold")
        for key, value in result.metadata.items():
            meta.add_row(key, value if len(value) <= 200 else value[:197] + "...")
        out.print(meta)


# --- transfer ------------------------------------------------------------------------------------

STATUS_STYLE = {"replaced": "green", "cast": "cyan", "partly": "yellow", "kept": "red", "added": "blue"}


def transfer_table(report: TransferReport, *, collapse: bool = True) -> Table:
    rows = report.layer_rows(collapse)
    with_changes = any(r.changed is not None for r in rows)
    table = Table(show_lines=False)
    table.add_column("layer", overflow="fold")
    table.add_column("tensors", justify="right", no_wrap=True)
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("replaced", justify="right", no_wrap=True)
    if with_changes:
        table.add_column("changed", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for r in rows:
        name = Text(r.name)
        if len(r.layers) > 1:
            name.append(f"  ×{len(r.layers)}", style="dim")
        cells: list[Any] = [name, count(r.tensors), count(r.parameters), count(r.replaced_parameters)]
        if with_changes:
            cells.append(count(r.changed) if r.changed is not None else "")
        cells += [Text(r.status, style=STATUS_STYLE.get(r.status, "")), "; ".join(r.reasons)]
        table.add_row(*cells)
    return table


def _collapsed_names(names: list[str], shown: int = 12) -> str:
    groups = group_layers(names, lambda n: n, lambda n: None)
    parts = [g.name + (f" ×{g.count}" if g.count > 1 else "") for g in groups]
    more = f" and {len(parts) - shown} more" if len(parts) > shown else ""
    return ", ".join(parts[:shown]) + more


def render_transfer(report: TransferReport, out: Console, *, collapse: bool = True) -> None:
    src, tgt = report.source, report.target
    header = f"{src['path']} ({src['format']}) -> {tgt['path']} ({tgt['format']})"
    if report.output:
        header += f" => {report.output['path']} ({report.output['format']})"
    out.print(Text(header, style="bold"), soft_wrap=True)
    out.print(transfer_table(report, collapse=collapse))
    plan = report.plan
    if plan.prefix_fix is not None:
        out.print(f"prefix: {plan.prefix_fix.text}")
    for rule, n in plan.renamed.rule_counts:
        out.print(f"rule {rule.text}: {n:,} name{'s' if n != 1 else ''}")
    for text, n in plan.renamed.glob_counts:
        out.print(f"filter {text}: {n:,} name{'s' if n != 1 else ''}")
    if plan.options.rules.name_map:
        out.print(f"map: {plan.renamed.map_used} of {len(plan.options.rules.name_map)} entries used")
    overflows = [(s.name, o.overflow) for s in plan.steps if (o := report.outcomes.get(s.name)) and o.overflow]
    for name, n in overflows[:10]:
        out.print(Text(f"overflow: {n:,} values of {name} did not fit the new dtype", style="yellow"))
    if plan.unused_sources:
        out.print(f"unused source tensors ({len(plan.unused_sources)}): {_collapsed_names(list(plan.unused_sources))}")
    if report.hints:
        shown = ", ".join(f"{t!r} <- {h!r}" for t, h in report.hints[:5])
        more = f" and {len(report.hints) - 5} more" if len(report.hints) > 5 else ""
        out.print(f"did you mean: {shown}{more}")
    if plan.excluded_sources:
        out.print(f"excluded source tensors ({len(plan.excluded_sources)}): "
                  f"{_collapsed_names([n for n, _ in plan.excluded_sources])}")
    for failure in report.failures:
        out.print(Text(f"failed: {failure}", style="bold red"))
    out.print(Text(report.verdict, style="bold"), soft_wrap=True)


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def null_context() -> _NullContext:
    return _NullContext()


class ByteProgress:
    """A byte-sized progress bar on stderr, for terminals only."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True,
        )
        self._task = self._progress.add_task("writing", total=None)

    def __enter__(self) -> ByteProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)


def progress_bar() -> ByteProgress:
    return ByteProgress()
