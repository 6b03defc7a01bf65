"""Saved transfer plans: review a mapping once, replay it exactly.

A plan file (schema ``ckptsurgeon/plan/2``; version 1 files are still read) holds the resolved steps
(output name, shape and dtype, action, the input tensors, the transforms, kind, reason), the rules
and options that made them, and two digests of each
input: of its header (:meth:`~ckptsurgeon.formats.base.Reader.header_digest`: names, shapes,
dtypes, metadata) and of its bytes (:meth:`~ckptsurgeon.formats.base.Reader.content_sha256`).
Replaying it always refuses inputs whose headers changed since, so a reviewed mapping is never
applied to other files; with ``pin_content`` it also refuses inputs whose bytes changed (a weight
edited in place keeps the header). A replay refuses every option it would not honour
(:func:`ignored_options`): the plan's steps already say what the target filters, the match mode
and the dtype options decided.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckFailed, InputError
from .files import read_input
from .plan import MATCHED, NO_SOURCE, SOURCE, TARGET, Plan, Step, TensorRef, TransferOptions, make_step
from .rules import Rules, apply_rules
from .tensors import DTYPES, TensorInfo
from .transforms import Concat, Layout, Resize, Slice, Transform, chain_shape, transform_from_dict

if TYPE_CHECKING:
    from .formats.base import Reader

PLAN_SCHEMA = "ckptsurgeon/plan/2"
READABLE = ("ckptsurgeon/plan/1", PLAN_SCHEMA)  # version 2 added each step's shape, inputs and transforms


def rule_texts(rules: Rules) -> list[str]:
    """The rules as the options that give them (the map as its entry count)."""
    texts = [r.text for r in rules.renames] + [f"--include {g}" for g in rules.include]
    texts += [f"--exclude {g}" for g in rules.exclude]
    return texts + ([f"--map ({len(rules.name_map)} entries)"] if rules.name_map else [])


def ignored_options(options: TransferOptions) -> list[str]:
    """The options a replay could not honour (its steps are fixed): each one refuses the replay."""
    o, default = options, TransferOptions()
    found = [f"--only-target {g}" for g in o.only_target] + [f"--skip-target {g}" for g in o.skip_target]
    if o.match != default.match:
        found.append(f"--match {o.match}")
    if o.keep_dtype:
        found.append("--keep-dtype")
    if o.add_unmatched:
        found.append("--add-unmatched")
    if not o.auto_prefix:
        found.append("--no-auto-prefix")
    if o.prefixes != default.prefixes:
        found.append("a custom wrapper-prefix list")
    if not o.rules.empty:
        found += rule_texts(o.rules)
    return found


def plan_to_dict(plan: Plan, source: Reader, target: Reader) -> dict[str, object]:
    """The resolved mapping as JSON-ready data, with the digests of the inputs' headers and bytes."""
    return {
        "schema": PLAN_SCHEMA,
        "source_digest": source.header_digest(),
        "target_digest": target.header_digest(),
        "source_content_sha256": source.content_sha256(),
        "target_content_sha256": target.content_sha256(),
        "rules": rule_texts(plan.options.rules),
        "match": plan.options.match,
        "steps": [_step_dict(s) for s in plan.steps],
        "excluded_on_purpose": [{"side": side, "name": n, "rule": rule} for side, n, rule in plan.on_purpose],
    }


def _step_dict(s: Step) -> dict[str, object]:
    doc: dict[str, object] = {"name": s.name, "action": s.action, "source": s.source, "dtype": s.dtype,
                              "shape": list(s.shape), "kind": s.kind, "reason": s.reason}
    if s.action != "keep" and (len(s.inputs) > 1 or s.transforms):
        doc["inputs"] = [[r.input, r.name] for r in s.inputs]
        doc["transform"] = [t.to_dict() for t in s.transforms]
    return doc


def _inputs(raw: dict[str, object], origin: object, src: dict[str, TensorInfo], tgt: dict[str, TensorInfo]) -> list[TensorRef]:
    listed = raw.get("inputs")
    if listed is None:
        if not isinstance(origin, str) or origin not in src:
            raise ValueError(f"step {raw.get('name')!r} reads {origin!r}, which the source does not have")
        return [TensorRef.of(SOURCE, src[origin])]
    refs = []
    for entry in listed if isinstance(listed, list) else [None]:
        role, name = entry if isinstance(entry, list) and len(entry) == 2 else (None, None)
        table = {SOURCE: src, TARGET: tgt}.get(role) if isinstance(role, str) else None
        if table is None or not isinstance(name, str) or name not in table:
            raise ValueError(f"step {raw.get('name')!r}: input {entry!r} is not a tensor of these inputs")
        refs.append(TensorRef.of(str(role), table[name]))
    if not refs or refs[0].input != SOURCE:
        raise ValueError(f"step {raw.get('name')!r} reads no source tensor first")
    return refs


