"""``ckpt convert FILE -o OUT``: another format, another float dtype, or Hugging Face shards."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..tensors import FLOAT_CODES
from .app import app
from .options import (
    AllowOverflowOpt,
    AllowUnusedRulesOpt,
    ConfigOpt,
    DecKeyFileOpt,
    DecModeOpt,
    DictOpt,
    DropMetadataOpt,
    DryRunOpt,
    EncKeyFileOpt,
    EncModeOpt,
    ExcludeOpt,
    FailOnNonfiniteOpt,
    FormatOpt,
    IncludeOpt,
    InputPath,
    JsonOpt,
    NoClobberOpt,
    OutputDirOpt,
    OutputOpt,
    QuietOpt,
    SetMetadataOpt,
    encryption,
    open_options,
    output_path,
)

DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", metavar="DTYPE",
                 help=f"Cast floating tensors to this dtype ({', '.join(FLOAT_CODES)}); integers and bools are kept."),
]
ShardSizeOpt = Annotated[
    str | None,
    typer.Option("--shard-size", metavar="SIZE",
                 help="Write sharded safetensors (-o DIR or DIR/model.safetensors.index.json) with shards of at most "
                      "SIZE tensor bytes: 500MB, 2GB (10^9), 2GiB (2^30) or a byte count."),
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="With --shard-size: remove shards of an earlier checkpoint with the same prefix "
                                 "that this run does not overwrite (refused otherwise). A folder into a folder "
                                 "(-o DIR/): replace an existing DIR."),
]


@app.command()
def convert(
    path: InputPath,
    output: OutputOpt = None,
    output_dir: OutputDirOpt = None,
    no_clobber: NoClobberOpt = False,
    format_: FormatOpt = None,
    dtype: DtypeOpt = None,
    shard_size: ShardSizeOpt = None,
    force: ForceOpt = False,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    allow_unused_rules: AllowUnusedRulesOpt = False,
    set_metadata: SetMetadataOpt = None,
    drop_metadata: DropMetadataOpt = None,
    allow_overflow: AllowOverflowOpt = False,
    fail_on_nonfinite: FailOnNonfiniteOpt = False,
    dry_run: DryRunOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    dict_path: DictOpt = None,
    dec_key_file: DecKeyFileOpt = None,
    dec_mode: DecModeOpt = None,
    enc_key_file: EncKeyFileOpt = None,
    enc_mode: EncModeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Convert a checkpoint to another format (-o's extension or --format), keeping names, shapes and bytes.

    --dtype casts floating tensors and counts overflowed values. --shard-size writes Hugging Face shards and an index. Metadata is carried where the output format holds it. The output appears whole, or not at all.
    """
    out = output_path(output, output_dir)
    if out is None:
        raise typer.BadParameter("an output path is needed", param_hint="-o")
    from .. import api
    from ..metadata_edit import MetadataEdits
    from . import render

    api.check_distinct([("-o", out)], [("PATH", path), ("--config", config)])
    show_progress = not (json_ or quiet or dry_run) and sys.stderr.isatty()
    progress = render.progress_bar() if show_progress else None
    with progress or render.null_context():
        report = api.convert(
            path, out, fmt=format_, dtype=dtype, include=include or (), exclude=exclude or (),
            shard_size=shard_size, dry_run=dry_run, force=force, progress=progress.update if progress else None,
            allow_unused_rules=allow_unused_rules, allow_overflow=allow_overflow, fail_on_nonfinite=fail_on_nonfinite,
            no_clobber=no_clobber, hash_output=json_,  # the sha256 is for the JSON report
            open_options=open_options(dict_path, dec_key_file=dec_key_file, dec_mode=dec_mode),
            encrypt=encryption(enc_key_file, enc_mode),
            metadata_edits=MetadataEdits.from_options(set_metadata, drop_metadata),
        )
    if json_:
        render.print_json(report.to_dict())
    elif quiet:
        print(report.verdict)
    else:
        from .convert_render import render_convert

        render_convert(report, render.console())
    if not report.ok:
        raise api.CheckFailed.of(report.failed_checks, report=report, path=path)
