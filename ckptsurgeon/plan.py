r"""Plans from metadata alone: one frozen step per output tensor, no arrays, no files.

Transfer, rename and convert all plan into the same shape: a :class:`Plan` of :class:`Step`\ s,
each naming the output tensor (:class:`~ckptsurgeon.tensors.TensorSpec`), the input tensor its
values come from (a :class:`TensorRef` into one of the named inputs), the transform on the way
(:mod:`ckptsurgeon.transforms`: a layout, a split, a concatenation, a resize; none for a copy), the
dtype it is cast to, the action and the reason. One executor
(:func:`ckptsurgeon.execute.write_checkpoint`) writes any plan.

- :func:`plan_transfer` applies the rename / filter / map rules to the source's names, fixes a
  wrapper prefix when asked, pairs target tensors with source tensors and decides for every output
  tensor: replace it from the source (maybe with a cast), keep the target's value (and why), or
  add an unmatched source tensor. :func:`gate_failures` says which requested checks fail.
- :func:`plan_rename` writes every kept tensor of one input under its new name.
- :func:`plan_convert` writes the chosen tensors of one input, floats cast when asked.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .errors import Failure, UsageError
from .match import (
    WRAPPER_PREFIXES,
    Hints,
    MatchMode,
    Pairing,
    PrefixFix,
    auto_prefix,
    choose_prefix,
    match,
    model_prefixes,
)
from .plan_transforms import (
    Derived,
    Paired,
    derive,
    describe,
    framework_trap,
    loaded_values,
    pair,
    permutation_hint,
)
from .rules import Renamed, Rule, Rules, apply_rules, glob_counts, glob_hit, rule_label, unused_rules_failure
from .tensors import DTYPES, TensorInfo, TensorSpec, default_layer, gc_paused, numel
from .text import format_shape as _shape_text
from .text import percent, quote
from .transforms import Concat, Resize, Slice, Transform, TransformRules

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
RESIZED = "resized"
TRANSFORMED = "transformed"
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
    transforms: TransformRules = field(default_factory=TransformRules)  # layouts, resizes, splits, concats
    target_rules: tuple[Rule, ...] = ()  # renames of the target's names for matching only (a preset's way back)
    preset_skip: tuple[tuple[str, str], ...] = ()  # (glob, preset): target tensors a preset leaves alone


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
class Step:
    """One output tensor: where its value comes from, through which transforms, and why.

    ``inputs`` holds the tensors the value is read from: one, several for a concatenation, and the
    target's own tensor last for a resize that keeps the target's values. ``transforms`` apply in
    order; a cast to ``out.dtype`` comes last. A transfer's step that keeps the target's value may
    still name the source tensor it considered (``candidate``: a shape mismatch, a dtype not cast),
    so the report can show it.
    """

    out: TensorSpec
    inputs: tuple[TensorRef, ...]
    transforms: tuple[Transform, ...]
    action: Action
    kind: str
    reason: str
    layer: str = ""
    candidate: TensorRef | None = None
    source_key: str | None = None  # a transfer's source name after the rules (and the prefix fix)
    hint: str | None = None
    warning: str | None = None  # the preset a pair looks like it needs (a Keras kernel into a PyTorch weight)

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
        """The (first) tensor the value is read from."""
        return self.inputs[0]

    @property
    def loaded(self) -> int:
        """How many values come from the source: all of a replaced tensor's but a resize's new ones."""
        return loaded_values(self.transforms, self.numel) if self.action != "keep" else 0

    @property
    def resize(self) -> Resize | None:
        return next((t for t in self.transforms if isinstance(t, Resize)), None)

    @property
    def sources(self) -> tuple[str, ...]:
        """Stored names of the source tensors the value is read from (several for a concatenation)."""
        if self.action not in ("replace", "add", "write"):
            return ()
        return tuple(r.name for r in self.inputs if r.input != TARGET)

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
        if self.action != "keep" and self.origin.dtype != self.out.dtype:
            return self.origin.dtype, self.out.dtype
        return None


def make_step(origin: TensorRef, action: Action, kind: str, reason: str, *, name: str | None = None,
              dtype: str | None = None, layer: str | None = None, candidate: TensorRef | None = None,
              source_key: str | None = None, hint: str | None = None, transforms: tuple[Transform, ...] = (),
              inputs: tuple[TensorRef, ...] = (), shape: tuple[int, ...] | None = None, warning: str | None = None) -> Step:
    """A step that writes ``origin``'s values as ``name`` (default: the same name), cast to ``dtype`` if it
    differs; with ``transforms`` (of ``origin`` and the further ``inputs``) of the given output ``shape``."""
    out_name = origin.name if name is None else name
    out_dtype = origin.dtype if dtype is None else dtype
    out_shape = origin.shape if shape is None else shape
    return Step(TensorSpec(out_name, out_shape, out_dtype), (origin, *inputs), transforms, action, kind, reason,
                default_layer(out_name) if layer is None else layer, candidate, source_key, hint, warning)


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
    transform_counts: tuple[tuple[str, int], ...] = ()  # each transform rule the user gave: tensors it applied to
    target_renamed: Renamed | None = None  # a preset's renames of the target's names (matching only)

    def unused_rules(self) -> list[str]:
        """Every rule, glob (source and target side) and map entry that matched nothing, in order."""
        return self.renamed.unused() + [text for text, n in self.target_glob_counts if n == 0] + self.unused_transforms()

    def unused_transforms(self) -> list[str]:
        return [text for text, n in self.transform_counts if n == 0]

    @property
    def warnings(self) -> list[Step]:
        """Replaced tensors whose names look like another framework's layout, moved without a layout transform."""
        return [s for s in self.steps if s.warning and s.action == "replace"]

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
    for glob, preset in options.preset_skip:
        if fnmatch.fnmatchcase(name, glob):
            return f"skipped by --preset {preset} {quote(glob)}"
    if not options.only_target and not options.skip_target:
        return None
    if options.only_target and glob_hit(name, "--only-target", options.only_target) is None:
        return "not selected by --only-target"
    hit = glob_hit(name, "--skip-target", options.skip_target)
    return f"skipped by {hit}" if hit is not None else None


