"""Plan a transfer from metadata alone: one frozen step per output tensor, no arrays, no files.

``build_plan(source, target, options)`` applies the rename / filter / map rules to the source's
names, fixes a wrapper prefix when asked, pairs target tensors with source tensors and decides for
every output tensor: replace it from the source (maybe with a cast), keep the target's value (and
why), or add an unmatched source tensor. ``gate_failures`` says which requested checks fail.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .match import (
    WRAPPER_PREFIXES,
    MatchMode,
    Pairing,
    PrefixFix,
    auto_prefix,
    did_you_mean,
    format_shape,
    match,
)
from .rules import Renamed, Rules, apply_rules
from .tensors import DTYPES, TensorInfo, default_layer

Action = Literal["replace", "keep", "add"]

# Machine-readable reasons (the report's ``kind`` field).
MATCHED = "matched"
NO_SOURCE = "no_source"
SHAPE_MISMATCH = "shape_mismatch"
AMBIGUOUS = "ambiguous"
NOT_CASTABLE = "dtype_not_castable"
TARGET_FILTERED = "target_filtered"
SOURCE_EXCLUDED = "source_excluded"
EXTRA = "unmatched_source_added"


@dataclass(frozen=True)
class TransferOptions:
    """Everything that decides a transfer's plan and its gates (not how bytes move)."""

    rules: Rules = field(default_factory=Rules)
    match: MatchMode = "exact"
    auto_prefix: bool = True
    prefixes: tuple[str, ...] = WRAPPER_PREFIXES
    only_target: tuple[str, ...] = ()
    skip_target: tuple[str, ...] = ()
    keep_dtype: bool = False
    add_unmatched: bool = False
    allow_unused_rules: bool = False
    strict: bool = False
    min_coverage: float | None = None
    allow_empty: bool = False


@dataclass(frozen=True)
class Step:
    """One output tensor: where its value comes from, in which dtype, and why."""

    name: str
    layer: str
    shape: tuple[int, ...]
    dtype: str  # the output dtype
    action: Action
    kind: str
    reason: str
    source: str | None = None  # the source tensor's stored name
    source_key: str | None = None  # its name after the rules
    source_shape: tuple[int, ...] | None = None
    source_dtype: str | None = None
    hint: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def from_source(self) -> bool:
        return self.action != "keep"

    @property
    def cast(self) -> tuple[str, str] | None:
        if self.from_source and self.source_dtype and self.source_dtype != self.dtype:
            return self.source_dtype, self.dtype
        return None


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    unused_sources: tuple[str, ...]  # stored names of loadable source tensors no step uses
    excluded_sources: tuple[tuple[str, str], ...]  # stored name, reason
    prefix_fix: PrefixFix | None
    renamed: Renamed
    options: TransferOptions
    source_count: int

    @property
    def replaced(self) -> list[Step]:
        return [s for s in self.steps if s.action == "replace"]

    @property
    def target_steps(self) -> list[Step]:
        return [s for s in self.steps if s.action != "add"]


def castable(src: str, dst: str) -> bool:
    """Casts the planner makes on its own: float to float, and integer to integer (range-checked)."""
    a, b = DTYPES[src].kind, DTYPES[dst].kind
    return src == dst or (a == b == "float") or (a in ("int", "uint") and b in ("int", "uint"))


def _glob_hit(name: str, globs: Sequence[str]) -> str | None:
    return next((g for g in globs if fnmatch.fnmatchcase(name, g)), None)


def _target_filter(name: str, options: TransferOptions) -> str | None:
    """Why a target tensor may not be replaced, or None when it may."""
    if options.only_target and _glob_hit(name, options.only_target) is None:
        return "not selected by --only-target"
    hit = _glob_hit(name, options.skip_target)
    return f"skipped by --skip-target '{hit}'" if hit is not None else None


def _matched_reason(pairing: Pairing, mode: MatchMode, renamed: Renamed, mapped: set[str]) -> str:
    src = pairing.source
    assert src is not None
    if mode == "order":
        return "paired by position, same shape"
    if mode == "suffix" and pairing.source_key != pairing.target.name:
        return f"suffix match of {pairing.source_key!r}, same shape"
    if src.name == pairing.target.name:
        return "same name and shape"
    if src.name in mapped:
        return "same name and shape (map entry)"
    after_rules = renamed.mapping[src.name]
    via = [w for w, done in (("rules", after_rules != src.name), ("prefix fix", after_rules != pairing.source_key)) if done]
    return f"same name and shape (after {' and '.join(via)})"


