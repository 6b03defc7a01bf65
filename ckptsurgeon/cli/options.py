"""Options shared by several commands, declared once as ``Annotated`` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

InputPath = Annotated[Path, typer.Argument(help="A checkpoint: .safetensors, a sharded index .json, .h5, .keras, .npz.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout and nothing else.")]
FilterOpt = Annotated[
    list[str] | None, typer.Option("--filter", help="Only tensors whose name matches this glob (repeatable).")
]