def plan_from_dict(
    doc: object, source: Sequence[TensorInfo], target: Sequence[TensorInfo], where: str, options: TransferOptions,
) -> Plan:
    """Rebuild a saved plan against the inputs it was made for (the caller has checked their digests).

    Raises ValueError with a one-line reason when the document is not a plan these inputs can replay.
    """
    if not isinstance(doc, dict) or doc.get("schema") not in READABLE or not isinstance(doc.get("steps"), list):
        raise ValueError(f"{where} is not a ckptsurgeon plan (schema {PLAN_SCHEMA})")
    src = {t.name: t for t in source}
    tgt = {t.name: t for t in target}
    steps: list[Step] = []
    for raw in doc["steps"]:
        if not isinstance(raw, dict):
            raise ValueError("a step is not an object")
        name, action, origin, dtype = raw.get("name"), raw.get("action"), raw.get("source"), raw.get("dtype")
        kind, reason = str(raw.get("kind", MATCHED if action != "keep" else NO_SOURCE)), str(raw.get("reason", ""))
        if action == "keep":
            info = tgt.get(name) if isinstance(name, str) else None
            if info is None:
                raise ValueError(f"the plan keeps {name!r}, which the target does not have")
            steps.append(make_step(TensorRef.of(TARGET, info), "keep", kind, reason, layer=info.layer))
            continue
        if action not in ("replace", "add") or not isinstance(name, str) or dtype not in DTYPES:
            raise ValueError(f"step {name!r} is not a valid replace/add step for these inputs")
        refs = _inputs(raw, origin, src, tgt)
        raw_transforms = raw.get("transform", [])
        transforms = tuple(transform_from_dict(t) for t in (raw_transforms if isinstance(raw_transforms, list) else [None]))
        shape = chain_shape(transforms, [r.shape for r in refs])
        layer = tgt[name].layer if name in tgt else None
        if name in tgt and tgt[name].shape != shape:
            raise ValueError(f"step {name!r}: the source's {origin!r} gives another shape than the target's tensor")
        steps.append(make_step(refs[0], action, kind, reason, name=name, dtype=str(dtype), layer=layer,
                               source_key=name, transforms=transforms, inputs=tuple(refs[1:]), shape=shape))
    used = {n for s in steps if s.action != "keep" for n in s.sources}
    return Plan(
        steps=tuple(steps),
        unused_sources=tuple(t.name for t in source if t.name not in used),
        renamed=apply_rules([t.name for t in source], Rules()),
        options=options,
        source_count=len(source),
        on_purpose=_on_purpose(doc.get("excluded_on_purpose", []), src, tgt),
    )


def _on_purpose(raw: object, src: dict[str, TensorInfo], tgt: dict[str, TensorInfo]) -> tuple[tuple[str, str, str], ...]:
    """What the plan's rules left out on purpose (``--strict`` does not count it), checked against the inputs."""
    if not isinstance(raw, list):
        raise ValueError("excluded_on_purpose is not a list")
    found: list[tuple[str, str, str]] = []
    for entry in raw:
        side, name, rule = (entry.get(k) for k in ("side", "name", "rule")) if isinstance(entry, dict) else (None,) * 3
        names = {SOURCE: src, TARGET: tgt}.get(side) if isinstance(side, str) else None
        if names is None or not isinstance(name, str) or not isinstance(rule, str) or name not in names:
            raise ValueError(f"excluded_on_purpose entry {entry!r} does not name a tensor of these inputs")
        found.append((str(side), name, rule))
    return tuple(found)


@dataclass(frozen=True)
class SavedPlan:
    """A plan read back: the rebuilt plan, the file's sha256 and the rules that made it."""

    plan: Plan
    sha256: str
    rules: tuple[str, ...]


def load_inverse(plan_file: Path, out: Reader, src: Reader, *, allow_lossy: bool = False) -> SavedPlan:
    """Read a saved plan and build its inverse (:func:`invert_plan`): ``out`` is the plan's output, ``src`` its source."""
    try:
        raw = read_input(plan_file)
        doc = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(plan_file, f"cannot read the plan: {exc}") from exc
    plan = invert_plan(doc, out, src, str(plan_file), allow_lossy=allow_lossy)
    return SavedPlan(plan, hashlib.sha256(raw).hexdigest(), ("--invert",))


