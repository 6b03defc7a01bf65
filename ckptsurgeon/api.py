"""The library's entry points: one function per command, a thin facade over :mod:`ckptsurgeon.commands`.

Every function returns its command's report, plain data with ``ok``, ``verdict`` and
``to_dict()``. A requested check that fails (a transfer gate, an unused rule, a diff that found
differences, a verify that failed) leaves ``report.ok`` False and writes nothing; pass
``check=True`` to have it raised as :class:`~ckptsurgeon.errors.CheckFailed` (exit code 1 in the
CLI), whose ``report`` is the report. Its ``failures`` hold the failed checks of transfer, rename
and convert (and an unused rule of any command) as :class:`~ckptsurgeon.errors.Failure`: a stable
``check`` id, a ``message`` that names no command-line flag, the ``file`` it is about, the option
that asked for the check and the one that accepts it. Errors a user can cause are
:class:`~ckptsurgeon.errors.CkptError` subclasses carrying their exit code. The CLI calls only
these. Nothing here imports rich or typer, and a command's module (and numpy) is imported only
when the command is called.
"""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import check_distinct, check_output
from .errors import CheckFailed, Failure
from .formats import open_checkpoint
from .formats.base import OpenOptions, Reader
from .metadata_edit import MetadataEdits
from .plan import Plan, TransferOptions
from .rules import Rule, Rules
from .transforms import TransformRules

if TYPE_CHECKING:
    from .commands.convert import ConvertReport
    from .commands.diff import DiffOptions, DiffResult
    from .commands.inspect import Inspection
    from .commands.rename import RenameReport
    from .commands.transfer import TransferReport
    from .commands.verify import HashFile, Verification

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)

__all__ = [
    "CheckFailed",
    "DiffOptions",
    "Failure",
    "OpenOptions",
    "Plan",
    "Rules",
    "TransferOptions",
    "TransformRules",
    "check_distinct",
    "check_output",
    "convert",
    "diff",
    "inspect",
    "open_checkpoint",
    "plan_transfer",
    "rename",
    "transfer",
    "transform_options",
    "verify",
    "write_hashes",
    "write_json",
]


def transform_options(
    rules: Rules, *, preset: Iterable[str] | None = (), transform: Iterable[str] | None = (),
    resize: Iterable[str] | None = (), split: Iterable[str] | None = (), concat: Iterable[str] | None = (),
) -> tuple[Rules, tuple[Rule, ...], TransformRules, tuple[tuple[str, str], ...]]:
    """Parse the transform options (UsageError on a bad one) and add the presets' rules.

    Returns the rules with the presets' source renames and excludes, the presets' renames of the
    target's names, the transform rules, and the presets' target skips (glob, preset): the
    ``rules``, ``target_rules``, ``transforms`` and ``preset_skip`` of :class:`TransferOptions`.
    """
    from .presets import with_presets

    names = list(preset or ())
    rules, target_rules, layouts, skips = with_presets(rules, names)
    transforms = TransformRules.from_options(transform=list(transform or ()), resize=list(resize or ()),
                                             split=list(split or ()), concat=list(concat or ()),
                                             preset_layouts=layouts, presets=tuple(names))
    return rules, target_rules, transforms, skips


def inspect(path: str | Path, *, hash: bool = False, filter: Sequence[str] = (),
            options: OpenOptions | None = None) -> Inspection:
    """List a checkpoint's tensors from its headers; with ``hash``, also read each tensor once for its sha256."""
    from .commands import inspect as command

    return command.run(path, hash=hash, filter=filter, options=options)


def plan_transfer(source: Reader, target: Reader, options: TransferOptions | None = None) -> Plan:
    """The transfer plan from two opened checkpoints' metadata (nothing is read beyond headers)."""
    from .commands import transfer as command

    return command.plan_readers(source, target, options or TransferOptions())


def transfer(
    source: str | Path,
    target: str | Path,
    output: str | Path | None = None,
    options: TransferOptions | None = None,
    *,
    dry_run: bool = False,
    count_changes: bool = False,
    output_format_name: str | None = None,
    progress: Progress | None = None,
    save_plan: str | Path | None = None,
    plan_file: str | Path | None = None,
    provenance: bool = False,
    verify: bool = False,
    check: bool = False,
    pin_content: bool = False,
    report_path: str | Path | None = None,
    no_clobber: bool = False,
    hash_output: bool = True,
    source_options: OpenOptions | None = None,
    target_options: OpenOptions | None = None,
    encrypt: Any = None,
    invert: bool = False,
    allow_lossy: bool = False,
    force: bool = False,
    shard_size: int | str | None = None,
    jobs: int = 4,
) -> TransferReport:
    """Load ``source``'s weights into ``target`` where names (after the rules) and shapes match; write ``output``.

    An ``output`` ending with a slash (or an existing directory) is a model folder, replaced only
    with ``force``; ``shard_size`` shards its weights. See :func:`ckptsurgeon.commands.transfer.run`.
    """
    from .commands import transfer as command

    return command.run(source, target, output, options, dry_run=dry_run, count_changes=count_changes,
                       output_format_name=output_format_name, progress=progress, save_plan=save_plan,
                       plan_file=plan_file, provenance=provenance, verify=verify, check=check,
                       pin_content=pin_content, report_path=report_path, no_clobber=no_clobber,
                       hash_output=hash_output, source_options=source_options, target_options=target_options,
                       encrypt=encrypt, invert=invert, allow_lossy=allow_lossy, force=force, shard_size=shard_size,
                       jobs=jobs)


