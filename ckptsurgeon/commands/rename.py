"""``ckpt rename``: a copy of a checkpoint with its tensors renamed; bytes, dtypes and metadata stay.

:func:`run` plans with :func:`ckptsurgeon.plan.plan_rename` and writes through
:func:`ckptsurgeon.execute.write_checkpoint`, like the input where the output is of its family
(HDF5 Keras files keep the layout Keras needs: each renamed dataset goes where the old one was).

Keras 3 files (``.weights.h5``, a ``.keras`` archive's weights, Keras 3 sharded weights) are
refused (:class:`~ckptsurgeon.errors.UsageError`, exit 2) when a rename would change a stored
path and the output keeps the Keras 3 layout: Keras finds a layer's variables by the path its
model derives from the layer's class and position (``layers/dense_1/vars/0``), so it cannot load
such a file. Written in another format (``-o out.safetensors``) the renamed paths are only names.
Rules apply to the stored paths, the names rename writes; a rule that matches only the Keras names
(``proj/kernel``, which ``inspect``, ``transfer`` and ``diff`` use) is refused with that said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import folders
from ..atomic import check_output
from ..errors import CheckFailed, CkptError, Failure, UsageError
from ..folders import folder_output_options
from ..formats import open_checkpoint, output_format, spec, writes_like
from ..formats._s3 import url_of
from ..formats.base import OpenOptions, Reader
from ..metadata_edit import MetadataEdits, metadata_options
from ..plan import INPUT, Plan, plan_rename
from ..rules import Renamed, Rules, apply_rules, unused_rules_failure
from ..text import blame, plural
from ..transforms import TransformRules

Progress = Callable[[int, int], None]
RENAME_SCHEMA = "ckptsurgeon/rename/1"
KERAS3_LAYOUT = "keras3-h5"


@dataclass
class RenameReport:
    """What ``ckpt rename`` did: old name -> new name for every tensor written, and what was dropped."""

    path: str
    format: str
    output: dict[str, Any] | None
    plan: Plan
    dry_run: bool = False
    failed_checks: list[Failure] = field(default_factory=list)
    layout_fallback: str | None = None  # why a Keras layout could not follow the renames (written plain)

    @property
    def failures(self) -> list[str]:
        """Each failed check as one sentence (the library's words: options by their keyword)."""
        return [str(f) for f in self.failed_checks]

    @property
    def ok(self) -> bool:
        return not self.failed_checks

    @property
    def renamed(self) -> Renamed:
        return self.plan.renamed

    @property
    def names(self) -> list[tuple[str, str]]:
        """(old, new) for every tensor written, in file order."""
        return [(s.origin.name, s.name) for s in self.plan.steps]

    @property
    def summary(self) -> dict[str, int]:
        changed = sum(1 for old, new in self.names if old != new)
        return {"tensors": len(self.names), "renamed": changed, "unchanged": len(self.names) - changed,
                "dropped": len(self.renamed.excluded), "transformed": sum(1 for s in self.plan.steps if s.transforms)}

    @property
    def verdict(self) -> str:
        s = self.summary
        text = f"renamed {s['renamed']} of {s['tensors']} tensors"
        if s["transformed"]:
            text += f"; {plural(s['transformed'], 'tensor')} transformed"
        if s["dropped"]:
            text += f"; {plural(s['dropped'], 'tensor')} left out by the filters"
        if self.dry_run:
            text += "; dry run, nothing written"
        elif not self.ok:
            text += "; nothing written"
        return text if self.ok else f"FAILED: {text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RENAME_SCHEMA,
            "path": self.path,
            "format": self.format,
            "output": self.output,
            "dry_run": self.dry_run,
            "tensors": [{"old": s.origin.name, "new": s.name, "renamed": s.origin.name != s.name,
                         "sources": list(s.sources) if len(s.sources) > 1 else None,
                         "shape": list(s.shape),
                         "transform": [t.to_dict() for t in s.transforms] if s.transforms else None}
                        for s in self.plan.steps],
            "dropped": [{"name": n, "reason": r} for n, r in self.renamed.excluded.items()],
            "rules": [{"rule": r.text, "matches": n} for r, n in self.renamed.rule_counts]
            + [{"rule": text, "matches": n} for text, n in self.renamed.glob_counts]
            + [{"rule": text, "matches": n} for text, n in self.plan.transform_counts],
            "summary": self.summary,
            "layout_fallback": self.layout_fallback,
            "ok": self.ok,
            "failures": self.failures,
            "failed_checks": [f.to_dict() for f in self.failed_checks],
            "verdict": self.verdict,
        }


