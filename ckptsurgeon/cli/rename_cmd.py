"""``ckpt rename FILE -o OUT``: rename tensors offline; bytes, dtypes, metadata and Keras layout stay."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .options import (
    AddPrefixOpt,
    AllowUnusedRulesOpt,
    ConcatOpt,
    ConfigOpt,
    DecKeyFileOpt,
    DecModeOpt,
    DictOpt,
    DropMetadataOpt,
    DryRunOpt,
    EncKeyFileOpt,
    EncModeOpt,
    ExcludeOpt,
    FolderForceOpt,
    FolderShardSizeOpt,
    FormatOpt,
    IncludeOpt,
    JobsOpt,
    JsonOpt,
    MapOpt,
    MarkdownOpt,
    NoClobberOpt,
    OutputDirOpt,
    OutputOpt,
    PresetOpt,
    QuietOpt,
    RenameOpt,
    SetMetadataOpt,
    SplitOpt,
    StripPrefixOpt,
    TransformOpt,
    encryption,
    open_options,
    output_path,
)


@app.command()
def rename(
    path: Annotated[Path, typer.Argument(help="The checkpoint to rename (never modified).")],
    output: OutputOpt = None,
    output_dir: OutputDirOpt = None,
    force: FolderForceOpt = False,
    jobs: JobsOpt = 4,
    shard_size: FolderShardSizeOpt = None,
    no_clobber: NoClobberOpt = False,
    rename: RenameOpt = None,
    strip_prefix: StripPrefixOpt = None,
    add_prefix: AddPrefixOpt = None,
    map_file: MapOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    preset: PresetOpt = None,
    transform: TransformOpt = None,
    split: SplitOpt = None,
    concat: ConcatOpt = None,
    allow_unused_rules: AllowUnusedRulesOpt = False,
    set_metadata: SetMetadataOpt = None,
    drop_metadata: DropMetadataOpt = None,
    dry_run: DryRunOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="List unchanged names too.")] = False,
    markdown: MarkdownOpt = False,
    format_: FormatOpt = None,
    dict_path: DictOpt = None,
    dec_key_file: DecKeyFileOpt = None,
    dec_mode: DecModeOpt = None,
    enc_key_file: EncKeyFileOpt = None,
    enc_mode: EncModeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write a copy of PATH with its tensors renamed by the rules (the same rule options as transfer).

    Prints an old name -> new name table. --include/--exclude choose which tensors are written. Two names
    renamed onto one, or a rule that matches nothing, is an error (exit 1) and nothing is written.
    """
    from .. import api
    from ..api import Rules
    from ..metadata_edit import MetadataEdits

    out = output_path(output, output_dir)
    api.check_distinct([("-o", out)], [("PATH", path), ("--map", map_file), ("--config", config)])
    rules = Rules.from_options(rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix, map_file=map_file,
                               include=include, exclude=exclude)
    rules, target_rules, transforms, _ = api.transform_options(rules, preset=preset, transform=transform, split=split,
                                                               concat=concat)
    if target_rules:
        raise typer.BadParameter(f"{', '.join(preset or [])} renames a target's names: it needs ckpt transfer", param_hint="--preset")
    if out is None and not dry_run:
        raise typer.BadParameter("an output path is needed, or --dry-run", param_hint="-o")
    from . import render

    progress = render.progress_bar() if not (json_ or quiet or dry_run) and sys.stderr.isatty() else None
    with progress or render.null_context():
        result = api.rename(path, out, rules, force=force, shard_size=shard_size, jobs=jobs, dry_run=dry_run, allow_unused_rules=allow_unused_rules,
                            output_format_name=format_, progress=progress.update if progress else None,
                            no_clobber=no_clobber, hash_output=json_,
                            open_options=open_options(dict_path, dec_key_file=dec_key_file, dec_mode=dec_mode),
                            encrypt=encryption(enc_key_file, enc_mode), transforms=transforms,
                            metadata_edits=MetadataEdits.from_options(set_metadata, drop_metadata))  # the sha256 is for the JSON report
    if json_:
        render.print_json(result.to_dict())
    elif quiet:
        print(result.verdict)
    else:
        render.render_rename(result, render.console(), show_all=all_, markdown=markdown)
    if not result.ok:
        raise api.CheckFailed.of(result.failed_checks, report=result, path=path)