def _paired_by(pairing: Pairing, mode: MatchMode, renamed: Renamed, mapped: set[str], d: Derived) -> str:
    """How a pair was found (the first half of a replaced tensor's reason)."""
    src = pairing.source
    assert src is not None
    cut = next((t for t in d.transforms if isinstance(t, Slice)), None)
    if cut is not None:
        return f"part {cut.index + 1} of {cut.parts} of {src.name!r} split along axis {cut.axis}"
    join = next((t for t in d.transforms if isinstance(t, Concat)), None)
    if join is not None:
        return f"{', '.join(repr(i.name) for i in d.inputs)} joined along axis {join.axis}"
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
    return f"same name and shape (after {' and '.join(via)})" if via else "same name and shape"


def _matched_reason(pairing: Pairing, mode: MatchMode, renamed: Renamed, mapped: set[str], d: Derived,
                    transforms: tuple[Transform, ...]) -> str:
    base = _paired_by(pairing, mode, renamed, mapped, d)
    shown = [t for t in transforms if not isinstance(t, (Slice, Concat))]
    if not shown:
        return base
    return base.replace(" and shape", "").replace(", same shape", "") + "; " + describe(shown)


def target_keys(target: Sequence[TensorInfo], rules: tuple[Rule, ...]) -> tuple[dict[str, str], Renamed]:
    """Each target tensor's name -> the key it is matched by (the same unless ``rules`` rename it)."""
    renamed = apply_rules([t.name for t in target], Rules(renames=rules))
    return renamed.mapping, renamed


