"""``ckpt transfer``: load a source's weights into a target wherever names and shapes match.

:func:`run` opens both checkpoints (headers only), plans (:func:`ckptsurgeon.plan.plan_transfer`),
checks the requested gates, and writes a new checkpoint through
:func:`ckptsurgeon.execute.write_checkpoint`. :class:`TransferReport` is the result as plain data:
rows per tensor and per layer, totals, a verdict and ``to_dict()``, built from the plan (what was
decided) and the outcomes (what happened). Its JSON form is versioned (``schema``); the fields are
documented in README.md and in ``ckptsurgeon/schemas/transfer-report.schema.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, folders
from ..atomic import check_distinct, check_output, write_text
from ..errors import CheckFailed, Failure, UsageError
from ..folders import FolderPlan, folder_output_options
from ..formats import open_checkpoint, output_format, spec, writes_like
from ..formats._s3 import url_of
from ..formats.base import OpenOptions, Reader
from ..layers import Group, group_layers, relative_name
from ..plan import (
    SHAPE_MISMATCH,
    SOURCE,
    TARGET,
    Plan,
    Step,
    TensorRef,
    TransferOptions,
    gate_failures,
    percent,
    plan_transfer,
)
from ..plan_file import SavedPlan, ignored_options, load_inverse, load_plan, plan_to_dict, rule_texts
from ..tensors import TensorInfo, gc_paused
from ..text import blame, human, listing, plural
from ..transforms import Layout, Resize

if TYPE_CHECKING:
    from ..execute import Outcome, Written

Progress = Callable[[int, int], None]

SCHEMA = "ckptsurgeon/transfer-report/1"


@dataclass
class LayerRow:
    name: str  # a layer, or a collapsed pattern like ``h.{0..11}.attn``
    layers: list[str]
    tensors: int
    parameters: int
    replaced_tensors: int
    replaced_parameters: int
    status: str  # replaced / cast / partly / kept / added
    reasons: list[str]
    changed: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.name, "layers": self.layers, "tensors": self.tensors, "parameters": self.parameters,
            "replaced_tensors": self.replaced_tensors, "replaced_parameters": self.replaced_parameters,
            "status": self.status, "reasons": self.reasons, "changed": self.changed,
        }


def _layer_status(steps: list[Step]) -> str:
    replaced = [s for s in steps if s.action == "replace"]
    if all(s.action == "add" for s in steps):
        return "added"
    if not replaced:
        return "kept"
    if len(replaced) < sum(1 for s in steps if s.action != "add"):
        return "partly"
    if any(s.resize is not None for s in replaced):
        return "resized"
    return "cast" if any(s.cast for s in replaced) else "replaced"


def _reasons(steps: list[Step]) -> list[str]:
    """Distinct reasons for kept tensors, with a count where several tensors share one."""
    counts = Counter(s.reason for s in steps if s.action == "keep")
    return [reason if n == 1 else f"{reason} ×{n}" for reason, n in counts.items()]


@dataclass
class TransferReport:
    source: dict[str, Any]
    target: dict[str, Any]
    output: dict[str, Any] | None
    plan: Plan
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    dry_run: bool = False
    failed_checks: list[Failure] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """Each failed check as one sentence (the library's words: options by their keyword)."""
        return [str(f) for f in self.failed_checks]

    @property
    def ok(self) -> bool:
        """True when every requested check passed (then the output, if asked for, was written)."""
        return not self.failed_checks

    # --- per layer ------------------------------------------------------------------------
    def layer_groups(self, collapse: bool = True) -> list[Group[Step]]:
        def signature(s: Step) -> tuple[Any, ...]:
            out = s.out
            return (relative_name(out.name, s.layer), out.shape, out.dtype, s.action, s.kind, s.cast,
                    s.reason if s.kind == SHAPE_MISMATCH else None)

        return group_layers(self.plan.steps, lambda s: s.layer, signature, collapse=collapse)

    @gc_paused
    def layer_rows(self, collapse: bool = True) -> list[LayerRow]:
        rows = []
        for g in self.layer_groups(collapse):
            members = [s for rows_ in g.members for s in rows_]
            changed = None
            if members and all(self.outcomes.get(s.name) and self.outcomes[s.name].changed is not None for s in members):
                changed = sum(self.outcomes[s.name].changed or 0 for s in members)
            casts = sorted({f"cast {a} -> {b}" for s in g.rows if (c := s.cast) for a, b in [c]})
            casts += sorted({_transform_note(s) for s in g.rows if s.action != "keep" and s.transforms})
            parameters = replaced_tensors = replaced_parameters = 0
            for s in members:
                n = s.numel
                parameters += n
                if s.action == "replace":
                    replaced_tensors += 1
                    replaced_parameters += s.loaded
            rows.append(LayerRow(
                name=g.name or "(top level)",
                layers=g.layers,
                tensors=len(members),
                parameters=parameters,
                replaced_tensors=replaced_tensors,
                replaced_parameters=replaced_parameters,
                status=_layer_status(g.rows),
                reasons=_reasons(g.rows) + casts,
                changed=changed,
            ))
        return rows

    def on_purpose_notes(self) -> list[str]:
        """One line per rule that left tensors out on purpose: which, on which side (--strict does not count them)."""
        by_rule: dict[str, dict[str, list[str]]] = {}
        for side, name, rule in self.plan.on_purpose:
            by_rule.setdefault(rule, {}).setdefault(side, []).append(name)
        lines = []
        for rule, sides in by_rule.items():
            parts = [f"{plural(len(names), f'{side} tensor')} ({listing(names)})" for side, names in sides.items()]
            tail = "; not counted by --strict" if self.plan.options.strict else ""
            lines.append(f"left out on purpose by {rule}: {', '.join(parts)}{tail}")
        return lines

    @property
    def warnings(self) -> list[str]:
        """One line per preset that replaced tensors look like they needed (a Keras kernel into a PyTorch weight)."""
        by_preset: dict[str, list[str]] = {}
        for s in self.plan.warnings:
            by_preset.setdefault(s.warning or "", []).append(s.name)
        return [f"{plural(len(names), 'tensor')} ({listing(names)}) moved between names of two frameworks with no "
                f"layout transform: their layouts differ (a square kernel loads, transposed wrongly); use --preset {preset} "
                "or --transform" for preset, names in by_preset.items()]

    @property
    def hints(self) -> list[tuple[str, str]]:
        """(target tensor, closest unused source tensor of its shape) for targets with no source."""
        return [(s.name, s.hint) for s in self.plan.steps if s.hint]

    # --- totals ---------------------------------------------------------------------------
    @property
    def summary(self) -> dict[str, Any]:
        steps = self.plan.target_steps
        replaced = [s for s in steps if s.action == "replace"]
        layers = {s.layer for s in steps}
        changed_layers = {s.layer for s in replaced}
        total_params = sum(s.numel for s in steps)
        replaced_params = sum(s.loaded for s in replaced)
        kinds = Counter(s.kind for s in steps if s.action == "keep")
        return {
            "target_tensors": len(steps),
            "replaced_tensors": len(replaced),
            "kept_tensors": len(steps) - len(replaced),
            "added_tensors": sum(1 for s in self.plan.steps if s.action == "add"),
            "target_parameters": total_params,
            "replaced_parameters": replaced_params,
            "coverage": replaced_params / total_params if total_params else 1.0,
            "layers": len(layers),
            "layers_changed": len(changed_layers),
            "kept_by_reason": dict(sorted(kinds.items())),
            "shape_mismatches": kinds.get(SHAPE_MISMATCH, 0),
            "casts": sum(1 for s in replaced if s.cast),
            "transformed": sum(1 for s in self.plan.steps if s.action != "keep" and s.transforms),
            "resized": sum(1 for s in replaced if s.resize is not None),
            "layout_warnings": len(self.plan.warnings),
            "overflowed_values": sum(o.overflow for o in self.outcomes.values()),
            "nonfinite_values": (sum(o.nonfinite or 0 for o in self.outcomes.values())
                                 if any(o.nonfinite is not None for o in self.outcomes.values()) else None),
            "source_tensors": self.plan.source_count,
            "source_tensors_unused": len(self.plan.unused_sources),
            "source_tensors_excluded": len(self.plan.excluded_sources),
            "excluded_on_purpose": len(self.plan.on_purpose),
            "changed_values": (
                sum(o.changed or 0 for o in self.outcomes.values())
                if self.outcomes and all(o.changed is not None for o in self.outcomes.values()) else None
            ),
        }

    @property
    def verdict(self) -> str:
        s = self.summary
        text = (
            f"replaced {s['replaced_tensors']} of {s['target_tensors']} tensors, "
            f"{human(s['replaced_parameters'])} of {human(s['target_parameters'])} parameters "
            f"({percent(s['coverage'])}) in {s['layers_changed']} of {s['layers']} layers"
        )
        extras = []
        if s["shape_mismatches"]:
            extras.append(plural(s["shape_mismatches"], "shape mismatch", "shape mismatches"))
        if s["casts"]:
            extras.append(plural(s["casts"], "tensor cast", "tensors cast"))
        if s["transformed"] - s["resized"]:
            extras.append(plural(s["transformed"] - s["resized"], "tensor transformed", "tensors transformed"))
        if s["resized"]:
            extras.append(plural(s["resized"], "tensor resized", "tensors resized"))
        if s["layout_warnings"]:
            extras.append(plural(s["layout_warnings"], "layout warning"))
        if s["overflowed_values"]:
            extras.append(plural(s["overflowed_values"], "value overflowed", "values overflowed"))
        if s["added_tensors"]:
            extras.append(plural(s["added_tensors"], "source tensor added", "source tensors added"))
        if s["source_tensors_unused"]:
            extras.append(plural(s["source_tensors_unused"], "source tensor unused", "source tensors unused"))
        if s["changed_values"] is not None:
            extras.append(plural(s["changed_values"], "value changed", "values changed"))
        if self.dry_run:
            extras.append("dry run, nothing written")
        elif not self.ok:
            extras.append("nothing written")
        return ("" if self.ok else "FAILED: ") + "; ".join([text, *extras])

    # --- JSON -----------------------------------------------------------------------------
    def tensor_dicts(self) -> list[dict[str, Any]]:
        out = []
        for s in self.plan.steps:
            o = self.outcomes.get(s.name)
            out.append({
                "name": s.name, "layer": s.layer, "shape": list(s.shape), "dtype": s.dtype,
                "action": s.action, "kind": s.kind, "reason": s.reason,
                "source": s.source, "source_key": s.source_key,
                "source_shape": list(s.source_shape) if s.source_shape is not None else None,
                "source_dtype": s.source_dtype,
                "cast": list(s.cast) if s.cast else None,
                "sources": list(s.sources) if len(s.sources) > 1 else None,
                "transform": [t.to_dict() for t in s.transforms] if s.transforms and s.action != "keep" else None,
                "partial": r.partial() if (r := s.resize) is not None and s.action != "keep" else None,
                "warning": s.warning,
                "hint": s.hint,
                "overflow": o.overflow if o else None,
                "changed": o.changed if o else None,
                "nonfinite": o.nonfinite if o else None,
            })
        return out

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        fix = plan.prefix_fix
        return {
            "schema": SCHEMA,
            "source": self.source,
            "target": self.target,
            "output": self.output,
            "dry_run": self.dry_run,
            "match": plan.options.match,
            "prefix": None if fix is None else {
                "action": fix.action, "prefix": fix.prefix, "matches_before": fix.before, "matches_after": fix.after,
            },
            "prefix_hint": None if (h := plan.prefix_hint) is None else {
                "rule": h.rule, "action": h.action, "prefix": h.prefix, "matches_before": h.before, "matches_after": h.after,
            },
            "rules": [{"rule": r.text, "matches": n} for r, n in plan.renamed.rule_counts]
            + [{"rule": text, "matches": n} for text, n in plan.renamed.glob_counts + plan.target_glob_counts]
            + [{"rule": text, "matches": n} for text, n in plan.transform_counts],
            "presets": list(plan.options.transforms.presets),
            "warnings": self.warnings,
            "map": None if not plan.options.rules.name_map else {
                "entries": len(plan.options.rules.name_map), "used": plan.renamed.map_used,
            },
            "tensors": self.tensor_dicts(),
            "layers": [r.to_dict() for r in self.layer_rows(collapse=False)],
            "unused_sources": list(plan.unused_sources),
            "excluded_sources": [{"name": n, "reason": r} for n, r in plan.excluded_sources],
            "excluded_on_purpose": [{"side": side, "name": n, "rule": rule} for side, n, rule in plan.on_purpose],
            "summary": self.summary,
            "ok": self.ok,
            "failures": self.failures,
            "failed_checks": [f.to_dict() for f in self.failed_checks],
            "verdict": self.verdict,
        }


def _transform_note(step: Step) -> str:
    """A layer row's note for a transformed tensor: the layouts by name, a resize by what it filled."""
    notes = []
    for t in step.transforms:
        if isinstance(t, Resize):
            notes.append(f"partial: {t.partial()}" + (f" (new: {t.mode})" if t.grows else ""))
        elif isinstance(t, Layout):
            notes.append(t.label)
        else:
            notes.append(t.op)
    return ", ".join(notes)


def describe_input(reader: Reader) -> dict[str, Any]:
    return {"path": str(reader.path), "format": reader.format, "tensors": len(reader.tensors)}


def _same_input(a: Reader, b: Reader) -> bool:
    for x in a.files:
        for y in b.files:
            try:
                if os.path.samefile(x, y):
                    return True
            except OSError:
                continue
    return False


def plan_readers(source: Reader, target: Reader, options: TransferOptions) -> Plan:
    """The transfer plan from two opened checkpoints' metadata (nothing is read beyond headers)."""
    if _same_input(source, target):
        raise UsageError(source.path, f"source and target are the same file ({target.path})",
                         hint="a transfer needs two different checkpoints")
    with blame(source.path):
        if not source.match_names and not target.match_names:
            return plan_transfer(source.tensors, target.tensors, options)
        aliases = {v: k for k, v in (source.match_names | target.match_names).items()}
        plan = plan_transfer(_by_match_name(source), _by_match_name(target), options, aliases)
    return _stored_names(plan, source, target)


def _by_match_name(reader: Reader) -> list[TensorInfo]:
    """The reader's tensors under the names they are matched by (Keras 3: ``proj/kernel``)."""
    names = reader.match_names
    return [dataclasses.replace(t, name=names[t.name]) if t.name in names else t for t in reader.tensors]


def _stored_names(plan: Plan, source: Reader, target: Reader) -> Plan:
    """A plan made on match names, with every tensor it reads or writes under its stored name again.

    Output tensors take the target's stored names, so the output keeps the target's layout (a
    Keras 3 file keeps the paths Keras loads). The source keys, rules and hints stay match names;
    a tensor added from the source (``--add-unmatched``) keeps its match name, which no target
    tensor has.
    """
    stored = {SOURCE: {v: k for k, v in source.match_names.items()},
              TARGET: {v: k for k, v in target.match_names.items()}}

    def ref(r: TensorRef) -> TensorRef:
        names = stored.get(r.input, {})
        return dataclasses.replace(r, name=names[r.name]) if r.name in names else r

    steps = []
    for s in plan.steps:
        out = s.out
        if s.action != "add" and out.name in stored[TARGET]:
            out = dataclasses.replace(out, name=stored[TARGET][out.name])
        candidate = None if s.candidate is None else ref(s.candidate)
        steps.append(dataclasses.replace(s, out=out, inputs=tuple(ref(r) for r in s.inputs), candidate=candidate))
    back = stored[SOURCE]
    return dataclasses.replace(
        plan, steps=tuple(steps), unused_sources=tuple(back.get(n, n) for n in plan.unused_sources),
        excluded_sources=tuple((back.get(n, n), why) for n, why in plan.excluded_sources),
    )


def _provenance(src: Reader, tgt: Reader, options: TransferOptions, replayed: SavedPlan | None,
                plan_file: str | Path | None) -> dict[str, str]:
    rules = list(replayed.rules) if replayed is not None else rule_texts(options.rules)
    plan = None if replayed is None else {"path": Path(plan_file or "").name, "sha256": replayed.sha256}
    return {
        "ckptsurgeon.version": __version__,
        "ckptsurgeon.command": "transfer",
        "ckptsurgeon.source": src.path.name,
        "ckptsurgeon.source_sha256": src.content_sha256(),
        "ckptsurgeon.target": tgt.path.name,
        "ckptsurgeon.target_sha256": tgt.content_sha256(),
        "ckptsurgeon.rules": json.dumps(
            {"rules": rules, "map_entries": len(options.rules.name_map), "match": options.match,
             "keep_dtype": options.keep_dtype, "replayed_plan": plan},
            sort_keys=True,
        ),
    }


def run(
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

    The output is a new file, written atomically in the target's format (or the one ``output``'s
    extension names). When a requested check fails nothing is written and the report says so
    (``ok`` False, ``failed_checks``: each a :class:`~ckptsurgeon.errors.Failure` naming the input
    it is about); with ``check`` that raises :class:`~ckptsurgeon.errors.CheckFailed` (exit 1)
    carrying the report and the failures, naming the first failure's file. With ``dry_run`` only headers are read and nothing is written.

    ``save_plan`` writes the resolved mapping with the digests of the inputs' headers and bytes;
    ``plan_file`` replays such a mapping instead of applying rules, refuses inputs whose headers
    changed (and with ``pin_content`` whose bytes changed), and refuses every option it would not
    honour (UsageError, exit 2).
    ``provenance`` records the tool version, the inputs' sha256 and the rules in the output's
    metadata. ``verify`` re-reads the written file before it is renamed into place.
    ``report_path`` is where the caller will write the report: it is checked with the other
    outputs before any work (no two outputs, and no output and input, may be one file).
    ``no_clobber``: no existing file is replaced (exit 4), not even one another run creates while
    this one writes. The report's ``output`` records the committed file's size and (with
    ``hash_output``) the sha256 of its bytes.

    An ``output`` ending with a slash, or naming an existing directory, is a model folder
    (:mod:`ckptsurgeon.folders`): the weights in the target's layout (the same index and shard
    names, each tensor in its shard; with ``shard_size``, ckptsurgeon's own sharding), beside a copy
    of every other file of the target folder (when ``target`` is a folder), appearing at once. An
    existing folder is refused (OutputError) unless ``force``, which replaces it. The report's
    ``output`` then lists every file written (``files``) and the weight copies left out (``skipped``).
    """
    options = options or TransferOptions()
    if (invert or allow_lossy) and plan_file is None:
        raise UsageError(None, "--invert and --allow-lossy run a saved plan backwards: they need --plan")
    if allow_lossy and not invert:
        raise UsageError(plan_file, "--allow-lossy goes with --invert")
    if output is None and not dry_run:
        raise UsageError(None, "an output path is needed (-o OUT), or --dry-run")
    if plan_file is not None and (ignored := ignored_options(options)):
        raise UsageError(plan_file, f"a saved plan is replayed as it is; {', '.join(ignored)} would be ignored "
                         "(the plan's steps already decide it): leave them out, or plan again")
    if pin_content and plan_file is None:
        raise UsageError(None, "--pin-content checks the inputs against a saved plan: it needs --plan")
    check_distinct([("-o", output), ("--report", report_path), ("--save-plan", save_plan)],
                   [("SOURCE", source), ("TARGET", target), ("--plan", plan_file)])
    folder_out, size = folder_output_options(output, shard_size, force=force, dry_run=dry_run)
    remote_out = url_of(output) is not None
    with open_checkpoint(source, source_options) as src, open_checkpoint(target, target_options) as tgt:
        replayed = None
        if invert:
            if _same_input(src, tgt):
                raise UsageError(src.path, f"source and target are the same file ({tgt.path})")
            replayed = load_inverse(Path(plan_file or ""), src, tgt, allow_lossy=allow_lossy)
            plan = replayed.plan
        else:
            plan = plan_readers(src, tgt, options)  # with a saved plan: the same-file guard
        if plan_file is not None and not invert:
            replayed = load_plan(Path(plan_file), src, tgt, options, pin_content=pin_content)
            plan = replayed.plan
        inputs = [*src.files, *tgt.files]
        fmt = None
        folder: FolderPlan | None = None
        if output is not None and folder_out:
            folder = folders.prepare(output, tgt, target, fmt_name=output_format_name, shard_size=size, force=force,
                                     no_clobber=no_clobber, inputs=inputs, folders=(source, target),
                                     others=[("--report", report_path), ("--save-plan", save_plan)])
            fmt = folder.fmt
        elif remote_out:
            from ..execute_remote import remote_output

            _, fmt = remote_output(output, output_format_name, tgt, no_clobber=no_clobber,
                                   unsupported={"--verify": verify, "--count-changes": count_changes,
                                                "--enc-key-file": encrypt is not None})
        elif output is not None:
            fmt = output_format(output, output_format_name, like=tgt)
            check_output(output, inputs, no_clobber=no_clobber)
        for also in (save_plan, report_path):
            if also is not None:
                check_output(also, inputs, no_clobber=no_clobber)  # also against every shard of a sharded input
        report = TransferReport(
            source=describe_input(src), target=describe_input(tgt),
            output=None if output is None else {"path": str(folder.dest if folder else (url_of(output) or output)), "format": fmt},
            plan=plan, dry_run=dry_run,
        )
        report.failed_checks = gate_failures(plan, source=str(src.path), target=str(tgt.path))
        if report.failed_checks:
            if check:
                raise CheckFailed.of(report.failed_checks, report=report)
            return report
        if save_plan is not None:
            doc = plan_to_dict(plan, src, tgt)
            write_text(save_plan, json.dumps(doc, indent=2, ensure_ascii=False) + "\n", inputs, no_clobber=no_clobber)
        if dry_run or output is None or fmt is None:
            return report
        metadata = dict(tgt.metadata)
        if provenance:
            metadata |= _provenance(src, tgt, options, replayed, plan_file)
        from ..execute import GateFailed, ValueGates, write_checkpoint

        gates = ValueGates(allow_overflow=options.allow_overflow, fail_on_nonfinite=options.fail_on_nonfinite)
        if folder is not None and spec(fmt).shards_of:
            metadata.pop("total_size", None)  # the index's count, which the new index writes itself

        def write(dest: Path, options: dict[str, Any] | None = None) -> Written:
            assert fmt is not None
            return write_checkpoint(
                dest, fmt, plan, {SOURCE: src, TARGET: tgt}, metadata=metadata,
                like=tgt if writes_like(tgt, fmt) else None, update=True, count_changes=TARGET if count_changes else None,
                progress=progress, verify=verify, gates=gates, no_clobber=no_clobber and folder is None,
                hash_files=hash_output, encrypt=encrypt, writer_options=options,
            )

        entries: dict[str, Any] = {}
        try:
            if remote_out:
                from ..execute_remote import upload_staged, write_remote

                url = url_of(output)
                assert url is not None
                if spec(fmt).remote_writer is not None:  # the bytes that stay the same stay in the store
                    report.outcomes, moved = write_remote(url, fmt, plan, {SOURCE: src, TARGET: tgt}, metadata=metadata,
                                                          gates=gates, progress=progress, jobs=jobs)
                else:  # written here, then uploaded
                    staged, moved = upload_staged(url, write, jobs=jobs)
                    report.outcomes = staged.outcomes
                if report.output is not None:
                    report.output |= {"remote": moved}
                return report
            if folder is None:
                written = write(Path(output))
            else:
                written, entries = folders.write(folder, write, force=force, hashes=hash_output)
        except GateFailed as failed:  # nothing was written; the report keeps the counts
            report.outcomes, report.failed_checks = failed.outcomes, list(failed.failures)
            if check:
                raise CheckFailed.of(report.failed_checks, report=report) from None
            return report
        report.outcomes = written.outcomes
        if folder is not None and report.output is not None:
            report.output |= entries | {"layout": written.layout()}
        elif report.output is not None and written.files:
            report.output |= written.files[-1].summary() | {"layout": written.layout()}
        return report


def run_into(state: Any, source: str | Path, options: TransferOptions | None = None, *, dry_run: bool = False,
             check: bool = False, source_options: OpenOptions | None = None) -> TransferReport:
    """Load ``source``'s weights into ``state`` (a mapping of names to arrays, filled in place) where
    names (after the rules) and shapes match, as :func:`run` does into a file; returns the same report.

    ``state`` is a state dict: numpy arrays, or anything numpy can view without a copy (CPU PyTorch
    tensors, by duck typing; :func:`ckptsurgeon.memory.views`). When a requested check fails
    nothing is changed.
    """
    from ..execute import GateFailed, ValueGates, fill_arrays
    from ..memory import MemoryReader, views

    options = options or TransferOptions()
    arrays = views(state)
    with open_checkpoint(source, source_options) as src:
        tgt = MemoryReader(arrays)
        plan = plan_readers(src, tgt, options)
        report = TransferReport(source=describe_input(src), target=describe_input(tgt), output=None, plan=plan,
                                dry_run=dry_run)
        report.failed_checks = gate_failures(plan, source=str(src.path), target=str(tgt.path))
        if not report.failed_checks and not dry_run:
            gates = ValueGates(allow_overflow=options.allow_overflow, fail_on_nonfinite=options.fail_on_nonfinite)
            try:
                report.outcomes = fill_arrays(plan, {SOURCE: src, TARGET: tgt}, arrays, gates=gates)
            except GateFailed as failed:
                report.outcomes, report.failed_checks = failed.outcomes, list(failed.failures)
    if check and report.failed_checks:
        raise CheckFailed.of(report.failed_checks, report=report)
    return report
