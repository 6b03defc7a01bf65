"""The transfer report as plain data: rows per tensor and per layer, totals, a verdict, ``to_dict()``.

Built from the plan (what was decided) and the execution's outcomes (what happened). The JSON
form is versioned (``schema``); its fields are documented in README.md and in
``ckptsurgeon/schemas/transfer-report.schema.json``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .layers import Group, group_layers, relative_name
from .plan import SHAPE_MISMATCH, Plan, Step, percent
from .rules import Renamed

if TYPE_CHECKING:
    from .execute import Outcome

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

    # --- per layer ------------------------------------------------------------------------
    def layer_groups(self, collapse: bool = True) -> list[Group[Step]]:
        def signature(s: Step) -> tuple[Any, ...]:
            return (relative_name(s.name, s.layer), s.shape, s.dtype, s.action, s.kind, s.cast,
                    s.reason if s.kind == SHAPE_MISMATCH else None)

        return group_layers(self.plan.steps, lambda s: s.layer, signature, collapse=collapse)

    def layer_rows(self, collapse: bool = True) -> list[LayerRow]:
        rows = []
        for g in self.layer_groups(collapse):
            members = [s for rows_ in g.members for s in rows_]
            changed = None
            if members and all(self.outcomes.get(s.name) and self.outcomes[s.name].changed is not None for s in members):
                changed = sum(self.outcomes[s.name].changed or 0 for s in members)
            casts = sorted({f"cast {a} -> {b}" for s in g.rows if (c := s.cast) for a, b in [c]})
            rows.append(LayerRow(
                name=g.name or "(top level)",
                layers=g.layers,
                tensors=len(members),
                parameters=sum(s.numel for s in members),
                replaced_tensors=sum(1 for s in members if s.action == "replace"),
                replaced_parameters=sum(s.numel for s in members if s.action == "replace"),
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
        layers = list(dict.fromkeys(s.layer for s in steps))
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
            extras.append(_plural(s["shape_mismatches"], "shape mismatch", "shape mismatches"))
        if s["casts"]:
            extras.append(_plural(s["casts"], "tensor cast", "tensors cast"))
        if s["overflowed_values"]:
            extras.append(_plural(s["overflowed_values"], "value overflowed", "values overflowed"))
        if s["added_tensors"]:
            extras.append(_plural(s["added_tensors"], "source tensor added", "source tensors added"))
        if s["source_tensors_unused"]:
            extras.append(_plural(s["source_tensors_unused"], "source tensor unused", "source tensors unused"))
        if s["changed_values"] is not None:
            extras.append(_plural(s["changed_values"], "value changed", "values changed"))
        if self.dry_run:
            extras.append("dry run, nothing written")
        return "; ".join([text, *extras])

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
            "failures": self.failures,
            "verdict": self.verdict,
        }


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def human(n: int) -> str:
    """1234 -> '1,234'; 1_210_000 -> '1.21 M'; 3_400_000_000 -> '3.40 B'."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.2f} B"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    return f"{n:,}"


RENAME_SCHEMA = "ckptsurgeon/rename/1"


@dataclass
class RenameReport:
    """What ``ckpt rename`` did: old name -> new name for every tensor written, and what was dropped."""

    path: str
    format: str
    output: dict[str, Any] | None
    renamed: Renamed
    names: list[tuple[str, str]]  # (old, new) for every tensor written, in file order
    dry_run: bool = False
    failures: list[str] = field(default_factory=list)
    layout_fallback: str | None = None  # why a Keras layout could not follow the renames (written plain)

    @property
    def summary(self) -> dict[str, int]:
        changed = sum(1 for old, new in self.names if old != new)
        return {"tensors": len(self.names), "renamed": changed, "unchanged": len(self.names) - changed,
                "dropped": len(self.renamed.excluded)}

    @property
    def verdict(self) -> str:
        s = self.summary
        text = f"renamed {s['renamed']} of {s['tensors']} tensors"
        if s["dropped"]:
            text += f"; {_plural(s['dropped'], 'tensor', 'tensors')} left out by the filters"
        if self.dry_run:
            text += "; dry run, nothing written"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RENAME_SCHEMA,
            "path": self.path,
            "format": self.format,
            "output": self.output,
            "dry_run": self.dry_run,
            "tensors": [{"old": old, "new": new, "renamed": old != new} for old, new in self.names],
            "dropped": [{"name": n, "reason": r} for n, r in self.renamed.excluded.items()],
            "rules": [{"rule": r.text, "matches": n} for r, n in self.renamed.rule_counts]
            + [{"rule": text, "matches": n} for text, n in self.renamed.glob_counts],
            "summary": self.summary,
            "layout_fallback": self.layout_fallback,
            "failures": self.failures,
            "verdict": self.verdict,
        }
