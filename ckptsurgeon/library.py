"""The library, one import away: ``import ckptsurgeon as cs``.

Every command is a function whose keyword arguments are the command line's options, spelled as
keywords (``--strip-prefix P`` is ``strip_prefix="P"``, repeatable options take a list or one
value, ``--no-auto-prefix`` is ``auto_prefix=False``). Each returns its command's report (plain
data with ``ok``, ``verdict`` and ``to_dict()``, the JSON the command prints). A requested check
that fails writes nothing and leaves ``report.ok`` False, or with ``check=True`` raises
:class:`~ckptsurgeon.errors.CheckFailed` carrying the report. Errors a user can cause are
:class:`~ckptsurgeon.errors.CkptError` subclasses with fields (``path``, ``problem``, ``hint``,
``exit_code``; a check's ``failures``), worded with these keywords, never with command-line flags.

Two functions have no command: :func:`transfer_into` fills a state dict in memory (numpy arrays,
CPU PyTorch tensors) from a checkpoint file, and :func:`load` gives a checkpoint's tensors as a
lazy, read-only mapping of numpy arrays.
"""

from __future__ import annotations

import functools
import inspect as _signatures
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .errors import CkptError, UsageError

if TYPE_CHECKING:
    import numpy as np

    from .commands.convert import ConvertReport
    from .commands.diff import DiffResult
    from .commands.inspect import Inspection
    from .commands.rename import RenameReport
    from .commands.transfer import TransferReport
    from .commands.verify import Verification
    from .formats.base import OpenOptions, Reader
    from .plan import TransferOptions
    from .rules import Rules

__all__ = ["Loaded", "convert", "diff", "inspect", "load", "rename", "transfer", "transfer_into", "transfer_options",
           "verify"]


def __dir__() -> list[str]:
    return sorted(__all__)

Path_ = str | Path
Names = str | Iterable[str]  # a repeatable option: one value or several
Progress = Callable[[int, int], None]
_P = ParamSpec("_P")
_R = TypeVar("_R")

_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def _keyword(flag: str) -> str:
    return flag.replace("-", "_")


