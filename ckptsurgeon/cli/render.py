"""All rich rendering lives here: tables for people, plain text when there is no terminal, Markdown on request.

A table is first built as a :class:`Grid` (columns and rows of plain strings, with a style name per
cell), then drawn with rich or written as Markdown, so both always show the same facts.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, TextIO

from rich.filesize import decimal

from ..layers import group_layers, name_template, pattern_name, relative_name
from ..tensors import gc_paused
from .errors import failure_line

if TYPE_CHECKING:  # rich's console and tables are imported where they are used: JSON output needs neither
    from rich.console import Console
    from rich.table import Table

    from ..commands.inspect import Inspection
    from ..commands.rename import RenameReport
    from ..commands.transfer import TransferReport
    from ..tensors import TensorInfo


# Without a terminal (a pipe, a CI log) nothing is wrapped: a line is as long as its table needs, so a
# tensor name is never broken across lines and a grep for it finds it. Tables are not expanded, so
# this is a bound that no table reaches, not a width any line is padded to.
PIPE_WIDTH = 1_000_000


def console(file: TextIO | None = None, width: int | None = None) -> Console:
    """A console on stdout: colour on a terminal, plain text otherwise (and with NO_COLOR).

    On a terminal, tables fit its width (wrapping long names); without one, nothing wraps.
    """
    from rich.console import Console

    file = file or sys.stdout
    is_tty = file.isatty()
    if width is None and not is_tty:
        width = PIPE_WIDTH
    return Console(
        file=file,
        width=width,
        no_color=bool(os.environ.get("NO_COLOR")) or not is_tty,
        color_system="auto" if is_tty else None,
        highlight=False,
        soft_wrap=False,
    )


def print_json(doc: Any, file: TextIO | None = None) -> None:
    """``json.dumps(doc, indent=2)`` written as it is encoded, never as one string (200,000 tensors: ~100 MB)."""
    out = file or sys.stdout
    out.writelines(json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(doc))
    out.write("\n")


def shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def count(n: int) -> str:
    return f"{n:,}"


# Above this many rows a table is not laid out by rich (whose cost per row is high: 200,000 rows take
# minutes and gigabytes) but drawn directly by Grid.write_plain: the same boxes, columns sized to fit.
RICH_MAX_ROWS = 2000

# --- grids: one table, two renderings ------------------------------------------------------------


@dataclass
class Column:
    header: str
    right: bool = False
    wrap: bool = False


@dataclass
class Grid:
    columns: list[Column]
    rows: list[list[str]] = field(default_factory=list)
    styles: list[list[str]] = field(default_factory=list)
    sections: set[int] = field(default_factory=set)  # row indexes that start a new section

    def add(self, cells: list[str], styles: list[str] | None = None, *, section: bool = False) -> None:
        if section and self.rows:
            self.sections.add(len(self.rows))
        self.rows.append(cells)
        self.styles.append(styles or [""] * len(cells))

    def to_rich(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        table = Table(show_lines=False)
        for c in self.columns:
            table.add_column(c.header, justify="right" if c.right else "left", no_wrap=not c.wrap,
                             overflow="fold" if c.wrap else "ellipsis")
        for i, (cells, styles) in enumerate(zip(self.rows, self.styles, strict=True)):
            if i in self.sections:
                table.add_section()
            table.add_row(*(Text(cell, style=style) for cell, style in zip(cells, styles, strict=True)))
        return table

    def write_plain(self, file: IO[str]) -> None:
        """Draw the table with rich's box characters but without rich's layout: columns as wide as their
        widest cell, nothing wrapped or styled, written as it goes. Linear in the number of cells."""
        from rich.cells import cell_len

        def width(text: str) -> int:
            return len(text) if text.isascii() else cell_len(text)

        widths = [width(c.header) for c in self.columns]
        for i in range(len(self.columns)):
            column = {cell[i] for cell in self.rows}
            widths[i] = max([widths[i], *map(width, column)])
        rights = [c.right for c in self.columns]

        def rule(left: str, fill: str, mid: str, right: str) -> str:
            return left + mid.join(fill * (w + 2) for w in widths) + right + "\n"

        def line(cells: list[str], bar: str) -> str:
            parts = []
            for cell, w, right in zip(cells, widths, rights, strict=True):
                n = w - (len(cell) if cell.isascii() else cell_len(cell))
                parts.append(" " * n + cell if right else cell + " " * n)
            return f"{bar} " + f" {bar} ".join(parts) + f" {bar}\n"

        file.write(rule("┏", "━", "┳", "┓"))
        file.write(line([c.header for c in self.columns], "┃"))
        file.write(rule("┡", "━", "╇", "┩"))
        section = rule("├", "─", "┼", "┤")
        sections = self.sections
        chunk: list[str] = []
        for i, cells in enumerate(self.rows):
            if i in sections:
                chunk.append(section)
            chunk.append(line(cells, "│"))
            if len(chunk) >= 4096:
                file.write("".join(chunk))
                chunk.clear()
        chunk.append(rule("└", "─", "┴", "┘"))
        file.write("".join(chunk))

    def to_markdown(self) -> str:
        def esc(cell: str) -> str:
            return cell.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(c.header for c in self.columns) + " |",
                 "|" + "|".join("---:" if c.right else "---" for c in self.columns) + "|"]
        lines += ["| " + " | ".join(esc(cell) for cell in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def emit(out: Console, title: str, grid: Grid, notes: list[tuple[str, str]], *, markdown: bool) -> None:
    """Print a title line, the table and notes (text, style); as Markdown when asked."""
    from rich.text import Text

    if markdown:
        body = f"**{title}**\n\n{grid.to_markdown()}"
        if notes:
            body += "\n" + "\n".join(f"- {text}" for text, _ in notes) + "\n"
        out.file.write(body)
        return
    out.print(Text(title, style="bold"), soft_wrap=True)
    if len(grid.rows) > RICH_MAX_ROWS:
        grid.write_plain(out.file)
    else:
        out.print(grid.to_rich())
    for text, style in notes:
        out.print(Text(text, style=style), soft_wrap=True)


# --- inspect -------------------------------------------------------------------------------------


@gc_paused
def inspect_grid(result: Inspection, *, collapse: bool = True) -> Grid:
    grid = Grid([Column("layer", wrap=True), Column("tensor", wrap=True), Column("shape"), Column("dtype"),
                 Column("parameters", right=True), Column("bytes", right=True)])

    def shown(t: TensorInfo) -> str:
        """The name within its layer; a Keras 3 variable's own name, with the path it is stored at."""
        key = result.match_names.get(t.name)
        if key is None:
            return relative_name(t.name, t.layer)
        return f"{relative_name(key, t.layer)}  ({t.name})"

    def signature(t: TensorInfo) -> tuple[str, tuple[int, ...], str]:
        return shown(t), t.shape, t.dtype

    for group in group_layers(result.tensors, lambda t: t.layer, signature, collapse=collapse):
        label = group.name + (f"  ×{group.count}" if group.count > 1 else "")
        for j, t in enumerate(group.rows):
            grid.add(
                [label if j == 0 else "", shown(t), shape_text(t.shape), t.dtype,
                 count(t.numel * group.count), decimal(t.nbytes * group.count)],
                ["bold" if j == 0 else "", "", "", "", "", ""],
                section=j == 0,
            )
    return grid


