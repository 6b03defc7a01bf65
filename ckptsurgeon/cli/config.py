"""Recipe files: ``--config FILE.toml`` supplies a command's options; flags on the command line win.

The file's keys are the command's option names (``strip-prefix`` or ``strip_prefix``) or argument
names (``source``, ``target``, ``path``); repeatable options take lists. Relative paths in the file
are relative to the file itself, so a recipe works from any directory. The values become the
command's defaults (click's ``default_map``), which is why anything given on the command line
overrides them: a repeatable option given on the command line replaces the file's list.
"""

from __future__ import annotations

import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError, UsageError
from ..files import read_input

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _read(path: Path) -> dict[str, Any]:
    try:
        if not os.path.lexists(path):
            raise InputError(path, "no such config file")
        return tomllib.loads(read_input(path).decode("utf-8"))  # a regular file only
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the config file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML ({exc})") from exc


def _kinds(annotation: Any) -> tuple[bool, bool]:
    """(is a list, holds paths) for a command parameter's annotation."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    multiple = any(typing.get_origin(m) is list for m in members)
    inner = [a for m in members for a in (typing.get_args(m) if typing.get_origin(m) is list else (m,))]
    return multiple, Path in inner


def load_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """Eager option callback: turn the recipe into defaults for the rest of the command's parameters."""
    if value is None or ctx.resilient_parsing:
        return value
    data = _read(value)
    callback = getattr(ctx.command, "callback", None)
    hints = typing.get_type_hints(callback, include_extras=True) if callback is not None else {}
    params = {}
    for p in ctx.command.params:
        if p.name is None or p.name == "config":
            continue
        params[p.name] = p
        for opt in getattr(p, "opts", []):
            params[opt.lstrip("-")] = p
    defaults: dict[str, Any] = {}
    for key, raw in data.items():
        param = params.get(key) or params.get(key.replace("_", "-"))
        if param is None or param.name is None:
            known = sorted(k for k in params if "_" not in k and len(k) > 1)
            raise UsageError(value, f"unknown key {key!r} for 'ckpt {ctx.command.name}'; known keys: {', '.join(known)}")
        multiple, is_path = _kinds(hints.get(param.name))
        items = raw if isinstance(raw, list) else [raw]
        if not multiple and isinstance(raw, list):
            raise UsageError(value, f"key {key!r} takes one value, not a list")
        if is_path:  # a trailing slash (a folder output, -o DIR/) is kept
            items = [str(value.parent / str(v)) + ("/" if str(v).endswith("/") else "")
                     if not Path(str(v)).is_absolute() else str(v) for v in items]
        defaults[param.name] = items if multiple else items[0]
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value