def build_plan(source: Sequence[TensorInfo], target: Sequence[TensorInfo], options: TransferOptions) -> Plan:
    """Decide every output tensor from the two checkpoints' metadata (see the module docstring)."""
    renamed = apply_rules([t.name for t in source], options.rules)
    by_stored = {t.name: t for t in source}
    mapped = {old for old, _ in options.rules.name_map}

    keyed = {new: by_stored[old] for old, new in renamed.mapping.items()}
    fix: PrefixFix | None = None
    if options.auto_prefix and options.match != "order":
        free = [k for k, info in keyed.items() if info.name not in mapped]
        fix = auto_prefix(free, [t.name for t in target], options.prefixes)
        if fix is not None:
            keyed = {(k if info.name in mapped else fix.apply(k)): info for k, info in keyed.items()}

    eligible = [t for t in target if _target_filter(t.name, options) is None]
    pairings = {p.target.name: p for p in match(eligible, keyed, options.match)}
    used = {p.source_key for p in pairings.values() if p.status == "matched"}
    unused_infos = [TensorInfo(k, info.shape, info.dtype) for k, info in keyed.items() if k not in used]
    excluded = dict(renamed.excluded)

    steps: list[Step] = []
    for t in target:
        keep = dict(name=t.name, layer=t.layer, shape=t.shape, dtype=t.dtype, action="keep")
        why_not = _target_filter(t.name, options)
        if why_not is not None:
            steps.append(Step(**keep, kind=TARGET_FILTERED, reason=why_not))  # type: ignore[arg-type]
            continue
        p = pairings[t.name]
        src = p.source
        if p.status == "matched" and src is not None:
            out_dtype = src.dtype if options.keep_dtype else t.dtype
            if not castable(src.dtype, out_dtype):
                steps.append(Step(
                    **keep, kind=NOT_CASTABLE, source=src.name, source_key=p.source_key,  # type: ignore[arg-type]
                    source_shape=src.shape, source_dtype=src.dtype,
                    reason=f"dtype {src.dtype} is not cast to {t.dtype} (use --keep-dtype to keep the source's)",
                ))
                continue
            steps.append(Step(
                name=t.name, layer=t.layer, shape=t.shape, dtype=out_dtype, action="replace", kind=MATCHED,
                reason=_matched_reason(p, options.match, renamed, mapped),
                source=src.name, source_key=p.source_key, source_shape=src.shape, source_dtype=src.dtype,
            ))
        elif p.status == "shape_mismatch" and src is not None:
            steps.append(Step(
                **keep, kind=SHAPE_MISMATCH, source=src.name, source_key=p.source_key,  # type: ignore[arg-type]
                source_shape=src.shape, source_dtype=src.dtype,
                reason=f"shape mismatch: source {format_shape(src.shape)} vs target {format_shape(t.shape)}",
            ))
        elif p.status == "ambiguous":
            note = f"; {p.note}" if p.note else ""
            steps.append(Step(
                **keep, kind=AMBIGUOUS,  # type: ignore[arg-type]
                reason=f"ambiguous: {', '.join(p.candidates)}{note}",
            ))
        elif t.name in excluded:
            steps.append(Step(**keep, kind=SOURCE_EXCLUDED, reason=f"source {excluded[t.name]}"))  # type: ignore[arg-type]
        else:
            hint = did_you_mean(t, unused_infos)
            steps.append(Step(**keep, kind=NO_SOURCE, reason="no source tensor", hint=hint))  # type: ignore[arg-type]

    unused = [info.name for k, info in keyed.items() if k not in used]
    if options.add_unmatched:
        target_names = {t.name for t in target}
        for key, info in keyed.items():
            if key in used or key in target_names:
                continue
            steps.append(Step(
                name=key, layer=default_layer(key), shape=info.shape, dtype=info.dtype, action="add", kind=EXTRA,
                reason="unmatched source tensor added (--add-unmatched)",
                source=info.name, source_key=key, source_shape=info.shape, source_dtype=info.dtype,
            ))
        added = {s.source for s in steps if s.action == "add"}
        unused = [n for n in unused if n not in added]

    return Plan(
        steps=tuple(steps),
        unused_sources=tuple(unused),
        excluded_sources=tuple(renamed.excluded.items()),
        prefix_fix=fix,
        renamed=renamed,
        options=options,
        source_count=len(source),
    )