@gc_paused
def plan_transfer(source: Sequence[TensorInfo], target: Sequence[TensorInfo], options: TransferOptions,
                  aliases: Mapping[str, str] | None = None) -> Plan:
    """Decide every output tensor of a transfer from the two checkpoints' metadata (see the module docstring).

    ``aliases``: a tensor's name -> the path it is stored under, where they differ (Keras 3): layout
    globs match either."""
    renamed = apply_rules([t.name for t in source], options.rules)
    by_stored = {t.name: t for t in source}
    mapped = {old for old, _ in options.rules.name_map}
    rules = options.transforms
    tkeys, target_renamed = target_keys(target, options.target_rules)
    by_tkey = {tkeys[t.name]: t for t in target}

    keyed = {new: by_stored[old] for old, new in renamed.mapping.items()}
    derivation = derive(keyed, renamed.mapping, rules, by_tkey, aliases)
    keyed, derived = derivation.keyed, derivation.derived
    pinned = {k for k, d in derived.items()
              if d.inputs[0].name in mapped or any(isinstance(t, (Slice, Concat)) for t in d.transforms)}
    fix: PrefixFix | None = None
    hint: PrefixFix | None = None
    if options.match != "order":
        free = {k: info.shape for k, info in keyed.items() if k not in pinned}
        wrapper = auto_prefix(free, list(by_tkey), options.prefixes)
        fix, hint = choose_prefix(wrapper, model_prefixes(free, {k: t.shape for k, t in by_tkey.items()}), len(target))
        if not options.auto_prefix:  # the fix becomes a suggestion
            fix, hint = None, fix or hint
        if fix is not None:
            keyed = {(k if k in pinned else fix.apply(k)): info for k, info in keyed.items()}
            derived = {(k if k in pinned else fix.apply(k)): d for k, d in derived.items()}

    eligible = [TensorInfo(tkeys[t.name], t.shape, t.dtype, t.layer) for t in target if _target_filter(t.name, options) is None]
    pairings = {p.target.name: p for p in match(eligible, keyed, options.match)}
    counts = dict(derivation.counts) | dict(derivation.layout_counts) | {r.text: 0 for r in rules.resizes}
    decided: dict[str, Paired] = {}
    for tk, p in pairings.items():
        if p.source_key is not None and p.status in ("matched", "shape_mismatch"):
            decided[tk] = pair(derived[p.source_key], by_tkey[tk], rules, counts, aliases)
    fits = {tk for tk, dec in decided.items() if dec.shape == by_tkey[tk].shape}
    used = {pairings[tk].source_key for tk in fits}
    hints = Hints(TensorInfo(k, info.shape, info.dtype) for k, info in keyed.items() if k not in used)
    excluded = dict(renamed.excluded)

    steps: list[Step] = []
    for t in target:
        tk = tkeys[t.name]

        def keep(kind: str, reason: str, *, candidate: TensorRef | None = None, source_key: str | None = None,
                 hint: str | None = None, t: TensorInfo = t) -> Step:
            return make_step(TensorRef.of(TARGET, t), "keep", kind, reason, layer=t.layer, candidate=candidate,
                             source_key=source_key, hint=hint)

        why_not = _target_filter(t.name, options)
        if why_not is not None:
            steps.append(keep(TARGET_FILTERED, why_not))
            continue
        p = pairings[tk]
        dec = decided.get(tk)
        if dec is not None and p.source_key is not None:
            d = derived[p.source_key]
            first = d.inputs[0]
            if tk not in fits:
                after = f" (after {describe(dec.transforms)}: {_shape_text(dec.shape)})" if dec.transforms else ""
                perm = permutation_hint(dec.shape, t.shape)
                tip = f"; the target's shape is a permutation of it: --transform {quote(t.name)}={perm}?" if perm else ""
                note = f"; {dec.note}" if dec.note else ""
                steps.append(keep(SHAPE_MISMATCH, f"shape mismatch: source {_shape_text(d.shape if d.transforms else first.shape)}"
                                  f"{after} vs target {_shape_text(t.shape)}{note}{tip}",
                                  candidate=TensorRef.of(SOURCE, first), source_key=p.source_key))
                continue
            out_dtype = first.dtype if options.keep_dtype else t.dtype
            if not castable(first.dtype, out_dtype):
                steps.append(keep(NOT_CASTABLE, f"dtype {first.dtype} is not cast to {t.dtype} "
                                  "(use --keep-dtype to keep the source's)", candidate=TensorRef.of(SOURCE, first),
                                  source_key=p.source_key))
                continue
            refs = tuple(TensorRef.of(SOURCE, i) for i in d.inputs)
            if dec.resize is not None and dec.resize.mode == "keep":
                refs += (TensorRef.of(TARGET, t),)
            steps.append(make_step(
                refs[0], "replace", RESIZED if dec.resize is not None else MATCHED,
                _matched_reason(p, options.match, renamed, mapped, d, dec.transforms) + (f"; {dec.note}" if dec.note else ""),
                name=t.name, dtype=out_dtype, layer=t.layer, source_key=p.source_key, transforms=dec.transforms,
                inputs=refs[1:], shape=t.shape, warning=framework_trap(first.name, t.name, t.shape, dec.transforms),
            ))
        elif p.status == "ambiguous":
            note = f"; {p.note}" if p.note else ""
            steps.append(keep(AMBIGUOUS, f"ambiguous: {', '.join(p.candidates)}{note}"))
        elif t.name in excluded:
            steps.append(keep(SOURCE_EXCLUDED, f"source {excluded[t.name]}"))
        else:
            steps.append(keep(NO_SOURCE, "no source tensor", hint=hints(TensorInfo(tk, t.shape, t.dtype))))

    if options.add_unmatched:
        for key, d in derived.items():
            if key in used or key in by_tkey:
                continue
            refs = tuple(TensorRef.of(SOURCE, i) for i in d.inputs)
            steps.append(make_step(refs[0], "add", EXTRA, "unmatched source tensor added (--add-unmatched)", name=key,
                                   source_key=key, transforms=d.transforms, inputs=refs[1:], shape=d.shape))
            used.add(key)
    used_inputs = {i.name for k in used if k is not None for i in derived[k].inputs}
    unused = list(dict.fromkeys(i.name for d in derived.values() for i in d.inputs if i.name not in used_inputs))

    target_list = [t.name for t in target]
    on_purpose = [(TARGET, s.name, _rule_of(s.reason)) for s in steps if s.kind in (TARGET_FILTERED, SOURCE_EXCLUDED)]
    filtered = {tkeys[s.name]: _rule_of(s.reason) for s in steps if s.kind == TARGET_FILTERED}
    key_of = {i.name: k for k, d in derived.items() for i in d.inputs}
    on_purpose += [(SOURCE, n, filtered[key_of[n]]) for n in unused if key_of.get(n) in filtered]
    on_purpose += [(SOURCE, n, _rule_of(reason)) for n, reason in renamed.excluded.items()]
    optional = {r.text for r, _ in rules.layouts if r.optional}
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
        transform_counts=tuple((text, n) for text, n in counts.items() if text not in optional),
        target_renamed=target_renamed,
    )


