"""Saved transfer plans: review a mapping once, replay it exactly.

A plan file (schema ``ckptsurgeon/plan/1``) holds the resolved steps (output name, action, source
name, output dtype, kind, reason), the rules and options that made them, and two digests of each
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

if TYPE_CHECKING:
    from .formats.base import Reader

PLAN_SCHEMA = "ckptsurgeon/plan/1"


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
        "steps": [
            {"name": s.name, "action": s.action, "source": s.source, "dtype": s.dtype, "kind": s.kind,
             "reason": s.reason}
            for s in plan.steps
        ],
        "excluded_on_purpose": [{"side": side, "name": n, "rule": rule} for side, n, rule in plan.on_purpose],
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
        kind, reason = str(raw.get("kind", MATCHED if action != "keep" else NO_SOURCE)), str(raw.get("reason", ""))
        if action == "keep":
            info = tgt.get(name) if isinstance(name, str) else None
            if info is None:
                raise ValueError(f"the plan keeps {name!r}, which the target does not have")
            steps.append(make_step(TensorRef.of(TARGET, info), "keep", kind, reason, layer=info.layer))
            continue
        if action not in ("replace", "add") or not isinstance(name, str) or origin not in src or dtype not in DTYPES:
            raise ValueError(f"step {name!r} is not a valid replace/add step for these inputs")
        info = src[origin]
        layer = tgt[name].layer if name in tgt else None
        if name in tgt and tgt[name].shape != info.shape:
            raise ValueError(f"step {name!r}: the source's {origin!r} has another shape than the target's tensor")
        steps.append(make_step(TensorRef.of(SOURCE, info), action, kind, reason, name=name, dtype=str(dtype),
                               layer=layer, source_key=name))
    used = {s.source for s in steps if s.action != "keep"}
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