def gate_failures(plan: Plan) -> list[str]:
    """The requested checks this plan fails, each as one sentence (empty when all pass)."""
    o = plan.options
    failures: list[str] = []
    unused_rules = plan.renamed.unused()
    if unused_rules and not o.allow_unused_rules:
        failures.append(
            f"{len(unused_rules)} rule(s) matched no tensor name: {'; '.join(unused_rules)} "
            "(--allow-unused-rules accepts that)"
        )
    targets = plan.target_steps
    replaced = plan.replaced
    if not replaced and not o.allow_empty:
        failures.append(
            "nothing was loaded: no source tensor matched a target tensor by name and shape "
            "(see the reasons above; --allow-empty accepts that)"
        )
    if o.strict:
        kept = [s.name for s in targets if s.action != "replace"]
        if kept:
            failures.append(f"--strict: {len(kept)} target tensor(s) not replaced: {_few(kept)}")
        if plan.unused_sources:
            failures.append(
                f"--strict: {len(plan.unused_sources)} source tensor(s) unused: {_few(list(plan.unused_sources))}"
            )
    if o.min_coverage is not None:
        total = sum(s.numel for s in targets)
        share = sum(s.numel for s in replaced) / total if total else 1.0
        if share < o.min_coverage:
            failures.append(
                f"--min-coverage {o.min_coverage:g}: replaced {percent(share)} of the target's parameters"
            )
    return failures


def percent(share: float) -> str:
    """0.9987 -> '99.8%' (never rounded up past what was reached); 0.5 -> '50%'."""
    tenths = int(share * 1000 + 1e-9) / 10
    return f"{tenths:.0f}%" if tenths == int(tenths) else f"{tenths:.1f}%"


def _few(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# --- saved plans: review a mapping once, replay it exactly -----------------------------------------

PLAN_SCHEMA = "ckptsurgeon/plan/1"


def plan_to_dict(plan: Plan, source_digest: str, target_digest: str) -> dict[str, object]:
    """The resolved mapping as JSON-ready data, with the digests of the inputs' headers."""
    return {
        "schema": PLAN_SCHEMA,
        "source_digest": source_digest,
        "target_digest": target_digest,
        "match": plan.options.match,
        "steps": [
            {"name": s.name, "action": s.action, "source": s.source, "dtype": s.dtype, "kind": s.kind,
             "reason": s.reason}
            for s in plan.steps
        ],
    }


def plan_from_dict(
    doc: object, source: Sequence[TensorInfo], target: Sequence[TensorInfo], where: str, options: TransferOptions,
) -> Plan:
    """Rebuild a saved plan against the inputs it was made for (the caller has checked their digests).

    Raises ValueError with a one-line reason when the document is not a plan these inputs can replay.
    """
    if not isinstance(doc, dict) or doc.get("schema") != PLAN_SCHEMA or not isinstance(doc.get("steps"), list):
        raise ValueError(f"{where} is not a ckptsurgeon plan (schema {PLAN_SCHEMA})")
    src = {t.name: t for t in source}
    tgt = {t.name: t for t in target}
    steps: list[Step] = []
    for raw in doc["steps"]:
        if not isinstance(raw, dict):
            raise ValueError("a step is not an object")
        name, action, origin, dtype = raw.get("name"), raw.get("action"), raw.get("source"), raw.get("dtype")
        if action == "keep":
            info = tgt.get(name)  # type: ignore[arg-type]
            if info is None:
                raise ValueError(f"the plan keeps {name!r}, which the target does not have")
            steps.append(Step(name, info.layer, info.shape, info.dtype, "keep", str(raw.get("kind", NO_SOURCE)),
                              str(raw.get("reason", ""))))
            continue
        if action not in ("replace", "add") or origin not in src or dtype not in DTYPES:
            raise ValueError(f"step {name!r} is not a valid replace/add step for these inputs")
        info = src[origin]
        layer = tgt[name].layer if name in tgt else default_layer(str(name))
        shape = tgt[name].shape if name in tgt else info.shape
        steps.append(Step(str(name), layer, shape, str(dtype), action, str(raw.get("kind", MATCHED)),
                          str(raw.get("reason", "")), source=origin, source_key=str(name),
                          source_shape=info.shape, source_dtype=info.dtype))
    used = {s.source for s in steps if s.source}
    return Plan(
        steps=tuple(steps),
        unused_sources=tuple(t.name for t in source if t.name not in used),
        excluded_sources=(),
        prefix_fix=None,
        renamed=apply_rules([t.name for t in source], Rules()),
        options=options,
        source_count=len(source),
    )
