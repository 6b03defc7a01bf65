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
    out.print(Text(f"{result.path} ({result.format}{files})", style="bold"))
    out.print(inspect_table(result, collapse=collapse))
    out.print(totals_text(result))
    if result.metadata:
        meta = Table(title="metadata", title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
        meta.add_column("key", style="bold", no_wrap=True)
        meta.add_column("value", overflow="fold")
        for key, value in result.metadata.items():
            meta.add_row(key, value if len(value) <= 200 else value[:197] + "...")
        out.print(meta)
