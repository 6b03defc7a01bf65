"""``ckpt presets [NAME]``: the framework presets shipped with ckptsurgeon, and what each one does."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import app
from .options import JsonOpt


@app.command()
def presets(
    name: Annotated[str | None, typer.Argument(help="Show this preset's rules (default: list every preset).")] = None,
    json_: JsonOpt = False,
) -> None:
    """List the --preset recipes (keras->torch, torch->keras, mindspore->torch, ...) or show one's rules."""
    from ..presets import preset
    from ..presets import presets as all_presets
    from . import render

    chosen = [preset(name)] if name is not None else list(all_presets().values())
    docs = [{"name": p.name, "description": p.description, "rename": list(p.rename), "target_rename": list(p.target_rename),
             "transform": list(p.transform), "skip_target": list(p.skip_target), "exclude": list(p.exclude)}
            for p in chosen]
    if json_:
        render.print_json({"schema": "ckptsurgeon/presets/1", "presets": docs})
        return
    for doc in docs:
        print(f"{doc['name']}: {doc['description']}")
        if name is None:
            continue
        for key, label in (("rename", "rename (source names)"), ("target_rename", "rename (target names, for matching)"),
                           ("transform", "layout (source or target names)"), ("skip_target", "target tensors left alone"),
                           ("exclude", "source tensors left out")):
            for value in doc[key]:
                print(f"  {label}: {value}")
