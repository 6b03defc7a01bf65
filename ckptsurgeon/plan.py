r"""Plans from metadata alone: one frozen step per output tensor, no arrays, no files.

Transfer, rename and convert all plan into the same shape: a :class:`Plan` of :class:`Step`\ s,
each naming the output tensor (:class:`~ckptsurgeon.tensors.TensorSpec`), the input tensor its
values come from (a :class:`TensorRef` into one of the named inputs), the transform on the way
(a :class:`Cast` is the first; none for a byte-for-byte copy), the action and the reason. One
executor (:func:`ckptsurgeon.execute.write_checkpoint`) writes any plan.

- :func:`plan_transfer` applies the rename / filter / map rules to the source's names, fixes a
  wrapper prefix when asked, pairs target tensors with source tensors and decides for every output
  tensor: replace it from the source (maybe with a cast), keep the target's value (and why), or
  add an unmatched source tensor. :func:`gate_failures` says which requested checks fail.
- :func:`plan_rename` writes every kept tensor of one input under its new name.
- :func:`plan_convert` writes the chosen tensors of one input, floats cast when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .errors import Failure
from .match import (
    WRAPPER_PREFIXES,
    Hints,
    MatchMode,
    Pairing,
    PrefixFix,
    auto_prefix,
    choose_prefix,
    format_shape,
    match,
    model_prefixes,
)
from .rules import Renamed, Rules, apply_rules, glob_counts, glob_hit, rule_label, unused_rules_failure
from .tensors import DTYPES, TensorInfo, TensorSpec, default_layer, gc_paused, numel
from .text import percent

Action = Literal["replace", "keep", "add", "write"]

# The inputs a step can read from: a transfer's two checkpoints, or the one input of rename and convert.
SOURCE = "source"
TARGET = "target"
INPUT = "input"

# Machine-readable reasons (the report's ``kind`` field).
MATCHED = "matched"
NO_SOURCE = "no_source"
SHAPE_MISMATCH = "shape_mismatch"
AMBIGUOUS = "ambiguous"
NOT_CASTABLE = "dtype_not_castable"
TARGET_FILTERED = "target_filtered"
SOURCE_EXCLUDED = "source_excluded"
EXTRA = "unmatched_source_added"
RENAMED = "renamed"
UNCHANGED = "unchanged"
CONVERTED = "converted"


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
    allow_overflow: bool = False  # a cast whose values overflow fails unless this (checked while writing)
    fail_on_nonfinite: bool = False  # fail when a tensor written holds NaN or Inf in its input


@dataclass(frozen=True, slots=True)
class TensorRef:
    """One tensor of one input: which input (``source``, ``target`` or ``input``) and its stored name."""

    input: str
    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, input: str, info: TensorInfo) -> TensorRef:
        return cls(input, info.name, info.shape, info.dtype)


@dataclass(frozen=True, slots=True)
class Cast:
    """The values converted to another dtype of the same kind (float to float, integer to integer)."""

    to: str

    def output(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
        """The output's shape and dtype (metadata half: what the planner and the writer are told)."""
        return shape, self.to


Transform = Cast


@dataclass(frozen=True, slots=True)
class Step:
    """One output tensor: where its value comes from, through which transform, and why.

    ``inputs`` holds the tensor the value is read from (one for every plan today). A transfer's
    step that keeps the target's value may still name the source tensor it considered
    (``candidate``: a shape mismatch, a dtype not cast), so the report can show it.
    """

    out: TensorSpec
    inputs: tuple[TensorRef, ...]
    transform: Transform | None
    action: Action
    kind: str
    reason: str
    layer: str = ""
    candidate: TensorRef | None = None
    source_key: str | None = None  # a transfer's source name after the rules (and the prefix fix)
    hint: str | None = None

    @property
    def name(self) -> str:
        return self.out.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.out.shape

    @property
    def dtype(self) -> str:
        return self.out.dtype

    @property
    def numel(self) -> int:
        return numel(self.out.shape)

    @property
    def origin(self) -> TensorRef:
        """The tensor the value is read from."""
        return self.inputs[0]

    @property
    def _considered(self) -> TensorRef | None:
        if self.action in ("replace", "add"):
            return self.inputs[0]
        return self.candidate

    @property
    def source(self) -> str | None:
        """The source tensor's stored name (a transfer's replace and add steps, or the one considered)."""
        ref = self._considered
        return None if ref is None else ref.name

    @property
    def source_shape(self) -> tuple[int, ...] | None:
        ref = self._considered
        return None if ref is None else ref.shape

    @property
    def source_dtype(self) -> str | None:
        ref = self._considered
        return None if ref is None else ref.dtype

    @property
    def from_source(self) -> bool:
        return self.action != "keep"

    @property
    def cast(self) -> tuple[str, str] | None:
        if isinstance(self.transform, Cast) and self.origin.dtype != self.transform.to:
            return self.origin.dtype, self.transform.to
        return None


