"""The ``ckpt convert`` table: tensors by dtype change, bytes in and out, shards, overflow, the verdict."""

from __future__ import annotations

from rich.console import Console
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

from ..commands.convert import ConvertReport
from .render import count

SHOWN_SHARDS = 8
SHOWN_NAMES = 5


def convert_table(report: ConvertReport) -> Table:
    """One row per dtype change (``F32 -> BF16``) or kept dtype, and a total row."""
    rows = report.dtype_rows()
    with_overflow = report.dtype is not None
    table = Table(show_lines=False)
    table.add_column("dtype", no_wrap=True)
    table.add_column("tensors", justify="right", no_wrap=True)
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("bytes in", justify="right", no_wrap=True)
    table.add_column("bytes out", justify="right", no_wrap=True)
    if with_overflow:
        table.add_column("overflow", justify="right", no_wrap=True)
    for r in rows:
        label = Text(r.label, style="cyan" if r.dtype_in != r.dtype_out else "")
        cells: list[Text | str] = [label, count(r.tensors), count(r.parameters), decimal(r.bytes_in), decimal(r.bytes_out)]
        if with_overflow:
            cells.append(Text(count(r.overflow), style="yellow" if r.overflow else ""))
        table.add_row(*cells)
    if len(rows) > 1:
        s = report.summary
        table.add_section()
        cells = [Text("total", style="bold"), count(s["tensors"]), count(s["parameters"]),
                 decimal(s["bytes_in"]), decimal(s["bytes_out"])]
        if with_overflow:
            cells.append(count(s["overflow_values"]))
        table.add_row(*cells)
    return table


def _names(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def render_convert(report: ConvertReport, out: Console) -> None:
    src, dst = report.input, report.output
    files = f", {len(src['files'])} files" if len(src["files"]) > 1 else ""
    shards = f", {len(report.shards)} shards" if len(report.shards) > 1 else ", 1 shard" if report.shards else ""
    header = f"{src['path']} ({src['format']}{files}) => {dst['path']} ({dst['format']}{shards})"
    if report.dry_run:
        header += " [dry run: nothing written]"
    out.print(Text(header, style="bold"), soft_wrap=True)
    out.print(convert_table(report))
    for shard in report.shards[:SHOWN_SHARDS]:
        n = shard["tensors"]
        out.print(f"shard {shard['name']}: {count(n)} tensor{'s' if n != 1 else ''}, {decimal(shard['bytes'])}")
    if len(report.shards) > SHOWN_SHARDS:
        out.print(f"... and {len(report.shards) - SHOWN_SHARDS} more shards")
    for glob in report.filters:
        out.print(f"{glob.kind} {glob.glob!r}: {count(glob.matches)} tensor{'s' if glob.matches != 1 else ''}")
    if report.excluded:
        out.print(f"excluded tensors ({len(report.excluded)}): {_names(report.excluded)}")
    for group in report.tied:
        out.print(f"shared storage: {_names(group)} are views of one storage in the input; each is written with its own copy")
    overflows = [t for t in report.tensors if t.overflow]
    for t in overflows[:10]:
        out.print(Text(f"overflow: {t.overflow:,} values of {t.name} did not fit {t.dtype_out}", style="yellow"))
    if len(overflows) > 10:
        out.print(Text(f"overflow in {len(overflows) - 10} more tensors", style="yellow"))
    if report.metadata:
        out.print(f"metadata carried: {_names(list(report.metadata))}", soft_wrap=True)
    if "weights" in report.output and report.files:
        from .render import folder_notes

        for line, style in folder_notes(report.output | {"files": report.files}):
            out.print(Text(line, style=style), soft_wrap=True)
    out.print(Text(report.verdict, style="bold"), soft_wrap=True)