def rename(
    path: str | Path,
    output: str | Path | None,
    rules: Rules,
    *,
    dry_run: bool = False,
    allow_unused_rules: bool = False,
    output_format_name: str | None = None,
    progress: Progress | None = None,
    check: bool = False,
    no_clobber: bool = False,
    hash_output: bool = True,
    open_options: OpenOptions | None = None,
    encrypt: Any = None,
    transforms: TransformRules | None = None,
    force: bool = False,
    shard_size: int | str | None = None,
    metadata_edits: MetadataEdits | None = None,
    jobs: int = 4,
) -> RenameReport:
    """Write a copy of a checkpoint with its tensors renamed by ``rules``; an ``output`` ending with a
    slash is a model folder (``force`` replaces one). See :func:`ckptsurgeon.commands.rename.run`."""
    from .commands import rename as command

    return command.run(path, output, rules, dry_run=dry_run, allow_unused_rules=allow_unused_rules,
                       output_format_name=output_format_name, progress=progress, check=check,
                       no_clobber=no_clobber, hash_output=hash_output, open_options=open_options, encrypt=encrypt,
                       transforms=transforms, force=force, shard_size=shard_size, metadata_edits=metadata_edits,
                       jobs=jobs)


def convert(
    src: str | Path,
    out: str | Path,
    *,
    fmt: str | None = None,
    dtype: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    shard_size: int | str | None = None,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    allow_unused_rules: bool = False,
    allow_overflow: bool = False,
    fail_on_nonfinite: bool = False,
    check: bool = False,
    no_clobber: bool = False,
    hash_output: bool = True,
    open_options: OpenOptions | None = None,
    encrypt: Any = None,
    metadata_edits: MetadataEdits | None = None,
) -> ConvertReport:
    """Write ``src``'s tensors to ``out`` in another format or dtype. See :func:`ckptsurgeon.commands.convert.convert`."""
    from .commands import convert as command

    report = command.convert(src, out, fmt=fmt, dtype=dtype, include=include, exclude=exclude, shard_size=shard_size,
                             dry_run=dry_run, force=force, progress=progress, allow_unused_rules=allow_unused_rules,
                             allow_overflow=allow_overflow, fail_on_nonfinite=fail_on_nonfinite,
                             no_clobber=no_clobber, hash_output=hash_output, open_options=open_options,
                             encrypt=encrypt, metadata_edits=metadata_edits)
    if check and not report.ok:
        raise CheckFailed.of(report.failed_checks, report=report, path=src)
    return report


def diff(a: str | Path, b: str | Path, options: DiffOptions | None = None, *, check: bool = False,
         open_options: OpenOptions | None = None) -> DiffResult:
    """Compare two checkpoints tensor by tensor. See :func:`ckptsurgeon.commands.diff.diff`."""
    from .commands import diff as command

    result = command.diff(a, b, options, open_options)
    if check and not result.ok:
        raise CheckFailed(b, result.verdict, report=result)
    return result


def verify(
    path: str | Path,
    *,
    hashes: str | Path | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    allow_unused_rules: bool = False,
    fail_on_nonfinite: bool = False,
    check: bool = False,
    open_options: OpenOptions | None = None,
    rules: Rules | None = None,
) -> Verification:
    """Read every tensor once: NaN/Inf counts and sha256, checked against ``hashes``. See :mod:`ckptsurgeon.commands.verify`.

    ``rules`` rename the hash file's recorded names (a hash file written before a rename)."""
    from .commands import verify as command

    result = command.verify(path, hashes=hashes, include=include, exclude=exclude,
                            allow_unused_rules=allow_unused_rules, fail_on_nonfinite=fail_on_nonfinite,
                            open_options=open_options, rules=rules)
    if check and not result.ok:
        raise CheckFailed(path, "; ".join(result.failures), report=result)
    return result


def write_hashes(hashes: HashFile, dest: str | Path, inputs: Iterable[str | Path] = (), *,
                 no_clobber: bool = False) -> Path:
    """Write a verification's hash file atomically (refusing a destination that is an input, or any
    existing file with ``no_clobber``)."""
    from .commands import verify as command

    return command.write_hashes(hashes, dest, inputs, no_clobber=no_clobber)


def write_json(dest: str | Path, doc: Any, inputs: Iterable[str | Path] = (), *, no_clobber: bool = False) -> None:
    """Write ``doc`` as indented JSON, atomically (a report or plan beside the outputs)."""
    from .atomic import write_text

    write_text(dest, _json.dumps(doc, indent=2, ensure_ascii=False) + "\n", list(inputs), no_clobber=no_clobber)


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    if name == "DiffOptions":  # the diff command's module (and numpy) is imported only when it is asked for
        from .commands.diff import DiffOptions

        return DiffOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