def typed_text(typed: dict[str, Any]) -> str:
    """A typed metadata value for the table: ``16 (UINT32)``; an array as its type, length and first values."""
    kind, value = typed["type"], typed["value"]
    if isinstance(value, list):
        shown = [v["value"] if isinstance(v, dict) else v for v in value[:8]]
        more = ", ..." if len(value) > 8 else ""
        return f"{kind} of {len(value)}: {json.dumps(shown)[1:-1]}{more}"
    return f"{value if isinstance(value, str) else json.dumps(value)} ({kind})"


def render_inspect(result: Inspection, out: Console, *, collapse: bool = True, markdown: bool = False) -> None:
    files = f", {len(result.files)} files" if len(result.files) > 1 else ""
    tot = result.totals
    dtypes = ", ".join(f"{code} ({n})" for code, n in tot["dtypes"].items()) or "none"
    notes = [(f"{count(tot['tensors'])} tensors, {count(tot['parameters'])} parameters, "
              f"{decimal(tot['bytes'])}; dtypes: {dtypes}", "")]
    for key, value in result.metadata.items():
        typed = result.metadata_typed.get(key)
        if typed is not None:
            value = typed_text(typed)
        notes.append((f"metadata {key}: {value if len(value) <= 200 else value[:197] + '...'}", "dim"))
    layout = f", {result.layout}" if result.layout else ""
    emit(out, f"{result.path} ({result.format}{layout}{files})", inspect_grid(result, collapse=collapse), notes,
         markdown=markdown)