def run(
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
    """Write a copy of a checkpoint with its tensors renamed by ``rules``; bytes, dtypes and metadata stay.

    ``--include`` / ``--exclude`` choose which tensors are written. Two names renamed onto one
    raise CheckFailed naming both. A rule that matches nothing, or filters that leave nothing,
    fail the report (``ok`` False, nothing written; with ``check`` a CheckFailed carrying it).
    ``no_clobber``: never replace an existing file (exit 4), not even one created meanwhile. The
    report's ``output`` records the committed file's size and (with ``hash_output``) its sha256.
    ``metadata_edits`` drops and sets metadata keys (``--drop-metadata``, ``--set-metadata``).

    An ``output`` ending with a slash (or an existing directory) is a model folder
    (:mod:`ckptsurgeon.folders`): the renamed weights in the input's layout (each tensor in the
    shard its original was in; ``shard_size``: ckptsurgeon's own sharding) beside a copy of the
    input folder's other files; an existing folder is replaced only with ``force``.
    """
    if output is None and not dry_run:
        raise UsageError(None, "an output path is needed (-o OUT), or --dry-run")
    folder_out, size = folder_output_options(output, shard_size, force=force, dry_run=dry_run)
    folder = None
    with open_checkpoint(path, open_options) as reader:
        with blame(path):
            if transforms is not None and transforms.presets and reader.match_names:
                plan = _by_keras_names(reader, rules, transforms)
            else:
                plan = plan_rename(reader.tensors, rules, transforms)
        _refuse_keras_name_rules(reader, rules, plan.renamed)
        fmt = None
        if output is not None and folder_out:
            folder = folders.prepare(output, reader, path, fmt_name=output_format_name, shard_size=size, force=force,
                                     no_clobber=no_clobber, inputs=reader.files, folders=(path,),
                                     origins={s.name: s.origin.name for s in plan.steps})
            fmt = folder.fmt
        elif url_of(output) is not None:
            from ..execute_remote import remote_output

            _, fmt = remote_output(output, output_format_name, reader, no_clobber=no_clobber,
                                   unsupported={"--enc-key-file": encrypt is not None})
        elif output is not None:
            fmt = output_format(output, output_format_name, like=reader)
            check_output(output, reader.files, no_clobber=no_clobber)
            if reader.layout == KERAS3_LAYOUT and writes_like(reader, fmt):
                _refuse_keras3_paths(reader, plan, Path(output))
        report = RenameReport(
            path=str(path), format=reader.format,
            output=None if output is None else {"path": str(folder.dest if folder else (url_of(output) or output)), "format": fmt},
            plan=plan, dry_run=dry_run,
        )
        if not allow_unused_rules:
            if plan.renamed.unused():
                report.failed_checks.append(unused_rules_failure(plan.renamed.unused(), str(path)))
            if plan.unused_transforms():
                report.failed_checks.append(unused_rules_failure(plan.unused_transforms(), str(path), applied=True))
        if not plan.steps:
            report.failed_checks.append(Failure("nothing_left", "no tensor is left to write after the filters",
                                                file=str(path), count=0))
        if report.failed_checks:
            if check:
                raise CheckFailed.of(report.failed_checks, report=report)
            return report
        metadata = metadata_edits.apply(reader.metadata) if metadata_edits is not None else reader.metadata
        if dry_run or output is None or fmt is None:
            return report
        from ..execute import Written, write_checkpoint

        metadata = dict(metadata)
        if folder is not None and spec(fmt).shards_of:
            metadata.pop("total_size", None)  # the index's count, which the new index writes itself
        typed = metadata_options(metadata_edits, fmt) or {}

        def write(dest: Path, options: dict[str, Any] | None = None) -> Written:
            assert fmt is not None
            return write_checkpoint(dest, fmt, plan, {INPUT: reader}, metadata=metadata,
                                    like=reader if writes_like(reader, fmt) else None, progress=progress,
                                    no_clobber=no_clobber and folder is None, hash_files=hash_output, encrypt=encrypt,
                                    writer_options={**typed, **(options or {})} or None)

        url = url_of(output)
        if url is not None:
            from ..execute_remote import upload_staged, write_remote

            if spec(fmt).remote_writer is not None:  # the bytes that stay the same stay in the store
                _, moved = write_remote(url, fmt, plan, {INPUT: reader}, metadata=metadata, progress=progress, jobs=jobs)
            else:  # written here, then uploaded
                written, moved = upload_staged(url, write, jobs=jobs)
                report.layout_fallback = written.layout_fallback
            if report.output is not None:
                report.output |= {"remote": moved}
            return report
        if folder is not None:
            written, entries = folders.write(folder, write, force=force, hashes=hash_output)
            report.layout_fallback = written.layout_fallback
            if report.output is not None:
                report.output |= entries
            return report
        written = write(Path(output))
        report.layout_fallback = written.layout_fallback
        if report.output is not None and written.files:
            report.output |= written.files[-1].summary()
        return report


def _by_keras_names(reader: Reader, rules: Rules, transforms: TransformRules) -> Plan:
    """A preset's rules on a Keras 3 file apply to the names Keras gives its variables (``conv1/kernel``),
    not to the stored paths (``layers/conv2d/vars/0``); the steps still read the stored tensors."""
    import dataclasses

    names = reader.match_names
    back = {v: k for k, v in names.items()}
    infos = [dataclasses.replace(t, name=names.get(t.name, t.name)) for t in reader.tensors]
    plan = plan_rename(infos, rules, transforms, back)
    steps = tuple(dataclasses.replace(s, inputs=tuple(dataclasses.replace(r, name=back.get(r.name, r.name)) for r in s.inputs))
                  for s in plan.steps)
    return dataclasses.replace(plan, steps=steps)


def _refuse_keras_name_rules(reader: Reader, rules: Rules, renamed: Renamed) -> None:
    """A rule, glob or map entry that matches no stored path but matches Keras names: say what rules apply to."""
    unused = renamed.unused()
    if not unused or not reader.match_names:
        return
    names = reader.match_names
    try:
        on_keras = apply_rules([names.get(t.name, t.name) for t in reader.tensors], rules)
    except CkptError:  # the rules would clash on the Keras names: not what was meant either way
        return
    still = set(on_keras.unused())
    meant = [text for text in unused if text not in still]
    if not meant:
        return
    touched = [k for k, v in on_keras.mapping.items() if k != v]
    touched += list(on_keras.mapping) if rules.include else list(on_keras.excluded)
    keras = touched[0] if touched else next(iter(names.values()))
    stored = next((k for k, v in names.items() if v == keras), next(iter(names)))
    raise UsageError(
        reader.path,
        f"{'; '.join(meant)} {'matches' if len(meant) == 1 else 'match'} Keras names only ({keras!r} ...), "
        f"but rename renames the stored paths ({stored!r} ...), which Keras 3 derives from each layer's "
        "class and position",
        hint="a Keras 3 layer's name lives in the model: rename the layer there; ckpt transfer and ckpt diff "
             "pair Keras 3 weights by these names and take rules on them",
    )


def _other_format_example(output: Path) -> str:
    name = output.name
    for suffix in (".weights.h5", ".weights.json", ".keras", ".h5", ".hdf5"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)] + ".safetensors"
    return "out.safetensors"


def _refuse_keras3_paths(reader: Reader, plan: Plan, output: Path) -> None:
    """Keras loads Keras 3 weights by the path its model derives: a Keras 3 output keeps every stored path."""
    moved = [(s.origin.name, s.name) for s in plan.steps if s.origin.name != s.name]
    if not moved:
        return
    old, new = moved[0]
    more = f" and {plural(len(moved) - 1, 'other')}" if len(moved) > 1 else ""
    raise UsageError(
        reader.path,
        f"this rename changes stored paths of a Keras 3 file ({old!r} -> {new!r}{more}); Keras finds Keras 3 "
        f"weights by the path the model derives from each layer's class and position, so it could not load "
        f"{output.name}",
        hint="a Keras 3 layer's name lives in the model: rename the layer there, or load these weights into a "
             f"changed model with ckpt transfer; for other tools write another format: -o {_other_format_example(output)}",
    )