def make_step(origin: TensorRef, action: Action, kind: str, reason: str, *, name: str | None = None,
              dtype: str | None = None, layer: str | None = None, candidate: TensorRef | None = None,
              source_key: str | None = None, hint: str | None = None) -> Step:
    """A step that writes ``origin``'s values as ``name`` (default: the same name), cast to ``dtype`` if it differs."""
    out_name = origin.name if name is None else name
    out_dtype = origin.dtype if dtype is None else dtype
    transform = Cast(out_dtype) if out_dtype != origin.dtype else None
    return Step(TensorSpec(out_name, origin.shape, out_dtype), (origin,), transform, action, kind, reason,
                default_layer(out_name) if layer is None else layer, candidate, source_key, hint)


@dataclass(frozen=True)
class Plan:
    """Every output tensor, in the order it is written; for a transfer, also what was left over and why."""

    steps: tuple[Step, ...]
    renamed: Renamed  # the rules applied to the (source) names, with their match counts
    unused_sources: tuple[str, ...] = ()  # stored names of loadable source tensors no step uses
    excluded_sources: tuple[tuple[str, str], ...] = ()  # stored name, reason
    prefix_fix: PrefixFix | None = None
    prefix_hint: PrefixFix | None = None  # a prefix rule that would pair more tensors, not applied
    options: TransferOptions = field(default_factory=TransferOptions)
    source_count: int = 0
    target_glob_counts: tuple[tuple[str, int], ...] = ()  # --only-target / --skip-target: target names matched
    # Tensors left out on purpose, (side, stored name, the rule): target tensors a target glob keeps or
    # whose source tensor a source glob dropped, source tensors dropped by a glob or whose target a
    # target glob keeps. --strict does not count them.
    on_purpose: tuple[tuple[str, str, str], ...] = ()

    def unused_rules(self) -> list[str]:
        """Every rule, glob (source and target side) and map entry that matched nothing, in order."""
        return self.renamed.unused() + [text for text, n in self.target_glob_counts if n == 0]

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


def _target_filter(name: str, options: TransferOptions) -> str | None:
    """Why a target tensor may not be replaced, or None when it may."""
    if not options.only_target and not options.skip_target:
        return None
    if options.only_target and glob_hit(name, "--only-target", options.only_target) is None:
        return "not selected by --only-target"
    hit = glob_hit(name, "--skip-target", options.skip_target)
    return f"skipped by {hit}" if hit is not None else None


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