def load_plan(plan_file: Path, src: Reader, tgt: Reader, options: TransferOptions, *, pin_content: bool = False) -> SavedPlan:
    """Read a saved plan and rebuild it against ``src`` and ``tgt``.

    Refuses (CheckFailed, exit 1) inputs whose headers changed since the plan was made, and with
    ``pin_content`` inputs whose bytes changed.
    """
    try:
        raw = read_input(plan_file)  # a regular file only
        doc = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(plan_file, f"cannot read the plan: {exc}") from exc
    for role, reader in (("source", src), ("target", tgt)):
        if isinstance(doc, dict) and doc.get(f"{role}_digest") != reader.header_digest():
            raise CheckFailed(
                reader.path, f"the {role}'s header no longer matches the saved plan {plan_file}; "
                "names, shapes, dtypes or metadata changed since it was made",
            )
    if pin_content:
        for role, reader in (("source", src), ("target", tgt)):
            saved = doc.get(f"{role}_content_sha256") if isinstance(doc, dict) else None
            if saved is None:
                raise CheckFailed(plan_file, f"the plan records no digest of the {role}'s bytes (saved by an older ckptsurgeon); "
                                  "save it again to pin content")
            if saved != reader.content_sha256():
                raise CheckFailed(reader.path, f"the {role}'s bytes no longer match the saved plan {plan_file} "
                                  "(its header does: tensor data changed since the plan was made)")
    try:
        plan = plan_from_dict(doc, src.tensors, tgt.tensors, str(plan_file), options)
    except ValueError as exc:
        raise InputError(plan_file, str(exc)) from exc
    rules = doc.get("rules") if isinstance(doc, dict) else None
    texts = tuple(str(r) for r in rules) if isinstance(rules, list) else ()
    return SavedPlan(plan, hashlib.sha256(raw).hexdigest(), texts)


# --- running a saved plan backwards ---------------------------------------------------------------


def exact_cast(a: str, b: str) -> bool:
    """Whether every value of dtype ``a`` survives a cast to ``b`` and back (a widening cast)."""
    x, y = DTYPES[a], DTYPES[b]
    if a == b:
        return True
    if x.kind == y.kind == "float":
        return (b in ("F32", "F64") and y.itemsize > x.itemsize) or (x.itemsize == 1 and a != "F8_E8M0" and b in ("F16", "BF16"))
    if x.kind == y.kind in ("int", "uint"):
        return y.itemsize > x.itemsize
    return x.kind == "uint" and y.kind == "int" and y.itemsize > x.itemsize


@dataclass(frozen=True)
class _Forward:
    name: str  # the forward output tensor
    dtype: str
    inputs: tuple[tuple[str, str], ...]  # (input, name)
    transforms: tuple[Transform, ...]


def _forward_steps(doc: dict[str, object]) -> list[_Forward]:
    out = []
    steps = doc.get("steps")
    for raw in steps if isinstance(steps, list) else []:
        if not isinstance(raw, dict) or raw.get("action") not in ("replace", "add"):
            continue
        name, origin = raw.get("name"), raw.get("source")
        listed = raw.get("inputs", [[SOURCE, origin]])
        if not isinstance(name, str) or not isinstance(listed, list) or not all(
                isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e) for e in listed):
            raise ValueError(f"step {name!r} is not a valid replace/add step")
        transforms = raw.get("transform", [])
        out.append(_Forward(name, str(raw.get("dtype")), tuple((str(a), str(b)) for a, b in listed),
                            tuple(transform_from_dict(t) for t in (transforms if isinstance(transforms, list) else [None]))))
    return out


