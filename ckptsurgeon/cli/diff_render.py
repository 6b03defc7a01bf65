"""Rendering for ``ckpt diff`` and ``ckpt verify``: rich tables for people, Markdown for pull requests.

The console comes from :func:`render.console` (colour on a terminal, plain text without one or
with NO_COLOR). Rows are built once as plain strings, so the rich table and the Markdown table
show the same thing.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..commands.diff import DiffResult, TensorDiff
from ..commands.verify import Verification
from ..layers import group_layers
from ..tensors import gc_paused
from .render import RICH_MAX_ROWS, Column, Grid, count, shape_text

CHANGE_STYLE = {
    "only in A": "red", "only in B": "green", "shape": "magenta", "dtype": "cyan", "values": "yellow", "equal": "dim",
}
HEADERS = ("tensor", "change", "A", "B", "differing", "max |a-b|")


@dataclass(frozen=True)
class DiffRow:
    """One line of the diff table: a tensor, or repeated blocks collapsed (counts summed, maxima maxed)."""

    tensor: str
    change: str
    a: str
    b: str
    elements: int = 0
    differing: int | None = None  # None: values not compared
    max_abs: float = 0.0
    nonfinite: int = 0

    def signature(self) -> Hashable:
        return (self.change, self.a, self.b, self.differing is None)

    @property
    def differing_text(self) -> str:
        return "" if self.differing is None else f"{count(self.differing)} of {count(self.elements)}"

    @property
    def max_text(self) -> str:
        if self.differing is None:
            return ""
        text = f"{self.max_abs:.6g}"
        return text + (f" (+{count(self.nonfinite)} NaN/Inf)" if self.nonfinite else "")

    def cells(self) -> tuple[str, str, str, str, str, str]:
        return self.tensor, self.change, self.a, self.b, self.differing_text, self.max_text


def _side(shape: tuple[int, ...], dtype: str) -> str:
    return f"{shape_text(shape)} {dtype}"


def _stored(label: str, *stored: str) -> str:
    """A Keras 3 name with the stored path(s) it stands for: ``proj/kernel  (layers/dense_1/vars/0 → ...)``."""
    paths = list(dict.fromkeys(stored))
    if paths == [label]:
        return label
    return f"{label}  ({' → '.join(paths)})"


def _change(t: TensorDiff) -> str:
    """The change column: the status, with the dtype the values were compared as across dtypes (``equal as F32``)."""
    return t.status if t.compared_as is None or t.status == "dtype" else f"{t.status} as {t.compared_as}"


def _style(change: str) -> str:
    return CHANGE_STYLE.get(change, CHANGE_STYLE.get(change.split(" as ")[0], ""))


def _tensor_row(t: TensorDiff, keras: bool = False) -> DiffRow:
    label = _stored(t.name, t.a_name, t.b_name) if keras else t.name
    row = DiffRow(label, _change(t), _side(t.a_shape, t.a_dtype), _side(t.b_shape, t.b_dtype))
    if t.values is None:
        return row
    v = t.values
    return replace(row, elements=t.numel, differing=v.differing, max_abs=v.max_abs_diff, nonfinite=v.nonfinite)


def _merge(label: str, rows: list[DiffRow]) -> DiffRow:
    first = rows[0]
    if first.differing is None:
        return replace(first, tensor=label)
    return replace(
        first, tensor=label, elements=sum(r.elements for r in rows), differing=sum(r.differing or 0 for r in rows),
        max_abs=max(r.max_abs for r in rows), nonfinite=sum(r.nonfinite for r in rows),
    )


@gc_paused
def diff_rows(result: DiffResult, *, all_: bool = False) -> list[DiffRow]:
    """Changed tensors and tensors compared across dtypes in A's order (every tensor with ``all_``),
    then tensors only in A, only in B.

    Common tensors are shown by the name they are compared under (B's); a tensor only in A shows
    ``stored → renamed`` when the rules renamed it. Two Keras 3 files paired by Keras names show
    those names with the stored paths (A's → B's where they differ). Without ``all_``, repeated blocks with the same
    change, shapes and dtypes collapse into one row (``blocks.{0..3}.attn.weight  ×4``) whose counts
    are summed and whose max |a-b| is the largest of the blocks'.
    """
    keras = result.paired_by == "keras_names"
    rows = [_tensor_row(t, keras) for t in result.tensors if all_ or not t.equal or t.compared_as is not None]
    for info, new in result.only_a:
        key = result.a_match_names.get(info.name, info.name)
        label = key if new == key else f"{key} → {new}"
        rows.append(DiffRow(_stored(label, info.name), "only in A", _side(info.shape, info.dtype), ""))
    rows += [DiffRow(_stored(result.b_match_names.get(info.name, info.name), info.name), "only in B", "",
                     _side(info.shape, info.dtype)) for info in result.only_b]
    groups = group_layers(rows, lambda r: r.tensor, DiffRow.signature, collapse=not all_)
    out = []
    for g in groups:
        label = g.name if g.count == 1 else f"{g.name}  ×{g.count}"
        out.append(_merge(label, [member[0] for member in g.members]))
    return out


def _rule_lines(result: DiffResult) -> list[str]:
    lines = [f"rule {rule.text}: {count(n)} name{'s' if n != 1 else ''}" for rule, n in result.renamed.rule_counts]
    lines += [f"filter {text}: {count(n)} name{'s' if n != 1 else ''}" for text, n in result.renamed.glob_counts]
    if result.options.rules.name_map:
        lines.append(f"map: {result.renamed.map_used} of {len(result.options.rules.name_map)} entries used")
    return lines


def _metadata_rows(result: DiffResult) -> list[tuple[str, str, str]]:
    md = result.metadata
    rows = [(k, va, vb) for k, (va, vb) in md.changed.items()]
    rows += [(k, v, "(absent)") for k, v in md.only_a.items()]
    rows += [(k, "(absent)", v) for k, v in md.only_b.items()]
    return [(k, _short(va), _short(vb)) for k, va, vb in rows]


def _metadata_title(result: DiffResult) -> str:
    return "metadata differences" + ("" if result.options.metadata else " (not compared; --metadata compares them)")


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def diff_table(rows: list[DiffRow]) -> Table:
    table = Table(show_lines=False)
    table.add_column("tensor", overflow="fold")
    table.add_column("change", no_wrap=True)
    table.add_column("A", overflow="fold")
    table.add_column("B", overflow="fold")
    table.add_column("differing", justify="right", no_wrap=True)
    table.add_column("max |a-b|", justify="right", no_wrap=True)
    for r in rows:
        tensor, change, a, b, differing, max_abs = r.cells()
        table.add_row(tensor, Text(change, style=_style(change)), a, b, differing, max_abs)
    return table


def _header(result: DiffResult) -> str:
    a, b = result.a, result.b
    return f"A: {a['path']} ({a['format']}, {count(a['tensors'])} tensors)\n" \
           f"B: {b['path']} ({b['format']}, {count(b['tensors'])} tensors)"


def _unlisted(result: DiffResult, all_: bool) -> str | None:
    equal = sum(1 for t in result.tensors if t.equal and t.compared_as is None)
    if all_ or not equal:
        return None
    return f"{count(equal)} equal tensor{'s' if equal != 1 else ''} not listed (--all lists them)"


def render_diff(result: DiffResult, out: Console, *, all_: bool = False) -> None:
    out.print(Text(_header(result), style="bold"), soft_wrap=True)
    rows = diff_rows(result, all_=all_)
    if len(rows) > RICH_MAX_ROWS:
        grid = Grid([Column("tensor"), Column("change"), Column("A"), Column("B"), Column("differing", right=True),
                     Column("max |a-b|", right=True)])
        for r in rows:
            grid.add(list(r.cells()))
        grid.write_plain(out.file)
    elif rows:
        out.print(diff_table(rows))
    for line in _rule_lines(result):
        out.print(line, soft_wrap=True)
    note = _unlisted(result, all_)
    if note:
        out.print(note, soft_wrap=True)
    if result.hint:
        out.print(Text(f"hint: {result.hint}", style="yellow"), soft_wrap=True)
    meta = _metadata_rows(result)
    if meta:
        out.print(_metadata_title(result), soft_wrap=True)
        table = Table()
        table.add_column("key", style="bold", overflow="fold")
        table.add_column("A", overflow="fold")
        table.add_column("B", overflow="fold")
        for row in meta:
            table.add_row(*row)
        out.print(table)
    style = "bold green" if result.equal else "bold red"
    out.print(Text(result.verdict, style=style), soft_wrap=True)


# --- Markdown -------------------------------------------------------------------------------------


def _md_cell(text: str, code: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("|", "\\|") if not code else text.replace("|", "\\|")
    if code and text and "`" not in text:
        return f"`{text}`"
    return text


def _md_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: tuple[int, ...] = (),
              code: tuple[int, ...] = (0,)) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(c, i in code) for i, c in enumerate(row)) + " |")
    return lines


def diff_markdown(result: DiffResult, *, all_: bool = False) -> str:
    """The diff as GitHub-flavoured Markdown: a header, the table of changes, metadata, the verdict."""
    a, b = result.a, result.b
    lines = [f"**ckpt diff** `{a['path']}` ({a['format']}) vs `{b['path']}` ({b['format']})", ""]
    rows = diff_rows(result, all_=all_)
    if rows:
        lines += _md_table(HEADERS, [r.cells() for r in rows], right=(4, 5))
        lines.append("")
    extra = _rule_lines(result)
    note = _unlisted(result, all_)
    if note:
        extra.append(note)
    if result.hint:
        extra.append(f"hint: {result.hint}")
    if extra:
        lines += [f"- {_md_cell(line)}" for line in extra]
        lines.append("")
    meta = _metadata_rows(result)
    if meta:
        lines.append(_md_cell(_metadata_title(result)) + ":")
        lines.append("")
        lines += _md_table(("key", "A", "B"), meta)
        lines.append("")
    lines.append(f"**{_md_cell(result.verdict)}**")
    return "\n".join(lines) + "\n"


# --- verify ---------------------------------------------------------------------------------------


def _nan_cell(n: int | None) -> str:
    return "" if n is None else count(n)


def render_verify(result: Verification, out: Console, *, all_: bool = False) -> None:
    files = f", {len(result.files)} files" if len(result.files) > 1 else ""
    out.print(Text(f"{result.path} ({result.format}{files})", style="bold"), soft_wrap=True)
    if all_:
        # One ``SHA256  NAME`` line per tensor, the layout of sha256sum: never cropped, easy to grep.
        for t in result.tensors:
            out.print(f"{t.sha256}  {t.name}", soft_wrap=True, markup=False)
    nonfinite = result.nonfinite_tensors
    if nonfinite:
        table = Table(title="tensors with NaN or Inf", title_justify="left", show_footer=True)
        table.add_column("tensor", "total", overflow="fold")
        table.add_column("shape", no_wrap=True)
        table.add_column("dtype", no_wrap=True)
        table.add_column("NaN", count(result.nan_total), justify="right", no_wrap=True)
        table.add_column("Inf", count(result.inf_total), justify="right", no_wrap=True)
        for t in nonfinite:
            table.add_row(t.name, shape_text(t.shape), t.dtype, _nan_cell(t.nan), _nan_cell(t.inf))
        out.print(table)
    if result.renamed is not None:
        for rule, n in result.renamed.rule_counts:
            out.print(f"rule {rule.text}: {count(n)} recorded name{'s' if n != 1 else ''}", soft_wrap=True)
        if result.rules.name_map:
            out.print(f"map: {result.renamed.map_used} of {len(result.rules.name_map)} entries used", soft_wrap=True)
    for text, n in (result.filters.glob_counts if result.filters else ()):
        out.print(f"filter {text}: {count(n)} name{'s' if n != 1 else ''}", soft_wrap=True)
    if result.mismatches:
        table = Table(title=f"differences from {result.hashes_path}", title_justify="left")
        table.add_column("tensor", overflow="fold")
        table.add_column("problem", no_wrap=True, style="red")
        table.add_column("detail", overflow="fold")
        for m in result.mismatches:
            table.add_row(m.name, m.problem, m.detail)
        out.print(table)
    style = "bold green" if result.ok else "bold red"
    out.print(Text(result.verdict, style=style), soft_wrap=True)