# --- transfer ------------------------------------------------------------------------------------

STATUS_STYLE = {"replaced": "green", "cast": "cyan", "partly": "yellow", "kept": "red", "added": "blue"}


def transfer_grid(report: TransferReport, *, collapse: bool = True) -> Grid:
    rows = report.layer_rows(collapse)
    with_changes = any(r.changed is not None for r in rows)
    columns = [Column("layer", wrap=True), Column("tensors", right=True), Column("parameters", right=True),
               Column("replaced", right=True)]
    if with_changes:
        columns.append(Column("changed", right=True))
    columns += [Column("status"), Column("reason", wrap=True)]
    grid = Grid(columns)
    for r in rows:
        cells = [r.name + (f"  ×{len(r.layers)}" if len(r.layers) > 1 else ""), count(r.tensors),
                 count(r.parameters), count(r.replaced_parameters)]
        if with_changes:
            cells.append(count(r.changed) if r.changed is not None else "")
        cells += [r.status, "; ".join(r.reasons)]
        styles = [""] * len(cells)
        styles[-2] = STATUS_STYLE.get(r.status, "")
        grid.add(cells, styles)
    return grid


def _collapsed_names(names: list[str], shown: int = 12) -> str:
    groups = group_layers(names, lambda n: n, lambda n: None)
    parts = [g.name + (f" ×{g.count}" if g.count > 1 else "") for g in groups]
    more = f" and {len(parts) - shown} more" if len(parts) > shown else ""
    return ", ".join(parts[:shown]) + more


def transfer_notes(report: TransferReport) -> list[tuple[str, str]]:
    plan = report.plan
    notes: list[tuple[str, str]] = []
    if plan.prefix_fix is not None:
        notes.append((f"prefix: {plan.prefix_fix.text}", ""))
    optional = plan.renamed.optional
    counted = list(plan.renamed.rule_counts) + (list(plan.target_renamed.rule_counts) if plan.target_renamed else [])
    for preset in plan.options.transforms.presets:
        mine = [n for rule, n in counted if rule.text.startswith(f"--preset {preset} ")]
        side = "target " if plan.target_renamed and plan.target_renamed.rule_counts and not plan.renamed.rule_counts else ""
        notes.append((f"preset {preset}: {sum(1 for n in mine if n)} of {len(mine)} {side}rename rules used", ""))
    for rule, n in plan.renamed.rule_counts:
        if rule.text not in optional:
            notes.append((f"rule {rule.text}: {n:,} name{'s' if n != 1 else ''}", ""))
    for text, n in plan.renamed.glob_counts:
        if text not in optional:
            notes.append((f"filter {text}: {n:,} name{'s' if n != 1 else ''}", ""))
    for text, n in plan.transform_counts:
        notes.append((f"transform {text}: {n:,} tensor{'s' if n != 1 else ''}", ""))
    for text, n in plan.target_glob_counts:
        notes.append((f"filter {text}: {n:,} name{'s' if n != 1 else ''}", ""))
    notes += [(line, "") for line in report.on_purpose_notes()]
    if plan.options.rules.name_map:
        notes.append((f"map: {plan.renamed.map_used} of {len(plan.options.rules.name_map)} entries used", ""))
    overflows = [(s.name, o.overflow) for s in plan.steps if (o := report.outcomes.get(s.name)) and o.overflow]
    for name, n in overflows[:10]:
        notes.append((f"overflow: {n:,} values of {name} did not fit the new dtype", "yellow"))
    if plan.unused_sources:
        notes.append((f"unused source tensors ({len(plan.unused_sources)}): "
                      f"{_collapsed_names(list(plan.unused_sources))}", ""))
    hints = report.hints
    if plan.prefix_hint is not None:  # one rule says it better than a list of pairs that differ by it
        notes.append((f"did you mean: {plan.prefix_hint.suggestion}", ""))
    elif hints:
        shown = ", ".join(f"{t!r} <- {h!r}" for t, h in hints[:5])
        more = f" and {len(hints) - 5} more" if len(hints) > 5 else ""
        notes.append((f"did you mean: {shown}{more}", ""))
    if plan.excluded_sources:
        notes.append((f"excluded source tensors ({len(plan.excluded_sources)}): "
                      f"{_collapsed_names([n for n, _ in plan.excluded_sources])}", ""))
    notes += _layout_notes((report.output or {}).get("layout"))
    notes += folder_notes(report.output)
    notes += [(f"warning: {line}", "yellow") for line in report.warnings]
    notes += [(f"failed: {failure_line(f)}", "bold red") for f in report.failed_checks]  # each names its file
    notes.append((report.verdict, "bold"))
    return notes