def _rule_of(reason: str) -> str:
    """The option a filter reason names: ``skipped by --skip-target 'x'`` -> ``--skip-target 'x'``."""
    reason = reason.removeprefix("source ")
    for lead in ("skipped by ", "excluded by "):
        if reason.startswith(lead):
            return reason[len(lead):]
    return "--only-target" if "--only-target" in reason else "--include" if "--include" in reason else reason


@gc_paused
def plan_rename(tensors: Sequence[TensorInfo], rules: Rules, transforms: TransformRules | None = None,
                aliases: Mapping[str, str] | None = None) -> Plan:
    """Every tensor the rules keep, under its new name; bytes and dtypes unchanged (CheckFailed on a collision).

    ``transforms`` split, join or lay out tensors on the way (UsageError for a layout rule that hits
    a tensor it cannot apply to: there is no target to fall back on).
    """
    renamed = apply_rules([t.name for t in tensors], rules)
    by_name = {t.name: t for t in tensors}
    if transforms is None or transforms.empty:
        steps = tuple(
            make_step(TensorRef.of(INPUT, by_name[old]), "write", RENAMED if old != new else UNCHANGED,
                      f"renamed from {old!r}" if old != new else "name unchanged", name=new)
            for old, new in renamed.mapping.items()
        )
        return Plan(steps=steps, renamed=renamed, source_count=len(tensors))
    keyed = {new: by_name[old] for old, new in renamed.mapping.items()}
    derivation = derive(keyed, renamed.mapping, transforms, {}, aliases)
    steps_list = []
    for key, d in derivation.derived.items():
        if d.note:
            raise UsageError(None, f"{d.inputs[0].name!r}: {d.note}", hint="narrow the glob")
        refs = tuple(TensorRef.of(INPUT, i) for i in d.inputs)
        first = d.inputs[0]
        reason = f"renamed from {first.name!r}" if key != first.name else "name unchanged"
        if d.transforms:
            reason = describe(d.transforms) + (f", from {first.name!r}" if not any(isinstance(t, (Slice, Concat)) for t in d.transforms) and key != first.name else "")
        kind = TRANSFORMED if d.transforms else RENAMED if key != first.name else UNCHANGED
        steps_list.append(make_step(refs[0], "write", kind, reason, name=key, transforms=d.transforms,
                                    inputs=refs[1:], shape=d.shape))
    optional = {r.text for r, _ in transforms.layouts if r.optional}
    counts = dict(derivation.counts) | dict(derivation.layout_counts)
    return Plan(steps=tuple(steps_list), renamed=renamed, source_count=len(tensors),
                transform_counts=tuple((text, n) for text, n in counts.items() if text not in optional))


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
        if plan.unused_transforms():
            failures.append(unused_rules_failure(plan.unused_transforms(), source, applied=True))
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
    trapped = plan.warnings
    if o.strict and trapped:
        presets = sorted({s.warning or "" for s in trapped})
        names = [s.name for s in trapped]
        failures.append(Failure(
            "layout", f"{len(names)} tensor(s) look like another framework's layout and were moved untransformed "
            f"({_few(names)}); use --preset {' or --preset '.join(presets)}, or --transform",
            file=target, option="strict", count=len(names), names=tuple(names)))
    if o.min_coverage is not None:
        total = sum(s.numel for s in targets)
        share = sum(s.loaded for s in replaced) / total if total else 1.0
        if share < o.min_coverage:
            failures.append(Failure("min_coverage", f"replaced {percent(share)} of the target's parameters",
                                    file=target, option="min_coverage", value=f"{o.min_coverage:g}"))
    return failures


def _few(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
