"""``ckpt transfer SRC TGT -o OUT``: load a source's weights into a target and show what changed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..match import MATCH_MODES
from .app import app
from .options import (
    AddPrefixOpt,
    AllowOverflowOpt,
    AllowUnusedRulesOpt,
    ConcatOpt,
    ConfigOpt,
    DecKeyFileOpt,
    DecModeOpt,
    DryRunOpt,
    EncKeyFileOpt,
    EncModeOpt,
    ExcludeOpt,
    FailOnNonfiniteOpt,
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
    SplitOpt,
    SrcDictOpt,
    StripPrefixOpt,
    TfNamesOpt,
    TgtDictOpt,
    TransformOpt,
    encryption,
    open_options,
    output_path,
)


@app.command()
def transfer(
    source: Annotated[Path, typer.Argument(help="The checkpoint whose weights are loaded (pretrained).")],
    target: Annotated[Path, typer.Argument(help="The checkpoint that receives them (its names, shapes, layout).")],
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
    resize: Annotated[
        list[str] | None,
        typer.Option("--resize", metavar="'GLOB=MODE'",
                     help="Copy the overlap of a source tensor into a target of another size (same rank); fill the "
                          "rest with keep (the target's values), zero or mean (of the source along the grown axes)."),
    ] = None,
    split: SplitOpt = None,
    concat: ConcatOpt = None,
    invert: Annotated[
        bool, typer.Option("--invert", help="With --plan P.json: run P backwards, SOURCE being P's output and "
                                            "TARGET P's source (names, layouts and splits undone).")
    ] = False,
    allow_lossy: Annotated[
        bool, typer.Option("--allow-lossy", help="With --invert: accept steps that cannot be undone exactly "
                                                 "(a narrowing cast is cast back; what was not carried keeps TARGET's values).")
    ] = False,
    only_target: Annotated[
        list[str] | None, typer.Option("--only-target", metavar="GLOB", help="Replace only target tensors matching a glob.")
    ] = None,
    skip_target: Annotated[
        list[str] | None, typer.Option("--skip-target", metavar="GLOB", help="Never replace target tensors matching a glob.")
    ] = None,
    match: Annotated[
        str, typer.Option("--match", help=f"How names pair up: {', '.join(MATCH_MODES)}.")
    ] = "exact",
    no_auto_prefix: Annotated[
        bool, typer.Option("--no-auto-prefix", help="Do not strip or add wrapper prefixes (module., _orig_mod.) by itself.")
    ] = False,
    keep_dtype: Annotated[bool, typer.Option("--keep-dtype", help="Keep the source's dtype instead of casting.")] = False,
    add_unmatched: Annotated[
        bool, typer.Option("--add-unmatched", help="Also write source tensors whose name the target lacks.")
    ] = False,
    allow_unused_rules: AllowUnusedRulesOpt = False,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Succeed even when nothing is loaded.")] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail unless every target tensor is replaced and every source tensor used.")
    ] = False,
    allow_overflow: AllowOverflowOpt = False,
    fail_on_nonfinite: FailOnNonfiniteOpt = False,
    min_coverage: Annotated[
        float | None, typer.Option("--min-coverage", min=0.0, max=1.0, help="Fail below this share of replaced target parameters.")
    ] = None,
    count_changes: Annotated[
        bool, typer.Option("--count-changes", help="Count the values that actually change, per layer (reads both).")
    ] = False,
    dry_run: DryRunOpt = False,
    report: Annotated[
        Path | None, typer.Option("--report", metavar="FILE.json", help="Also write the report as JSON to a file.")
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="One row per layer; do not collapse repeated blocks.")] = False,
    format_: FormatOpt = None,
    save_plan: Annotated[
        Path | None, typer.Option("--save-plan", metavar="PLAN.json",
                                  help="Write the resolved mapping with the inputs' header digests, to review and replay.")
    ] = None,
    plan: Annotated[
        Path | None, typer.Option("--plan", metavar="PLAN.json",
                                  help="Replay a saved mapping exactly; fails if an input's header changed since.")
    ] = None,
    pin_content: Annotated[
        bool, typer.Option("--pin-content", help="With --plan: also fail if an input's bytes changed since the plan was saved.")
    ] = False,
    provenance: Annotated[
        bool, typer.Option("--provenance", help="Record the tool version, the inputs' sha256 and the rules in the output's metadata.")
    ] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Re-read the output and check every tensor against the plan before it is put in place.")
    ] = False,
    markdown: MarkdownOpt = False,
    src_dict: SrcDictOpt = None,
    tgt_dict: TgtDictOpt = None,
    dec_key_file: DecKeyFileOpt = None,
    tf_names: TfNamesOpt = "keys",
    dec_mode: DecModeOpt = None,
    enc_key_file: EncKeyFileOpt = None,
    enc_mode: EncModeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Load SOURCE's weights into TARGET wherever names (after your rules) and shapes match; write a new -o OUT.

    Every other target tensor keeps its value. Prints a per-layer change table: what was replaced, what was
    kept and why. Exit 1 when nothing loads or a requested check fails; nothing is written then.
    """
    from .. import api
    from ..api import Rules, TransferOptions

    if match not in MATCH_MODES:
        raise typer.BadParameter(f"choose one of {', '.join(MATCH_MODES)}", param_hint="--match")
    rules = Rules.from_options(rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix, map_file=map_file,
                               include=include, exclude=exclude)
    rules, target_rules, transforms, preset_skip = api.transform_options(
        rules, preset=preset, transform=transform, resize=resize, split=split, concat=concat)
    options = TransferOptions(
        transforms=transforms, target_rules=target_rules, preset_skip=preset_skip,
        rules=rules, match=match, auto_prefix=not no_auto_prefix,
        only_target=tuple(only_target or ()), skip_target=tuple(skip_target or ()),
        keep_dtype=keep_dtype, add_unmatched=add_unmatched, allow_unused_rules=allow_unused_rules,
        strict=strict, min_coverage=min_coverage, allow_empty=allow_empty,
        allow_overflow=allow_overflow, fail_on_nonfinite=fail_on_nonfinite,
    )
    out = output_path(output, output_dir)
    if out is None and not dry_run:
        raise typer.BadParameter("an output path is needed, or --dry-run", param_hint="-o")
    # Before any work: no two outputs, and no output and input, are one file (links included).
    api.check_distinct([("-o", out), ("--report", report), ("--save-plan", save_plan)],
                       [("SOURCE", source), ("TARGET", target), ("--plan", plan), ("--map", map_file),
                        ("--config", config)])
    if report is not None:
        api.check_output(report, [source, target], no_clobber=no_clobber)
    from . import render

    progress = render.progress_bar() if not (json_ or quiet) and sys.stderr.isatty() and not dry_run else None
    with progress or render.null_context():
        result = api.transfer(
            source, target, out, options, dry_run=dry_run, count_changes=count_changes,
            output_format_name=format_, progress=progress.update if progress else None,
            save_plan=save_plan, plan_file=plan, provenance=provenance, verify=verify, pin_content=pin_content,
            report_path=report, no_clobber=no_clobber, invert=invert, allow_lossy=allow_lossy,
            hash_output=json_ or report is not None,  # the sha256 is for the JSON report
            source_options=open_options(src_dict, dec_key_file=dec_key_file, dec_mode=dec_mode, tf_names=tf_names), target_options=open_options(tgt_dict, dec_key_file=dec_key_file, dec_mode=dec_mode, tf_names=tf_names),
            encrypt=encryption(enc_key_file, enc_mode), force=force, shard_size=shard_size, jobs=jobs,
        )
    doc = result.to_dict() if report is not None or json_ else {}  # a per-tensor document: only when asked for
    if report is not None:
        api.write_json(report, doc, [source, target], no_clobber=no_clobber)
    if json_:
        render.print_json(doc)
    elif quiet:
        print(result.verdict)
    else:
        render.render_transfer(result, render.console(), collapse=not all_, markdown=markdown)
    if not result.ok:
        raise api.CheckFailed.of(result.failed_checks, report=result, path=target)
