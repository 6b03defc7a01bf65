"""``ckpt diff A B``: which tensors differ between two checkpoints, and by how much."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .options import (
    AddPrefixOpt,
    AllowUnusedRulesOpt,
    ConfigOpt,
    DecKeyFileOpt,
    DecModeOpt,
    DictOpt,
    ExcludeOpt,
    IncludeOpt,
    JsonOpt,
    MapOpt,
    MarkdownOpt,
    QuietOpt,
    RenameOpt,
    StripPrefixOpt,
    TfNamesOpt,
    open_options,
)


@app.command("diff")
def diff_command(
    a: Annotated[Path, typer.Argument(metavar="A", help="The first checkpoint; the rename and filter rules apply to its names.")],
    b: Annotated[Path, typer.Argument(metavar="B", help="The second checkpoint, compared under its own names.")],
    rename: RenameOpt = None,
    strip_prefix: StripPrefixOpt = None,
    add_prefix: AddPrefixOpt = None,
    map_file: MapOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    allow_unused_rules: AllowUnusedRulesOpt = False,
    atol: Annotated[
        float, typer.Option("--atol", min=0.0, help="Absolute tolerance: values differ when |a-b| > atol + rtol*|b|.")
    ] = 0.0,
    rtol: Annotated[float, typer.Option("--rtol", min=0.0, help="Relative tolerance (to B's value).")] = 0.0,
    metadata: Annotated[
        bool, typer.Option("--metadata", help="Also compare metadata: a differing key makes the checkpoints differ.")
    ] = False,
    strict_dtypes: Annotated[
        bool, typer.Option("--strict-dtypes",
                           help="A dtype change makes the checkpoints differ even where the values agree.")
    ] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="List equal tensors too; do not collapse repeated blocks.")
    ] = False,
    json_: JsonOpt = False,
    markdown: MarkdownOpt = False,
    quiet: QuietOpt = False,
    dict_path: DictOpt = None,
    dec_key_file: DecKeyFileOpt = None,
    tf_names: TfNamesOpt = "keys",
    dec_mode: DecModeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compare checkpoint A with checkpoint B: tensors only in A or only in B, shape and dtype changes,
    and for tensors of the same shape how many elements differ and the largest |a-b|.

    Values are read one chunk at a time and compared in float64 (integers exactly); NaN equals NaN.
    Byte-identical tensors need no arithmetic. Two tensors of different numeric dtypes are compared
    across dtypes: both sides are cast to the narrower dtype that holds both exactly (F32 vs BF16 or F16
    as F32, F32 vs F64 as F64, F16 vs BF16 as F32; integers to the wider integer, integers with floats as
    F64) and compared with the same --atol/--rtol; the table shows "as F32" and the verdict counts them.
    Without a tolerance a BF16 copy of F32 values differs wherever the rounding changed a value.
    --strict-dtypes makes any dtype change a difference (a BOOL paired with another dtype always is). The rules (--rename, --strip-prefix, --add-prefix, --map, --include,
    --exclude) rewrite A's names to compare checkpoints that name their tensors differently. Two
    Keras 3 files are paired by their variables' Keras names (proj/kernel, as inspect shows them),
    not by the stored paths Keras derives from layer positions; the rules then apply to those names.

    Metadata differences are always shown, but by default only tensor names, shapes, dtypes and
    values decide the result; with --metadata a metadata difference also makes the exit 1.

    Exit 0 when the checkpoints are equal (within the tolerances), 1 when they differ or a rule
    matches nothing, 3 when an input cannot be read.
    """
    if json_ and markdown:
        raise typer.BadParameter("choose one of --json and --markdown", param_hint="--markdown")
    from .. import api
    from ..api import DiffOptions, Rules

    rules = Rules.from_options(rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix, map_file=map_file,
                               include=include, exclude=exclude)
    options = DiffOptions(rules=rules, atol=atol, rtol=rtol, metadata=metadata, allow_unused_rules=allow_unused_rules,
                          strict_dtypes=strict_dtypes)
    result = api.diff(a, b, options, open_options=open_options(dict_path, dec_key_file=dec_key_file, dec_mode=dec_mode, tf_names=tf_names))
    from . import diff_render, render

    if json_:
        render.print_json(result.to_dict())
    elif quiet:
        print(result.verdict)
    elif markdown:
        print(diff_render.diff_markdown(result, all_=all_), end="")
    else:
        diff_render.render_diff(result, render.console(), all_=all_)
    if not result.equal:
        raise typer.Exit(1)