def _library_words(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Errors raised in ``fn`` worded for a library caller: ``--strip-prefix`` becomes ``strip_prefix``."""

    @functools.wraps(fn)
    def worded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except CkptError as exc:
            exc.problem = _FLAG.sub(lambda m: _keyword(m.group(1)), exc.problem)
            if exc.hint:
                exc.hint = _FLAG.sub(lambda m: _keyword(m.group(1)), exc.hint)
            exc.args = (exc.message,)
            raise

    return worded


def _many(value: Names | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _rules(rename: Names | None, strip_prefix: Names | None, add_prefix: Names | None, map: Path_ | None,
           include: Names | None, exclude: Names | None) -> Rules:
    from .rules import Rules

    return Rules.from_options(rename=_many(rename), strip_prefix=_many(strip_prefix), add_prefix=_many(add_prefix),
                              map_file=None if map is None else Path(map), include=_many(include),
                              exclude=_many(exclude))


def _folder(output: Path_ | None, output_dir: Path_ | None) -> str | Path | None:
    """``output``, or ``output_dir`` as a folder output (a path ending with a slash)."""
    if output_dir is None:
        return output
    if output is not None:
        raise UsageError(None, "output and output_dir both name the output: give one")
    return os.path.join(output_dir, "")


def _edits(set_metadata: Names | None, drop_metadata: Names | None) -> Any:
    """``set_metadata`` (``KEY[:TYPE]=VALUE``) and ``drop_metadata`` (``KEY``), or None for neither."""
    if set_metadata is None and drop_metadata is None:
        return None
    from .metadata_edit import MetadataEdits

    return MetadataEdits.from_options(_many(set_metadata), _many(drop_metadata))


def _open(dict: str | None = None, all_dicts: bool = False, dec_key_file: Path_ | None = None,
          dec_mode: str | None = None, tf_names: str = "keys") -> OpenOptions | None:
    from .keys import open_options

    return open_options(dict, all_dicts, dec_key_file=None if dec_key_file is None else Path(dec_key_file),
                        dec_mode=dec_mode, tf_names=tf_names, flag=_keyword)


def _encryption(enc_key_file: Path_ | None, enc_mode: str | None) -> Any:
    from .keys import encryption

    return encryption(None if enc_key_file is None else Path(enc_key_file), enc_mode, flag=_keyword)


def transfer_options(
    *, rename: Names | None = None, strip_prefix: Names | None = None, add_prefix: Names | None = None,
    map: Path_ | None = None, include: Names | None = None, exclude: Names | None = None,
    preset: Names | None = None, transform: Names | None = None, resize: Names | None = None,
    split: Names | None = None, concat: Names | None = None, only_target: Names | None = None,
    skip_target: Names | None = None, match: str = "exact", auto_prefix: bool = True, keep_dtype: bool = False,
    add_unmatched: bool = False, allow_unused_rules: bool = False, allow_empty: bool = False, strict: bool = False,
    min_coverage: float | None = None, allow_overflow: bool = False, fail_on_nonfinite: bool = False,
) -> TransferOptions:
    """The :class:`~ckptsurgeon.plan.TransferOptions` these keyword options give (what ``ckpt transfer`` builds)."""
    from .api import transform_options
    from .match import MATCH_MODES
    from .plan import TransferOptions

    if match not in MATCH_MODES:
        raise UsageError(None, f"match {match!r}: choose one of {', '.join(MATCH_MODES)}")
    if min_coverage is not None and not 0 <= min_coverage <= 1:
        raise UsageError(None, f"min_coverage {min_coverage}: a share between 0 and 1")
    rules, target_rules, transforms, skips = transform_options(
        _rules(rename, strip_prefix, add_prefix, map, include, exclude), preset=_many(preset),
        transform=_many(transform), resize=_many(resize), split=_many(split), concat=_many(concat))
    return TransferOptions(
        rules=rules, match=match, auto_prefix=auto_prefix,
        only_target=tuple(_many(only_target)), skip_target=tuple(_many(skip_target)), keep_dtype=keep_dtype,
        add_unmatched=add_unmatched, allow_unused_rules=allow_unused_rules, strict=strict, min_coverage=min_coverage,
        allow_empty=allow_empty, allow_overflow=allow_overflow, fail_on_nonfinite=fail_on_nonfinite,
        transforms=transforms, target_rules=target_rules, preset_skip=skips,
    )


@_library_words
def inspect(path: Path_, *, hash: bool = False, filter: Names | None = None, dict: str | None = None,
            all_dicts: bool = False, dec_key_file: Path_ | None = None, dec_mode: str | None = None,
            tf_names: str = "keys") -> Inspection:
    """A checkpoint's tensors from its headers (``ckpt inspect``); ``hash`` reads each tensor for its sha256."""
    from . import api

    return api.inspect(path, hash=hash, filter=_many(filter),
                       options=_open(dict, all_dicts, dec_key_file, dec_mode, tf_names))


@_library_words
def transfer(
    source: Path_, target: Path_, output: Path_ | None = None, options: TransferOptions | None = None, *,
    rename: Names | None = None, strip_prefix: Names | None = None, add_prefix: Names | None = None,
    map: Path_ | None = None, include: Names | None = None, exclude: Names | None = None,
    preset: Names | None = None, transform: Names | None = None, resize: Names | None = None,
    split: Names | None = None, concat: Names | None = None, only_target: Names | None = None,
    skip_target: Names | None = None, match: str = "exact", auto_prefix: bool = True, keep_dtype: bool = False,
    add_unmatched: bool = False, allow_unused_rules: bool = False, allow_empty: bool = False, strict: bool = False,
    min_coverage: float | None = None, allow_overflow: bool = False, fail_on_nonfinite: bool = False,
    count_changes: bool = False, dry_run: bool = False, format: str | None = None, save_plan: Path_ | None = None,
    plan: Path_ | None = None, pin_content: bool = False, invert: bool = False, allow_lossy: bool = False,
    provenance: bool = False, verify: bool = False, no_clobber: bool = False, output_dir: Path_ | None = None,
    force: bool = False, shard_size: int | str | None = None, jobs: int = 4, src_dict: str | None = None,
    tgt_dict: str | None = None, dec_key_file: Path_ | None = None, dec_mode: str | None = None,
    enc_key_file: Path_ | None = None, enc_mode: str | None = None, tf_names: str = "keys",
    progress: Progress | None = None, check: bool = False,
) -> TransferReport:
    """Load ``source``'s weights into ``target`` where names (after the rules) and shapes match; write
    ``output`` (``ckpt transfer``). ``options`` (a ready :class:`TransferOptions`) may stand for the
    rule and gate keywords, not join them. An ``output`` ending with ``/`` (or ``output_dir``) is a
    model folder: the weights in the target's layout beside a copy of the target folder's other
    files, appearing whole; ``force`` replaces an existing one, ``shard_size`` shards anew."""
    from . import api

    given = {k: v for k, v in locals().items() if k in _TRANSFER_OPTION_KEYS and v != _TRANSFER_DEFAULTS[k]}
    output = _folder(output, output_dir)
    if options is not None and given:
        raise UsageError(None, f"give options or the keywords {', '.join(given)}, not both")
    if options is None:
        options = transfer_options(**given)
    return api.transfer(
        source, target, output, options, dry_run=dry_run, count_changes=count_changes, output_format_name=format,
        progress=progress, save_plan=save_plan, plan_file=plan, provenance=provenance, verify=verify, check=check,
        pin_content=pin_content, no_clobber=no_clobber, invert=invert, allow_lossy=allow_lossy, force=force,
        shard_size=shard_size, jobs=jobs,
        source_options=_open(src_dict, False, dec_key_file, dec_mode, tf_names),
        target_options=_open(tgt_dict, False, dec_key_file, dec_mode, tf_names),
        encrypt=_encryption(enc_key_file, enc_mode),
    )


_TRANSFER_DEFAULTS: dict[str, Any] = {k: p.default for k, p in _signatures.signature(transfer_options).parameters.items()}
_TRANSFER_OPTION_KEYS = frozenset(_TRANSFER_DEFAULTS)


@_library_words
def transfer_into(
    state: Mapping[str, Any], source: Path_, *,
    rename: Names | None = None, strip_prefix: Names | None = None, add_prefix: Names | None = None,
    map: Path_ | None = None, include: Names | None = None, exclude: Names | None = None,
    preset: Names | None = None, transform: Names | None = None, resize: Names | None = None,
    split: Names | None = None, concat: Names | None = None, only_target: Names | None = None,
    skip_target: Names | None = None, match: str = "exact", auto_prefix: bool = True,
    allow_unused_rules: bool = False, allow_empty: bool = False, strict: bool = False,
    min_coverage: float | None = None, allow_overflow: bool = False, fail_on_nonfinite: bool = False,
    dry_run: bool = False, src_dict: str | None = None, dec_key_file: Path_ | None = None,
    dec_mode: str | None = None, tf_names: str = "keys", check: bool = False,
) -> TransferReport:
    """Fill ``state`` (a state dict: names to numpy arrays or CPU PyTorch tensors) in place from the
    checkpoint ``source``, wherever names (after the rules) and shapes match; the rest is left as it
    is. Returns the report ``ckpt transfer`` gives (its target is ``<memory>``). Values are cast to
    each entry's dtype; a failed check changes nothing."""
    from .commands.transfer import run_into

    options = transfer_options(
        rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix, map=map, include=include, exclude=exclude,
        preset=preset, transform=transform, resize=resize, split=split, concat=concat, only_target=only_target,
        skip_target=skip_target, match=match, auto_prefix=auto_prefix, allow_unused_rules=allow_unused_rules,
        allow_empty=allow_empty, strict=strict, min_coverage=min_coverage, allow_overflow=allow_overflow,
        fail_on_nonfinite=fail_on_nonfinite,
    )
    return run_into(state, source, options, dry_run=dry_run, check=check,
                    source_options=_open(src_dict, False, dec_key_file, dec_mode, tf_names))


@_library_words
def rename(
    path: Path_, output: Path_ | None = None, *, rename: Names | None = None, strip_prefix: Names | None = None,
    add_prefix: Names | None = None, map: Path_ | None = None, include: Names | None = None,
    exclude: Names | None = None, preset: Names | None = None, transform: Names | None = None,
    split: Names | None = None, concat: Names | None = None, allow_unused_rules: bool = False,
    dry_run: bool = False, format: str | None = None, no_clobber: bool = False, output_dir: Path_ | None = None,
    force: bool = False, shard_size: int | str | None = None, jobs: int = 4, set_metadata: Names | None = None,
    drop_metadata: Names | None = None, dict: str | None = None,
    dec_key_file: Path_ | None = None, dec_mode: str | None = None, enc_key_file: Path_ | None = None,
    enc_mode: str | None = None, progress: Progress | None = None, check: bool = False,
) -> RenameReport:
    """A copy of ``path`` with its tensors renamed (and split, joined or laid out) by the rules (``ckpt rename``)."""
    from . import api

    rules, target_rules, transforms, _ = api.transform_options(
        _rules(rename, strip_prefix, add_prefix, map, include, exclude), preset=_many(preset),
        transform=_many(transform), split=_many(split), concat=_many(concat))
    if target_rules:
        raise UsageError(None, f"preset {', '.join(_many(preset))} renames a target's names: it needs transfer")
    return api.rename(path, _folder(output, output_dir), rules, dry_run=dry_run, allow_unused_rules=allow_unused_rules,
                      output_format_name=format, progress=progress, check=check, no_clobber=no_clobber,
                      force=force, shard_size=shard_size, jobs=jobs, metadata_edits=_edits(set_metadata, drop_metadata),
                      open_options=_open(dict, False, dec_key_file, dec_mode), encrypt=_encryption(enc_key_file, enc_mode),
                      transforms=transforms)


@_library_words
def convert(
    path: Path_, output: Path_, *, format: str | None = None, dtype: str | None = None, include: Names | None = None,
    exclude: Names | None = None, shard_size: int | str | None = None, dry_run: bool = False, force: bool = False,
    allow_unused_rules: bool = False, allow_overflow: bool = False, fail_on_nonfinite: bool = False,
    no_clobber: bool = False, set_metadata: Names | None = None, drop_metadata: Names | None = None,
    dict: str | None = None, dec_key_file: Path_ | None = None, dec_mode: str | None = None,
    enc_key_file: Path_ | None = None, enc_mode: str | None = None, progress: Progress | None = None,
    check: bool = False,
) -> ConvertReport:
    """``path``'s tensors written to ``output`` in another format, dtype or sharding (``ckpt convert``)."""
    from . import api

    return api.convert(path, output, fmt=format, dtype=dtype, include=_many(include), exclude=_many(exclude),
                       shard_size=shard_size, dry_run=dry_run, force=force, progress=progress,
                       allow_unused_rules=allow_unused_rules, allow_overflow=allow_overflow,
                       fail_on_nonfinite=fail_on_nonfinite, check=check, no_clobber=no_clobber,
                       open_options=_open(dict, False, dec_key_file, dec_mode),
                       encrypt=_encryption(enc_key_file, enc_mode), metadata_edits=_edits(set_metadata, drop_metadata))


@_library_words
def diff(
    a: Path_, b: Path_, *, rename: Names | None = None, strip_prefix: Names | None = None,
    add_prefix: Names | None = None, map: Path_ | None = None, include: Names | None = None,
    exclude: Names | None = None, atol: float = 0.0, rtol: float = 0.0, strict_dtypes: bool = False,
    metadata: bool = False, allow_unused_rules: bool = False, dict: str | None = None,
    dec_key_file: Path_ | None = None, dec_mode: str | None = None, tf_names: str = "keys", check: bool = False,
) -> DiffResult:
    """Compare two checkpoints tensor by tensor (``ckpt diff``); the rules rename and filter A's names.
    Tensors of two dtypes are compared by value, both cast to a dtype that holds both exactly."""
    from . import api
    from .commands.diff import DiffOptions

    options = DiffOptions(rules=_rules(rename, strip_prefix, add_prefix, map, include, exclude), atol=atol, rtol=rtol,
                          strict_dtypes=strict_dtypes, metadata=metadata, allow_unused_rules=allow_unused_rules)
    return api.diff(a, b, options, check=check, open_options=_open(dict, False, dec_key_file, dec_mode, tf_names))


@_library_words
def verify(
    path: Path_, *, hashes: Path_ | None = None, rename: Names | None = None, strip_prefix: Names | None = None,
    add_prefix: Names | None = None, map: Path_ | None = None, include: Names | None = None,
    exclude: Names | None = None, allow_unused_rules: bool = False, fail_on_nonfinite: bool = False,
    dict: str | None = None, dec_key_file: Path_ | None = None, dec_mode: str | None = None,
    write_hashes: Path_ | None = None, no_clobber: bool = False, check: bool = False,
) -> Verification:
    """Read every tensor once: NaN / Inf counts and sha256, checked against ``hashes`` (``ckpt verify``);
    the rename rules apply to the hash file's recorded names (hashes recorded before a rename).
    ``write_hashes`` records every tensor's sha256 in a hash file (written atomically)."""
    from . import api

    renames = _rules(rename, strip_prefix, add_prefix, map, (), ())
    inputs = [path, *(p for p in (hashes, map) if p is not None)]
    if write_hashes is not None:
        api.check_distinct([("write_hashes", write_hashes)], [("path", path), ("hashes", hashes), ("map", map)])
        api.check_output(write_hashes, inputs, no_clobber=no_clobber)
    result = api.verify(path, hashes=hashes, include=_many(include), exclude=_many(exclude),
                        allow_unused_rules=allow_unused_rules, fail_on_nonfinite=fail_on_nonfinite, check=check,
                        open_options=_open(dict, False, dec_key_file, dec_mode),
                        rules=None if renames.empty else renames)
    if write_hashes is not None and result.ok:
        api.write_hashes(result.hash_file(), write_hashes, inputs, no_clobber=no_clobber)
    return result


class Loaded(Mapping[str, "np.ndarray"]):
    """A checkpoint's tensors as a read-only mapping of names (after the rules) to numpy arrays.

    Nothing is read until a tensor is asked for, and each is read when asked for (not kept): a
    view of the memory-mapped file where the format allows (safetensors, STORED npz and zip
    members), so touching one tensor of a large file costs that tensor's pages. Every array is
    read-only. Close it (or use ``with``) to let go of the file.
    """

    def __init__(self, reader: Reader, names: Mapping[str, str]) -> None:
        self.reader = reader
        self._stored = dict(names)  # name -> stored name

    def __getitem__(self, name: str) -> np.ndarray:
        array = self.reader.read(self._stored[name])
        if array.flags.writeable:
            array = array.view()
            array.flags.writeable = False
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)

    @property
    def format(self) -> str:
        return self.reader.format

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.reader.metadata)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> Loaded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ckptsurgeon.Loaded {self.reader.path} ({self.reader.format}, {len(self)} tensors)>"


@_library_words
def load(
    path: Path_, *, rename: Names | None = None, strip_prefix: Names | None = None, add_prefix: Names | None = None,
    map: Path_ | None = None, include: Names | None = None, exclude: Names | None = None,
    allow_unused_rules: bool = False, dict: str | None = None, dec_key_file: Path_ | None = None,
    dec_mode: str | None = None, tf_names: str = "keys",
) -> Loaded:
    """A checkpoint's tensors as a lazy, read-only mapping of numpy arrays, named by the rules."""
    from .errors import CheckFailed
    from .formats import open_checkpoint
    from .rules import apply_rules, unused_rules_failure

    rules = _rules(rename, strip_prefix, add_prefix, map, include, exclude)
    reader = open_checkpoint(path, _open(dict, False, dec_key_file, dec_mode, tf_names))
    try:
        renamed = apply_rules([t.name for t in reader.tensors], rules)
        unused = renamed.unused()
        if unused and not allow_unused_rules:
            raise CheckFailed.of([unused_rules_failure(unused, str(path))])
    except BaseException:
        reader.close()
        raise
    return Loaded(reader, {new: old for old, new in renamed.mapping.items()})