@gc_paused
def plan_transfer(source: Sequence[TensorInfo], target: Sequence[TensorInfo], options: TransferOptions) -> Plan:
    """Decide every output tensor of a transfer from the two checkpoints' metadata (see the module docstring)."""
    renamed = apply_rules([t.name for t in source], options.rules)
    by_stored = {t.name: t for t in source}
    mapped = {old for old, _ in options.rules.name_map}

    keyed = {new: by_stored[old] for old, new in renamed.mapping.items()}
    fix: PrefixFix | None = None
    hint: PrefixFix | None = None
    if options.match != "order":
        free = {k: info.shape for k, info in keyed.items() if info.name not in mapped}
        wrapper = auto_prefix(free, [t.name for t in target], options.prefixes)
        fix, hint = choose_prefix(wrapper, model_prefixes(free, {t.name: t.shape for t in target}), len(target))
        if not options.auto_prefix:  # the fix becomes a suggestion
            fix, hint = None, fix or hint
        if fix is not None:
            keyed = {(k if info.name in mapped else fix.apply(k)): info for k, info in keyed.items()}

    eligible = [t for t in target if _target_filter(t.name, options) is None]
    pairings = {p.target.name: p for p in match(eligible, keyed, options.match)}
    used = {p.source_key for p in pairings.values() if p.status == "matched"}
    hints = Hints(TensorInfo(k, info.shape, info.dtype) for k, info in keyed.items() if k not in used)
    excluded = dict(renamed.excluded)

    steps: list[Step] = []
    for t in target:

        def keep(kind: str, reason: str, *, candidate: TensorRef | None = None, source_key: str | None = None,
                 hint: str | None = None, t: TensorInfo = t) -> Step:
            return make_step(TensorRef.of(TARGET, t), "keep", kind, reason, layer=t.layer, candidate=candidate,
                             source_key=source_key, hint=hint)

        why_not = _target_filter(t.name, options)
        if why_not is not None:
            steps.append(keep(TARGET_FILTERED, why_not))
            continue
        p = pairings[t.name]
        src = p.source
        if p.status == "matched" and src is not None:
            theirs = TensorRef.of(SOURCE, src)
            out_dtype = src.dtype if options.keep_dtype else t.dtype
            if not castable(src.dtype, out_dtype):
                steps.append(keep(NOT_CASTABLE, f"dtype {src.dtype} is not cast to {t.dtype} "
                                  "(use --keep-dtype to keep the source's)", candidate=theirs, source_key=p.source_key))
                continue
            steps.append(make_step(theirs, "replace", MATCHED, _matched_reason(p, options.match, renamed, mapped),
                                   name=t.name, dtype=out_dtype, layer=t.layer, source_key=p.source_key))
        elif p.status == "shape_mismatch" and src is not None:
            steps.append(keep(SHAPE_MISMATCH,
                              f"shape mismatch: source {format_shape(src.shape)} vs target {format_shape(t.shape)}",
                              candidate=TensorRef.of(SOURCE, src), source_key=p.source_key))
        elif p.status == "ambiguous":
            note = f"; {p.note}" if p.note else ""
            steps.append(keep(AMBIGUOUS, f"ambiguous: {', '.join(p.candidates)}{note}"))
        elif t.name in excluded:
            steps.append(keep(SOURCE_EXCLUDED, f"source {excluded[t.name]}"))
        else:
            steps.append(keep(NO_SOURCE, "no source tensor", hint=hints(t)))

    unused = [info.name for k, info in keyed.items() if k not in used]
    if options.add_unmatched:
        target_names = {t.name for t in target}
        for key, info in keyed.items():
            if key in used or key in target_names:
                continue
            steps.append(make_step(TensorRef.of(SOURCE, info), "add", EXTRA,
                                   "unmatched source tensor added (--add-unmatched)", name=key, source_key=key))
        added = {s.source for s in steps if s.action == "add"}
        unused = [n for n in unused if n not in added]

    target_list = [t.name for t in target]
    on_purpose = [(TARGET, s.name, _rule_of(s.reason)) for s in steps if s.kind in (TARGET_FILTERED, SOURCE_EXCLUDED)]
    filtered = {s.name: _rule_of(s.reason) for s in steps if s.kind == TARGET_FILTERED}
    by_stored_key = {info.name: k for k, info in keyed.items()}
    on_purpose += [(SOURCE, n, filtered[by_stored_key[n]]) for n in unused if by_stored_key[n] in filtered]
    on_purpose += [(SOURCE, n, _rule_of(reason)) for n, reason in renamed.excluded.items()]
    return Plan(
        steps=tuple(steps),
        unused_sources=tuple(unused),
        excluded_sources=tuple(renamed.excluded.items()),
        prefix_fix=fix,
        prefix_hint=hint,
        renamed=renamed,
        options=options,
        source_count=len(source),
        target_glob_counts=glob_counts(target_list, "--only-target", options.only_target)
        + glob_counts(target_list, "--skip-target", options.skip_target),
        on_purpose=tuple(on_purpose),
    )