def folder_notes(output: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What a folder output (-o DIR/) holds: how many files, its weights, the weight copies not carried."""
    if not output or "files" not in output or "weights" not in output:
        return []
    notes = [(f"folder: {len(output['files'])} files written to {output['path']}, the weights in {output['weights']}", "")]
    if output.get("skipped"):
        notes.append((f"folder: not copied (other copies of the old weights, a clone's .git): "
                      f"{', '.join(output['skipped'])}", "yellow"))
    return notes


def _layout_notes(layout: dict[str, Any] | None) -> list[tuple[str, str]]:
    """How the output followed the target: updated in place, tied tensors, or why it could not."""
    if not layout:
        return []
    notes: list[tuple[str, str]] = []
    if layout["updated"]:
        notes.append(("layout: the target updated; everything else it holds is carried through", ""))
    if layout["fallback"]:
        notes.append((f"layout: written as a plain state dict, not like the target: {layout['fallback']}", "yellow"))
    for name, other in layout["follows"].items():
        notes.append((f"tied: {name} shares its storage with {other} in the target and holds its new values", "yellow"))
    notes += [(f"layout: {text}", "yellow") for text in layout["notes"]]
    return notes


def render_transfer(report: TransferReport, out: Console, *, collapse: bool = True, markdown: bool = False) -> None:
    src, tgt = report.source, report.target
    title = f"{src['path']} ({src['format']}) -> {tgt['path']} ({tgt['format']})"
    if report.output:
        title += f" => {report.output['path']} ({report.output['format']})"
    emit(out, title, transfer_grid(report, collapse=collapse), transfer_notes(report), markdown=markdown)


# --- progress ------------------------------------------------------------------------------------


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
        from rich.console import Console
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


# --- rename --------------------------------------------------------------------------------------


def _collapsed_pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
    """Collapse ``blocks.0.ffn -> blocks.0.mlp``, ``blocks.1.ffn -> blocks.1.mlp`` ... into one pattern row."""
    groups: dict[tuple[str, str], list[tuple[int, ...]]] = {}
    order: list[tuple[str, str]] = []
    singles: dict[tuple[str, str], tuple[str, str]] = {}
    for old, new in pairs:
        (t_old, n_old), (t_new, n_new) = name_template(old), name_template(new)
        key = (t_old, t_new) if n_old and n_old == n_new else (old, new)
        if key not in groups:
            groups[key] = []
            order.append(key)
            singles[key] = (old, new)
        groups[key].append(n_old)
    rows = []
    for key in order:
        numbers = groups[key]
        if len(numbers) == 1:
            rows.append((*singles[key], 1))
        else:
            rows.append((pattern_name(key[0], numbers), pattern_name(key[1], numbers), len(numbers)))
    return rows


def render_rename(report: RenameReport, out: Console, *, show_all: bool = False, markdown: bool = False) -> None:
    grid = Grid([Column("old name", wrap=True), Column("new name", wrap=True), Column("tensors", right=True)])
    pairs = report.names if show_all else [(o, n) for o, n in report.names if o != n]
    for old, new, n in _collapsed_pairs(pairs):
        grid.add([old, new, count(n)], ["", "green" if old != new else "", ""])
    notes = [(f"rule {r.text}: {n:,} name{'s' if n != 1 else ''}", "") for r, n in report.renamed.rule_counts]
    notes += [(f"filter {text}: {n:,} name{'s' if n != 1 else ''}", "") for text, n in report.renamed.glob_counts]
    if report.renamed.excluded:
        notes.append((f"left out ({len(report.renamed.excluded)}): "
                      f"{_collapsed_names(list(report.renamed.excluded))}", ""))
    if report.layout_fallback:
        notes.append((f"layout: the Keras layout could not follow these renames ({report.layout_fallback}); "
                      "tensors were written at their new paths without it", "yellow"))
    notes += folder_notes(report.output)
    notes += [(f"failed: {failure_line(f, report.path)}", "bold red") for f in report.failed_checks]
    notes.append((report.verdict, "bold"))
    title = f"{report.path} ({report.format})"
    if report.output:
        title += f" => {report.output['path']} ({report.output['format']})"
    emit(out, title, grid, notes, markdown=markdown)
