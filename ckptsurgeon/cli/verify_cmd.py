"""``ckpt verify FILE``: read every tensor once; sha256 and NaN/Inf counts; check against a hash file."""

from __future__ import annotations

import sys
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
    InputPath,
    JsonOpt,
    MapOpt,
    NoClobberOpt,
    QuietOpt,
    RenameOpt,
    StripPrefixOpt,
    open_options,
)


@app.command("verify")
def verify_command(
    path: InputPath,
    hashes: Annotated[
        Path | None,
        typer.Option("--hashes", metavar="H.json",
                     help="Check every tensor against a hash file: a changed, missing or extra tensor fails (exit 1)."),
    ] = None,
    write_hashes_to: Annotated[
        Path | None,
        typer.Option("--write-hashes", metavar="H.json",
                     help="Record each tensor's sha256, shape and dtype in a hash file (atomically; only when the checks pass)."),
    ] = None,
    rename: RenameOpt = None,
    strip_prefix: StripPrefixOpt = None,
    add_prefix: AddPrefixOpt = None,
    map_file: MapOpt = None,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", metavar="GLOB", help="Only tensors matching a glob, in the checkpoint and the hash file (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", metavar="GLOB", help="Leave out tensors matching a glob, in the checkpoint and the hash file (repeatable)."),
    ] = None,
    allow_unused_rules: AllowUnusedRulesOpt = False,
    no_clobber: NoClobberOpt = False,
    fail_on_nonfinite: Annotated[
        bool, typer.Option("--fail-on-nonfinite", help="Exit 1 when a float tensor holds NaN or Inf (default: report only).")
    ] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="Also list every tensor's sha256, one 'SHA256  NAME' line each.")
    ] = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    dict_path: DictOpt = None,
    dec_key_file: DecKeyFileOpt = None,
    dec_mode: DecModeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check a checkpoint: open it (which validates its structure), read every tensor once, count NaN
    and Inf values of float tensors and hash each tensor's raw little-endian bytes (sha256).

    --write-hashes records the hashes; --hashes checks them again later, for example as a CI gate that a
    rewrite left alone what it should not touch.

    After a rename, give the rename's rule options (--rename, --strip-prefix, --add-prefix, --map) with
    --hashes: they apply to the hash file's recorded names, the names before the rename (the "source"
    names, as the rename's input had them), and each entry is checked under its new name. --include and
    --exclude see the recorded names as stored, as in rename. A rule that matches no recorded name fails
    (exit 1) unless --allow-unused-rules.

    Exit 0 when every check passes, 1 when one fails (a hash mismatch; NaN/Inf with --fail-on-nonfinite;
    a glob that matches nothing), 3 when the file cannot be read or is malformed.
    """
    from .. import api
    from ..errors import UsageError

    api.check_distinct([("--write-hashes", write_hashes_to)],
                       [("PATH", path), ("--hashes", hashes), ("--map", map_file), ("--config", config)])
    if hashes is None and (rename or strip_prefix or add_prefix or map_file is not None):
        raise UsageError(None, "--rename, --strip-prefix, --add-prefix and --map rename the names a hash file "
                               "recorded: give --hashes H.json")
    if write_hashes_to is not None:
        api.check_output(write_hashes_to, [path], no_clobber=no_clobber)
    rules = api.Rules.from_options(rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix, map_file=map_file)
    result = api.verify(
        path, hashes=hashes, include=include or (), exclude=exclude or (),
        allow_unused_rules=allow_unused_rules, fail_on_nonfinite=fail_on_nonfinite,
        open_options=open_options(dict_path, dec_key_file=dec_key_file, dec_mode=dec_mode), rules=rules,
    )
    from . import diff_render, render

    if json_:
        render.print_json(result.to_dict())
    elif quiet:
        print(result.verdict)
    else:
        diff_render.render_verify(result, render.console(), all_=all_)
    if write_hashes_to is not None:
        if result.ok:
            api.write_hashes(result.hash_file(), write_hashes_to, result.files, no_clobber=no_clobber)
            if not quiet:
                print(f"ckpt: wrote the hashes of {len(result.tensors):,} tensors to {write_hashes_to}", file=sys.stderr)
        else:
            print(f"ckpt: {write_hashes_to} not written: the checks failed", file=sys.stderr)
    if not result.ok:
        raise api.CheckFailed(path, "; ".join(result.failures), report=result)