def invert_plan(doc: object, out: Reader, src: Reader, where: str, *, allow_lossy: bool = False) -> Plan:
    """The plan that takes a saved plan's output (``out``) back to its source's names, shapes, dtypes and
    layouts, with that source (``src``) as the target.

    Every source tensor is read back from the output tensor(s) it went to: a layout undone, a split
    joined again, a concatenation cut apart, a grown tensor cropped, a cast cast back. What cannot be
    undone exactly (a source tensor the output does not carry, a tensor resized smaller, a narrowing
    cast, split parts laid out or missing) is refused by name (CheckFailed) unless ``allow_lossy``:
    then a narrowing cast is cast back and the rest keeps ``src``'s own values.
    """
    if not isinstance(doc, dict) or doc.get("schema") not in READABLE:
        raise InputError(where, f"is not a ckptsurgeon plan (schema {PLAN_SCHEMA})")
    if doc.get("source_digest") != src.header_digest():
        raise CheckFailed(src.path, f"is not the source the saved plan {where} was made from (its header digest "
                          "differs): --invert takes the plan's output as SOURCE and the plan's source as TARGET")
    try:
        forward = _forward_steps(doc)
    except ValueError as exc:
        raise InputError(where, str(exc)) from exc
    uses: dict[str, list[tuple[_Forward, int]]] = {}
    for f in forward:
        if f.name not in out:
            raise CheckFailed(out.path, f"does not hold {f.name!r}, which the saved plan {where} writes: "
                              "it is not that plan's output")
        for i, (role, name) in enumerate(f.inputs):
            if role == SOURCE:
                uses.setdefault(name, []).append((f, i))
    steps: list[Step] = []
    lossy: list[str] = []
    for t in src.tensors:
        inverse, why = _undo(t, uses.get(t.name, []), out, src)
        if inverse is not None and why and allow_lossy and why.startswith("cast"):
            why = ""
        if why:
            lossy.append(f"{t.name} ({why})")
        if inverse is None or why:
            steps.append(make_step(TensorRef.of(TARGET, t), "keep", NO_SOURCE, f"not undone: {why}", layer=t.layer))
            continue
        steps.append(inverse)
    if lossy and not allow_lossy:
        shown = "; ".join(lossy[:6]) + (f"; and {len(lossy) - 6} more" if len(lossy) > 6 else "")
        raise CheckFailed(where, f"{len(lossy)} tensor(s) of the source cannot be restored exactly from the output: "
                          f"{shown}", hint="--allow-lossy keeps the source's own values for them (casts are cast back)")
    read = {n for s in steps if s.action == "replace" for n in s.sources}
    return Plan(steps=tuple(steps), renamed=apply_rules([t.name for t in out.tensors], Rules()),
                unused_sources=tuple(t.name for t in out.tensors if t.name not in read), source_count=len(out.tensors))


def _undo(t: TensorInfo, uses: list[tuple[_Forward, int]], out: Reader, src: Reader) -> tuple[Step | None, str]:
    """The step that restores source tensor ``t`` from the output, and what keeps it from being exact ("" if nothing)."""
    if not uses:
        return None, "not carried to the output"
    f, index = uses[0]
    o = out[f.name]
    cast = "" if exact_cast(t.dtype, f.dtype) else f"cast {t.dtype} -> {f.dtype} loses values"
    cut = next((x for x in f.transforms if isinstance(x, Slice)), None)
    if cut is not None:  # t was split: join the parts again
        parts = sorted((u for u, _ in uses if any(isinstance(x, Slice) for x in u.transforms)),
                       key=lambda u: next(x.index for x in u.transforms if isinstance(x, Slice)))
        if len(parts) != cut.parts or any(len(u.transforms) != 1 for u in parts):
            return None, "its split parts are not all in the output untransformed"
        refs = tuple(TensorRef.of(SOURCE, out[u.name]) for u in parts)
        return make_step(refs[0], "replace", MATCHED, f"joined again from {', '.join(u.name for u in parts)}",
                         name=t.name, dtype=t.dtype, layer=t.layer, transforms=(Concat(cut.axis),), inputs=refs[1:],
                         shape=t.shape), cast
    undo: list[Transform] = []
    rest = list(f.transforms)
    if rest and isinstance(rest[-1], Resize):
        grown = rest.pop()
        assert isinstance(grown, Resize)
        if grown.shrinks:
            return None, "resized smaller: values were cut"
        undo.append(Resize("zero", grown.shape, grown.source_shape))
    first = rest[0] if rest else None
    join = first if isinstance(first, Concat) else None
    if join is not None:
        rest.pop(0)
    layouts = [x for x in rest if isinstance(x, Layout)]
    if len(layouts) != len(rest):
        return None, "its transforms cannot be undone"
    if join is not None and any(role != SOURCE or name not in src for role, name in f.inputs):
        return None, "it was joined with tensors that are not the source's"
    before = [src[name].shape for _, name in f.inputs] if join is not None else [t.shape]
    joined = join.output_of(before) if join is not None else t.shape
    inner = [joined]
    for lay in layouts:
        inner.append(lay.output(inner[-1]))
    for lay, at in reversed(list(zip(layouts, inner[:-1], strict=True))):
        undo.append(lay.inverse(at))
    if join is not None:
        start = sum(s[join.axis] for s in before[:index])
        undo.append(Slice(join.axis, start, start + t.shape[join.axis], index, len(before)))
    ref = TensorRef.of(SOURCE, o)
    try:
        shape = chain_shape(tuple(undo), [o.shape])
    except ValueError:
        return None, "its transforms do not fit the output"
    if shape != t.shape:
        return None, f"the output's {f.name!r} {list(o.shape)} does not give back {list(t.shape)}"
    return make_step(ref, "replace", MATCHED, f"restored from {f.name!r}" + (f"; {', '.join(x.text() for x in undo)}" if undo else ""),
                     name=t.name, dtype=t.dtype, layer=t.layer, transforms=tuple(undo), shape=t.shape), cast

