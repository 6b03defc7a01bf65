"""``ckpt transfer``: load a source's weights into a target wherever names and shapes match.

:func:`run` opens both checkpoints (headers only), plans (:func:`ckptsurgeon.plan.plan_transfer`),
checks the requested gates, and writes a new checkpoint through
:func:`ckptsurgeon.execute.write_checkpoint`. :class:`TransferReport` is the result as plain data:
rows per tensor and per layer, totals, a verdict and ``to_dict()``, built from the plan (what was
decided) and the outcomes (what happened). Its JSON form is versioned (``schema``); the fields are
documented in README.md and in ``ckptsurgeon/schemas/transfer-report.schema.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..atomic import check_output, write_text
from ..errors import CheckFailed, UsageError
from ..formats import open_checkpoint, output_format, writes_like
from ..formats.base import Reader
from ..layers import Group, group_layers, relative_name
from ..plan import (
    SHAPE_MISMATCH,
    SOURCE,
    TARGET,
    Plan,
    Step,
    TransferOptions,
    gate_failures,
    percent,
    plan_transfer,
)
from ..plan_file import load_plan, plan_to_dict
from ..tensors import gc_paused
from ..text import blame, human, plural

if TYPE_CHECKING:
    from ..execute import Outcome

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
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every requested check passed (then the output, if asked for, was written)."""
        return not self.failures

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
            parameters = replaced_tensors = replaced_parameters = 0
            for s in members:
                n = s.numel
                parameters += n
                if s.action == "replace":
                    replaced_tensors += 1
                    replaced_parameters += n
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
        replaced_params = sum(s.numel for s in replaced)
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
            "overflowed_values": sum(o.overflow for o in self.outcomes.values()),
            "source_tensors": self.plan.source_count,
            "source_tensors_unused": len(self.plan.unused_sources),
            "source_tensors_excluded": len(self.plan.excluded_sources),
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
                "hint": s.hint,
                "overflow": o.overflow if o else None,
                "changed": o.changed if o else None,
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
            "rules": [{"rule": r.text, "matches": n} for r, n in plan.renamed.rule_counts]
            + [{"rule": text, "matches": n} for text, n in plan.renamed.glob_counts],
            "map": None if not plan.options.rules.name_map else {
                "entries": len(plan.options.rules.name_map), "used": plan.renamed.map_used,
            },
            "tensors": self.tensor_dicts(),
            "layers": [r.to_dict() for r in self.layer_rows(collapse=False)],
            "unused_sources": list(plan.unused_sources),
            "excluded_sources": [{"name": n, "reason": r} for n, r in plan.excluded_sources],
            "summary": self.summary,
            "ok": self.ok,
            "failures": self.failures,
            "verdict": self.verdict,
        }





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
        return plan_transfer(source.tensors, target.tensors, options)


def _provenance(src: Reader, tgt: Reader, options: TransferOptions, replayed: str | None) -> dict[str, str]:
    rules = [r.text for r in options.rules.renames] + [f"--include {g}" for g in options.rules.include]
    rules += [f"--exclude {g}" for g in options.rules.exclude]
    return {
        "ckptsurgeon.version": __version__,
        "ckptsurgeon.command": "transfer",
        "ckptsurgeon.source": src.path.name,
        "ckptsurgeon.source_sha256": src.content_sha256(),
        "ckptsurgeon.target": tgt.path.name,
        "ckptsurgeon.target_sha256": tgt.content_sha256(),
        "ckptsurgeon.rules": json.dumps(
            {"rules": rules, "map_entries": len(options.rules.name_map), "match": options.match,
             "keep_dtype": options.keep_dtype, "replayed_plan": replayed},
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
) -> TransferReport:
    """Load ``source``'s weights into ``target`` where names (after the rules) and shapes match; write ``output``.

    The output is a new file, written atomically in the target's format (or the one ``output``'s
    extension names). When a requested check fails nothing is written and the report says so
    (``ok`` False, ``failures``); with ``check`` that raises :class:`~ckptsurgeon.errors.CheckFailed`
    (exit 1) carrying the report. With ``dry_run`` only headers are read and nothing is written.

    ``save_plan`` writes the resolved mapping with the inputs' header digests; ``plan_file``
    replays such a mapping instead of applying rules, and refuses inputs whose headers changed.
    ``provenance`` records the tool version, the inputs' sha256 and the rules in the output's
    metadata. ``verify`` re-reads the written file before it is renamed into place.
    """
    options = options or TransferOptions()
    if output is None and not dry_run:
        raise UsageError(None, "an output path is needed (-o OUT), or --dry-run")
    if plan_file is not None and not options.rules.empty:
        raise UsageError(plan_file, "a saved plan is replayed as it is; rename, map and filter rules cannot be added")
    with open_checkpoint(source) as src, open_checkpoint(target) as tgt:
        plan = plan_readers(src, tgt, options)  # with a saved plan: the same-file guard
        if plan_file is not None:
            plan = load_plan(Path(plan_file), src, tgt, options)
        inputs = [*src.files, *tgt.files]
        fmt = None
        if output is not None:
            fmt = output_format(output, output_format_name)
            check_output(output, inputs)
        if save_plan is not None:
            check_output(save_plan, inputs)
        report = TransferReport(
            source=describe_input(src), target=describe_input(tgt),
            output=None if output is None else {"path": str(output), "format": fmt},
            plan=plan, dry_run=dry_run,
        )
        report.failures = gate_failures(plan)
        if report.failures:
            if check:
                raise CheckFailed(tgt.path, "; ".join(report.failures), report=report)
            return report
        if save_plan is not None:
            doc = plan_to_dict(plan, src.header_digest(), tgt.header_digest())
            write_text(save_plan, json.dumps(doc, indent=2, ensure_ascii=False) + "\n", inputs)
        if dry_run or output is None or fmt is None:
            return report
        metadata = dict(tgt.metadata)
        if provenance:
            metadata |= _provenance(src, tgt, options, str(plan_file) if plan_file else None)
        from ..execute import write_checkpoint

        written = write_checkpoint(
            Path(output), fmt, plan, {SOURCE: src, TARGET: tgt}, metadata=metadata,
            like=tgt if writes_like(tgt, fmt) else None, count_changes=TARGET if count_changes else None,
            progress=progress, verify=verify,
        )
        report.outcomes = written.outcomes
        return report