def _rule_of(reason: str) -> str:
    """The option a filter reason names: ``skipped by --skip-target 'x'`` -> ``--skip-target 'x'``."""
    reason = reason.removeprefix("source ")
    for lead in ("skipped by ", "excluded by "):
        if reason.startswith(lead):
            return reason[len(lead):]
    return "--only-target" if "--only-target" in reason else "--include" if "--include" in reason else reason


@gc_paused
def plan_rename(tensors: Sequence[TensorInfo], rules: Rules) -> Plan:
    """Every tensor the rules keep, under its new name; bytes and dtypes unchanged (CheckFailed on a collision)."""
    renamed = apply_rules([t.name for t in tensors], rules)
    by_name = {t.name: t for t in tensors}
    steps = tuple(
        make_step(TensorRef.of(INPUT, by_name[old]), "write", RENAMED if old != new else UNCHANGED,
                  f"renamed from {old!r}" if old != new else "name unchanged", name=new)
        for old, new in renamed.mapping.items()
    )
    return Plan(steps=steps, renamed=renamed, source_count=len(tensors))


def plan_convert(tensors: Sequence[TensorInfo], dtype: str | None = None) -> Plan:
    """Every given tensor under its own name; floating tensors cast to ``dtype`` when one is given."""
    steps = tuple(
        make_step(TensorRef.of(INPUT, t), "write", CONVERTED, "converted",
                  dtype=dtype if dtype is not None and DTYPES[t.dtype].kind == "float" else t.dtype, layer=t.layer)
        for t in tensors
    )
    return Plan(steps=steps, renamed=apply_rules([t.name for t in tensors], Rules()), source_count=len(tensors))


def gate_failures(plan: Plan, source: str | None = None, target: str | None = None) -> list[Failure]:
    """The requested checks this plan fails (empty when all pass), each naming the file it is about.

    ``source`` and ``target`` are the inputs' paths: a rule, glob or map entry on the source's names
    that matched nothing, and source tensors ``strict`` finds unused, are about the source; a target
    glob that matched nothing, target tensors not replaced, too little coverage and nothing loaded
    at all are about the target.
    """
    o = plan.options
    failures: list[Failure] = []
    if not o.allow_unused_rules:
        target_globs = [text for text, n in plan.target_glob_counts if n == 0]
        for unused, file in ((plan.renamed.unused(), source), (target_globs, target)):
            if unused:
                failures.append(unused_rules_failure(unused, file))
    targets = plan.target_steps
    replaced = plan.replaced
    if not replaced and not o.allow_empty:
        hint = plan.prefix_hint
        tried = f"; {rule_label(hint.rule)} would pair {hint.after:,} tensors ({hint.before:,} now)" if hint else ""
        failures.append(Failure(
            "nothing_loaded", f"nothing was loaded: no source tensor matched a target tensor by name and shape{tried}",
            file=target, accept="allow_empty", count=0, rules=(rule_label(hint.rule),) if hint else (),
        ))
    if o.strict:  # what a rule left out on purpose (plan.on_purpose) is not counted
        deliberate = {(side, name) for side, name, _ in plan.on_purpose}
        kept = [s.name for s in targets if s.action != "replace" and (TARGET, s.name) not in deliberate]
        if kept:
            failures.append(Failure("strict_targets", f"{len(kept)} target tensor(s) not replaced: {_few(kept)}",
                                    file=target, option="strict", count=len(kept), names=tuple(kept)))
        unused = [n for n in plan.unused_sources if (SOURCE, n) not in deliberate]
        if unused:
            failures.append(Failure("strict_sources", f"{len(unused)} source tensor(s) unused: {_few(unused)}",
                                    file=source, option="strict", count=len(unused), names=tuple(unused)))
    if o.min_coverage is not None:
        total = sum(s.numel for s in targets)
        share = sum(s.numel for s in replaced) / total if total else 1.0
        if share < o.min_coverage:
            failures.append(Failure("min_coverage", f"replaced {percent(share)} of the target's parameters",
                                    file=target, option="min_coverage", value=f"{o.min_coverage:g}"))
    return failures


def _few(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
