"""``ckpt inspect FILE``: the tensors of a checkpoint by layer, from its headers alone."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import app
from .options import (
    ConfigOpt,
    DecKeyFileOpt,
    DecModeOpt,
    DictOpt,
    FilterOpt,
    InputPath,
    JsonOpt,
    MarkdownOpt,
    TfNamesOpt,
    open_options,
)


@app.command()
def inspect(
    path: InputPath,
    json_: JsonOpt = False,
    hash_: Annotated[
        bool, typer.Option("--hash", help="Add each tensor's sha256 (of its raw little-endian bytes); reads the data.")
    ] = False,
    all_: Annotated[bool, typer.Option("--all", help="Show every tensor; do not collapse repeated blocks.")] = False,
    filter_: FilterOpt = None,
    markdown: MarkdownOpt = False,
    dict_path: DictOpt = None,
    all_dicts: Annotated[
        bool, typer.Option("--all-dicts", help="In a container checkpoint, list every tensor under its full dotted path "
                           "(optimizer state included) instead of one state dict.")
    ] = False,
    dec_key_file: DecKeyFileOpt = None,
    tf_names: TfNamesOpt = "keys",
    dec_mode: DecModeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List a checkpoint's tensors by layer: name, shape, dtype, parameters, bytes; totals and metadata."""
    from .. import api

    result = api.inspect(path, hash=hash_, filter=filter_ or (), options=open_options(dict_path, all_dicts, dec_key_file=dec_key_file, dec_mode=dec_mode, tf_names=tf_names))
    from . import render

    if json_:
        render.print_json(result.to_dict())
    else:
        render.render_inspect(result, render.console(), collapse=not all_, markdown=markdown)
